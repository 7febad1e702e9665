//! From what a fault run saw to what `crash.json` says about it: pure
//! arithmetic, tested on made-up observations.

use harness::cost::{self, CpuRecord};
use harness::loadgen::LoadSummary;
use harness::record::CellStatus;
use harness::timeline::{self, RecoveryRule};
use service::contract::{SlotState, Stats};

use super::measure::Observed;
use super::report::{CapacityAfter, FaultRecord, LostThread, WindowRecord};
use super::{BASELINE_FROM_S, Fault, RECOVERY, WINDOW};

/// The rules the figures follow.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub window_s: f64,
    pub baseline_from_s: f64,
    pub recovery: RecoveryRule,
}

pub const RULES: Rules = Rules {
    window_s: WINDOW.as_millis() as f64 / 1000.0,
    baseline_from_s: BASELINE_FROM_S,
    recovery: RECOVERY,
};

/// The slot whose restart count grew and which is ready again, if any.
pub fn replacement(before: &Stats, now: &Stats) -> Option<usize> {
    now.workers.iter().find_map(|w| {
        let was = before.workers.iter().find(|b| b.id == w.id)?;
        (w.restarts > was.restarts && w.state == SlotState::Ready).then_some(w.id)
    })
}

/// Seconds from `zero_ns` to `at_ns` (negative if before).
fn seconds(zero_ns: u64, at_ns: u64) -> f64 {
    (at_ns as f64 - zero_ns as f64) / 1e9
}

/// The record of one (kind, fault) run.
pub fn fault_record(model: &str, fault: Fault, seen: Observed, rules: &Rules) -> FaultRecord {
    let zero = seen.zero_ns.unwrap_or(0);
    let at = |ns: u64| seconds(zero, ns);
    let before = seen.before.as_ref().map(|(_, read)| read);
    let mut record = FaultRecord {
        model: model.to_owned(),
        fault,
        status: CellStatus::Ok,
        error: None,
        stderr_tail: Vec::new(),
        capacity_rps: seen.capacity_rps,
        rate_rps: seen.rate_rps,
        stats_read_at_s: seen.before.as_ref().map(|(ns, _)| at(*ns)),
        fault_at_s: seen.fault_ns.map(at),
        replaced_at_s: seen.replaced.map(|(ns, _)| at(ns)),
        faulted_slot: None,
        in_flight_at_fault: before.map(|b| b.stats.in_flight()),
        in_flight_on_faulted_worker: None,
        queued_at_fault: before.and_then(|b| b.stats.queue.map(|q| q.depth)),
        answered_ok: 0,
        requests_failed: 0,
        load_errors: 0,
        load_non_2xx: 0,
        deadline_cutoffs: 0,
        errors: Default::default(),
        crash_request: seen.crash_answer.clone().unwrap_or_else(|| "none".into()),
        crash_request_failed: seen
            .crash_answer
            .as_ref()
            .is_some_and(|answer| !answer.starts_with('2')),
        survived: seen.survived,
        baseline_ok_per_window: None,
        recovered: false,
        time_to_recover_ms: None,
        capacity_after: None,
        orphans: seen.orphans,
        stopped: seen.stopped,
        left_running: seen.left_running.clone(),
        cpu: None,
        per_request: None,
        bound: None,
        timeline: String::new(),
        windows: Vec::new(),
    };

    // A dead server answers nothing: its capacity after is the last known
    // layout (or the one before the fault) with nobody alive.
    let after = seen
        .after
        .as_ref()
        .or_else(|| (!seen.survived).then_some(before).flatten());
    if let Some(after) = after {
        let mut capacity = capacity_after(&after.stats, &seen.alive_pids);
        if let Some((gap_ms, later)) = &seen.later {
            burn_rates(&mut capacity.lost_threads, &later.stats, *gap_ms);
        }
        if !seen.survived {
            capacity.workers_alive = 0;
        }
        record.capacity_after = Some(capacity);
    }

    // Which slot was hit: the one killed, else the one that restarted.
    let slot = seen
        .killed_slot
        .or(seen.replaced.map(|(_, slot)| slot))
        .or_else(|| replacement(&before?.stats, &after?.stats));
    record.faulted_slot = slot;
    // Per worker only where workers hold their own requests (not a pool
    // thread, whose requests the event loop holds).
    if before.is_some_and(|b| b.stats.main.is_none()) {
        record.in_flight_on_faulted_worker = slot.and_then(|s| before?.in_flight_on(s));
    }

    if let (Some(load), Some(server)) = (&seen.load, seen.server) {
        let cpu = CpuRecord::new(server, false, load.cpu_seconds, seen.load_wall_s);
        record.per_request = cost::per_request(&cpu, load.summary.ok);
        record.bound = seen
            .limits
            .map(|limits| cost::bound(&load.summary, &cpu, &limits, seen.rate_rps, None));
        record.cpu = Some(cpu);
    }
    if let Some(load) = &seen.load {
        count_requests(&mut record, &load.summary);
        let records = load.records.as_deref().unwrap_or_default();
        let windows = timeline::windows(records, rules.window_s, seen.span_s);
        record.windows = windows
            .iter()
            .enumerate()
            .map(|(i, w)| WindowRecord {
                start_s: i as f64 * rules.window_s,
                ok: w.ok,
                non_2xx: w.non_2xx,
                p99_ms: w.p99_ms,
            })
            .collect();
        if let Some(fault_s) = record.fault_at_s {
            let baseline =
                timeline::baseline(&windows, rules.window_s, rules.baseline_from_s, fault_s);
            record.baseline_ok_per_window = baseline;
            if let Some(baseline) = baseline {
                let recovery = timeline::recovery_s(
                    &windows,
                    rules.window_s,
                    fault_s,
                    baseline,
                    rules.recovery,
                );
                record.recovered = recovery.is_some();
                record.time_to_recover_ms = recovery.map(|s| s * 1000.0);
                record.timeline = timeline::render(&windows, rules.window_s, fault_s, baseline);
            }
        }
    }

    let mut problems: Vec<String> = seen.error.iter().cloned().collect();
    if seen.error.is_none() && seen.load.is_some() && record.baseline_ok_per_window.is_none() {
        problems.push("no whole window before the fault to compare with: lengthen --before".into());
    }
    if !record.left_running.is_empty() {
        problems.push(format!(
            "server processes left running after it was stopped: {:?}",
            record.left_running
        ));
    }
    if !problems.is_empty() {
        record.status = CellStatus::Failed;
        record.error = Some(problems.join("; "));
        record.stderr_tail = seen.stderr_tail;
    }
    record
}

/// The request counts: failures are load errors, non-2xx answers, and the
/// `/crash` request itself when it got no 2xx.
fn count_requests(record: &mut FaultRecord, summary: &LoadSummary) {
    record.errors = summary.errors.clone();
    record.deadline_cutoffs = summary.deadline_cutoffs();
    record.load_errors = summary.client_errors();
    record.load_non_2xx = summary.non_2xx;
    record.answered_ok = summary.ok;
    record.requests_failed =
        record.load_errors + record.load_non_2xx + u64::from(record.crash_request_failed);
}

fn capacity_after(stats: &Stats, alive_pids: &[u32]) -> CapacityAfter {
    CapacityAfter {
        workers: stats.workers.len(),
        workers_alive: stats
            .workers
            .iter()
            .filter(|w| w.state == SlotState::Ready && alive_pids.contains(&w.pid))
            .count(),
        restarts: stats.restarts(),
        lost_threads: stats
            .lost
            .iter()
            .flatten()
            .map(|l| LostThread {
                slot: l.slot,
                tid: l.tid,
                cpu_ms: l.cpu_ms,
                cores_burning: None,
            })
            .collect(),
    }
}

/// CPU time each lost thread gained between two reads `gap_ms` apart, over
/// that gap: the share of a core it burns.
fn burn_rates(lost: &mut [LostThread], later: &Stats, gap_ms: f64) {
    for thread in lost {
        let now = later.lost.iter().flatten().find(|l| l.tid == thread.tid);
        if let (Some(before), Some(after)) = (thread.cpu_ms, now.and_then(|l| l.cpu_ms)) {
            thread.cpu_ms = Some(after);
            thread.cores_burning =
                (gap_ms > 0.0).then(|| after.saturating_sub(before) as f64 / gap_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::crash::report::Stopped;
    use harness::cost::{BoundBy, Limits};
    use harness::loadgen::{LoadOutcome, RequestRecord};
    use harness::probe::StatsRead;
    use harness::procs::Counters;
    use service::contract::{LostThread as LostStats, WorkerStats};

    fn stats(restarts: u64, state: SlotState, in_flight: u64) -> Stats {
        Stats {
            workers: vec![
                WorkerStats {
                    id: 0,
                    pid: 10,
                    state: SlotState::Ready,
                    in_flight: 2,
                    ..WorkerStats::default()
                },
                WorkerStats {
                    id: 1,
                    pid: 11,
                    state,
                    restarts,
                    in_flight,
                    ..WorkerStats::default()
                },
            ],
            ..Stats::default()
        }
    }

    #[test]
    fn a_replacement_is_a_restarted_slot_that_is_ready() {
        let ready = SlotState::Ready;
        assert_eq!(
            replacement(&stats(0, ready, 0), &stats(1, SlotState::Starting, 0)),
            None
        );
        assert_eq!(
            replacement(&stats(0, ready, 0), &stats(1, ready, 0)),
            Some(1)
        );
        assert_eq!(replacement(&stats(1, ready, 0), &stats(1, ready, 0)), None);
    }

    /// A steady 10 answers per window for 2 s, a fault at 1.0 s, nothing
    /// for 3 windows, then 10 again.
    fn observed() -> Observed {
        let mut records = Vec::new();
        for window in 0..20 {
            if (10..13).contains(&window) {
                continue;
            }
            for i in 0..10 {
                let end = window as f64 * 0.1 + 0.005 + i as f64 * 0.009;
                records.push(RequestRecord {
                    start_s: end - 0.001,
                    end_s: end,
                    duration_s: 0.001,
                    status: 200,
                });
            }
        }
        let second = 1_000_000_000;
        let before = stats(0, SlotState::Ready, 3);
        let after = stats(1, SlotState::Ready, 0);
        Observed {
            capacity_rps: Some(200.0),
            rate_rps: Some(100.0),
            zero_ns: Some(5 * second),
            span_s: 2.0,
            before: Some((
                6 * second - 1_000_000,
                StatsRead {
                    stats: before,
                    answered_by: Some(1),
                },
            )),
            fault_ns: Some(6 * second),
            killed_slot: Some(1),
            replaced: Some((6 * second + 150_000_000, 1)),
            after: Some(StatsRead {
                stats: after,
                answered_by: Some(0),
            }),
            alive_pids: vec![10, 11],
            later: None,
            survived: true,
            crash_answer: None,
            load: Some(LoadOutcome {
                summary: LoadSummary {
                    ok: records.len() as u64,
                    non_2xx: 0,
                    errors: [
                        ("aborted due to deadline".into(), 4),
                        ("connection reset".into(), 2),
                    ]
                    .into_iter()
                    .collect(),
                    ..LoadSummary::default()
                },
                cpu_seconds: 0.1,
                records: Some(records),
            }),
            server: Some(Counters {
                user_s: 0.15,
                system_s: 0.05,
                ..Counters::default()
            }),
            load_wall_s: 2.0,
            limits: Some(Limits::new(2, 2, None)),
            orphans: None,
            stopped: Some(Stopped::Exited(Some(0))),
            left_running: Vec::new(),
            error: None,
            stderr_tail: vec!["kept only on failure".into()],
        }
    }

    #[test]
    fn a_kill_is_timed_counted_and_recovered_on_the_load_generators_clock() {
        let record = fault_record("prefork", Fault::Kill, observed(), &RULES);
        assert_eq!(record.status, CellStatus::Ok, "{:?}", record.error);
        assert!(record.stderr_tail.is_empty());
        assert_eq!(record.fault_at_s, Some(1.0));
        assert!((record.replaced_at_s.unwrap() - 1.15).abs() < 1e-9);
        assert!((record.stats_read_at_s.unwrap() - 0.999).abs() < 1e-9);
        // 3 + 2 held, one of them the /stats request itself.
        assert_eq!(record.in_flight_at_fault, Some(4));
        // Slot 1 answered /stats: its own count leaves that request out.
        assert_eq!(record.in_flight_on_faulted_worker, Some(2));
        assert_eq!(record.faulted_slot, Some(1));
        // Deadline cut-offs are not failures; the resets are.
        assert_eq!((record.load_errors, record.deadline_cutoffs), (2, 4));
        assert_eq!(record.requests_failed, 2);
        assert_eq!(record.crash_request, "none");
        assert_eq!(record.baseline_ok_per_window, Some(10.0));
        // Back in the window starting at 1.3 s: 300 ms after the fault.
        assert!(record.recovered);
        assert!((record.time_to_recover_ms.unwrap() - 300.0).abs() < 1e-6);
        let capacity = record.capacity_after.unwrap();
        assert_eq!(
            (capacity.workers, capacity.workers_alive, capacity.restarts),
            (2, 2, 1)
        );
        // 0.2 CPU seconds over the load's 2xx answers; the two resets are
        // over 1% of the answers, so the fault's errors bound the load.
        let ok = record.answered_ok as f64;
        let per = record.per_request.unwrap();
        assert!((per.cpu_us - 0.2e6 / ok).abs() < 1e-6, "{per:?} over {ok}");
        assert_eq!(record.bound.unwrap().by, BoundBy::Errors);
    }

    #[test]
    fn a_dead_server_keeps_its_layout_with_nobody_alive_and_its_crash_request_counts() {
        let mut seen = observed();
        seen.survived = false;
        seen.after = None;
        seen.killed_slot = None;
        seen.replaced = None;
        seen.crash_answer = Some("no answer (connection reset)".into());
        seen.stopped = Some(Stopped::WasDead);
        let record = fault_record("threadpool", Fault::Abort, seen, &RULES);
        assert!(!record.survived && record.crash_request_failed);
        assert_eq!(record.requests_failed, 3);
        let capacity = record.capacity_after.unwrap();
        assert_eq!((capacity.workers, capacity.workers_alive), (2, 0));
    }

    #[test]
    fn a_server_without_stats_has_those_figures_not_measured() {
        let mut seen = observed();
        seen.before = None;
        seen.after = None;
        seen.replaced = None;
        seen.killed_slot = None;
        seen.alive_pids.clear();
        let record = fault_record("mine", Fault::Exit, seen, &RULES);
        assert_eq!(record.status, CellStatus::Ok, "{:?}", record.error);
        assert_eq!(record.in_flight_at_fault, None);
        assert_eq!(record.stats_read_at_s, None);
        assert_eq!(record.replaced_at_s, None);
        assert!(record.capacity_after.is_none());
        assert!(record.recovered);
    }

    #[test]
    fn an_error_or_a_leftover_fails_the_run_and_keeps_the_stderr() {
        let mut seen = observed();
        seen.left_running = vec![77];
        let record = fault_record("prefork", Fault::Kill, seen, &RULES);
        assert_eq!(record.status, CellStatus::Failed);
        assert!(record.error.unwrap().contains("[77]"));
        assert_eq!(record.stderr_tail, ["kept only on failure"]);
    }

    #[test]
    fn burn_rate_is_cpu_gained_over_the_gap() {
        let mut lost = vec![LostThread {
            slot: 0,
            tid: 7,
            cpu_ms: Some(1000),
            cores_burning: None,
        }];
        let later = Stats {
            lost: Some(vec![LostStats {
                slot: 0,
                tid: 7,
                cpu_ms: Some(1450),
                lost_for_ms: 0,
                in_flight: 1,
            }]),
            ..Stats::default()
        };
        burn_rates(&mut lost, &later, 500.0);
        assert_eq!(lost[0].cores_burning, Some(0.9));
        assert_eq!(lost[0].cpu_ms, Some(1450));
    }
}
