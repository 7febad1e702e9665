//! How close a cell came to what the machine allows, and the kernel timing
//! that the cpu ceiling rests on.
//!
//! - cpu: each request costs `cost` seconds of one core, and a server can
//!   use at most `min(workers, cores)` cores, so it cannot exceed
//!   `min(workers, cores) / cost` requests per second.
//! - io: with `c` clients each waiting `latency` per request, Little's law
//!   (L = λW) caps throughput at `c / latency`.

use nix::time::{ClockId, clock_gettime};

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

/// Times `service::kernel::pbkdf2_hex(iters)` `runs` times on this thread
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
        std::hint::black_box(service::kernel::pbkdf2_hex(iters));
        // An unreadable clock (NaN) compares as `None`: stop warming then.
        if thread_cpu_seconds().partial_cmp(&warm_until) != Some(std::cmp::Ordering::Less) {
            break;
        }
    }
    (0..runs)
        .map(|_| {
            let start = thread_cpu_seconds();
            std::hint::black_box(service::kernel::pbkdf2_hex(std::hint::black_box(iters)));
            thread_cpu_seconds() - start
        })
        .collect()
}

/// Iterations that cost about `target_seconds` here, rounded to 100.
pub fn calibrate_iters(target_seconds: f64) -> u32 {
    const PROBE: u32 = 2_000;
    let per_iter = median(&time_kernel(PROBE, 5)).unwrap_or(1e-6) / f64::from(PROBE);
    let iters = (target_seconds / per_iter / 100.0).round() * 100.0;
    let range = service::kernel::ITERS_RANGE;
    (iters as u32).clamp(100.max(*range.start()), *range.end())
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
    fn kernel_timing_is_positive_and_calibration_in_range() {
        let runs = time_kernel(10, 3);
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|&s| s > 0.0));
        let iters = calibrate_iters(0.0005);
        assert!(service::kernel::ITERS_RANGE.contains(&iters));
    }
}
