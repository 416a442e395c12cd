//! The pipe wire: the sync protocol over a byte stream between processes (an AF_UNIX socketpair,
//! a pair of OS pipes), entirely on tokio.
//!
//! Each frame is its length (4 bytes, little-endian) followed by that many bytes, so a frame of
//! any content arrives whole. (wire-pipe 0.7.1 ended frames with an 8-byte separator that an
//! update may contain, and read at most 64 KiB at a time.) The server side is a room member
//! like a WebSocket connection; the client side feeds a local document's queues. A stream that
//! ends or fails ends its own member only. Never touches Python.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::unix::pipe;
use tokio::sync::{watch, Notify};
use tokio_util::task::TaskTracker;

use crate::client::{CloseOnDrop, Outbound};
use crate::clip::Clipped;
use crate::guard::GuardLimits;
use crate::queue::{CloseReason, FrameQueue, QueueLimits};
use crate::registry::Registry;
use crate::room::JoinKind;
use crate::session::{
    self, Batch, PeerReader, PeerWriter, Received, SendFailed, Sent, SessionConfig,
};
use crate::wake::Waker;

/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

/// Reads and writes are buffered by this much: small frames cost few system calls.
const BUFFER_BYTES: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {len} bytes is over the limit of {max} bytes")]
    TooBig { len: usize, max: usize },
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads frames from a stream. Cancel-safe: what a read interrupted by another branch of a
/// `select!` had taken of a frame stays in the reader's buffer for the next call.
pub struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames longer than `max` are refused.
    pub fn new(reader: R, max: usize) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::new(),
            max,
        }
    }

    /// The next frame; `None` when the stream ends cleanly between frames. A frame longer than
    /// the limit is refused before its body is read, and the buffer grows as bytes arrive, so a
    /// peer declaring a huge length allocates nothing it does not send.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            let needed = match self.buffer.get(..HEADER_BYTES) {
                Some(header) => {
                    let len =
                        u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
                    if len > self.max {
                        return Err(FrameError::TooBig { len, max: self.max });
                    }
                    if self.buffer.len() >= HEADER_BYTES + len {
                        // Copied out: a frame the room keeps must not pin the read buffer.
                        let frame =
                            Bytes::copy_from_slice(&self.buffer[HEADER_BYTES..HEADER_BYTES + len]);
                        self.buffer.advance(HEADER_BYTES + len);
                        return Ok(Some(frame));
                    }
                    HEADER_BYTES + len - self.buffer.len()
                }
                None => HEADER_BYTES - self.buffer.len(),
            };
            self.buffer
                .reserve(needed.clamp(HEADER_BYTES, BUFFER_BYTES));
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }
}

/// Writes one frame (not flushed).
pub async fn write_frame<W>(writer: &mut W, frame: &[u8]) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
{
    let len = u32::try_from(frame.len()).map_err(|_| FrameError::TooBig {
        len: frame.len(),
        max: u32::MAX as usize,
    })?;
    writer.write_all(&len.to_le_bytes()).await?;
    writer.write_all(frame).await?;
    Ok(())
}

/// Takes ownership of a raw descriptor, after checking that it is open.
///
/// # Safety
/// Nothing else may use or close `raw` afterwards: it is closed when the result is dropped.
pub unsafe fn adopt_fd(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if raw < 0 || unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: open, and handed over by the caller (this function's contract).
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Both directions over one socket (a socketpair end). Call inside the runtime.
pub fn socket_halves(fd: OwnedFd) -> io::Result<(Reader, Writer)> {
    let (reader, writer) = unix_stream(fd)?.into_split();
    Ok((Box::new(reader), Box::new(writer)))
}

/// One direction each over two descriptors (each a pipe end or a socket). Call inside the
/// runtime.
pub fn fd_halves(receiver: OwnedFd, sender: OwnedFd) -> io::Result<(Reader, Writer)> {
    let reader: Reader = if is_fifo(&receiver)? {
        Box::new(pipe::Receiver::from_owned_fd(receiver)?)
    } else {
        Box::new(unix_stream(receiver)?)
    };
    let writer: Writer = if is_fifo(&sender)? {
        Box::new(pipe::Sender::from_owned_fd(sender)?)
    } else {
        Box::new(unix_stream(sender)?)
    };
    Ok((reader, writer))
}

fn unix_stream(fd: OwnedFd) -> io::Result<tokio::net::UnixStream> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}

fn is_fifo(fd: &OwnedFd) -> io::Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(fd.as_fd().try_clone_to_owned()?);
    Ok(file.metadata()?.file_type().is_fifo())
}

/// Limits of a pipe server.
#[derive(Debug, Clone)]
pub struct PipeConfig {
    /// Largest frame accepted; a larger one ends its member.
    pub max_message_bytes: usize,
    /// Each member's outgoing queue.
    pub queue: QueueLimits,
    /// Time a join may wait for its room to open.
    pub open_timeout: Duration,
    /// Time an ended member has to send what was queued for it (its peer may have stopped
    /// reading); then the stream is dropped.
    pub close_timeout: Duration,
}

impl Default for PipeConfig {
    fn default() -> Self {
        PipeConfig {
            max_message_bytes: 64 << 20,
            queue: QueueLimits::default(),
            open_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// The server side: each attached stream is a peer of the room it names, until it ends or the
/// server shuts down.
pub struct PipeServer {
    registry: Arc<Registry>,
    config: Arc<PipeConfig>,
    shutdown: watch::Sender<bool>,
    members: TaskTracker,
}

impl PipeServer {
    pub fn new(registry: Arc<Registry>, config: PipeConfig) -> Self {
        PipeServer {
            registry,
            config: Arc::new(config),
            shutdown: watch::channel(false).0,
            members: TaskTracker::new(),
        }
    }

    /// Serves a stream as a peer of room `id`. Call inside the runtime.
    pub fn attach(&self, id: String, reader: Reader, writer: Writer) {
        self.members.spawn(serve_peer(
            reader,
            writer,
            self.registry.clone(),
            id,
            self.config.clone(),
            self.shutdown.subscribe(),
        ));
    }

    /// Ends every member (after sending what was queued for it) and waits for them; streams
    /// attached later end at once.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        self.members.close();
        self.members.wait().await;
    }
}

async fn serve_peer(
    reader: Reader,
    writer: Writer,
    registry: Arc<Registry>,
    id: String,
    config: Arc<PipeConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acquired = tokio::select! {
        acquired = tokio::time::timeout(config.open_timeout, registry.acquire(&id)) => acquired,
        _ = shutdown.wait_for(|stopping| *stopping) => return,
    };
    let lease = match acquired {
        Ok(Ok(lease)) => lease,
        Ok(Err(error)) => {
            tracing::warn!(room = %Clipped(&id), %error, "pipe join refused");
            return;
        }
        Err(_) => {
            tracing::warn!(room = %Clipped(&id), "room took too long to open");
            return;
        }
    };
    let core = lease.core().clone();
    let notify = Arc::new(Notify::new());
    let queue = Arc::new(FrameQueue::new(config.queue, Waker::Tokio(notify.clone())));
    let member = session::with_room(&core, || core.join(queue.clone(), JoinKind::Peer));
    let session = SessionConfig {
        keepalive: None,
        // A pipe's close is its end of stream, and its peer need not answer one: once the
        // server's side is closed, there is nothing to wait for.
        close_grace: Duration::ZERO,
        drain_timeout: config.close_timeout,
    };
    let stop = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    let reader = PipeReader(FrameReader::new(reader, config.max_message_bytes));
    let writer = PipeWriter(BufWriter::with_capacity(BUFFER_BYTES, writer));
    session::serve(
        core,
        member,
        queue,
        notify,
        reader,
        writer,
        Vec::new(),
        session,
        stop,
    )
    .await;
    drop(lease);
}

/// The reading side of a pipe member.
struct PipeReader(FrameReader<Reader>);

impl PeerReader for PipeReader {
    async fn next(&mut self) -> Received {
        match self.0.next().await {
            Ok(Some(frame)) => Received::Frame(frame),
            Ok(None) => Received::Ended(CloseReason::normal()),
            Err(FrameError::TooBig { .. }) => {
                Received::Ended(CloseReason::new(1009, "message too big"))
            }
            Err(error) => {
                tracing::debug!(%error, "pipe member lost");
                Received::Ended(CloseReason::new(1006, ""))
            }
        }
    }
}

/// The writing side of a pipe member: length-prefixed frames, flushed per batch.
struct PipeWriter(BufWriter<Writer>);

impl PeerWriter for PipeWriter {
    async fn send(&mut self, batch: Batch<'_>) -> Result<Sent, SendFailed> {
        if batch.frames.is_empty() {
            return Ok(if batch.close.is_some() {
                Sent::Closed
            } else {
                Sent::Nothing
            });
        }
        for frame in batch.frames {
            write_frame(&mut self.0, frame)
                .await
                .map_err(|_| SendFailed::Gone)?;
        }
        self.0.flush().await.map_err(|_| SendFailed::Gone)?;
        Ok(Sent::Some)
    }

    async fn finish(mut self) {
        // The pipe's end of stream is its close.
        let _ = self.0.shutdown().await;
    }
}

/// The client side: spawns the task that moves frames between the stream and a local
/// document's queues (on the current runtime). The end of the stream, or a failure, closes
/// `inbound`; closing the returned `Outbound` sends what is queued and then ends the stream's
/// sending side, and the connection ends when the server has closed its own.
pub fn connect(
    reader: Reader,
    writer: Writer,
    inbound: Arc<FrameQueue>,
    max_message_bytes: usize,
    limits: GuardLimits,
) -> Arc<Outbound> {
    let outbound = Arc::new(Outbound::new(limits));
    let out = outbound.clone();
    tokio::spawn(async move {
        // Even if this task dies, the local side learns that the connection is over.
        let closer = CloseOnDrop(inbound.clone());
        let reason = run_client(reader, writer, &out, &inbound, max_message_bytes).await;
        inbound.close(reason);
        drop(closer);
    });
    outbound
}

async fn run_client(
    reader: Reader,
    writer: Writer,
    outbound: &Outbound,
    inbound: &FrameQueue,
    max_message_bytes: usize,
) -> CloseReason {
    let mut reader = FrameReader::new(reader, max_message_bytes);
    let sending = async move {
        let mut writer = BufWriter::with_capacity(BUFFER_BYTES, writer);
        loop {
            let (frames, closing) = outbound.next().await;
            for frame in &frames {
                write_frame(&mut writer, frame).await?;
            }
            writer.flush().await?;
            if outbound.flushed() {
                inbound.wake();
            }
            if closing.is_some() {
                // A pipe's end only reads as ended once closed (shutdown does not do it).
                writer.shutdown().await?;
                drop(writer);
                return Ok::<(), FrameError>(());
            }
        }
    };
    let receiving = async {
        loop {
            match reader.next().await {
                Ok(Some(frame)) => {
                    if !inbound.push_wait(frame).await {
                        return CloseReason::normal();
                    }
                }
                Ok(None) => return CloseReason::new(1000, "the pipe was closed"),
                Err(error) => return CloseReason::new(1006, format!("pipe lost: {error}")),
            }
        }
    };
    tokio::pin!(sending, receiving);
    let mut sending_done = false;
    // The receiving side decides when the connection ends (the server closes its side after
    // ours); a failure to send ends it too.
    loop {
        tokio::select! {
            reason = &mut receiving => return reason,
            sent = &mut sending, if !sending_done => {
                sending_done = true;
                if let Err(error) = sent {
                    return CloseReason::new(1006, format!("pipe lost: {error}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode_frame, Message};
    use crate::room::RoomLimits;
    use yrs::{Doc, GetString, Text, Transact};

    /// wire-pipe 0.7.1's frame separator: it may occur inside an update.
    const SEPARATOR: [u8; 8] = [226, 164, 131, 121, 240, 77, 100, 52];

    #[tokio::test]
    async fn frames_of_any_content_and_size_arrive_whole() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let big: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
        let frames = vec![
            Bytes::from_static(&SEPARATOR),
            Bytes::from([&b"x"[..], &SEPARATOR, &SEPARATOR, b"y"].concat()),
            Bytes::new(),
            Bytes::from(big),
        ];
        let sent = frames.clone();
        let mut frames_of_b = FrameReader::new(&mut b, 8 << 20);
        let writer = tokio::spawn(async move {
            for frame in &sent {
                write_frame(&mut a, frame).await.unwrap();
            }
        });
        for frame in &frames {
            let got = frames_of_b.next().await.unwrap().unwrap();
            assert_eq!(&got, frame);
        }
        writer.await.unwrap();
        assert!(frames_of_b.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &[0; 100]).await.unwrap();
        assert!(matches!(
            FrameReader::new(&mut b, 99).next().await,
            Err(FrameError::TooBig { len: 100, max: 99 })
        ));

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&10u32.to_le_bytes()).await.unwrap();
        a.write_all(b"short").await.unwrap();
        drop(a);
        assert!(matches!(
            FrameReader::new(&mut b, 99).next().await,
            Err(FrameError::Truncated)
        ));

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&[1, 0]).await.unwrap();
        drop(a);
        assert!(matches!(
            FrameReader::new(&mut b, 99).next().await,
            Err(FrameError::Truncated)
        ));
    }

    /// One end of a local document: what it received, and how to send.
    struct Peer {
        outbound: Arc<Outbound>,
        inbound: Arc<FrameQueue>,
        notify: Arc<Notify>,
    }

    impl Peer {
        fn connect(server: &PipeServer, id: &str) -> Peer {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let (reader, writer) = socket_halves(theirs.into()).unwrap();
            server.attach(id.to_owned(), reader, writer);
            let notify = Arc::new(Notify::new());
            let inbound = Arc::new(FrameQueue::new(
                QueueLimits::default(),
                Waker::Tokio(notify.clone()),
            ));
            let (reader, writer) = socket_halves(ours.into()).unwrap();
            let outbound = connect(
                reader,
                writer,
                inbound.clone(),
                64 << 20,
                GuardLimits::default(),
            );
            Peer {
                outbound,
                inbound,
                notify,
            }
        }

        /// Asks for the document, as clients do first, and waits for it: the room sends a
        /// peer live updates once it has answered.
        async fn sync(&self) {
            self.outbound
                .send_frame(Message::SyncStep1(Bytes::from_static(&[0])).encode());
            let step2 = self.next(|m| matches!(m, Message::SyncStep2(_))).await;
            assert!(step2.is_some(), "no sync step 2");
        }

        /// Waits for the next message that `keep` selects; None once closed.
        async fn next(&self, keep: impl Fn(&Message) -> bool) -> Option<Message> {
            let mut pending = Vec::new();
            loop {
                let notified = self.notify.notified();
                let drained = self.inbound.drain();
                for frame in &drained.frames {
                    pending.extend(decode_frame(frame).unwrap());
                }
                if let Some(found) = pending.iter().position(&keep) {
                    return Some(pending.swap_remove(found));
                }
                if drained.closed.is_some() {
                    return None;
                }
                notified.await;
            }
        }
    }

    fn edit(text: &str) -> Bytes {
        let doc = Doc::new();
        let t = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, text);
        txn.encode_update_v1().into()
    }

    fn text_of(update: &[u8]) -> String {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("text");
        crate::guard::apply_update(&doc, update, &GuardLimits::default()).unwrap();
        let txn = doc.transact();
        let content = text.get_string(&txn);
        drop(txn);
        content
    }

    fn is_update(message: &Message) -> bool {
        matches!(message, Message::Update(_))
    }

    #[tokio::test]
    async fn peers_of_a_room_exchange_updates_and_a_vanished_peer_ends_alone() {
        let registry = Registry::new(None, RoomLimits::default());
        let server = PipeServer::new(registry.clone(), PipeConfig::default());
        let a = Peer::connect(&server, "room");
        let b = Peer::connect(&server, "room");
        let c = Peer::connect(&server, "room");
        for peer in [&a, &b, &c] {
            peer.sync().await;
        }

        // An update with the old separator in it, bigger than the old 64 KiB reads.
        let content = format!(
            "{}{}",
            "x".repeat(100_000),
            String::from_utf8_lossy(&SEPARATOR)
        );
        let update = edit(&content);
        a.outbound.send_update(update.clone());
        for peer in [&b, &c] {
            let Some(Message::Update(got)) = peer.next(is_update).await else {
                panic!("no update");
            };
            assert_eq!(text_of(&got), content);
        }

        // c vanishes: b still hears a.
        drop(c);
        a.outbound.send_update(edit("more"));
        assert!(b.next(is_update).await.is_some());
        let id = "room".to_string();
        assert_eq!(registry.open_rooms(), vec![id]);

        // A client that closes ends its member; the server closes its side in turn.
        a.outbound.close(CloseReason::normal());
        assert!(a.next(|_| false).await.is_none());
        server.shutdown().await;
        assert!(b.next(|_| false).await.is_none());
        assert!(registry.open_rooms().is_empty());
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_its_member_only() {
        let registry = Registry::new(None, RoomLimits::default());
        let server = PipeServer::new(registry.clone(), PipeConfig::default());
        let a = Peer::connect(&server, "r");
        let b = Peer::connect(&server, "r");
        let c = Peer::connect(&server, "r");
        c.sync().await;
        // A sync update declaring 9 bytes and carrying 2.
        a.outbound.send_frame(Bytes::from_static(&[0, 2, 9, 1, 2]));
        assert!(a.next(|_| false).await.is_none());
        b.outbound.send_update(edit("still here"));
        let Some(Message::Update(got)) = c.next(is_update).await else {
            panic!("the room stopped with its bad member");
        };
        assert_eq!(text_of(&got), "still here");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_does_not_hold_the_server_up() {
        let registry = Registry::new(None, RoomLimits::default());
        let config = PipeConfig {
            close_timeout: Duration::from_millis(50),
            ..PipeConfig::default()
        };
        let server = PipeServer::new(registry.clone(), config);
        let (stuck, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (reader, writer) = socket_halves(theirs.into()).unwrap();
        server.attach("s".into(), reader, writer);
        let a = Peer::connect(&server, "s");
        assert!(a
            .next(|m| matches!(m, Message::SyncStep1(_)))
            .await
            .is_some());
        // Far more than a socket buffer holds, for a peer that never reads.
        a.outbound.send_update(edit(&"x".repeat(8 << 20)));
        a.outbound.close(CloseReason::normal());
        assert!(a.next(|_| false).await.is_none());
        let stopped = tokio::time::timeout(Duration::from_secs(20), server.shutdown()).await;
        assert!(
            stopped.is_ok(),
            "the stuck member kept the server from stopping"
        );
        assert!(registry.open_rooms().is_empty());
        drop(stuck);
    }

    #[tokio::test]
    async fn two_pipes_carry_frames_like_a_socket() {
        let (server_read, client_write) = os_pipe();
        let (client_read, server_write) = os_pipe();
        let registry = Registry::new(None, RoomLimits::default());
        let server = PipeServer::new(registry.clone(), PipeConfig::default());
        let (reader, writer) = fd_halves(server_read, server_write).unwrap();
        server.attach("p".into(), reader, writer);
        let notify = Arc::new(Notify::new());
        let inbound = Arc::new(FrameQueue::new(
            QueueLimits::default(),
            Waker::Tokio(notify.clone()),
        ));
        let (reader, writer) = fd_halves(client_read, client_write).unwrap();
        let outbound = connect(
            reader,
            writer,
            inbound.clone(),
            1 << 20,
            GuardLimits::default(),
        );
        let peer = Peer {
            outbound,
            inbound,
            notify,
        };
        assert!(peer
            .next(|m| matches!(m, Message::SyncStep1(_)))
            .await
            .is_some());
        peer.outbound
            .send_frame(Message::SyncStep1(Bytes::from_static(&[0])).encode());
        assert!(peer
            .next(|m| matches!(m, Message::SyncStep2(_)))
            .await
            .is_some());
        peer.outbound.close(CloseReason::normal());
        assert!(peer.next(|_| false).await.is_none());
        server.shutdown().await;
        assert!(registry.open_rooms().is_empty());
    }

    fn os_pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into a valid array of two.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        // SAFETY: both descriptors are fresh and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }
}
