//! A room member's session: one loop for every wire that serves a peer (the WebSocket server,
//! the pipe). Frames the peer sends go to the room; a writer task drains the member's bounded
//! queue to the peer, resynchronising it from the room's full state if the queue overflowed;
//! one policy ends it. A wire brings a [`PeerReader`] and a [`PeerWriter`]; keepalive, the
//! close handshake, the close codes (`RoomError::close_reason`) and keeping heavy frames off the
//! workers live here, once.
//!
//! Closing is a handshake: whoever closes a member (the server stopping, a kick) closes its
//! queue; the writer sends what was queued, then the close, and the reader goes on handling
//! what the peer sent before it saw the close until the peer ends (or `close_grace` passes).
//! So an update a peer sent before it learnt of the close is not lost.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::awareness::MemberId;
use crate::clip::Clipped;
use crate::queue::{CloseReason, FrameQueue};
use crate::room::{RoomCore, RoomError};

/// What a peer sent, as the session sees it.
pub enum Received {
    /// A frame of y-protocols messages, for the room.
    Frame(Bytes),
    /// Something with nothing for the room (a pong, a text frame): the peer is alive.
    Other,
    /// The peer ended or broke the wire's protocol: how the member is closed.
    Ended(CloseReason),
}

/// The reading side of a peer.
pub trait PeerReader: Send {
    fn next(&mut self) -> impl Future<Output = Received> + Send;
    /// What was received last is handled: what the reader held for it may go.
    fn handled(&mut self) {}
}

/// What a writer sends in one go.
pub struct Batch<'a> {
    pub frames: &'a [Bytes],
    /// A keepalive ping is due.
    pub ping: bool,
    /// The member is closed: the close to send after the frames, if the peer is still there.
    pub close: Option<&'a CloseReason>,
}

/// What a writer did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Nothing was there to send: wait for more.
    Nothing,
    Some,
    /// A close went out (ours, or the wire's answer to the peer's): nothing may follow.
    Closed,
}

/// Why a writer stopped sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailed {
    Gone,
    /// The peer did not take the batch within the wire's write timeout: it stopped reading.
    TimedOut,
}

/// The writing side of a peer.
pub trait PeerWriter: Send + 'static {
    fn send(&mut self, batch: Batch<'_>) -> impl Future<Output = Result<Sent, SendFailed>> + Send;
    /// The session is over: the wire's last word (a FIN, or nothing until the reader is done).
    fn finish(self) -> impl Future<Output = ()> + Send;
}

/// How a session behaves.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Ping a silent peer this often, and close it (1001) once it has been silent for the
    /// second duration; None on wires without pings.
    pub keepalive: Option<(Duration, Duration)>,
    /// Time a closing peer has to end after the close went out; what it sends meanwhile is
    /// still handled.
    pub close_grace: Duration,
    /// Time the writer has, once the member ended, to send what was queued.
    pub drain_timeout: Duration,
}

/// Turns of the scheduler a woken writer waits at most while its queue keeps growing.
/// `send(2)` calls per delivery, alternating builds (one quiet machine, 2026-11-27): w1
/// 0.17-0.18 -> 0.095-0.099, w2 0.41-0.43 -> 0.37-0.38, w5 0.09-0.22 -> 0.10-0.14 (one
/// run of six at 0.22); w1 latency p50 unchanged (340-390 us both). 8 turns made w1 slower.
const EXTRA_TURNS: usize = 3;

/// A member of `core` (already joined, its queue `queue` woken through `notify`), served
/// until it ends: `pending` (what it sent before it was let in) first, then what `reader`
/// receives; `writer` in a task of its own. `stop` resolves when the server stops. Returns how
/// the member was closed.
#[allow(clippy::too_many_arguments)]
pub async fn serve<R: PeerReader, W: PeerWriter>(
    core: Arc<RoomCore>,
    member: MemberId,
    queue: Arc<FrameQueue>,
    notify: Arc<Notify>,
    mut reader: R,
    writer: W,
    pending: Vec<Bytes>,
    config: SessionConfig,
    stop: impl Future<Output = ()> + Send,
) -> CloseReason {
    let mut writer = tokio::spawn(write_loop(writer, queue.clone(), core.clone(), notify));
    let mut writer_done = false;
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    let mut ping = config.keepalive.map(|(every, _)| {
        let mut ping = tokio::time::interval(every);
        ping.reset();
        ping
    });
    let mut last_seen = tokio::time::Instant::now();
    // Set once the member is closing: the peer has until then to end.
    let mut closing_until: Option<tokio::time::Instant> = None;
    let mut failed = None;
    for frame in pending {
        if let Err(error) = handle(&core, member, &frame) {
            failed = Some(error);
            break;
        }
    }
    // Set once the room refused the member: it has left, and what its peer still sends is
    // read and dropped until it ends (closing a socket with unread input resets it, and the
    // reset can destroy the close before the peer reads it).
    let mut refused: Option<CloseReason> = None;
    let reason = loop {
        if let Some(error) = failed.take() {
            tracing::warn!(room = %Clipped(core.id()), member, %error, "closing connection");
            let reason = error.close_reason();
            core.leave(member);
            queue.close(reason.clone());
            refused = Some(reason);
            let until = tokio::time::Instant::now() + config.close_grace;
            closing_until = Some(closing_until.map_or(until, |t| t.min(until)));
        }
        let grace = closing_until.unwrap_or_else(tokio::time::Instant::now);
        let received = tokio::select! {
            received = reader.next() => received,
            () = &mut stop, if !stopping => {
                stopping = true;
                queue.close(CloseReason::new(1001, "server shutting down"));
                closing_until = Some(tokio::time::Instant::now() + config.close_grace);
                continue;
            }
            _ = &mut writer, if !writer_done => {
                // The close is out (or the peer is gone): wait for the peer to end.
                writer_done = true;
                let until = tokio::time::Instant::now() + config.close_grace;
                closing_until = Some(closing_until.map_or(until, |t| t.min(until)));
                continue;
            }
            () = tokio::time::sleep_until(grace), if closing_until.is_some() => {
                break refused.take().unwrap_or_else(|| CloseReason::new(1001, ""));
            }
            _ = tick(&mut ping), if ping.is_some() && closing_until.is_none() => {
                let idle = config.keepalive.map_or(Duration::MAX, |(_, idle)| idle);
                if last_seen.elapsed() >= idle {
                    tracing::debug!(room = %Clipped(core.id()), member, "idle: closing");
                    break CloseReason::new(1001, "idle timeout");
                }
                queue.push_ping();
                continue;
            }
        };
        last_seen = tokio::time::Instant::now();
        match received {
            Received::Frame(_) | Received::Other if refused.is_some() => reader.handled(),
            Received::Frame(frame) => {
                let handled = handle(&core, member, &frame);
                drop(frame);
                reader.handled();
                match handled {
                    Ok(()) => {}
                    // Closed from outside (a kick): its close is on its way.
                    Err(RoomError::NotAMember) => {}
                    Err(error) => failed = Some(error),
                }
            }
            Received::Other => reader.handled(),
            Received::Ended(reason) => {
                tracing::debug!(room = %Clipped(core.id()), member, code = reason.code, "member ended");
                break refused.take().unwrap_or(reason);
            }
        }
    };
    // Both are no-ops for a member the room refused: it left then.
    core.leave(member);
    queue.close(reason.clone());
    if !writer_done
        && tokio::time::timeout(config.drain_timeout, &mut writer)
            .await
            .is_err()
    {
        tracing::debug!(room = %Clipped(core.id()), member, "peer stopped reading; dropping it");
        writer.abort();
    }
    reason
}

async fn tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(ping) => {
            ping.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Handles a frame; one that may keep its room busy for long (see `RoomCore::heavy`) with its
/// worker handed to another thread, so that one busy room never holds up accepting,
/// hand-shaking and the other rooms.
fn handle(core: &RoomCore, member: MemberId, frame: &Bytes) -> Result<(), RoomError> {
    let Some(_busy) = core.heavy(frame.len()) else {
        return core.handle_frame(member, frame);
    };
    // Asked only now: the handle is an Arc shared by every worker.
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(|| core.handle_frame(member, frame))
    } else {
        core.handle_frame(member, frame)
    }
}

/// Drains a member's queue to its peer until the member is closed (the close sent) or the peer
/// is gone.
pub async fn write_loop<W: PeerWriter>(
    mut writer: W,
    queue: Arc<FrameQueue>,
    core: Arc<RoomCore>,
    notify: Arc<Notify>,
) {
    loop {
        let drained = queue.drain();
        let frames = if drained.overflowed {
            core.resync_frames()
        } else {
            drained.frames
        };
        // 1006 means the peer is gone: there is nobody to send a close to.
        let close = drained.closed.as_ref().filter(|r| r.code != 1006);
        let sent = writer
            .send(Batch {
                frames: &frames,
                ping: drained.ping,
                close,
            })
            .await;
        drop(frames);
        match sent {
            Ok(Sent::Closed) => break,
            Ok(_) if drained.closed.is_some() => break,
            Ok(Sent::Some) => {}
            Ok(Sent::Nothing) => {
                notify.notified().await;
                // Woken by the first frame for this peer: let the tasks that are ready (other
                // peers' readers, whose frames may be for this peer too) run first, so that one
                // send(2) carries what they add. On loopback a send costs the sender the
                // receiver's TCP work as well, and under load it was over half the server's
                // CPU.
                tokio::task::yield_now().await;
                // Still growing: the room is busy, and waiting one more turn of the scheduler
                // (a few more readers) costs less than a send each turn. Idle rooms send at
                // once.
                let mut waiting = queue.waiting();
                for _ in 0..EXTRA_TURNS {
                    tokio::task::yield_now().await;
                    let now = queue.waiting();
                    if now == waiting {
                        break;
                    }
                    waiting = now;
                }
            }
            Err(failed) => {
                if failed == SendFailed::TimedOut {
                    // Not reading: no close could get through either.
                    tracing::warn!(room = %Clipped(core.id()), "peer stopped reading: closing it");
                }
                queue.close(CloseReason::new(1006, ""));
                break;
            }
        }
    }
    writer.finish().await;
}
