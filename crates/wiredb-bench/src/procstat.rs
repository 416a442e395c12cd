//! What a process costs, read from /proc: CPU time (utime + stime of every thread, live or
//! exited) and resident memory. Used on the server under test, from outside it, so that every
//! server (Python, Node, ours) is measured the same way.
//!
//! utime + stime count in clock ticks (10 ms): too coarse for a run that costs a server 50 ms.
//! Each thread's schedstat counts nanoseconds, but forgets threads that exited; a [`CpuSample`]
//! keeps both and uses the nanoseconds when no thread exited in between.

use std::collections::HashMap;
use std::io;

/// A process's CPU time at one moment.
#[derive(Debug, Clone)]
pub struct CpuSample {
    ticks_seconds: f64,
    /// Nanoseconds on CPU by thread id, from /proc/<pid>/task/<tid>/schedstat.
    threads_ns: HashMap<u32, u64>,
}

impl CpuSample {
    pub fn take(pid: u32) -> io::Result<CpuSample> {
        let ticks_seconds = cpu_seconds(pid)?;
        let mut threads_ns = HashMap::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let schedstat = std::fs::read_to_string(task.path().join("schedstat"));
                if let Some(ns) = schedstat
                    .ok()
                    .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
                {
                    threads_ns.insert(tid, ns);
                }
            }
        }
        Ok(CpuSample {
            ticks_seconds,
            threads_ns,
        })
    }

    /// CPU seconds used between `self` and `later`.
    pub fn seconds_until(&self, later: &CpuSample) -> f64 {
        let all_alive = self
            .threads_ns
            .keys()
            .all(|tid| later.threads_ns.contains_key(tid));
        if all_alive && !later.threads_ns.is_empty() {
            let ns: u64 = later
                .threads_ns
                .iter()
                .map(|(tid, ns)| ns.saturating_sub(self.threads_ns.get(tid).copied().unwrap_or(0)))
                .sum();
            ns as f64 / 1e9
        } else {
            later.ticks_seconds - self.ticks_seconds
        }
    }
}

/// Seconds of CPU a process has used so far (user + system, all its threads).
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    cpu_from_stat(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })
}

fn cpu_from_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted
    // from the last ')'. After it come field 3 (state) .. field 14 (utime), 15 (stime).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no VmRSS in /proc/{pid}/status"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let seconds = cpu_from_stat(stat).unwrap();
        assert!((seconds - 300.0 / clock_ticks_per_second()).abs() < 1e-9);
    }

    #[test]
    fn this_process_can_be_measured() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let before = CpuSample::take(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let after = CpuSample::take(std::process::id()).unwrap();
        assert!(before.seconds_until(&after) > 0.0);
    }
}
