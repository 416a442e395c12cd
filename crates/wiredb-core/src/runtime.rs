//! The process-wide tokio runtime that runs every server, client and store. Its threads never
//! run Python. Worker stacks are large because yrs recurses on nested content.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

const WORKER_STACK_BYTES: usize = 16 << 20;

/// The most threads of the blocking pool, where every file store's I/O (open, write, fsync,
/// squash) runs: jobs beyond it wait in the pool's queue instead of each starting a thread
/// (tokio's default bound is 512 threads, each with a 16 MiB stack reserved here).
pub const MAX_BLOCKING_THREADS: usize = 16;

/// The shared runtime, created on first use with `WIREDB_THREADS` workers (default: the number
/// of CPUs, at most 4).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let threads = std::env::var("WIREDB_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get().min(4))
                    .unwrap_or(2)
            });
        match Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wiredb")
            .thread_stack_size(WORKER_STACK_BYTES)
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            // Without a runtime nothing works; there is no better report than this.
            Err(error) => panic!("wiredb cannot start its tokio runtime: {error}"),
        }
    })
}
