//! The WebSocket server: accepts connections, maps each URL path to a room, and pumps frames
//! between the socket and the room core. Entirely on tokio: no Python runs per message.
//!
//! Per connection: the request head (plain HTTP is answered here, see [`crate::http`]), the
//! WebSocket handshake (the `Origin` checked there), then the decision about who may join (a
//! signed token verified here, or the authorization hook asked, with what the connection sends
//! meanwhile capped), then the room, where the member is served by [`crate::session`] over the
//! socket's two halves: tungstenite reads, and the member's writer frames what it sends itself
//! (see [`crate::socket`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
#[cfg(test)]
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use crate::auth::{
    leading_token, Asked, AuthConfig, Decision, PendingFrames, Request as JoinRequest,
    CLOSE_POLICY, CLOSE_TRY_AGAIN, CLOSE_UNAUTHORIZED, TOKEN_PARAM,
};
use crate::clip::Clipped;
use crate::connections::{Connections, Registration};
use crate::http;
use crate::queue::{CloseReason, FrameQueue, QueueLimits};
use crate::registry::{Lease, Registry};
use crate::room::{Access, RoomCore, RoomLimits};
use crate::session::{
    self, Batch, PeerReader, PeerWriter, Received, SendFailed, Sent, SessionConfig,
};
use crate::socket::{self, Control, MemberSocket};
use crate::token::unix_now;
use crate::wake::Waker;

const READ_BUFFER_BYTES: usize = 1 << 10;
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Limits of a server, with defaults suited to collaborative editing.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest WebSocket message accepted; above it the connection is closed with 1009.
    pub max_message_bytes: usize,
    /// Each member's outgoing queue.
    pub queue: QueueLimits,
    /// Time a client has to complete the WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Time a join may wait for its room to open.
    pub open_timeout: Duration,
    /// Connections served at once; beyond it, new ones wait to be accepted.
    pub max_connections: usize,
    /// How often an idle connection is pinged.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// A batch of frames the peer does not take in this long closes it: a peer that stops
    /// reading (while it may still send) would otherwise hold its buffers and a slot forever.
    pub write_timeout: Duration,
    /// Limits of each room of the server.
    pub room: RoomLimits,
    /// Who may connect.
    pub auth: AuthConfig,
    /// Time a closing connection's peer has to answer the close frame; what it sends until
    /// then is still handled.
    pub close_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_bytes: 64 << 20,
            queue: QueueLimits::default(),
            handshake_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            write_timeout: Duration::from_secs(30),
            room: RoomLimits::default(),
            auth: AuthConfig::default(),
            close_grace: Duration::from_secs(2),
        }
    }
}

impl ServerConfig {
    fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes))
            // tungstenite zero-fills the whole read buffer before each read, so its size is
            // resident memory for every connection, idle or not: 1 KiB still takes in a few
            // dozen small updates per read, and a larger message grows it as needed.
            .read_buffer_size(READ_BUFFER_BYTES)
            // tungstenite writes only until a member joins (its writer frames the rest, see
            // `socket`), and always flushes what it wrote.
            .write_buffer_size(WRITE_BUFFER_BYTES)
            .max_write_buffer_size(self.max_message_bytes * 2)
    }
}

/// A running server. Dropping it without `shutdown` leaves the accept loop running.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
    connections: TaskTracker,
}

impl Server {
    /// Binds and starts accepting; the server is listening when this returns.
    pub async fn bind(
        addr: &str,
        registry: Arc<Registry>,
        config: ServerConfig,
    ) -> std::io::Result<Server> {
        Self::bind_with(addr, registry, config, Connections::new()).await
    }

    /// As `bind`, with the table of connections shared with the caller (who may then answer
    /// authorizations, close connections or make them read-only).
    pub async fn bind_with(
        addr: &str,
        registry: Arc<Registry>,
        config: ServerConfig,
        connections: Arc<Connections>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = TaskTracker::new();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            Shared {
                registry,
                config: Arc::new(config),
                connections,
            },
            shutdown_rx,
            tasks.clone(),
        ));
        tracing::info!(%local_addr, "wiredb server listening");
        Ok(Server {
            local_addr,
            shutdown,
            accept_loop,
            connections: tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection with 1001 (going away) after what was queued
    /// for it, handles what its peer sent until it answered (up to `close_grace`), and waits
    /// for them to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_loop.await;
        self.connections.close();
        self.connections.wait().await;
    }
}

/// What every connection of a server shares.
#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    config: Arc<ServerConfig>,
    connections: Arc<Connections>,
}

async fn accept_loop(
    listener: TcpListener,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    loop {
        // Taken before accepting: at the cap, new connections wait in the listen backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of fds and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let connection = handle_connection(stream, peer, shared.clone(), shutdown.clone());
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    shared.registry.fail_waiters();
}

/// The room id of a request path: without its leading `/`, percent-decoded.
pub fn room_id_from_path(path: &str) -> Option<String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|id| id.into_owned())
}

/// What the handshake's callback saw.
struct Handshake {
    path: String,
    room: String,
    query: String,
    headers: Vec<(String, String)>,
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    // A task is as large as its largest phase for as long as it lives: the opening phase is
    // boxed and freed once done, and the session is built in a block (and boxed, see
    // `serve_member`), so that no local moved into it keeps a slot of its own in this future.
    let served = {
        let Some(opened) = Box::pin(open_connection(stream, peer, &shared, &mut shutdown)).await
        else {
            return;
        };
        serve_member(opened, &shared.connections, &shared.config, &mut shutdown)
    };
    served.await;
}

/// A connection let into its room, and what must live as long as it is served.
struct Opened {
    ws: WebSocketStream<MemberSocket>,
    member: Member,
    _registration: Registration,
    lease: Lease,
}

/// The handshake, the admission (token, hook) and the room's opening; `None` once refused.
async fn open_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Opened> {
    let Shared {
        registry,
        config,
        connections,
    } = shared;
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    // One deadline for the request head and the WebSocket handshake together.
    let handshake_deadline = tokio::time::Instant::now() + config.handshake_timeout;
    let head = match tokio::time::timeout_at(handshake_deadline, http::read_head(&mut stream)).await
    {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None) | Err(_)) => return None,
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            return None;
        }
    };
    match http::classify(&head) {
        http::Head::Upgrade => {}
        other => {
            let _ = tokio::time::timeout_at(handshake_deadline, http::answer(&mut stream, &other))
                .await;
            return None;
        }
    }
    let stream = MemberSocket::new(stream, head);
    let mut seen = None;
    // The callback's signature, with its large error type, is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        let origin = request
            .headers()
            .get("origin")
            .map(|o| o.to_str().unwrap_or("\u{fffd}"));
        // Checked before anything else, and refused without a WebSocket: a browser page of
        // another site costs one HTTP answer.
        if !config.auth.origin_allowed(origin) {
            let mut error = ErrorResponse::new(Some("origin not allowed".into()));
            *error.status_mut() = StatusCode::FORBIDDEN;
            return Err(error);
        }
        let path = request.uri().path();
        let Some(room) = room_id_from_path(path) else {
            let mut error = ErrorResponse::new(Some("room id is not valid UTF-8".into()));
            *error.status_mut() = StatusCode::BAD_REQUEST;
            return Err(error);
        };
        seen = Some(Handshake {
            path: path.to_owned(),
            room,
            query: request.uri().query().unwrap_or_default().to_owned(),
            headers: request
                .headers()
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect(),
        });
        Ok(response)
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config.websocket()));
    let mut ws = match tokio::time::timeout_at(handshake_deadline, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            return None;
        }
    };
    let seen = seen?;
    let request = Arc::new(JoinRequest {
        id: connections.next_id(),
        path: seen.path,
        room: seen.room,
        query: seen.query,
        headers: seen.headers,
        peer,
    });
    let room_id = request.room.clone();
    let (_registration, decision) = connections.register(request.clone());

    let admitted = tokio::select! {
        admitted = admit(&mut ws, &request, &config.auth, decision) => admitted,
        _ = shutdown.changed() => Err(CloseReason::new(1001, "server shutting down")),
    };
    let (access, identity, pending) = match admitted {
        Ok(admitted) => admitted,
        Err(reason) => {
            tracing::debug!(room = %Clipped(&room_id), %peer, code = reason.code, reason = %Clipped(&reason.reason), "refused");
            close_socket(ws, &reason).await;
            return None;
        }
    };
    connections.admit(request.id, access, identity);

    let acquired = tokio::select! {
        acquired = tokio::time::timeout(config.open_timeout, registry.acquire(&room_id)) => acquired,
        _ = shutdown.changed() => {
            close_socket(ws, &CloseReason::new(1001, "server shutting down")).await;
            return None;
        }
    };
    let lease = match acquired {
        Ok(Ok(lease)) => lease,
        Ok(Err(error)) => {
            tracing::warn!(room = %Clipped(&room_id), %peer, %error, "join refused");
            close_socket(ws, &CloseReason::new(1011, "room could not be opened")).await;
            return None;
        }
        Err(_) => {
            tracing::warn!(room = %Clipped(&room_id), %peer, "room took too long to open");
            close_socket(ws, &CloseReason::new(1013, "room not ready")).await;
            return None;
        }
    };
    let core = lease.core().clone();
    let member = Member {
        id: request.id,
        peer,
        core,
        pending,
    };
    Some(Opened {
        ws,
        member,
        _registration,
        lease,
    })
}

/// How long a refused connection has to answer its close frame.
const REFUSED_GRACE: Duration = Duration::from_secs(1);

/// Sends a close frame, then reads (and drops) what the peer still sends until it answers,
/// for at most `REFUSED_GRACE`: a socket closed with unread data is reset, and a reset can
/// destroy the close frame before the peer reads it (it would see 1006, not our code).
async fn close_socket(mut ws: WebSocketStream<MemberSocket>, reason: &CloseReason) {
    let _ = tokio::time::timeout(REFUSED_GRACE, async {
        if ws.close(Some(close_frame(reason))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, WsMessage::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Decides whether a connection gets in: a token (in the query, or in a y-protocols auth
/// message opening its first frame) verified here, else the hook's answer. What the
/// connection sends meanwhile is kept, capped, and returned to be handled once in.
async fn admit(
    ws: &mut WebSocketStream<MemberSocket>,
    request: &Arc<JoinRequest>,
    auth: &AuthConfig,
    decision: tokio::sync::oneshot::Receiver<Decision>,
) -> Result<(Access, Option<String>, Vec<Bytes>), CloseReason> {
    if auth.is_open() {
        return Ok((Access::ReadWrite, None, Vec::new()));
    }
    let deadline = tokio::time::Instant::now() + auth.timeout;
    let mut pending = PendingFrames::default();
    if let Some(key) = &auth.token {
        let token = match request.query_param(TOKEN_PARAM) {
            Some(token) => Some(token),
            None => {
                // The first frame tells: a token message first, or no token at all.
                let first = tokio::time::timeout_at(deadline, next_pending(ws, &mut pending, auth))
                    .await
                    .map_err(|_| CloseReason::new(CLOSE_POLICY, "no token in time"))??;
                first.as_ref().and_then(leading_token)
            }
        };
        match token {
            Some(token) => {
                return match key.verify(&token, &request.room, unix_now()) {
                    Ok(claims) => {
                        let access = if claims.read_only {
                            Access::ReadOnly
                        } else {
                            Access::ReadWrite
                        };
                        Ok((access, claims.subject, pending.frames))
                    }
                    Err(error) => Err(CloseReason::new(CLOSE_UNAUTHORIZED, error.to_string())),
                };
            }
            None if auth.hook.is_none() => {
                return Err(CloseReason::new(CLOSE_UNAUTHORIZED, "token required"));
            }
            None => {}
        }
    }
    let Some(hook) = &auth.hook else {
        return Err(CloseReason::new(CLOSE_UNAUTHORIZED, "token required"));
    };
    // Dropped undecided (here, or with this future when the server stops), it tells the hook
    // to stop deciding a connection that no longer waits.
    let asked = Asked::new(hook.as_ref(), request);
    let mut decision = decision;
    loop {
        tokio::select! {
            decided = &mut decision => {
                return match decided {
                    Ok(Decision::Allow { access, identity }) => {
                        asked.decided();
                        Ok((access, identity, pending.frames))
                    }
                    Ok(Decision::Deny(reason)) => {
                        asked.decided();
                        Err(reason)
                    }
                    Err(_) => Err(CloseReason::new(1011, "authorization failed")),
                };
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(CloseReason::new(CLOSE_TRY_AGAIN, "authorization timed out"));
            }
            next = next_pending(ws, &mut pending, auth) => { next?; }
        }
    }
}

/// Reads one message of a connection not let in yet into `pending` (the binary frame it was,
/// if it was one). Err when the connection ended or sent too much.
async fn next_pending(
    ws: &mut WebSocketStream<MemberSocket>,
    pending: &mut PendingFrames,
    auth: &AuthConfig,
) -> Result<Option<Bytes>, CloseReason> {
    let next = ws.next().await;
    // Held in `pending` (capped by the auth config) or dropped: not counted as being read.
    ws.get_mut().settle();
    let (frame, len) = match next {
        Some(Ok(WsMessage::Binary(frame))) => {
            let len = frame.len();
            (Some(frame), len)
        }
        Some(Ok(WsMessage::Text(text))) => (None, text.len()),
        // Pings are answered by tungstenite; they count for nothing here.
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => return Ok(None),
        Some(Ok(WsMessage::Close(frame))) => return Err(answer_to_close(frame.as_ref())),
        None => return Err(CloseReason::normal()),
        Some(Err(error)) => return Err(read_error_reason(&error, ws.get_ref())),
    };
    if !pending.push(frame.clone(), len, auth) {
        return Err(CloseReason::new(
            CLOSE_POLICY,
            "too much sent before authorization",
        ));
    }
    Ok(frame)
}

/// A connection let into its room.
struct Member {
    id: u64,
    peer: SocketAddr,
    core: Arc<RoomCore>,
    /// What it sent before it was let in, handled first.
    pending: Vec<Bytes>,
}

/// The member's session over its socket. Not an `async fn`: its arguments would live in its
/// future beside the session's own (see `handle_connection`).
fn serve_member<'a>(
    opened: Opened,
    connections: &Connections,
    config: &ServerConfig,
    shutdown: &'a mut watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'a {
    let Opened {
        mut ws,
        member,
        _registration: registration,
        lease,
    } = opened;
    let Member {
        id,
        peer,
        core,
        pending,
    } = member;
    let notify = Arc::new(Notify::new());
    let queue = Arc::new(FrameQueue::new(config.queue, Waker::Tokio(notify.clone())));
    // Taken once, here: nothing else takes it.
    let Some((out, control)) = ws.get_mut().take_writer(notify.clone()) else {
        return Either::Left(std::future::ready(()));
    };
    let writer = WsWriter {
        out,
        control,
        write_timeout: config.write_timeout,
    };
    let member = match session::with_room(&core, || connections.join(id, &core, queue.clone())) {
        Ok(member) => member,
        Err(reason) => {
            // Closed while its room opened: the close frame goes out through the writer.
            queue.close(reason);
            let written = session::write_loop(writer, queue, core, notify);
            return Either::Right(Either::Left(async move {
                Box::pin(written).await;
                drop((registration, lease, ws));
            }));
        }
    };
    let session = SessionConfig {
        keepalive: Some((config.ping_interval, config.idle_timeout)),
        close_grace: config.close_grace,
        // The writer's own write timeout bounds each of its sends.
        drain_timeout: Duration::MAX,
    };
    let stop = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    let room = core.clone();
    let served = session::serve(
        core,
        member,
        queue,
        notify,
        WsReader(ws),
        writer,
        pending,
        session,
        stop,
    );
    // Boxed, and allocated only now: the opening phase's box has just been freed, and the
    // session's takes its place. Inside the connection's task (allocated before that phase)
    // the same bytes cost w4 3 KiB more per idle connection: 12.5-13.0 KiB against 9.6.
    let served = Box::pin(served);
    Either::Right(Either::Right(async move {
        let reason = served.await;
        tracing::debug!(room = %Clipped(room.id()), %peer, code = reason.code, "connection closed");
        // The room is left (and the connection forgotten) only once the session is over.
        drop((registration, lease));
    }))
}

/// The reading side of a member's WebSocket.
struct WsReader(WebSocketStream<MemberSocket>);

impl PeerReader for WsReader {
    async fn next(&mut self) -> Received {
        match self.0.next().await {
            Some(Ok(WsMessage::Binary(frame))) => Received::Frame(frame),
            Some(Ok(WsMessage::Close(frame))) => Received::Ended(answer_to_close(frame.as_ref())),
            None => Received::Ended(CloseReason::normal()),
            // Text frames are not part of the protocol; pings are answered by tungstenite.
            Some(Ok(_)) => Received::Other,
            Some(Err(error)) => {
                tracing::debug!(%error, "reading a WebSocket failed");
                Received::Ended(read_error_reason(&error, self.0.get_ref()))
            }
        }
    }

    fn handled(&mut self) {
        self.0.get_mut().settle();
    }
}

/// The answer to a peer's close frame: its code echoed (RFC 6455 5.5.1), 1002 for a code no
/// endpoint may send.
fn answer_to_close(frame: Option<&CloseFrame>) -> CloseReason {
    match frame {
        None => CloseReason::normal(),
        Some(frame) if frame.code.is_allowed() => CloseReason::new(frame.code.into(), ""),
        Some(_) => CloseReason::new(1002, "invalid close code"),
    }
}

/// How a connection whose read failed is closed: RFC 6455's codes for what the peer got
/// wrong, 1013 when the server's memory is full, 1006 (no close frame) when it is gone.
fn read_error_reason(error: &WsError, socket: &MemberSocket) -> CloseReason {
    match error {
        WsError::Capacity(_) => CloseReason::new(1009, "message too big"),
        WsError::Protocol(_) => CloseReason::new(1002, "protocol error"),
        WsError::Utf8(_) => CloseReason::new(1007, "invalid UTF-8"),
        WsError::Io(_) if socket.refused() => CloseReason::new(1013, "server memory limit reached"),
        _ => CloseReason::new(1006, ""),
    }
}

fn close_frame(reason: &CloseReason) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(reason.code),
        reason: reason.reason.clone().into(),
    }
}

/// Frames at least this large are written from the room's buffer, which every member shares,
/// instead of being copied into the member's batch: one broadcast is held once, not once per
/// member (a 30 MB message to 100 members peaked at 2.3 GB when each writer copied it).
const SHARED_FRAME_BYTES: usize = 16 << 10;

/// A batch is sent once it holds this much: what a writer copies is bounded too.
const MAX_BATCH_BYTES: usize = 256 << 10;

/// The writing side of a member's WebSocket: the socket's write half, and what tungstenite
/// still writes (pongs, the answer to the peer's close).
struct WsWriter {
    out: OwnedWriteHalf,
    control: Arc<Control>,
    write_timeout: Duration,
}

impl PeerWriter for WsWriter {
    async fn send(&mut self, batch: Batch<'_>) -> Result<Sent, SendFailed> {
        // tungstenite's answers first (they answer what the peer sent before), then the batch.
        let (mut bytes, answered_close) = self.control.take();
        if answered_close {
            // The peer closed and tungstenite answered: nothing may follow a close frame.
            send(&mut self.out, &bytes, self.write_timeout).await?;
            return Ok(Sent::Closed);
        }
        if bytes.is_empty() && batch.frames.is_empty() && !batch.ping && batch.close.is_none() {
            return Ok(Sent::Nothing);
        }
        if !batch.frames.is_empty() {
            // Sized once: a header is at most 10 bytes (and a ping 2, a close frame 127).
            let copied: usize = batch
                .frames
                .iter()
                .map(|f| {
                    10 + if f.len() < SHARED_FRAME_BYTES {
                        f.len()
                    } else {
                        0
                    }
                })
                .sum();
            bytes.reserve(copied.min(MAX_BATCH_BYTES) + 2 + 127);
        }
        if batch.ping {
            socket::ping_frame(&mut bytes);
        }
        send_frames(&mut self.out, &mut bytes, batch.frames, self.write_timeout).await?;
        if let Some(reason) = batch.close {
            socket::close_frame(&mut bytes, reason);
        }
        if !bytes.is_empty() {
            send(&mut self.out, &bytes, self.write_timeout).await?;
        }
        Ok(if batch.close.is_some() {
            Sent::Closed
        } else {
            Sent::Some
        })
    }

    async fn finish(self) {
        // The socket closes when the connection ends, after the peer answered the close frame
        // (dropping the half would send a FIN at once).
        self.out.forget();
    }
}

async fn send(out: &mut OwnedWriteHalf, bytes: &[u8], timeout: Duration) -> Result<(), SendFailed> {
    // Boxed: the timer is only alive while a batch is sent, and an idle connection's writer
    // would otherwise carry it.
    match Box::pin(tokio::time::timeout(timeout, out.write_all(bytes))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendFailed::Gone),
        Err(_) => Err(SendFailed::TimedOut),
    }
}

/// Sends `frames` after `batch` (tungstenite's answers, a ping): small frames copied into the
/// batch, large ones from their shared buffers.
async fn send_frames(
    out: &mut OwnedWriteHalf,
    batch: &mut Vec<u8>,
    frames: &[Bytes],
    timeout: Duration,
) -> Result<(), SendFailed> {
    for frame in frames {
        if frame.len() >= SHARED_FRAME_BYTES {
            socket::write_head(batch, socket::OPCODE_BINARY, frame.len(), None);
            send(out, batch, timeout).await?;
            batch.clear();
            send(out, frame, timeout).await?;
            continue;
        }
        socket::binary_frame(batch, frame);
        if batch.len() >= MAX_BATCH_BYTES {
            send(out, batch, timeout).await?;
            batch.clear();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Authorizer, CLOSE_FORBIDDEN};
    use crate::protocol::{decode_frame, Message, AUTH_TOKEN};
    use crate::token::{Claims, TokenKey};
    use futures_util::SinkExt;
    use tokio::sync::mpsc;
    use tokio_tungstenite::connect_async;

    type Client = WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    /// Passes on the requests it is asked about and the ids of those withdrawn.
    struct Hook(
        mpsc::UnboundedSender<Arc<JoinRequest>>,
        mpsc::UnboundedSender<u64>,
    );

    impl Authorizer for Hook {
        fn authorize(&self, request: Arc<JoinRequest>) {
            let _ = self.0.send(request);
        }
        fn withdraw(&self, id: u64) {
            let _ = self.1.send(id);
        }
    }

    async fn start(auth: AuthConfig) -> (Server, Arc<Connections>, Arc<Registry>) {
        let registry = Registry::new(None, RoomLimits::default());
        let connections = Connections::new();
        let config = ServerConfig {
            auth,
            ..ServerConfig::default()
        };
        let server =
            Server::bind_with("127.0.0.1:0", registry.clone(), config, connections.clone())
                .await
                .unwrap();
        (server, connections, registry)
    }

    async fn connect(server: &Server, path: &str) -> Client {
        let url = format!("ws://{}{path}", server.local_addr());
        connect_async(url).await.unwrap().0
    }

    /// Reads until the connection closes; returns the close code and the messages seen.
    async fn until_closed(client: &mut Client) -> (Option<u16>, Vec<Message>) {
        let mut seen = Vec::new();
        while let Some(message) = client.next().await {
            match message {
                Ok(WsMessage::Binary(frame)) => seen.extend(decode_frame(&frame).unwrap()),
                Ok(WsMessage::Close(frame)) => return (frame.map(|f| f.code.into()), seen),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (None, seen)
    }

    /// Asks for the document, as every y-websocket client does first, and reads until the
    /// answer: the room sends a peer live updates once it has answered.
    async fn sync(client: &mut Client) {
        let step1 = Message::SyncStep1(Bytes::from_static(&[0])).encode();
        client.send(WsMessage::Binary(step1)).await.unwrap();
        while !first_messages(client)
            .await
            .iter()
            .any(|m| matches!(m, Message::SyncStep2(_)))
        {}
    }

    async fn first_messages(client: &mut Client) -> Vec<Message> {
        match client.next().await {
            Some(Ok(WsMessage::Binary(frame))) => decode_frame(&frame).unwrap(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn edit(text: &str) -> Bytes {
        let doc = yrs::Doc::new();
        let t = doc.get_or_insert_text("t");
        let mut txn = yrs::Transact::transact_mut(&doc);
        yrs::Text::insert(&t, &mut txn, 0, text);
        yrs::TransactionMut::encode_update_v1(&txn).into()
    }

    const SECRET: &[u8] = b"a secret of at least sixteen bytes";

    fn token(room: &str, read_only: bool, expires_at: u64) -> String {
        TokenKey::new(SECRET).unwrap().mint(&Claims {
            room: room.into(),
            read_only,
            expires_at,
            subject: Some("bob".into()),
        })
    }

    #[tokio::test]
    async fn tokens_in_the_query_or_a_first_message_let_in_others_are_closed_with_4401() {
        let auth = AuthConfig {
            token: Some(TokenKey::new(SECRET).unwrap()),
            ..AuthConfig::default()
        };
        let (server, connections, registry) = start(auth).await;
        let later = unix_now() + 60;

        let mut reader = connect(&server, &format!("/r?token={}", token("r", true, later))).await;
        let joined = first_messages(&mut reader).await;
        assert!(matches!(joined[0], Message::SyncStep1(_)));
        sync(&mut reader).await;
        let info = &connections.in_room("r")[0];
        assert_eq!(
            (info.access, info.identity.as_deref()),
            (Access::ReadOnly, Some("bob"))
        );

        let mut writer = connect(&server, "/r").await;
        let mut frame = Message::Auth {
            kind: AUTH_TOKEN,
            reason: token("r", false, later).into(),
        }
        .encode()
        .to_vec();
        frame.extend_from_slice(&Message::Update(edit("hello")).encode());
        writer.send(WsMessage::Binary(frame.into())).await.unwrap();
        // The update that came with the token is applied once the connection is in.
        let mut got = Vec::new();
        while !got.iter().any(|m| matches!(m, Message::Update(_))) {
            got.extend(first_messages(&mut reader).await);
        }
        assert!(registry.open_rooms() == vec!["r".to_string()]);

        for path in [
            format!("/r?token={}", token("r", false, unix_now() - 1)),
            format!("/r?token={}", token("other", false, later)),
            format!("/r?token={}x", token("r", false, later)),
        ] {
            let mut refused = connect(&server, &path).await;
            assert_eq!(until_closed(&mut refused).await.0, Some(CLOSE_UNAUTHORIZED));
        }
        // No token at all: the first frame is not a token message.
        let mut anonymous = connect(&server, "/r").await;
        anonymous
            .send(WsMessage::Binary(
                Message::SyncStep1(Bytes::from_static(&[0])).encode(),
            ))
            .await
            .unwrap();
        let (code, seen) = until_closed(&mut anonymous).await;
        assert_eq!(code, Some(CLOSE_UNAUTHORIZED));
        assert!(seen.is_empty(), "a refused connection is sent nothing");
        drop((reader, writer));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn the_hook_decides_and_what_is_sent_meanwhile_is_capped() {
        let (tx, mut requests) = mpsc::unbounded_channel();
        let (withdrawals, mut withdrawn) = mpsc::unbounded_channel();
        let auth = AuthConfig {
            hook: Some(Arc::new(Hook(tx, withdrawals))),
            timeout: Duration::from_millis(500),
            max_pending_frames: 4,
            ..AuthConfig::default()
        };
        let (server, connections, registry) = start(auth).await;

        let mut denied = connect(&server, "/r?user=eve").await;
        let request = requests.recv().await.unwrap();
        assert_eq!(request.query_param("user").as_deref(), Some("eve"));
        assert_eq!(request.room, "r");
        assert!(connections.decide(
            request.id,
            Decision::Deny(CloseReason::new(CLOSE_FORBIDDEN, "no"))
        ));
        assert_eq!(until_closed(&mut denied).await.0, Some(CLOSE_FORBIDDEN));
        assert!(
            registry.open_rooms().is_empty(),
            "no room for a denied connection"
        );

        // A flood while the hook thinks: closed at the cap, never let in, and the hook is
        // told it may stop.
        let mut flood = connect(&server, "/r").await;
        let request = requests.recv().await.unwrap();
        for _ in 0..10 {
            if flood
                .send(WsMessage::Binary(Message::Update(edit("x")).encode()))
                .await
                .is_err()
            {
                break;
            }
        }
        assert_eq!(until_closed(&mut flood).await.0, Some(CLOSE_POLICY));
        assert_eq!(withdrawn.recv().await, Some(request.id));
        assert!(!connections.decide(
            request.id,
            Decision::Allow {
                access: Access::ReadWrite,
                identity: None
            }
        ));

        // A hook that never answers: closed at the timeout, and withdrawn.
        let mut ignored = connect(&server, "/r").await;
        let request = requests.recv().await.unwrap();
        assert_eq!(until_closed(&mut ignored).await.0, Some(CLOSE_TRY_AGAIN));
        assert_eq!(withdrawn.recv().await, Some(request.id));
        assert!(registry.open_rooms().is_empty());

        // A client that leaves while the hook thinks: withdrawn at once.
        let mut gone = connect(&server, "/r").await;
        let request = requests.recv().await.unwrap();
        gone.close(None).await.unwrap();
        assert_eq!(withdrawn.recv().await, Some(request.id));

        // Gone from the table once its socket is (its close answered, or a grace passed).
        drop((denied, flood, ignored, gone));
        tokio::time::timeout(Duration::from_secs(5), async {
            while !connections.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("every refused connection is forgotten");

        // The server stopping withdraws what waits; the decided one never was.
        let _waiting = connect(&server, "/r").await;
        let request = requests.recv().await.unwrap();
        server.shutdown().await;
        assert_eq!(withdrawn.recv().await, Some(request.id));
        assert!(withdrawn.try_recv().is_err());
    }

    #[tokio::test]
    async fn origins_not_listed_are_refused_during_the_handshake() {
        let auth = AuthConfig {
            allowed_origins: Some(vec!["https://good.example".into()]),
            ..AuthConfig::default()
        };
        let (server, _, _) = start(auth).await;
        let url = format!("ws://{}/r", server.local_addr());
        let mut request = url.clone().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", "https://evil.example".parse().unwrap());
        match connect_async(request).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
            other => panic!("expected a 403, got {other:?}"),
        }
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", "https://good.example".parse().unwrap());
        assert!(connect_async(request).await.is_ok());
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_handles_what_a_peer_sent_before_the_close_frame() {
        let (server, _, registry) = start(AuthConfig::default()).await;
        let mut client = connect(&server, "/r").await;
        first_messages(&mut client).await;
        let core = registry_core(&registry, "r").await;
        // Sent, then the server stops before it could have read them.
        for i in 0..50 {
            client
                .send(WsMessage::Binary(
                    Message::Update(edit(&i.to_string())).encode(),
                ))
                .await
                .unwrap();
        }
        let stopping = tokio::spawn(server.shutdown());
        assert_eq!(until_closed(&mut client).await.0, Some(1001));
        drop(client);
        stopping.await.unwrap();
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        crate::guard::apply_update(&doc, &core.encode_state_as_update(), &Default::default())
            .unwrap();
        assert_eq!(
            yrs::GetString::get_string(&text, &yrs::Transact::transact(&doc)).len(),
            90
        );
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_closed_and_the_others_go_on() {
        let registry = Registry::new(None, RoomLimits::default());
        let config = ServerConfig {
            write_timeout: Duration::from_millis(300),
            close_grace: Duration::from_millis(100),
            ..ServerConfig::default()
        };
        let server = Server::bind_with("127.0.0.1:0", registry.clone(), config, Connections::new())
            .await
            .unwrap();
        // Never read from after its first messages.
        let mut stalled = connect(&server, "/r").await;
        first_messages(&mut stalled).await;
        sync(&mut stalled).await;
        let mut writer = connect(&server, "/r").await;
        first_messages(&mut writer).await;
        let core = registry_core(&registry, "r").await;
        assert_eq!(core.peer_count(), 2);
        // Updates until the stalled peer's socket buffers are full and the server gives up on
        // it: a few dozen fill them; 400 (100 MiB) would mean it never did.
        let chunk = "x".repeat(256 << 10);
        let mut sent = 0;
        while core.peer_count() == 2 {
            assert!(sent < 400, "the stalled peer was never closed");
            let frame = Message::Update(edit(&chunk)).encode();
            writer.send(WsMessage::Binary(frame)).await.unwrap();
            sent += 1;
        }
        // The writer is still served, and a new joiner syncs.
        writer
            .send(WsMessage::Binary(Message::Update(edit("after")).encode()))
            .await
            .unwrap();
        let mut joiner = connect(&server, "/r").await;
        assert!(matches!(
            first_messages(&mut joiner).await.first(),
            Some(Message::SyncStep1(_))
        ));
        drop(stalled);
        server.shutdown().await;
    }

    async fn registry_core(registry: &Arc<Registry>, id: &str) -> Arc<RoomCore> {
        registry.acquire(id).await.unwrap().core().clone()
    }

    #[test]
    fn room_ids_are_the_percent_decoded_path() {
        assert_eq!(room_id_from_path("/my_id").as_deref(), Some("my_id"));
        assert_eq!(room_id_from_path("/a%20b/c").as_deref(), Some("a b/c"));
        assert_eq!(room_id_from_path("/").as_deref(), Some(""));
        assert_eq!(room_id_from_path("/%ff"), None);
    }
}
