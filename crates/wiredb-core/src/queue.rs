//! The bounded frame queue between a producer and one consumer (a room and a member, a socket
//! reader and Python). Bounded in frames and bytes. When a producer that must not wait (a room
//! broadcasting) finds it full, the queue is emptied and marked `overflowed`: the consumer then
//! resynchronises from the room's full state instead of silently missing an update.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::wake::Waker;

#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_frames: 4096,
            max_bytes: 32 << 20,
        }
    }
}

/// Why a queue was closed; for a WebSocket, the close frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

impl CloseReason {
    pub fn normal() -> Self {
        CloseReason {
            code: 1000,
            reason: String::new(),
        }
    }

    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        CloseReason {
            code,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue was full: it was emptied and the consumer must resynchronise.
    Overflowed,
    Closed,
}

/// What a consumer takes out in one call.
#[derive(Debug, Default)]
pub struct Drained {
    pub frames: Vec<Bytes>,
    /// Frames were dropped: replace them with a full resync.
    pub overflowed: bool,
    /// Set once the queue is closed and every frame before the close was handed out.
    pub closed: Option<CloseReason>,
    /// A keepalive ping is due.
    pub ping: bool,
}

impl Drained {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && !self.overflowed && self.closed.is_none() && !self.ping
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    overflowed: bool,
    closed: Option<CloseReason>,
    ping: bool,
}

#[derive(Debug)]
pub struct FrameQueue {
    state: Mutex<State>,
    limits: QueueLimits,
    waker: Waker,
    space: Notify,
}

impl FrameQueue {
    pub fn new(limits: QueueLimits, waker: Waker) -> Self {
        FrameQueue {
            state: Mutex::new(State::default()),
            limits,
            waker,
            space: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters (every update is a push or a clear), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame without waiting; on a full queue, empties it and flags a resync.
    pub fn push(&self, frame: Bytes) -> Pushed {
        let result = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return Pushed::Closed;
            }
            if state.overflowed {
                // Already due for a full resync, which will carry this frame's content.
                return Pushed::Overflowed;
            }
            if state.frames.len() >= self.limits.max_frames
                || state.bytes + frame.len() > self.limits.max_bytes
            {
                state.frames.clear();
                state.bytes = 0;
                state.overflowed = true;
                Pushed::Overflowed
            } else {
                state.bytes += frame.len();
                state.frames.push_back(frame);
                Pushed::Queued
            }
        };
        self.waker.wake();
        result
    }

    /// Queues a frame, waiting for room: backpressure for producers that may wait (a socket
    /// reader stops reading while its consumer is behind). Returns false once closed.
    pub async fn push_wait(&self, frame: Bytes) -> bool {
        loop {
            let space = self.space.notified();
            {
                let mut state = self.lock();
                if state.closed.is_some() {
                    return false;
                }
                // An oversized frame is still accepted into an empty queue, or it could never pass.
                if state.frames.is_empty()
                    || (state.frames.len() < self.limits.max_frames
                        && state.bytes + frame.len() <= self.limits.max_bytes)
                {
                    state.bytes += frame.len();
                    state.frames.push_back(frame);
                    drop(state);
                    self.waker.wake();
                    return true;
                }
            }
            space.await;
        }
    }

    /// Takes everything queued.
    pub fn drain(&self) -> Drained {
        let drained = {
            let mut state = self.lock();
            let frames: Vec<Bytes> = state.frames.drain(..).collect();
            state.bytes = 0;
            let overflowed = std::mem::take(&mut state.overflowed);
            Drained {
                frames,
                overflowed,
                closed: state.closed.clone(),
                ping: std::mem::take(&mut state.ping),
            }
        };
        self.space.notify_waiters();
        drained
    }

    /// Asks the consumer (a socket writer) to send a keepalive ping.
    pub fn push_ping(&self) {
        self.lock().ping = true;
        self.waker.wake();
    }

    /// Closes the queue: frames already queued are still handed out, then `closed` is reported.
    /// The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(reason);
            }
        }
        self.space.notify_waiters();
        self.waker.wake();
    }

    /// Wakes the consumer without queuing anything (it finds nothing new, and looks again
    /// at whatever it waits for besides frames).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// How many frames wait.
    pub fn waiting(&self) -> usize {
        self.lock().frames.len()
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn queue(max_frames: usize) -> FrameQueue {
        FrameQueue::new(
            QueueLimits {
                max_frames,
                max_bytes: 1 << 20,
            },
            Waker::Tokio(Arc::new(Notify::new())),
        )
    }

    #[test]
    fn overflow_empties_and_flags_a_resync() {
        let q = queue(2);
        assert_eq!(q.push(Bytes::from_static(b"a")), Pushed::Queued);
        assert_eq!(q.push(Bytes::from_static(b"b")), Pushed::Queued);
        assert_eq!(q.push(Bytes::from_static(b"c")), Pushed::Overflowed);
        let drained = q.drain();
        assert!(drained.overflowed);
        assert!(drained.frames.is_empty());
        assert_eq!(q.push(Bytes::from_static(b"d")), Pushed::Queued);
        assert!(!q.drain().overflowed);
    }

    #[test]
    fn close_hands_out_queued_frames_first() {
        let q = queue(8);
        q.push(Bytes::from_static(b"a"));
        q.close(CloseReason::new(1001, "going away"));
        assert_eq!(q.push(Bytes::from_static(b"b")), Pushed::Closed);
        let drained = q.drain();
        assert_eq!(drained.frames.len(), 1);
        assert_eq!(drained.closed.map(|c| c.code), Some(1001));
    }

    #[tokio::test]
    async fn push_wait_resumes_when_drained() {
        let q = Arc::new(queue(1));
        assert!(q.push_wait(Bytes::from_static(b"a")).await);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.push_wait(Bytes::from_static(b"b")).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(q.drain().frames.len(), 1);
        assert!(waiter.await.unwrap());
        assert_eq!(q.drain().frames, vec![Bytes::from_static(b"b")]);
    }
}
