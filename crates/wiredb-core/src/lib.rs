//! wiredb's core: keeps Yjs documents in sync between peers. No Python here: the `wiredb-py`
//! crate binds it.
//!
//! - [`protocol`]: the y-websocket wire format;
//! - [`guard`]: the only path from untrusted bytes to a yrs document;
//! - [`room`], [`awareness`], [`waiting`], [`registry`]: rooms and their members;
//! - [`session`]: a member's session, the same loop for every wire that serves a peer;
//! - [`budget`]: what peers may make the process hold, and the work they may cause;
//! - [`server`], [`client`]: the WebSocket wire ([`http`]: plain HTTP on the server's port);
//! - [`auth`], [`token`], [`connections`]: who may connect, signed tokens, a server's live
//!   connections (kick, read-only);
//! - [`record`], [`store`], [`persist`]: the file wire's records (with checksums), its log, and
//!   a room's native store on it;
//! - [`pipe`]: the pipe wire (length-prefixed frames over OS pipes or a socketpair);
//! - [`queue`], [`wake`], [`sync`], [`runtime`]: the plumbing between tokio and a local document.

pub mod auth;
pub mod awareness;
pub mod budget;
pub mod client;
pub mod clip;
pub mod connections;
pub mod fuzz;
pub mod guard;
pub mod http;
pub mod persist;
pub mod pipe;
pub mod protocol;
pub mod queue;
pub mod record;
pub mod registry;
pub mod room;
pub mod runtime;
pub mod scan;
pub mod server;
pub mod session;
pub mod socket;
pub mod store;
pub mod sync;
pub mod token;
pub mod waiting;
pub mod wake;
