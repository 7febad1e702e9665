//! Per-worker counters that live in memory every worker can see.
//!
//! A [`WorkerSlot`] is plain atomics in a fixed `#[repr(C)]` layout with no
//! pointers, so the very same type works in two kinds of shared memory:
//! a `MAP_SHARED | MAP_ANONYMOUS` region inherited across `fork` (prefork),
//! and an `Arc` shared between threads (threadpool). That is why any worker
//! can answer `/stats` for all of them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::contract::{self, LoopLag};

/// What a slot's worker is doing, as stored in [`WorkerSlot::state`].
pub use crate::contract::SlotState;

fn state_from_u32(raw: u32) -> SlotState {
    match raw {
        1 => SlotState::Ready,
        2 => SlotState::Dead,
        _ => SlotState::Starting,
    }
}

fn state_to_u32(state: SlotState) -> u32 {
    match state {
        SlotState::Starting => 0,
        SlotState::Ready => 1,
        SlotState::Dead => 2,
    }
}

/// One worker's counters.
///
/// Every field is an atomic with relaxed ordering: each is an independent
/// counter or gauge, and a `/stats` reader only needs each value to be
/// torn-free, not a consistent snapshot across fields.
#[derive(Debug, Default)]
#[repr(C)]
pub struct WorkerSlot {
    /// The worker's process id (prefork) or kernel thread id (threadpool).
    pub pid: AtomicU32,
    /// A [`SlotState`].
    pub state: AtomicU32,
    /// Requests (prefork) or jobs (threadpool) this slot has served, across
    /// restarts: the slot, not the process, is the unit a reader follows.
    pub requests: AtomicU64,
    /// Requests or jobs in progress right now.
    pub in_flight: AtomicU64,
    /// Requests answered with a 5xx, including caught panics.
    pub errors: AtomicU64,
    /// How many times this slot's worker was replaced.
    pub restarts: AtomicU64,
    /// Connections this slot's event loop took to serve (accepted itself, or
    /// handed over by prefork's master under `--balance rr`), across
    /// restarts. With `requests`, it shows how a policy spread the load.
    pub connections: AtomicU64,
    /// [`monotonic_ms`] when the worker last proved it can run: the loop
    /// ticker writes it every tick, a pool thread when it takes a job. A
    /// supervisor compares it with the clock to find hung workers; the clock is
    /// system-wide, so this works across processes.
    pub heartbeat_ms: AtomicU64,
    /// Event-loop lag percentiles in microseconds, published by the ticker.
    pub lag_p50_us: AtomicU64,
    pub lag_p99_us: AtomicU64,
    pub lag_max_us: AtomicU64,
}

impl WorkerSlot {
    pub fn state(&self) -> SlotState {
        state_from_u32(self.state.load(Relaxed))
    }

    pub fn set_state(&self, state: SlotState) {
        self.state.store(state_to_u32(state), Relaxed);
    }

    /// Records the heartbeat as "now".
    pub fn beat(&self) {
        self.heartbeat_ms.store(monotonic_ms(), Relaxed);
    }

    /// How long ago the last heartbeat was, in milliseconds.
    pub fn heartbeat_age_ms(&self) -> u64 {
        monotonic_ms().saturating_sub(self.heartbeat_ms.load(Relaxed))
    }

    /// Prepares the slot for a new worker: the gauges that belonged to the
    /// old one are cleared, the cumulative counters are kept.
    pub fn reset_for_new_worker(&self, pid: u32) {
        self.pid.store(pid, Relaxed);
        self.set_state(SlotState::Starting);
        self.in_flight.store(0, Relaxed);
        self.lag_p50_us.store(0, Relaxed);
        self.lag_p99_us.store(0, Relaxed);
        self.lag_max_us.store(0, Relaxed);
        self.beat();
    }

    /// The loop-lag summary in milliseconds, as `/stats` shows it.
    pub fn loop_lag(&self) -> LoopLag {
        let ms = |us: &AtomicU64| us.load(Relaxed) as f64 / 1000.0;
        LoopLag {
            p50: ms(&self.lag_p50_us),
            p99: ms(&self.lag_p99_us),
            max: ms(&self.lag_max_us),
        }
    }

    /// The contract's per-worker `/stats` entry, without `loop_lag_ms`
    /// (a model adds it where its workers run an event loop).
    pub fn stats(&self, id: usize) -> contract::WorkerStats {
        contract::WorkerStats {
            id,
            pid: self.pid.load(Relaxed),
            state: self.state(),
            requests: self.requests.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            errors: self.errors.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            connections: self.connections.load(Relaxed),
            ..contract::WorkerStats::default()
        }
    }
}

/// Counts one request or job on a slot for as long as the guard lives, so
/// `in_flight` is decremented on every path out, panics included.
#[derive(Debug)]
pub struct InFlight<'a>(&'a WorkerSlot);

impl<'a> InFlight<'a> {
    pub fn enter(slot: &'a WorkerSlot) -> Self {
        slot.requests.fetch_add(1, Relaxed);
        slot.in_flight.fetch_add(1, Relaxed);
        Self(slot)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Milliseconds on `CLOCK_MONOTONIC`.
///
/// Unlike `std::time::Instant`, the raw value means the same thing in every
/// process on the machine, so a heartbeat written by a worker can be aged by
/// the master.
pub fn monotonic_ms() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    now.tv_sec() as u64 * 1000 + now.tv_nsec() as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout must hold only plain integers: a pointer inside a slot would
    /// mean nothing in another process.
    #[test]
    fn slot_is_plain_data() {
        assert_eq!(std::mem::size_of::<WorkerSlot>(), 2 * 4 + 9 * 8);
        assert_eq!(std::mem::align_of::<WorkerSlot>(), 8);
    }

    #[test]
    fn in_flight_guard_counts_and_releases() {
        let slot = WorkerSlot::default();
        {
            let _a = InFlight::enter(&slot);
            let _b = InFlight::enter(&slot);
            assert_eq!(slot.in_flight.load(Relaxed), 2);
        }
        assert_eq!(slot.in_flight.load(Relaxed), 0);
        assert_eq!(slot.requests.load(Relaxed), 2);
    }

    #[test]
    fn reset_keeps_history_and_clears_gauges() {
        let slot = WorkerSlot::default();
        slot.requests.store(7, Relaxed);
        slot.in_flight.store(3, Relaxed);
        slot.restarts.store(1, Relaxed);
        slot.reset_for_new_worker(42);
        assert_eq!(slot.pid.load(Relaxed), 42);
        assert_eq!(slot.requests.load(Relaxed), 7);
        assert_eq!(slot.restarts.load(Relaxed), 1);
        assert_eq!(slot.in_flight.load(Relaxed), 0);
        assert_eq!(slot.state(), SlotState::Starting);
        assert!(slot.heartbeat_age_ms() < 1000);
    }
}
