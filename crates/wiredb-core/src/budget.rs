//! What peers may make the process hold, and how much work they may make it do.
//!
//! [`Memory`] is one process-wide count of the bytes that exist because a peer sent something:
//! messages being read (past a small allowance per connection), documents (by their cost in
//! memory, see [`document_cost`]), awareness states, and frames queued for members. Each is
//! charged before it is held and released when it is dropped; a charge past the limit is
//! refused, and the peer that asked for it is closed (1013) instead of the process growing.
//! A frame broadcast to many members is one allocation, charged once.
//!
//! [`Work`] is a token bucket of the time a member (or a room) spends in the room's code: past
//! it, the member is closed (1008), so no sender can keep a room busy for everyone else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::scan::ScanReport;

/// The default process limit.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// What one struct (an item of a document) costs in a yrs document beyond its encoded bytes:
/// measured, 1,000,000 one-character prepends (7 MB on the wire) held ~190 MB.
pub const STRUCT_COST: usize = 200;

/// The memory a document holds for an update (or a whole document) of `len` bytes that the
/// structural scan found `report` in: its bytes, plus every struct and deleted range (which may
/// split an item) at [`STRUCT_COST`]. An upper bound: yrs merges consecutive edits of one
/// client into one item, so a room measures its document again before refusing an edit.
pub fn document_cost(len: usize, report: &ScanReport) -> usize {
    let structs =
        usize::try_from(report.structs.saturating_add(report.deletes)).unwrap_or(usize::MAX);
    len.saturating_add(structs.saturating_mul(STRUCT_COST))
}

/// The process-wide memory count.
#[derive(Debug)]
pub struct Memory {
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl Memory {
    pub const fn new(limit: usize) -> Self {
        Memory {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        }
    }

    /// The one count of the process.
    pub fn process() -> &'static Memory {
        static PROCESS: Memory = Memory::new(DEFAULT_MEMORY_LIMIT);
        &PROCESS
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes` if they fit under the limit; false (nothing charged) otherwise.
    pub fn try_charge(&self, bytes: usize) -> bool {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    pub fn release(&self, bytes: usize) {
        // Never below zero, even if a caller releases twice by mistake.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// `bytes`, charged until the last clone of the returned `Bytes` is dropped; given back
    /// uncharged (`Err`) if they do not fit.
    pub fn charged(&'static self, bytes: Bytes) -> Result<Bytes, Bytes> {
        if !self.try_charge(bytes.len()) {
            return Err(bytes);
        }
        Ok(Bytes::from_owner(Charged {
            bytes,
            memory: self,
        }))
    }
}

/// A frame's storage, released from the count when dropped.
struct Charged {
    bytes: Bytes,
    memory: &'static Memory,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.memory.release(self.bytes.len());
    }
}

/// A token bucket of time: `rate` of every second may be spent, with a reserve of `burst`.
#[derive(Debug, Clone, Copy)]
pub struct WorkLimits {
    /// The share of each second a member (or a room) may keep the room busy.
    pub rate: f64,
    /// What may be spent at once before the rate applies.
    pub burst: Duration,
}

impl WorkLimits {
    /// A member: a quarter of a core on average, ten seconds at once (a large document's first
    /// upload, a reconnecting client's offline edits).
    pub const MEMBER: WorkLimits = WorkLimits {
        rate: 0.25,
        burst: Duration::from_secs(10),
    };
    /// A room: half a core on average, twenty seconds at once.
    pub const ROOM: WorkLimits = WorkLimits {
        rate: 0.5,
        burst: Duration::from_secs(20),
    };
}

/// The time left to spend, refilled at `limits.rate`.
#[derive(Debug, Clone)]
pub struct Work {
    limits: WorkLimits,
    left: f64,
    at: Instant,
}

impl Work {
    pub fn new(limits: WorkLimits) -> Self {
        Work {
            limits,
            left: limits.burst.as_secs_f64(),
            at: Instant::now(),
        }
    }

    /// Spends `spent` (measured up to `now`); false once the bucket is empty.
    pub fn spend(&mut self, spent: Duration, now: Instant) -> bool {
        let burst = self.limits.burst.as_secs_f64();
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.limits.rate;
        self.at = now;
        self.left = (self.left + refill).min(burst) - spent.as_secs_f64();
        self.left >= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_past_the_limit_are_refused_and_nothing_is_charged() {
        let memory = Memory::new(100);
        assert!(memory.try_charge(60));
        assert!(!memory.try_charge(41));
        assert_eq!(memory.used(), 60);
        assert!(memory.try_charge(40));
        memory.release(100);
        assert_eq!(memory.used(), 0);
        memory.release(1);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn a_charged_frame_is_released_when_its_last_clone_goes() {
        static MEMORY: Memory = Memory::new(1 << 20);
        let frame = MEMORY.charged(Bytes::from(vec![1u8; 1000])).unwrap();
        let clones: Vec<Bytes> = (0..100).map(|_| frame.clone()).collect();
        // One broadcast to a hundred members is held, and counted, once.
        assert_eq!(MEMORY.used(), 1000);
        drop(frame);
        assert_eq!(MEMORY.used(), 1000);
        drop(clones);
        assert_eq!(MEMORY.used(), 0);
        assert!(MEMORY.charged(Bytes::from(vec![0u8; 2 << 20])).is_err());
        assert_eq!(MEMORY.used(), 0);
    }

    #[test]
    fn work_refills_at_its_rate_up_to_the_burst() {
        let limits = WorkLimits {
            rate: 0.5,
            burst: Duration::from_secs(2),
        };
        let start = Instant::now();
        let mut work = Work::new(limits);
        assert!(work.spend(Duration::from_millis(1500), start));
        assert!(!work.spend(Duration::from_millis(600), start));
        // Two seconds later one second is back (rate 0.5), less the 0.1 s overdrawn.
        assert!(work.spend(Duration::from_millis(800), start + Duration::from_secs(2)));
        assert!(!work.spend(Duration::from_millis(200), start + Duration::from_secs(2)));
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(3600);
        assert!(work.spend(Duration::from_millis(1900), later));
        assert!(!work.spend(Duration::from_millis(200), later));
    }
}
