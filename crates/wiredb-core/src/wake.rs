//! How a queue tells its consumer that something arrived: a tokio `Notify` for consumers on
//! tokio, an eventfd for consumers in Python (which await `anyio.wait_readable(fd)`), so Rust
//! never calls into Python to wake it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// A Linux eventfd, non-blocking and close-on-exec. Writes add to a counter; a read resets it.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory preconditions; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the fd readable. Never blocks: the counter saturating (EAGAIN) still means readable.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an fd we own.
        unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter so that the fd is no longer readable.
    pub fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from an fd we own; EAGAIN is fine.
        unsafe { libc::read(self.raw(), (&mut value as *mut u64).cast(), 8) };
    }

    /// Blocks the calling thread until the fd is readable or the timeout passes. For the blocking
    /// Python client, called with the GIL released. Returns whether it became readable.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.raw(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        loop {
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n >= 0 {
                return n > 0;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return false;
            }
        }
    }
}

/// Wakes a queue's consumer.
#[derive(Debug, Clone)]
pub enum Waker {
    Tokio(Arc<Notify>),
    Fd(Arc<EventFd>),
}

impl Waker {
    pub fn wake(&self) {
        match self {
            Waker::Tokio(notify) => notify.notify_one(),
            Waker::Fd(fd) => fd.notify(),
        }
    }
}
