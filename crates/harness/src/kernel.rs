//! How close a cell came to what the machine allows, and the kernel timing
//! that the cpu ceiling rests on, in each runtime a server may run in.
//!
//! - cpu: each request costs `cost` seconds of one core, and a server can
//!   use at most `min(workers, cores)` cores, so it cannot exceed
//!   `min(workers, cores) / cost` requests per second.
//! - io: with `c` clients each waiting `latency` per request, Little's law
//!   (L = λW) caps throughput at `c / latency`.

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The ceiling for a CPU-bound workload, in requests per second.
pub fn cpu_ceiling_rps(workers: u16, cores: usize, cost_seconds: f64) -> f64 {
    let usable = usize::from(workers).min(cores).max(1);
    usable as f64 / cost_seconds
}

/// The ceiling for a waiting workload (Little's law), in requests per second.
pub fn io_ceiling_rps(concurrency: u32, latency_seconds: f64) -> f64 {
    f64::from(concurrency) / latency_seconds
}

/// Measured over ceiling; `None` when the ceiling is not a finite positive
/// number (a zero-cost kernel or a zero-ms wait has no meaningful ceiling).
pub fn efficiency(rps: f64, ceiling_rps: f64) -> Option<f64> {
    (ceiling_rps.is_finite() && ceiling_rps > 0.0).then(|| rps / ceiling_rps)
}

/// The median, robust against one run that the OS interrupted.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// This thread's CPU seconds so far.
fn thread_cpu_seconds() -> f64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(f64::NAN, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// Times `service::kernel::pbkdf2_hex(iters, 0)` `runs` times on this thread
/// and returns each run's seconds. Single-threaded on purpose: it is the
/// cost of one request on one core.
///
/// It counts this thread's CPU time, not wall time: the machine is shared,
/// and time spent preempted by other processes is not the kernel's cost.
pub fn time_kernel(iters: u32, runs: usize) -> Vec<f64> {
    // Untimed runs first, for about 100 ms, so neither cold caches nor a
    // core still ramping up its clock from idle are billed to the kernel
    // (the servers are measured under sustained load).
    let warm_until = thread_cpu_seconds() + 0.1;
    loop {
        std::hint::black_box(service::kernel::pbkdf2_hex(iters, 0));
        // An unreadable clock (NaN) compares as `None`: stop warming then.
        if thread_cpu_seconds().partial_cmp(&warm_until) != Some(std::cmp::Ordering::Less) {
            break;
        }
    }
    (0..runs)
        .map(|_| {
            let start = thread_cpu_seconds();
            std::hint::black_box(service::kernel::pbkdf2_hex(std::hint::black_box(iters), 0));
            thread_cpu_seconds() - start
        })
        .collect()
}

/// What one `/cpu` request is made to cost (in Rust) when no iteration
/// count is given: long enough to dwarf the HTTP around it, short enough for
/// many requests a second.
pub const REQUEST_COST_S: f64 = 0.0015;

/// Iterations that cost about `target_seconds` here (in Rust), rounded to
/// 100.
pub fn calibrate_iters(target_seconds: f64) -> u32 {
    const PROBE: u32 = 2_000;
    let per_iter = median(&time_kernel(PROBE, 5)).unwrap_or(1e-6) / f64::from(PROBE);
    iters_for(target_seconds, per_iter)
}

/// The iterations that cost `target_seconds` at `per_iter_seconds` each,
/// rounded to 100 and kept within what `/cpu` accepts (at least 100).
fn iters_for(target_seconds: f64, per_iter_seconds: f64) -> u32 {
    let iters = (target_seconds / per_iter_seconds / 100.0).round() * 100.0;
    let range = service::kernel::ITERS_RANGE;
    // `as` saturates: an infinite or huge quotient becomes u32::MAX.
    (iters as u32).clamp(100.max(*range.start()), *range.end())
}

/// The runtime a server's `/cpu` runs in. The same PBKDF2 iterations do
/// not cost the same in each, so each runtime's cpu cells get their ceiling
/// from that runtime's own cost, measured in that runtime.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Rust,
    Node,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot run node to time its PBKDF2")]
    Spawn(#[source] std::io::Error),
    #[error("node's kernel timing failed: {0}")]
    Node(String),
}

/// [`time_kernel_in`] once for each runtime of `runtimes` (repeats
/// ignored), in milliseconds. A runtime that cannot be timed is left out,
/// with a warning naming `consequence`: what its cells lose.
pub fn time_in_each(
    runtimes: impl IntoIterator<Item = Runtime>,
    iters: u32,
    runs: usize,
    consequence: &str,
) -> BTreeMap<Runtime, Vec<f64>> {
    let mut timed = BTreeMap::new();
    for runtime in runtimes {
        if timed.contains_key(&runtime) {
            continue;
        }
        match time_kernel_in(runtime, iters, runs) {
            Ok(runs) => {
                let ms: Vec<f64> = runs.into_iter().map(|s| s * 1000.0).collect();
                tracing::info!(
                    ?runtime,
                    iters,
                    median_ms = format!("{:.3}", median(&ms).unwrap_or(f64::NAN)),
                    "cpu kernel timed"
                );
                timed.insert(runtime, ms);
            }
            Err(e) => tracing::warn!(
                "cannot time the cpu kernel in {runtime:?}: {}; {consequence}",
                crate::record::chain(&e)
            ),
        }
    }
    timed
}

/// Times `runs` requests' worth of `/cpu` work in `runtime`, each in CPU
/// seconds, after a warm-up, as [`time_kernel`] does for Rust.
pub fn time_kernel_in(runtime: Runtime, iters: u32, runs: usize) -> Result<Vec<f64>, KernelError> {
    match runtime {
        Runtime::Rust => Ok(time_kernel(iters, runs)),
        Runtime::Node => time_kernel_in_node(iters, runs),
    }
}

/// The same measurement in a `node` process: `crypto.pbkdf2Sync` with the
/// contract's password and salt, timed by `process.cpuUsage()` (the
/// process's CPU time: JavaScript runs on one thread), after 100 ms of
/// untimed warm-up.
fn time_kernel_in_node(iters: u32, runs: usize) -> Result<Vec<f64>, KernelError> {
    const SCRIPT: &str = r#"
const crypto = require('crypto');
const [iters, runs] = process.argv.slice(1).map(Number);
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const work = () => crypto.pbkdf2Sync('password', 'salt', iters, 32, 'sha256');
const warm = cpu() + 0.1;
while (cpu() < warm) work();
const out = [];
for (let i = 0; i < runs; i++) { const start = cpu(); work(); out.push(cpu() - start); }
console.log(JSON.stringify(out));
"#;
    let output = std::process::Command::new("node")
        .args(["-e", SCRIPT, &iters.to_string(), &runs.to_string()])
        .output()
        .map_err(KernelError::Spawn)?;
    if !output.status.success() {
        return Err(KernelError::Node(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| KernelError::Node(e.to_string()))
}

/// `node --version`, if node is there.
pub fn node_version() -> Option<String> {
    let output = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ceiling_uses_the_smaller_of_workers_and_cores() {
        // 2 ms per request: one core does 500 rps.
        assert_eq!(cpu_ceiling_rps(1, 2, 0.002), 500.0);
        assert_eq!(cpu_ceiling_rps(2, 2, 0.002), 1000.0);
        // More workers than cores buy nothing.
        assert_eq!(cpu_ceiling_rps(4, 2, 0.002), 1000.0);
        assert_eq!(efficiency(750.0, cpu_ceiling_rps(4, 2, 0.002)), Some(0.75));
    }

    #[test]
    fn io_ceiling_is_littles_law() {
        // 512 clients, each waiting 20 ms: at most 25,600 rps.
        assert_eq!(io_ceiling_rps(512, 0.020), 25_600.0);
        assert_eq!(efficiency(12_800.0, io_ceiling_rps(512, 0.020)), Some(0.5));
    }

    #[test]
    fn no_efficiency_without_a_ceiling() {
        assert_eq!(efficiency(10.0, io_ceiling_rps(512, 0.0)), None);
        assert_eq!(efficiency(10.0, 0.0), None);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn kernel_timing_gives_one_positive_figure_per_run() {
        let runs = time_kernel(10, 3);
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|&s| s > 0.0));
    }

    #[test]
    fn iterations_are_the_target_over_the_cost_of_one_rounded_and_bounded() {
        // 1 µs an iteration: 1.5 ms is 1500 of them.
        assert_eq!(iters_for(0.0015, 1e-6), 1500);
        assert_eq!(iters_for(0.0015, 0.7e-6), 2100);
        // Never under 100, never over what /cpu accepts.
        assert_eq!(iters_for(0.0015, 1.0), 100);
        assert_eq!(iters_for(1e6, 1e-12), *service::kernel::ITERS_RANGE.end());
    }

    #[test]
    fn node_times_its_own_kernel() {
        // node is on every machine this lab is built on (CI checks it).
        let runs = time_kernel_in(Runtime::Node, 100, 3).expect("node timing");
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|s| s.is_finite() && *s >= 0.0), "{runs:?}");
        assert!(node_version().is_some_and(|v| v.starts_with('v')));
    }
}
