//! Who may connect: what a connection asked for (the request an authorization hook is shown),
//! what was decided about it, and the limits on what it may send before that is decided.
//!
//! Nothing here calls the hook: an `Authorizer` is handed the request and must return at once
//! (the Python binding queues it for Python, which answers through `Connections::decide`), and
//! is told when a request it was handed stops waiting undecided (`Asked`), so that it can stop
//! deciding it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::percent_decode_str;

use crate::protocol::{decode_frame, Message, AUTH_TOKEN};
use crate::queue::CloseReason;
use crate::room::Access;
use crate::token::TokenKey;

/// Close codes of refused connections (4000-4999 is the range left to applications).
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// A client that sent too much before it was authorized (RFC 6455: policy violation).
pub const CLOSE_POLICY: u16 = 1008;
/// The hook did not answer in time: the server's fault, worth retrying (RFC 6455: try again).
pub const CLOSE_TRY_AGAIN: u16 = 1013;

/// The query parameter that may carry a token.
pub const TOKEN_PARAM: &str = "token";

/// What a connection asked for, as its WebSocket handshake said.
#[derive(Debug, Clone)]
pub struct Request {
    /// Unique among a server's connections.
    pub id: u64,
    /// The URL path, as sent (percent-encoded).
    pub path: String,
    /// The room id: the path without its leading `/`, percent-decoded.
    pub room: String,
    /// The raw query string, without `?` (empty if none).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first value of a query parameter, form-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(key) == name).then(|| form_decode(value))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn form_decode(part: &str) -> String {
    percent_decode_str(&part.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// What was decided about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let in, with this access; `identity` names who it is (shown when listing connections).
    Allow {
        access: Access,
        identity: Option<String>,
    },
    /// Closed with this code and reason, before any room is opened for it.
    Deny(CloseReason),
}

/// Hands a connection's request to whoever decides (Python). Must not block: the decision
/// comes back through `Connections::decide`.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, request: Arc<Request>);

    /// Request `id`, handed to `authorize`, no longer waits for a decision: the connection went
    /// away, sent too much, ran out of time, or the server is stopping. A decision would go
    /// nowhere, so whoever is deciding may stop. Called at most once per request, never for
    /// one that was decided. Must not block.
    fn withdraw(&self, id: u64);
}

/// A request handed to an authorizer and not decided yet: withdrawn from it when dropped
/// unless `decided` was called first. However the wait for a decision ends (a deadline, a cap,
/// the peer gone, the server stopping, the waiting future dropped), the authorizer hears of it.
pub struct Asked<'a> {
    authorizer: &'a dyn Authorizer,
    id: u64,
    decided: bool,
}

impl<'a> Asked<'a> {
    /// Hands `request` to `authorizer`.
    pub fn new(authorizer: &'a dyn Authorizer, request: &Arc<Request>) -> Self {
        authorizer.authorize(request.clone());
        Asked {
            authorizer,
            id: request.id,
            decided: false,
        }
    }

    /// The decision arrived: nothing to withdraw.
    pub fn decided(mut self) {
        self.decided = true;
    }
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        if !self.decided {
            self.authorizer.withdraw(self.id);
        }
    }
}

/// How a server decides who gets in. The default lets everyone in, read-write.
#[derive(Clone)]
pub struct AuthConfig {
    /// Browser origins allowed (`scheme://host[:port]`, compared without regard to case). A
    /// request with another `Origin` header is refused with HTTP 403 during the handshake; a
    /// request without one (not a browser) is not concerned. None: any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Signed tokens are verified natively with this key.
    pub token: Option<TokenKey>,
    /// Asked about connections that bring no token (all of them without `token`).
    pub hook: Option<Arc<dyn Authorizer>>,
    /// Time from the handshake to a decision (a token message, the hook's answer).
    pub timeout: Duration,
    /// What a connection may send before it is decided: kept (and handled once it is let in)
    /// up to these limits; past them it is closed with 1008.
    pub max_pending_frames: usize,
    pub max_pending_bytes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allowed_origins: None,
            token: None,
            hook: None,
            timeout: Duration::from_secs(10),
            max_pending_frames: 64,
            max_pending_bytes: 1 << 20,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("allowed_origins", &self.allowed_origins)
            .field("token", &self.token.is_some())
            .field("hook", &self.hook.is_some())
            .field("timeout", &self.timeout)
            .field("max_pending_frames", &self.max_pending_frames)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .finish()
    }
}

impl AuthConfig {
    /// Whether connections wait for a decision (else they are let in read-write at once).
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.hook.is_none()
    }

    /// Whether a handshake's `Origin` header (if any) is allowed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (None, _) | (_, None) => true,
            (Some(allowed), Some(origin)) => {
                let origin = origin.trim_end_matches('/');
                allowed
                    .iter()
                    .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
            }
        }
    }
}

/// The token a frame starts with (a y-protocols auth message of wiredb's token sub-type), if
/// it does.
pub fn leading_token(frame: &Bytes) -> Option<String> {
    match decode_frame(frame).ok()?.into_iter().next()? {
        Message::Auth { kind, reason } if kind == AUTH_TOKEN => {
            String::from_utf8(reason.to_vec()).ok()
        }
        _ => None,
    }
}

/// Frames a connection sent before it was let in, bounded in count and bytes.
#[derive(Debug, Default)]
pub struct PendingFrames {
    pub frames: Vec<Bytes>,
    bytes: usize,
    count: usize,
}

impl PendingFrames {
    /// Counts a message (text and binary alike) and keeps it if binary; false past a limit.
    pub fn push(&mut self, frame: Option<Bytes>, len: usize, auth: &AuthConfig) -> bool {
        self.count += 1;
        self.bytes += len;
        if self.count > auth.max_pending_frames || self.bytes > auth.max_pending_bytes {
            self.frames.clear();
            return false;
        }
        if let Some(frame) = frame {
            self.frames.push(frame);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str) -> Request {
        Request {
            id: 1,
            path: "/r".into(),
            room: "r".into(),
            query: query.into(),
            headers: vec![("Origin".into(), "https://a.example".into())],
            peer: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn query_parameters_are_form_decoded() {
        let r = request("a=1&token=x%2By+z&token=second&flag");
        assert_eq!(r.query_param("token").as_deref(), Some("x+y z"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(r.header("origin"), Some("https://a.example"));
    }

    #[test]
    fn origins_are_checked_only_when_listed_and_sent() {
        let mut auth = AuthConfig::default();
        assert!(auth.origin_allowed(Some("https://evil.example")));
        auth.allowed_origins = Some(vec!["https://A.example/".into()]);
        assert!(auth.origin_allowed(Some("https://a.example")));
        assert!(!auth.origin_allowed(Some("https://evil.example")));
        assert!(!auth.origin_allowed(Some("null")));
        assert!(auth.origin_allowed(None));
    }

    #[test]
    fn a_token_message_is_found_only_at_the_start_of_a_frame() {
        let token = Message::Auth {
            kind: AUTH_TOKEN,
            reason: Bytes::from_static(b"t0k"),
        }
        .encode();
        let mut frame = token.to_vec();
        frame.extend_from_slice(&Message::SyncStep1(Bytes::from_static(&[0])).encode());
        assert_eq!(leading_token(&frame.into()).as_deref(), Some("t0k"));
        let mut late = Message::SyncStep1(Bytes::from_static(&[0]))
            .encode()
            .to_vec();
        late.extend_from_slice(&token);
        assert_eq!(leading_token(&late.into()), None);
        assert_eq!(leading_token(&Bytes::from_static(&[2, 0, 1, b'x'])), None);
        assert_eq!(leading_token(&Bytes::from_static(&[0xff])), None);
    }

    #[derive(Default)]
    struct Recorder {
        asked: std::sync::Mutex<Vec<u64>>,
        withdrawn: std::sync::Mutex<Vec<u64>>,
    }

    impl Authorizer for Recorder {
        fn authorize(&self, request: Arc<Request>) {
            self.asked.lock().unwrap().push(request.id);
        }
        fn withdraw(&self, id: u64) {
            self.withdrawn.lock().unwrap().push(id);
        }
    }

    #[test]
    fn a_request_not_decided_is_withdrawn_when_its_wait_ends() {
        let recorder = Recorder::default();
        let first = Arc::new(request(""));
        let second = Arc::new(Request {
            id: 2,
            ..request("")
        });
        drop(Asked::new(&recorder, &first));
        Asked::new(&recorder, &second).decided();
        assert_eq!(*recorder.asked.lock().unwrap(), vec![1, 2]);
        assert_eq!(*recorder.withdrawn.lock().unwrap(), vec![1]);
    }

    #[test]
    fn pending_frames_are_capped_in_count_and_bytes() {
        let auth = AuthConfig {
            max_pending_frames: 2,
            max_pending_bytes: 10,
            ..AuthConfig::default()
        };
        let mut pending = PendingFrames::default();
        assert!(pending.push(Some(Bytes::from_static(b"abc")), 3, &auth));
        assert!(pending.push(None, 3, &auth));
        assert!(!pending.push(Some(Bytes::from_static(b"a")), 1, &auth));
        assert!(pending.frames.is_empty());
        let mut big = PendingFrames::default();
        assert!(!big.push(Some(Bytes::from(vec![0; 11])), 11, &auth));
    }
}
