//! The WebSocket server: accepts connections, maps each URL path to a room, and pumps frames
//! between the socket and the room core. Entirely on tokio: no Python runs per message.
//!
//! Per connection: a reader (this task) hands frames to the room; a writer task drains the
//! member's bounded queue to the socket. A member whose queue overflows is resynchronised from
//! the room's full state; a message that fails to decode or apply closes only its sender.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use percent_encoding::percent_decode_str;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::TaskTracker;

use crate::queue::{CloseReason, FrameQueue, QueueLimits};
use crate::registry::Registry;
use crate::room::{JoinKind, RoomCore, RoomError, RoomLimits};
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
    /// Limits of each room of the server.
    pub room: RoomLimits,
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
            room: RoomLimits::default(),
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
            // Frames are buffered until the write loop flushes after its batch: one send(2)
            // per batch instead of one per frame (the write loop always flushes, so nothing
            // waits for the buffer to fill).
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
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let connections = TaskTracker::new();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            registry,
            Arc::new(config),
            shutdown_rx,
            connections.clone(),
        ));
        tracing::info!(%local_addr, "wiredb server listening");
        Ok(Server {
            local_addr,
            shutdown,
            accept_loop,
            connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection with 1001 (going away) after what was queued
    /// for it, and waits for them to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_loop.await;
        self.connections.close();
        self.connections.wait().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    registry: Arc<Registry>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
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
        let connection = handle_connection(
            stream,
            peer,
            registry.clone(),
            config.clone(),
            shutdown.clone(),
        );
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    registry.fail_waiters();
}

/// The room id of a request path: without its leading `/`, percent-decoded.
pub fn room_id_from_path(path: &str) -> Option<String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|id| id.into_owned())
}

async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    registry: Arc<Registry>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut room_id = None;
    // The callback's signature, with its large error type, is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        room_id = room_id_from_path(request.uri().path());
        if room_id.is_some() {
            Ok(response)
        } else {
            let mut error = ErrorResponse::new(Some("room id is not valid UTF-8".into()));
            *error.status_mut() = StatusCode::BAD_REQUEST;
            Err(error)
        }
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config.websocket()));
    let mut ws = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            return;
        }
    };
    let Some(room_id) = room_id else { return };

    let acquired = tokio::select! {
        acquired = tokio::time::timeout(config.open_timeout, registry.acquire(&room_id)) => acquired,
        _ = shutdown.changed() => {
            let _ = ws.close(Some(close_frame(&CloseReason::new(1001, "server shutting down")))).await;
            return;
        }
    };
    let lease = match acquired {
        Ok(Ok(lease)) => lease,
        Ok(Err(error)) => {
            tracing::warn!(room = %room_id, %peer, %error, "join refused");
            let _ = ws
                .close(Some(close_frame(&CloseReason::new(
                    1011,
                    "room could not be opened",
                ))))
                .await;
            return;
        }
        Err(_) => {
            tracing::warn!(room = %room_id, %peer, "room took too long to open");
            let _ = ws
                .close(Some(close_frame(&CloseReason::new(1013, "room not ready"))))
                .await;
            return;
        }
    };
    let core = lease.core().clone();
    serve_member(ws, peer, core, &config, &mut shutdown).await;
    drop(lease);
}

async fn serve_member(
    ws: WebSocketStream<TcpStream>,
    peer: SocketAddr,
    core: Arc<RoomCore>,
    config: &ServerConfig,
    shutdown: &mut watch::Receiver<bool>,
) {
    let notify = Arc::new(Notify::new());
    let queue = Arc::new(FrameQueue::new(config.queue, Waker::Tokio(notify.clone())));
    let member = core.join(queue.clone(), JoinKind::Peer);
    let (sink, mut stream) = ws.split();
    let writer = tokio::spawn(write_loop(sink, queue.clone(), core.clone(), notify));

    let mut ping = tokio::time::interval(config.ping_interval);
    ping.reset();
    let mut last_seen = tokio::time::Instant::now();
    let reason = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = shutdown.changed() => break CloseReason::new(1001, "server shutting down"),
            _ = ping.tick() => {
                if last_seen.elapsed() >= config.idle_timeout {
                    tracing::debug!(room = %core.id(), %peer, "idle: closing");
                    break CloseReason::new(1001, "idle timeout");
                }
                queue.push_ping();
                continue;
            }
        };
        last_seen = tokio::time::Instant::now();
        match next {
            Some(Ok(WsMessage::Binary(frame))) => {
                if let Err(error) = core.handle_frame(member, &frame) {
                    tracing::warn!(room = %core.id(), %peer, %error, "closing connection");
                    break close_reason_for(&error);
                }
            }
            Some(Ok(WsMessage::Close(_))) | None => break CloseReason::normal(),
            // Text frames are not part of the protocol; pings are answered by tungstenite.
            Some(Ok(_)) => {}
            Some(Err(WsError::Capacity(error))) => {
                tracing::warn!(room = %core.id(), %peer, %error, "closing connection");
                break CloseReason::new(1009, "message too big");
            }
            Some(Err(error)) => {
                tracing::debug!(room = %core.id(), %peer, %error, "connection lost");
                break CloseReason::new(1006, "");
            }
        }
    };
    core.leave(member);
    queue.close(reason);
    let _ = writer.await;
}

fn close_reason_for(error: &RoomError) -> CloseReason {
    match error {
        RoomError::Decode(_) => CloseReason::new(1002, "malformed message"),
        RoomError::Quota { .. } => CloseReason::new(1009, "document quota exceeded"),
        _ => CloseReason::new(1007, "invalid update"),
    }
}

fn close_frame(reason: &CloseReason) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(reason.code),
        reason: reason.reason.clone().into(),
    }
}

async fn write_loop<S>(
    mut sink: S,
    queue: Arc<FrameQueue>,
    core: Arc<RoomCore>,
    notify: Arc<Notify>,
) where
    S: futures_util::Sink<WsMessage, Error = WsError> + Unpin,
{
    loop {
        let drained = queue.drain();
        let frames = if drained.overflowed {
            core.resync_frames()
        } else {
            drained.frames
        };
        if drained.ping
            && sink
                .feed(WsMessage::Ping(Default::default()))
                .await
                .is_err()
        {
            queue.close(CloseReason::new(1006, ""));
            return;
        }
        let sent_any = !frames.is_empty() || drained.ping;
        for frame in frames {
            if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                queue.close(CloseReason::new(1006, ""));
                return;
            }
        }
        if sent_any && sink.flush().await.is_err() {
            queue.close(CloseReason::new(1006, ""));
            return;
        }
        if let Some(reason) = drained.closed {
            // 1006 means the socket is gone: there is nobody to send a close frame to.
            if reason.code != 1006 {
                let _ = sink
                    .send(WsMessage::Close(Some(close_frame(&reason))))
                    .await;
            }
            let _ = sink.close().await;
            return;
        }
        if !sent_any {
            notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_the_percent_decoded_path() {
        assert_eq!(room_id_from_path("/my_id").as_deref(), Some("my_id"));
        assert_eq!(room_id_from_path("/a%20b/c").as_deref(), Some("a b/c"));
        assert_eq!(room_id_from_path("/").as_deref(), Some(""));
        assert_eq!(room_id_from_path("/%ff"), None);
    }
}
