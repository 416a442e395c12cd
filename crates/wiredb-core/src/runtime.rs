//! The tokio runtime that runs every server, client and store: one per process. Its threads
//! never run Python. Worker stacks are large because yrs recurses on nested content.
//!
//! Forking: a child of `fork()` inherits the parent's runtime without its threads (nothing
//! would ever run there) and shares its epoll instance with the parent (what the child
//! registered there would wake the parent's I/O driver with pointers into the child's memory:
//! SIGSEGV in the parent). So a `pthread_atfork` child handler forgets that runtime (leaked:
//! its destructor would join threads that are not there) and points its epoll and eventfd
//! descriptors, in the child only, at fresh private ones; the child's first use builds its own
//! runtime. The handler runs between `fork()` and the child's first instruction after it, so
//! it only stores atomics and makes syscalls (async-signal-safe).

use std::collections::HashSet;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, Ordering};

use tokio::runtime::{Builder, Runtime};

const WORKER_STACK_BYTES: usize = 16 << 20;

/// The most threads of the blocking pool, where every file store's I/O (open, write, fsync,
/// squash) runs: jobs beyond it wait in the pool's queue instead of each starting a thread
/// (tokio's default bound is 512 threads, each with a 16 MiB stack reserved here).
pub const MAX_BLOCKING_THREADS: usize = 16;

/// This process's runtime (null: not built yet, or forgotten after a fork).
static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(ptr::null_mut());
static FORK_HANDLER: AtomicBool = AtomicBool::new(false);
/// Set while a thread builds the runtime.
static BUILDING: AtomicBool = AtomicBool::new(false);

/// The descriptors that building the runtime opened and that a child must not share: tokio's
/// epoll instance and its waker's eventfd. -1: unused slot.
const DRIVER_SLOTS: usize = 8;
static DRIVER_FDS: [AtomicI32; DRIVER_SLOTS] = [const { AtomicI32::new(-1) }; DRIVER_SLOTS];
static DRIVER_KINDS: [AtomicU8; DRIVER_SLOTS] = [const { AtomicU8::new(0) }; DRIVER_SLOTS];
const KIND_EPOLL: u8 = 1;
const KIND_EVENTFD: u8 = 2;

/// This process's runtime, created on first use with `WIREDB_THREADS` workers (default: the
/// number of CPUs, at most 4); a child of `fork()` creates its own on its first use.
pub fn runtime() -> &'static Runtime {
    let current = RUNTIME.load(Ordering::Acquire);
    if !current.is_null() {
        // SAFETY: a non-null pointer comes from `Box::into_raw` below and is never freed.
        return unsafe { &*current };
    }
    build()
}

fn build() -> &'static Runtime {
    // One builder at a time, so that the descriptors recorded are this runtime's alone. A
    // flag rather than a lock: the child handler clears it (a thread building when the
    // process forked does not exist in the child), where a held lock would stay held.
    while BUILDING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        std::thread::yield_now();
    }
    let _building = Building;
    let current = RUNTIME.load(Ordering::Acquire);
    if !current.is_null() {
        // SAFETY: as in `runtime()`.
        return unsafe { &*current };
    }
    install_fork_handler();
    let threads = std::env::var("WIREDB_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2)
        });
    let before = open_fds();
    let built = Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("wiredb")
        .thread_stack_size(WORKER_STACK_BYTES)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build();
    let runtime = match built {
        Ok(runtime) => Box::into_raw(Box::new(runtime)),
        // Without a runtime nothing works; there is no better report than this.
        Err(error) => panic!("wiredb cannot start its tokio runtime: {error}"),
    };
    record_driver_fds(&before);
    RUNTIME.store(runtime, Ordering::Release);
    // SAFETY: just published; never freed.
    unsafe { &*runtime }
}

/// Lets the next builder in when the current one is done (or panicked).
struct Building;

impl Drop for Building {
    fn drop(&mut self) {
        BUILDING.store(false, Ordering::Release);
    }
}

fn install_fork_handler() {
    if FORK_HANDLER.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: registers a handler that only does async-signal-safe work (see `in_child`).
    let status = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    if status != 0 {
        tracing::warn!(
            status,
            "pthread_atfork failed: a forked child cannot use wiredb"
        );
    }
}

/// Runs in the child of a `fork()`, before it returns there.
extern "C" fn in_child() {
    // Leaked on purpose: the child has none of its threads, and its destructor would touch
    // state the parent's threads may have been changing when the process was copied.
    RUNTIME.store(ptr::null_mut(), Ordering::Release);
    BUILDING.store(false, Ordering::Release);
    for (fd, kind) in DRIVER_FDS.iter().zip(&DRIVER_KINDS) {
        let fd = fd.swap(-1, Ordering::AcqRel);
        if fd < 0 {
            continue;
        }
        // SAFETY: plain syscalls on descriptors of this process. The inherited descriptor is
        // replaced, not closed, so its number stays taken: the old runtime's memory (which
        // objects from before the fork still point to) can only ever reach the private copy.
        unsafe {
            let fresh = match kind.load(Ordering::Acquire) {
                KIND_EPOLL => libc::epoll_create1(libc::EPOLL_CLOEXEC),
                KIND_EVENTFD => libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK),
                _ => -1,
            };
            if fresh >= 0 {
                libc::dup3(fresh, fd, libc::O_CLOEXEC);
                libc::close(fresh);
            }
        }
    }
}

/// The open descriptors of this process (empty where /proc is not there).
fn open_fds() -> HashSet<i32> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Remembers the epoll and eventfd descriptors that appeared while the runtime was built.
fn record_driver_fds(before: &HashSet<i32>) {
    let mut slot = 0;
    for fd in open_fds().difference(before) {
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        let kind = match target.to_str() {
            Some("anon_inode:[eventpoll]") => KIND_EPOLL,
            Some("anon_inode:[eventfd]") => KIND_EVENTFD,
            _ => continue,
        };
        if slot == DRIVER_SLOTS {
            break;
        }
        DRIVER_KINDS[slot].store(kind, Ordering::Release);
        DRIVER_FDS[slot].store(*fd, Ordering::Release);
        slot += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the child handler acts on: the runtime's own epoll and eventfd, nothing else.
    #[test]
    fn the_driver_descriptors_are_found() {
        let rt = runtime();
        rt.block_on(async {});
        let kinds: Vec<u8> = DRIVER_KINDS
            .iter()
            .zip(&DRIVER_FDS)
            .filter(|(_, fd)| fd.load(Ordering::Acquire) >= 0)
            .map(|(kind, _)| kind.load(Ordering::Acquire))
            .collect();
        assert!(kinds.contains(&KIND_EPOLL), "{kinds:?}");
        assert!(kinds.contains(&KIND_EVENTFD), "{kinds:?}");
    }

    /// A forked child gets a runtime of its own that runs tasks (the inherited one has no
    /// threads), and its epoll is not the parent's.
    #[test]
    fn a_forked_child_runs_its_own_runtime() {
        let parent = runtime() as *const Runtime;
        let epoll = DRIVER_FDS
            .iter()
            .zip(&DRIVER_KINDS)
            .find(|(_, kind)| kind.load(Ordering::Acquire) == KIND_EPOLL)
            .map(|(fd, _)| fd.load(Ordering::Acquire))
            .expect("the runtime's epoll");
        // Anonymous inodes all share one inode number; what tells epolls apart is what is
        // registered in them (one `tfd:` line each in fdinfo).
        let registered = |fd: i32| {
            std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .map(|info| info.matches("tfd:").count())
                .unwrap_or(0)
        };
        assert!(registered(epoll) > 0, "the parent's epoll holds its waker");
        // SAFETY: the child only runs Rust code of its own and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = !std::ptr::eq(runtime(), parent)
                && registered(epoll) == 0
                && runtime().block_on(async { tokio::spawn(async { 7 }).await.ok() }) == Some(7);
            // SAFETY: leaves the child at once, running nothing of the parent's.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
        assert!(std::ptr::eq(runtime(), parent));
    }
}
