//! The WebSocket client (ws and wss), the counterpart of the server: a socket pumped by tokio
//! between an outbound queue (filled without waiting by the local document) and an inbound
//! queue (drained by the local document, which applies everything pending at once).
//!
//! Local updates waiting to be sent are merged into one message when more than one is pending,
//! so a burst of edits costs one frame and the outbound queue stays small; an awareness state
//! waiting to be sent is replaced by the same client's newer one.
//!
//! A connection can die without a word (a NAT mapping expired, a network gone: no FIN, no RST):
//! the keepalive pings the server once nothing was heard from it for a while, and declares the
//! connection lost (1006) once nothing at all, a pong included, was heard for longer.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::UrlError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::awareness;
use crate::guard::{self, GuardLimits};
use crate::protocol::Message;
use crate::queue::{CloseReason, FrameQueue};

/// Merge local updates in place once this many are waiting.
const MERGE_THRESHOLD: usize = 64;

#[derive(Default)]
struct OutState {
    frames: Vec<Bytes>,
    /// For each client whose awareness state waits in `frames` (alone in its message): its
    /// frame's index and clock, so that a newer state replaces it.
    awareness: HashMap<u64, (usize, u64)>,
    updates: Vec<Bytes>,
    closing: Option<CloseReason>,
    /// Taken by the writer and not yet flushed to the socket.
    in_flight: bool,
    /// Someone waits for everything to be written: wake the inbound queue's consumer then.
    wake_when_sent: bool,
}

/// What the local side sends. Never blocks and never drops anything that matters: control
/// frames are few, pending updates are merged, and a client's pending awareness state is
/// replaced by its newer one.
pub struct Outbound {
    state: Mutex<OutState>,
    notify: Notify,
    limits: GuardLimits,
}

impl Outbound {
    pub fn new(limits: GuardLimits) -> Self {
        Outbound {
            state: Mutex::new(OutState::default()),
            notify: Notify::new(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an encoded frame (sync step 1 or 2, awareness). Returns false once closing.
    pub fn send_frame(&self, frame: Bytes) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        state.frames.push(frame);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Queues an awareness update (the payload of an awareness message). Only a client's latest
    /// state matters: one that replaces a state of the same client still waiting to be sent
    /// takes its place, so a client that changes its state faster than the connection sends
    /// queues one message, not one per change. Returns false once closing.
    pub fn send_awareness(&self, payload: Bytes) -> bool {
        // Coalesced only when it is about one client (a local client's own state always is).
        let single = match awareness::decode_update(&payload).as_deref() {
            Ok([entry]) => Some((entry.client, entry.clock)),
            _ => None,
        };
        let frame = Message::Awareness(payload).encode();
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        if let Some((client, clock)) = single {
            if let Some(&(index, queued)) = state.awareness.get(&client) {
                // A peer takes a state at a newer clock, or at the same clock if it is the
                // removal (null) of the state before; an older clock it ignores.
                if clock >= queued {
                    state.frames[index] = frame;
                    state.awareness.insert(client, (index, clock));
                }
                return true;
            }
            let index = state.frames.len();
            state.awareness.insert(client, (index, clock));
        }
        state.frames.push(frame);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Queues a local v1 update. Returns false once closing.
    pub fn send_update(&self, update: Bytes) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        state.updates.push(update);
        if state.updates.len() >= MERGE_THRESHOLD {
            if let Ok(merged) = guard::merge_updates(&state.updates, &self.limits) {
                state.updates = vec![merged.into()];
            }
        }
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Sends what is queued, then closes the connection with `reason`.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.closing.is_none() {
            state.closing = Some(reason);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Waits until something is queued or the link is closing, then takes it all (as `take`).
    pub async fn next(&self) -> (Vec<Bytes>, Option<CloseReason>) {
        loop {
            let notified = self.notify.notified();
            let (frames, closing) = self.take();
            if !frames.is_empty() || closing.is_some() {
                return (frames, closing);
            }
            notified.await;
        }
    }

    /// Whether something queued was not yet written to the socket (it never will be once the
    /// connection is lost).
    pub fn unsent(&self) -> bool {
        let state = self.lock();
        state.in_flight || !state.frames.is_empty() || !state.updates.is_empty()
    }

    /// Asks for the local side to be woken (through its inbound queue) once everything queued
    /// now and later is written. Returns false (and asks nothing) if that is already so.
    pub fn wake_when_sent(&self) -> bool {
        let mut state = self.lock();
        let unsent = state.in_flight || !state.frames.is_empty() || !state.updates.is_empty();
        state.wake_when_sent = unsent;
        unsent
    }

    /// What `take` handed out is written and flushed. Returns whether to wake the local side.
    pub fn flushed(&self) -> bool {
        let mut state = self.lock();
        state.in_flight = false;
        let idle = state.frames.is_empty() && state.updates.is_empty();
        idle && std::mem::take(&mut state.wake_when_sent)
    }

    /// Everything to send now, updates merged into one frame, and whether to close after it.
    fn take(&self) -> (Vec<Bytes>, Option<CloseReason>) {
        let mut state = self.lock();
        state.in_flight = !state.frames.is_empty() || !state.updates.is_empty();
        let mut frames = std::mem::take(&mut state.frames);
        state.awareness.clear();
        let updates = std::mem::take(&mut state.updates);
        match updates.len() {
            0 => {}
            1 => frames.extend(updates.into_iter().map(|u| Message::Update(u).encode())),
            _ => match guard::merge_updates(&updates, &self.limits) {
                Ok(merged) => frames.push(Message::Update(merged.into()).encode()),
                // Our own updates should always merge; if not, send them one by one.
                Err(_) => frames.extend(updates.into_iter().map(|u| Message::Update(u).encode())),
            },
        }
        (frames, state.closing.clone())
    }
}

/// When a client pings its server, and when it gives up on a silent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Ping the server once nothing was heard from it for this long (None: never ping).
    pub ping_interval: Option<Duration>,
    /// Close the connection as lost (1006) once nothing at all, a pong included, was heard
    /// from the server for this long; also the time a connection may take to open (None:
    /// wait forever).
    pub idle_timeout: Option<Duration>,
}

impl Keepalive {
    /// Pings after 20 s of silence: within the idle timeouts of NATs and load balancers, and
    /// of servers that drop quiet clients (wiredb's: 90 s).
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
    /// Lost after 60 s of silence: two pings went unanswered, and a server that pings every
    /// 30 s (wiredb's, y-websocket's) keeps the connection alive with its pings alone, even
    /// while ours wait behind a large message on the way out.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            ping_interval: Some(Self::DEFAULT_PING_INTERVAL),
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// A client connection as seen by the local document.
pub struct WsClient {
    pub outbound: Arc<Outbound>,
    pub inbound: Arc<FrameQueue>,
}

/// Connects in the background on the current tokio runtime; failures and the end of the
/// connection are reported by closing `inbound` (code 1006 with the error when it never
/// connected or was lost).
pub fn connect(
    url: &str,
    headers: Vec<(String, String)>,
    inbound: Arc<FrameQueue>,
    max_message_bytes: usize,
    limits: GuardLimits,
    keepalive: Keepalive,
) -> WsClient {
    let outbound = Arc::new(Outbound::new(limits));
    let client = WsClient {
        outbound: outbound.clone(),
        inbound: inbound.clone(),
    };
    let url = url.to_owned();
    // rustls needs a process-wide crypto provider; the first connection installs ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::spawn(async move {
        // Whatever ends this task, a panic included, the local side must learn the connection
        // is over rather than wait forever.
        let closer = CloseOnDrop(inbound.clone());
        // Closed only once `run` returned and dropped the socket, so that a closed link has
        // released its descriptor.
        let (Ok(reason) | Err(reason)) = run(
            &url,
            headers,
            &outbound,
            &inbound,
            max_message_bytes,
            keepalive,
        )
        .await;
        inbound.close(reason);
        drop(closer);
    });
    client
}

/// Closes the inbound queue when dropped, as a last resort (the first close reason wins).
pub(crate) struct CloseOnDrop(pub(crate) Arc<FrameQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(CloseReason::new(
            1006,
            "the connection task ended unexpectedly",
        ));
    }
}

async fn run(
    url: &str,
    headers: Vec<(String, String)>,
    outbound: &Outbound,
    inbound: &FrameQueue,
    max_message_bytes: usize,
    keepalive: Keepalive,
) -> Result<CloseReason, CloseReason> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        CloseReason::new(1006, format!("{what} {url}: {error}"))
    };
    let mut request = url
        .into_client_request()
        .map_err(|e| failed("invalid URL", &e))?;
    for (name, value) in headers {
        let value = HeaderValue::from_str(&value).map_err(|e| failed("invalid header for", &e))?;
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| failed("invalid header for", &e))?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
        // Frames wait in the buffer until the writer flushes after its batch: one send(2) per
        // batch. The default 128 KiB read buffer is zero-filled before every read: 16 KiB is
        // plenty for a stream of small updates (a larger message grows it as needed).
        .read_buffer_size(16 << 10)
        .write_buffer_size(64 << 10);
    let liveness = Arc::new(Liveness::new());
    let handshake = open(request, config, liveness.clone());
    // A server that never answers the handshake (a blackholed route) is as silent as a dead
    // connection: the same timeout applies.
    let connected = match keepalive.idle_timeout {
        Some(timeout) => tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| failed("timed out connecting to", &format_args!("{timeout:?}")))?,
        None => handshake.await,
    };
    let (ws, _) = connected.map_err(|e| match e {
        // Refused by HTTP (an origin not allowed, a proxy's 401...): reported as the
        // application close code 4000 + status, so that clients do not retry it.
        tokio_tungstenite::tungstenite::Error::Http(response)
            if response.status().is_client_error() =>
        {
            CloseReason::new(
                4000 + response.status().as_u16(),
                format!("{url} refused the connection: {}", response.status()),
            )
        }
        e => failed("cannot connect to", &e),
    })?;
    Ok(pump(ws, &liveness, outbound, inbound, keepalive).await)
}

/// Opens the TCP connection (through `Heard`, so that every byte received counts as a sign of
/// life, the middle of a large message included), then TLS for wss, then the WebSocket.
async fn open(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    config: WebSocketConfig,
    liveness: Arc<Liveness>,
) -> Result<
    (
        WebSocketStream<tokio_tungstenite::MaybeTlsStream<Heard<TcpStream>>>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::Error;
    let uri = request.uri();
    let host = uri.host().ok_or(Error::Url(UrlError::NoHostName))?;
    // An IPv6 address comes in brackets.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = uri
        .port_u16()
        .or(match uri.scheme_str() {
            Some("wss") => Some(443),
            Some("ws") => Some(80),
            _ => None,
        })
        .ok_or(Error::Url(UrlError::UnsupportedUrlScheme))?;
    let socket = TcpStream::connect((host.as_str(), port)).await?;
    socket.set_nodelay(true)?;
    let stream = Heard {
        inner: socket,
        liveness,
    };
    tokio_tungstenite::client_async_tls_with_config(request, stream, Some(config), None).await
}

/// When the server was last heard from.
struct Liveness {
    started: Instant,
    /// Nanoseconds from `started` to the last time something was read.
    heard: AtomicU64,
}

impl Liveness {
    fn new() -> Self {
        Liveness {
            started: Instant::now(),
            heard: AtomicU64::new(0),
        }
    }

    /// Something was heard now.
    fn mark(&self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.heard.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_nanos(self.heard.load(Ordering::Relaxed))
    }
}

/// A stream that marks `liveness` whenever it reads a byte.
struct Heard<S> {
    inner: S,
    liveness: Arc<Liveness>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.liveness.mark();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Moves frames between an open WebSocket and the local document's queues until the
/// connection ends; returns why it ended. `liveness` is marked by the stream under `ws`.
async fn pump<S>(
    ws: WebSocketStream<S>,
    liveness: &Liveness,
    outbound: &Outbound,
    inbound: &FrameQueue,
    keepalive: Keepalive,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let ping_due = AtomicBool::new(false);
    // The reader waits for the local side to make room: it reads nothing meanwhile, and that
    // silence is ours, not the server's.
    let stalled = AtomicBool::new(false);

    let writer = async {
        loop {
            let notified = outbound.notify.notified();
            let (frames, closing) = outbound.take();
            let ping = ping_due.swap(false, Ordering::Relaxed);
            if ping {
                sink.feed(WsMessage::Ping(Bytes::new())).await?;
            }
            for frame in &frames {
                sink.feed(WsMessage::Binary(frame.clone())).await?;
            }
            if !frames.is_empty() || ping {
                sink.flush().await?;
            }
            if !frames.is_empty() && outbound.flushed() {
                inbound.wake();
            }
            if let Some(reason) = closing {
                let frame = CloseFrame {
                    code: CloseCode::from(reason.code),
                    reason: reason.reason.into(),
                };
                sink.send(WsMessage::Close(Some(frame))).await?;
                return Ok::<(), tokio_tungstenite::tungstenite::Error>(());
            }
            if frames.is_empty() && !ping {
                notified.await;
            }
        }
    };
    let reader = async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(WsMessage::Binary(frame)) => {
                    stalled.store(true, Ordering::Relaxed);
                    let pushed = inbound.push_wait(frame).await;
                    stalled.store(false, Ordering::Relaxed);
                    if !pushed {
                        break;
                    }
                }
                Ok(WsMessage::Close(frame)) => {
                    return frame.map_or_else(CloseReason::normal, |f| {
                        CloseReason::new(f.code.into(), f.reason.as_str())
                    });
                }
                Ok(_) => {}
                Err(error) => return CloseReason::new(1006, format!("connection lost: {error}")),
            }
        }
        CloseReason::new(1006, "connection lost")
    };
    tokio::pin!(writer, reader);
    let mut writer_done = false;
    let mut pinged = Instant::now();
    // The reader decides when the connection ends (the peer answers our close frame with its
    // own); a writer error ends it too, and so does a silence longer than the idle timeout
    // (an unanswered close frame included).
    loop {
        let last_heard = liveness.last();
        let idle_at = keepalive.idle_timeout.map(|t| last_heard + t);
        // No pings once the writer is done (it sent our close frame, or failed).
        let ping_at = keepalive
            .ping_interval
            .filter(|_| !writer_done)
            .map(|t| last_heard.max(pinged) + t);
        let wake_at = idle_at.into_iter().chain(ping_at).min();
        tokio::select! {
            reason = &mut reader => return reason,
            result = &mut writer, if !writer_done => {
                writer_done = true;
                if let Err(error) = result {
                    return CloseReason::new(1006, format!("connection lost: {error}"));
                }
            }
            () = sleep_until(wake_at), if wake_at.is_some() => {
                let now = Instant::now();
                let silence = now.saturating_duration_since(liveness.last());
                // Not reading, we cannot hear the server: the silence starts again. The pings
                // go on, so that the server hears from us meanwhile.
                let stalled = stalled.load(Ordering::Relaxed);
                if stalled {
                    liveness.mark();
                }
                if let Some(timeout) = keepalive.idle_timeout.filter(|_| !stalled) {
                    if silence >= timeout {
                        return CloseReason::new(
                            1006,
                            format!("connection lost: nothing heard for {silence:?}"),
                        );
                    }
                }
                if let Some(interval) = keepalive.ping_interval {
                    let since_ping = now.saturating_duration_since(pinged);
                    if silence >= interval && since_ping >= interval && !writer_done {
                        pinged = now;
                        ping_due.store(true, Ordering::Relaxed);
                        outbound.notify.notify_one();
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_frame;
    use crate::queue::QueueLimits;
    use crate::registry::Registry;
    use crate::room::RoomLimits;
    use crate::server::{Server, ServerConfig};
    use crate::wake::Waker;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A client's inbound queue, read from tokio.
    struct Inbox {
        queue: Arc<FrameQueue>,
        notify: Arc<Notify>,
    }

    impl Inbox {
        fn new() -> Self {
            let notify = Arc::new(Notify::new());
            let queue = Arc::new(FrameQueue::new(
                QueueLimits::default(),
                Waker::Tokio(notify.clone()),
            ));
            Inbox { queue, notify }
        }

        /// Reads messages until `until` returns true for one; returns every message read.
        /// Panics if the connection closes first.
        async fn read_until(&self, until: impl Fn(&Message) -> bool) -> Vec<Message> {
            let mut seen = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let notified = self.notify.notified();
                    let drained = self.queue.drain();
                    for frame in &drained.frames {
                        for message in decode_frame(frame).expect("a valid frame") {
                            let done = until(&message);
                            seen.push(message);
                            if done {
                                return;
                            }
                        }
                    }
                    assert!(drained.closed.is_none(), "closed: {:?}", drained.closed);
                    notified.await;
                }
            })
            .await
            .expect("the message came");
            seen
        }

        /// Waits until the connection is over; returns why.
        async fn closed(&self) -> CloseReason {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let notified = self.notify.notified();
                    if let Some(reason) = self.queue.drain().closed {
                        return reason;
                    }
                    notified.await;
                }
            })
            .await
            .expect("the connection ended")
        }
    }

    /// One insertion into text "t" by a client of its own.
    fn edit(text: &str) -> Bytes {
        let doc = yrs::Doc::new();
        let t = doc.get_or_insert_text("t");
        let mut txn = yrs::Transact::transact_mut(&doc);
        yrs::Text::insert(&t, &mut txn, 0, text);
        yrs::TransactionMut::encode_update_v1(&txn).into()
    }

    fn text_of(update: &Bytes) -> String {
        let doc = yrs::Doc::new();
        let t = doc.get_or_insert_text("t");
        crate::guard::apply_update(&doc, update, &GuardLimits::default()).expect("an update");
        let txn = yrs::Transact::transact(&doc);
        yrs::GetString::get_string(&t, &txn)
    }

    fn is_update_with(message: &Message, text: &str) -> bool {
        matches!(message, Message::Update(update) if text_of(update) == text)
    }

    /// A client of `url` (no cookies, default limits) whose frames go to `inbox`.
    fn connect_to(url: &str, inbox: &Inbox, keepalive: Keepalive) -> WsClient {
        connect(
            url,
            Vec::new(),
            inbox.queue.clone(),
            1 << 20,
            GuardLimits::default(),
            keepalive,
        )
    }

    /// Connects to `room` and syncs (the room sends live updates to a peer once it answered
    /// the peer's sync step 1).
    async fn joined(server: &Server, room: &str, keepalive: Keepalive) -> (WsClient, Inbox) {
        let inbox = Inbox::new();
        let url = format!("ws://{}/{room}", server.local_addr());
        let client = connect_to(&url, &inbox, keepalive);
        let step1 = Message::SyncStep1(Bytes::from_static(&[0])).encode();
        assert!(client.outbound.send_frame(step1));
        inbox
            .read_until(|m| matches!(m, Message::SyncStep2(_)))
            .await;
        (client, inbox)
    }

    #[tokio::test]
    async fn two_clients_exchange_updates_through_a_server_without_echo() {
        let registry = Registry::new(None, RoomLimits::default());
        let server = Server::bind("127.0.0.1:0", registry, ServerConfig::default())
            .await
            .unwrap();
        let (a, a_in) = joined(&server, "r", Keepalive::default()).await;
        let (b, b_in) = joined(&server, "r", Keepalive::default()).await;

        assert!(a.outbound.send_update(edit("from a")));
        b_in.read_until(|m| is_update_with(m, "from a")).await;
        // b's answer reaches a after anything the room sent a about a's own update: a sees
        // b's update, and never its own before it.
        assert!(b.outbound.send_update(edit("from b")));
        let seen = a_in.read_until(|m| is_update_with(m, "from b")).await;
        assert!(
            !seen.iter().any(|m| is_update_with(m, "from a")),
            "a got its own update back"
        );

        // A client that closes gets the server's answer: a clean close, with its code.
        a.outbound.close(CloseReason::normal());
        assert_eq!(a_in.closed().await.code, 1000);
        assert!(!a.outbound.unsent());
        // A server that stops closes its clients with 1001.
        server.shutdown().await;
        assert_eq!(b_in.closed().await.code, 1001);
    }

    fn awareness_of(client: u64, clock: u64, state: &str) -> Bytes {
        awareness::encode_update([(client, clock, state.as_bytes())])
    }

    fn awareness_frame(client: u64, clock: u64, state: &str) -> Bytes {
        Message::Awareness(awareness_of(client, clock, state)).encode()
    }

    #[test]
    fn queued_awareness_states_are_coalesced_per_client() {
        let outbound = Outbound::new(GuardLimits::default());
        let step1 = Message::SyncStep1(Bytes::from_static(&[0])).encode();
        assert!(outbound.send_awareness(awareness_of(7, 1, r#"{"cursor":1}"#)));
        assert!(outbound.send_frame(step1.clone()));
        for clock in 2..=1000 {
            let state = format!(r#"{{"cursor":{clock}}}"#);
            assert!(outbound.send_awareness(awareness_of(7, clock, &state)));
        }
        assert!(outbound.send_awareness(awareness_of(8, 5, "{}")));
        // Older than what waits: a peer would ignore it.
        assert!(outbound.send_awareness(awareness_of(7, 3, "{}")));
        // The removal of the latest state, at its clock, replaces it.
        assert!(outbound.send_awareness(awareness_of(8, 5, "null")));
        // Several clients in one message are left as they are.
        let both = awareness::encode_update([(7, 2000, &b"{}"[..]), (8, 2000, &b"{}"[..])]);
        assert!(outbound.send_awareness(both.clone()));
        assert!(outbound.send_awareness(both.clone()));
        let (frames, closing) = outbound.take();
        assert_eq!(closing, None);
        assert_eq!(
            frames,
            vec![
                awareness_frame(7, 1000, r#"{"cursor":1000}"#),
                step1,
                awareness_frame(8, 5, "null"),
                Message::Awareness(both.clone()).encode(),
                Message::Awareness(both).encode(),
            ]
        );
        // Once taken, the next state is a frame of its own.
        assert!(outbound.send_awareness(awareness_of(7, 1001, "{}")));
        assert!(outbound.send_awareness(awareness_of(7, 1002, "{}")));
        assert_eq!(outbound.take().0, vec![awareness_frame(7, 1002, "{}")]);
        outbound.close(CloseReason::normal());
        assert!(!outbound.send_awareness(awareness_of(7, 1003, "{}")));
    }

    /// The frames a client wrote, as (opcode, payload length) pairs; client frames are masked.
    fn client_frames(mut bytes: &[u8]) -> Vec<(u8, usize)> {
        let mut frames = Vec::new();
        while bytes.len() >= 2 {
            let opcode = bytes[0] & 0x0f;
            let (len, header) = match bytes[1] & 0x7f {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                127 => panic!("no large frames here"),
                n => (usize::from(n), 2),
            };
            frames.push((opcode, len));
            bytes = &bytes[header + 4 + len..];
        }
        frames
    }

    const PING: u8 = 0x9;

    /// The near end of an in-memory connection, as `run` sets it up, and the far end.
    async fn in_memory() -> (
        WebSocketStream<Heard<DuplexStream>>,
        Arc<Liveness>,
        DuplexStream,
    ) {
        let (near, far) = tokio::io::duplex(64 << 10);
        let liveness = Arc::new(Liveness::new());
        let near = Heard {
            inner: near,
            liveness: liveness.clone(),
        };
        let ws = WebSocketStream::from_raw_socket(near, Role::Client, None).await;
        (ws, liveness, far)
    }

    const KEEPALIVE: Keepalive = Keepalive {
        ping_interval: Some(Duration::from_secs(1)),
        idle_timeout: Some(Duration::from_secs(3)),
    };

    /// A binary frame as a server writes it (unmasked), its payload under 64 KiB.
    fn server_frame(payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len()).unwrap();
        let mut frame = vec![0x82, 126];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// A client over an in-memory stream whose other end reads everything and never writes:
    /// its pings go unanswered.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_answers_is_lost_after_the_idle_timeout() {
        let (ws, liveness, mut far) = in_memory().await;
        let reading = tokio::spawn(async move {
            let mut bytes = Vec::new();
            far.read_to_end(&mut bytes).await.map(|_| bytes)
        });
        let outbound = Outbound::new(GuardLimits::default());
        let inbox = Inbox::new();
        let started = Instant::now();
        let reason = pump(ws, &liveness, &outbound, &inbox.queue, KEEPALIVE).await;
        let after = started.elapsed();
        assert_eq!(reason.code, 1006, "{reason:?}");
        assert!(
            (Duration::from_secs(3)..Duration::from_secs(4)).contains(&after),
            "lost after {after:?}"
        );
        // The stream is dropped with `pump`: the far end reads to its end. Pings at 1 s and
        // 2 s, then silence until 3 s.
        let written = reading.await.unwrap().unwrap();
        assert_eq!(client_frames(&written), vec![(PING, 0), (PING, 0)]);
    }

    /// A server that says nothing but answers pings keeps the connection alive indefinitely.
    #[tokio::test(start_paused = true)]
    async fn pongs_keep_a_quiet_connection_alive() {
        let (ws, liveness, far) = in_memory().await;
        let server = tokio::spawn(async move {
            let mut peer = WebSocketStream::from_raw_socket(far, Role::Server, None).await;
            let mut pings = 0;
            // tungstenite answers each ping as it reads on.
            while let Some(Ok(message)) = peer.next().await {
                if message.is_ping() {
                    pings += 1;
                }
            }
            pings
        });
        let outbound = Outbound::new(GuardLimits::default());
        let inbox = Inbox::new();
        let alive = tokio::time::timeout(
            Duration::from_secs(60),
            pump(ws, &liveness, &outbound, &inbox.queue, KEEPALIVE),
        )
        .await;
        assert!(alive.is_err(), "ended: {alive:?}");
        // A ping each second of silence.
        let pings = server.await.unwrap();
        assert!((55..=60).contains(&pings), "{pings} pings");
    }

    /// Pings wait for silence: a server that keeps talking is never pinged.
    #[tokio::test(start_paused = true)]
    async fn a_talking_server_is_not_pinged() {
        let (ws, liveness, far) = in_memory().await;
        let server = tokio::spawn(async move {
            let mut peer = WebSocketStream::from_raw_socket(far, Role::Server, None).await;
            let mut pings = 0;
            loop {
                tokio::select! {
                    message = peer.next() => match message {
                        Some(Ok(message)) => pings += usize::from(message.is_ping()),
                        _ => return pings,
                    },
                    () = tokio::time::sleep(Duration::from_millis(500)) => {
                        let update = Message::Update(edit("x")).encode();
                        if peer.send(WsMessage::Binary(update)).await.is_err() {
                            return pings;
                        }
                    }
                }
            }
        });
        let outbound = Outbound::new(GuardLimits::default());
        let inbox = Inbox::new();
        let drain = async {
            loop {
                let notified = inbox.notify.notified();
                inbox.queue.drain();
                notified.await;
            }
        };
        let alive = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(
                pump(ws, &liveness, &outbound, &inbox.queue, KEEPALIVE),
                drain
            )
            .0
        })
        .await;
        assert!(alive.is_err(), "ended: {alive:?}");
        assert_eq!(server.await.unwrap(), 0);
    }

    /// A message that takes longer than the idle timeout to arrive is not silence: every byte
    /// counts, not only whole messages (a ping answered after it would come too late).
    #[tokio::test(start_paused = true)]
    async fn a_slow_large_message_is_not_silence() {
        let (ws, liveness, mut far) = in_memory().await;
        let payload: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let frame = server_frame(&payload);
        let server = tokio::spawn(async move {
            // 20 chunks, one every 500 ms: 10 s for the message, and it answers no ping.
            for chunk in frame.chunks(frame.len().div_ceil(20)) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                far.write_all(chunk).await.unwrap();
            }
            // Then silence, the far end kept open (and read, so pings do not block).
            let mut sink = Vec::new();
            let _ = far.read_to_end(&mut sink).await;
        });
        let outbound = Outbound::new(GuardLimits::default());
        let inbox = Inbox::new();
        let started = Instant::now();
        let reason = pump(ws, &liveness, &outbound, &inbox.queue, KEEPALIVE).await;
        let after = started.elapsed();
        assert_eq!(inbox.queue.drain().frames, vec![Bytes::from(payload)]);
        // Lost 3 s after its last byte.
        assert_eq!(reason.code, 1006, "{reason:?}");
        assert!(
            (Duration::from_secs(13)..Duration::from_secs(14)).contains(&after),
            "lost after {after:?}"
        );
        server.await.unwrap();
    }

    /// The local side not taking what arrived stops the reader, so nothing is heard: that
    /// silence is the client's own, and does not count.
    #[tokio::test(start_paused = true)]
    async fn a_local_side_that_does_not_keep_up_is_not_a_dead_server() {
        let (ws, liveness, mut far) = in_memory().await;
        let outbound = Outbound::new(GuardLimits::default());
        let notify = Arc::new(Notify::new());
        let limits = QueueLimits {
            max_frames: 1,
            max_bytes: 1 << 20,
        };
        let inbound = FrameQueue::new(limits, Waker::Tokio(notify));
        // Three messages, then silence (and no pong: it never writes again).
        for byte in 1..=3u8 {
            far.write_all(&server_frame(&[byte])).await.unwrap();
        }
        let draining = tokio::spawn(async move {
            let mut bytes = Vec::new();
            far.read_to_end(&mut bytes).await.map(|_| bytes)
        });
        let pumping = pump(ws, &liveness, &outbound, &inbound, KEEPALIVE);
        tokio::pin!(pumping);
        // The first message fills the queue; the reader waits with the second one.
        tokio::select! {
            reason = &mut pumping => panic!("ended while the local side was busy: {reason:?}"),
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        assert_eq!(inbound.drain().frames, vec![Bytes::from_static(&[1])]);
        // Taken: the reader goes on, and once the server's silence is its own, it is lost.
        let started = Instant::now();
        let reason = tokio::select! {
            reason = &mut pumping => reason,
            () = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    inbound.drain();
                }
            } => unreachable!(),
        };
        assert_eq!(reason.code, 1006, "{reason:?}");
        assert!(
            started.elapsed() <= Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        // It went on pinging while it could not read, so that the server heard from it: a
        // ping a second for 30 s, and two more before it gave up.
        let written = draining.await.unwrap().unwrap();
        let pings = client_frames(&written);
        assert!(pings.iter().all(|&frame| frame == (PING, 0)), "{pings:?}");
        assert!((30..=33).contains(&pings.len()), "{} pings", pings.len());
    }

    /// A server that accepts the TCP connection and never answers the handshake.
    #[tokio::test]
    async fn a_handshake_never_answered_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/r", listener.local_addr().unwrap());
        let inbox = Inbox::new();
        let keepalive = Keepalive {
            ping_interval: None,
            idle_timeout: Some(Duration::from_millis(200)),
        };
        let _client = connect_to(&url, &inbox, keepalive);
        let (_held, _) = listener.accept().await.unwrap();
        let reason = inbox.closed().await;
        assert_eq!(reason.code, 1006);
        assert!(reason.reason.contains("timed out"), "{reason:?}");
    }
}
