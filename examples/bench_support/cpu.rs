//! What a measured process costs, from the kernel's own accounts, and the statistics the load
//! benchmarks print.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// CPU nanoseconds per thread of a process (`/proc/PID/task/*/schedstat`, the scheduler's own
/// clock rather than the tick-sampled utime/stime of `/proc/PID/stat`), with the thread names.
pub fn thread_ns(pid: &str) -> Vec<(String, String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_string_lossy().to_string();
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let schedstat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns = schedstat.split_whitespace().next()?.parse().ok()?;
            Some((tid, name.trim().to_string(), ns))
        })
        .collect()
}

/// Nanoseconds all threads of a process have run on a CPU.
pub fn cpu_ns(pid: &str) -> Result<u64, String> {
    let threads = thread_ns(pid);
    if threads.is_empty() {
        return Err(format!("no process {pid}"));
    }
    Ok(threads.iter().map(|(_, _, ns)| ns).sum())
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn vm_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The thread that used the most CPU between two samples, and its share of one core.
pub fn busiest(
    before: &[(String, String, u64)],
    after: &[(String, String, u64)],
    secs: f64,
) -> Option<(String, f64)> {
    after
        .iter()
        .map(|(tid, name, t1)| {
            let t0 = before.iter().find(|(b, _, _)| b == tid).map_or(0, |b| b.2);
            (name.clone(), t1.saturating_sub(t0) as f64 / 1e9 / secs)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The `p` quantile (0..=1) of sorted values; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Round trips in ms: each mark sent paired with the first onset heard after it and before the
/// next mark; a mark without one was not heard.
pub fn round_trips(marks: &[Instant], onsets: &[Instant]) -> Vec<f64> {
    marks
        .iter()
        .enumerate()
        .filter_map(|(i, mark)| {
            let next = marks
                .get(i + 1)
                .copied()
                .unwrap_or(*mark + Duration::from_secs(1));
            let onset = onsets.iter().find(|o| **o >= *mark && **o < next)?;
            Some(onset.duration_since(*mark).as_secs_f64() * 1000.0)
        })
        .collect()
}
