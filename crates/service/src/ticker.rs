//! The loop ticker: a periodic timer on an event loop that measures how late
//! it fires and doubles as the worker's heartbeat.
//!
//! A late timer means something held the loop: a CPU-bound handler, a
//! blocking call. This is the measure Node exposes as
//! `perf_hooks.monitorEventLoopDelay`. A timer that stops firing altogether
//! means the loop is stuck, which is what the prefork master's hung-worker
//! check looks for in the heartbeat.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::slot::WorkerSlot;

/// How often the ticker fires.
pub const TICK: Duration = Duration::from_millis(10);

/// Runs forever on the current event loop, recording lag and heartbeats into
/// `slot`. Spawn it once per loop.
///
/// Percentiles are cumulative since the loop started, like an un-reset
/// `monitorEventLoopDelay`. Tokio's timer wheel has millisecond granularity,
/// so lag below about 1 ms is noise.
pub async fn run(slot: &WorkerSlot) {
    // Lag in microseconds, up to an hour, at 3 significant figures: a fixed
    // few kilobytes per loop.
    let mut lag = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("static histogram bounds are valid");
    let mut due = Instant::now() + TICK;
    loop {
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        let late_us = now.saturating_duration_since(due).as_micros() as u64;
        lag.saturating_record(late_us.max(1));
        slot.beat();
        slot.lag_p50_us.store(lag.value_at_quantile(0.50), Relaxed);
        slot.lag_p99_us.store(lag.value_at_quantile(0.99), Relaxed);
        slot.lag_max_us.store(lag.max(), Relaxed);
        // Schedule from "now", not from the missed deadline: after a stall we
        // want one late tick recorded, not a burst of catch-up ticks.
        due = now + TICK;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocking_the_loop_shows_up_as_lag() {
        let slot: &'static WorkerSlot = Box::leak(Box::default());
        let ticker = tokio::spawn(run(slot));
        tokio::time::sleep(TICK * 3).await;
        // Hold the loop: the ticker cannot fire while this thread spins.
        std::thread::sleep(Duration::from_millis(120));
        tokio::time::sleep(TICK * 3).await;
        ticker.abort();
        assert!(slot.lag_max_us.load(Relaxed) >= 100_000, "{slot:?}");
        assert!(slot.heartbeat_age_ms() < 1000);
    }
}
