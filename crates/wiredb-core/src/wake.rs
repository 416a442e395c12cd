//! How a queue tells its consumer that something arrived: a tokio `Notify` for consumers on
//! tokio, an eventfd for consumers in Python (which await `anyio.wait_readable(fd)`), so Rust
//! never calls into Python to wake it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// A Linux eventfd, non-blocking and close-on-exec. Writes add to a counter; a read resets it.
///
/// It may be closed before its last owner drops it (`close`): a Python object caught in a
/// reference cycle then holds no descriptor, and later notifications are ignored. The lock
/// makes sure no notification writes to the number after it was closed (and maybe reused).
#[derive(Debug)]
pub struct EventFd {
    fd: RwLock<Option<OwnedFd>>,
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
            fd: RwLock::new(Some(unsafe { OwnedFd::from_raw_fd(raw) })),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<OwnedFd>> {
        // The guarded value is an fd or nothing: a panic elsewhere cannot leave it half-set.
        self.fd.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The descriptor, or -1 once closed.
    pub fn raw(&self) -> RawFd {
        self.read().as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Makes the fd readable. Never blocks: the counter saturating (EAGAIN) still means readable.
    pub fn notify(&self) {
        if let Some(fd) = self.read().as_ref() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to an fd we own (open under the lock).
            unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Resets the counter so that the fd is no longer readable.
    pub fn clear(&self) {
        if let Some(fd) = self.read().as_ref() {
            let mut value: u64 = 0;
            // SAFETY: reads 8 bytes into a valid u64 from an fd we own; EAGAIN is fine.
            unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        }
    }

    /// Blocks the calling thread until the fd is readable or the timeout passes. For the blocking
    /// Python client, called with the GIL released. Returns whether it became readable (a
    /// closed fd counts as readable: there is nothing more to wait for).
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let guard = self.read();
        let Some(fd) = guard.as_ref() else {
            return true;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
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

    /// Closes the descriptor now. A thread blocked in `wait` is woken first (it holds the
    /// descriptor open until it returns).
    pub fn close(&self) {
        self.notify();
        let fd = self.fd.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(fd);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_eventfd_frees_its_descriptor_and_ignores_notifications() {
        let fd = EventFd::new().unwrap();
        let raw = fd.raw();
        fd.notify();
        assert!(fd.wait(Some(Duration::ZERO)));
        fd.clear();
        assert!(!fd.wait(Some(Duration::ZERO)));
        fd.close();
        assert_eq!(fd.raw(), -1);
        // SAFETY: F_GETFD only reads flags; the number is closed, so it fails.
        assert!(unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0);
        fd.notify();
        fd.clear();
        assert!(fd.wait(None));
    }

    #[test]
    fn close_wakes_a_blocked_waiter() {
        let fd = Arc::new(EventFd::new().unwrap());
        let waiter = {
            let fd = fd.clone();
            std::thread::spawn(move || fd.wait(None))
        };
        std::thread::sleep(Duration::from_millis(20));
        fd.close();
        assert!(waiter.join().unwrap());
    }
}
