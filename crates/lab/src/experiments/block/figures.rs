//! From what a cell measured to what `block.json` says about it, and where
//! each variant crosses the lag threshold: pure functions, tested without
//! a server.

use harness::cost::{self, CpuRecord};
use harness::record::CellStatus;
use service::contract::{LoopLag, Stats};

use super::measure::Observed;
use super::report::{CellRecord, Crossing};
use super::{Cell, LAG_THRESHOLD_MS};

/// The record of `cell`, from what it observed.
pub fn cell_record(cell: &Cell, observed: Observed) -> CellRecord {
    let mut problems: Vec<String> = observed.error.iter().cloned().collect();
    if let Some(code) = observed.exit_code.filter(|&c| c != 0) {
        problems.push(format!(
            "the server exited with {code} after SIGTERM, not 0"
        ));
    }
    let failed = !problems.is_empty();
    let lag = observed
        .stats
        .as_ref()
        .and_then(|read| worst_lag(&read.stats));
    let loads = || observed.io.iter().chain(&observed.cpu);
    let loadgen_s: f64 = loads().map(|l| l.cpu_seconds).sum();
    let answered: u64 = loads().map(|l| l.summary.ok).sum();
    let cpu = observed
        .server
        .map(|server| CpuRecord::new(server, false, loadgen_s, observed.load_wall_s));
    // The CPU load says what bound the cell when there is one (the `/io`
    // load is small by design), the `/io` load otherwise.
    let (bound_load, bound_rate) = match (&observed.cpu, &observed.io) {
        (Some(cpu), _) => (Some(&cpu.summary), observed.cpu_rate),
        (None, Some(io)) => (Some(&io.summary), observed.io_rate),
        (None, None) => (None, None),
    };
    let bound = match (bound_load, &cpu, observed.limits) {
        (Some(load), Some(cpu), Some(limits)) => {
            Some(cost::bound(load, cpu, &limits, bound_rate, None))
        }
        _ => None,
    };
    CellRecord {
        variant: cell.variant.to_string(),
        model: cell.variant.kind.name.clone(),
        offload: cell.variant.offload,
        share: cell.share,
        cpu_offered_rps: observed.cpu_rate,
        io: observed.io.map(|l| l.summary),
        cpu: observed.cpu.map(|l| l.summary),
        loop_lag_ms: lag,
        per_request: cpu
            .as_ref()
            .and_then(|cpu| cost::per_request(cpu, answered)),
        bound,
        server_cpu: cpu,
        status: if failed {
            CellStatus::Failed
        } else {
            CellStatus::Ok
        },
        error: failed.then(|| problems.join("; ")),
        stderr_tail: if failed {
            observed.stderr_tail
        } else {
            Vec::new()
        },
        exit_code: observed.exit_code,
    }
}

/// The worst lag of every event loop `/stats` reports, figure by figure:
/// the one loop of threadpool and node-threads, each worker's in prefork
/// and node-cluster. `None` when it reports none.
pub fn worst_lag(stats: &Stats) -> Option<LoopLag> {
    stats
        .loop_lag_ms
        .iter()
        .chain(stats.workers.iter().filter_map(|w| w.loop_lag_ms.as_ref()))
        .copied()
        .reduce(|a, b| LoopLag {
            p50: a.p50.max(b.p50),
            p99: a.p99.max(b.p99),
            max: a.max.max(b.max),
        })
}

/// For each variant, in run order: the lowest share at which its worst
/// loop's p99 lag, and its `/io` p99 latency, passed the threshold
/// (`None`: not at any share measured).
pub fn crossings(cells: &[CellRecord]) -> Vec<Crossing> {
    let mut variants: Vec<&str> = Vec::new();
    for cell in cells {
        if !variants.contains(&cell.variant.as_str()) {
            variants.push(&cell.variant);
        }
    }
    variants
        .into_iter()
        .map(|variant| {
            let mut mine: Vec<&CellRecord> = cells
                .iter()
                .filter(|c| c.variant == variant && c.status == CellStatus::Ok)
                .collect();
            mine.sort_by(|a, b| a.share.total_cmp(&b.share));
            let first = |over: &dyn Fn(&CellRecord) -> Option<bool>| {
                mine.iter().find(|c| over(c) == Some(true)).map(|c| c.share)
            };
            Crossing {
                variant: variant.to_owned(),
                lag_p99_over: first(&|c| Some(c.loop_lag_ms?.p99 > LAG_THRESHOLD_MS)),
                io_p99_over: first(&|c| Some(c.io.as_ref()?.latency_ms.p99? > LAG_THRESHOLD_MS)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::loadgen::LoadSummary;
    use service::contract::WorkerStats;

    fn lag(p99: f64) -> LoopLag {
        LoopLag {
            p50: p99 / 10.0,
            p99,
            max: p99 * 2.0,
        }
    }

    #[test]
    fn the_worst_loop_counts_figure_by_figure() {
        let worker = |p99| WorkerStats {
            loop_lag_ms: Some(lag(p99)),
            ..WorkerStats::default()
        };
        let prefork = Stats {
            workers: vec![worker(3.0), worker(120.0), WorkerStats::default()],
            ..Stats::default()
        };
        assert_eq!(worst_lag(&prefork), Some(lag(120.0)));
        let threadpool = Stats {
            loop_lag_ms: Some(lag(1.0)),
            workers: vec![WorkerStats::default()],
            ..Stats::default()
        };
        assert_eq!(worst_lag(&threadpool), Some(lag(1.0)));
        assert_eq!(worst_lag(&Stats::default()), None);
    }

    fn record(variant: &str, share: f64, lag_p99: f64, io_p99: f64) -> CellRecord {
        let mut io: LoadSummary = serde_json::from_value(serde_json::json!({
            "duration_s": 1.0, "ok": 10, "non_2xx": 0, "rps": 10.0, "loadgen_rps": 10.0,
            "success_rate": 1.0, "latency_ms": {}, "bytes": 0, "status_codes": {}, "errors": {}
        }))
        .unwrap();
        io.latency_ms.p99 = Some(io_p99);
        CellRecord {
            variant: variant.into(),
            model: variant.into(),
            offload: None,
            share,
            cpu_offered_rps: None,
            io: Some(io),
            cpu: None,
            loop_lag_ms: Some(lag(lag_p99)),
            server_cpu: None,
            per_request: None,
            bound: None,
            status: CellStatus::Ok,
            error: None,
            stderr_tail: Vec::new(),
            exit_code: Some(0),
        }
    }

    #[test]
    fn a_crossing_is_the_lowest_share_over_the_threshold() {
        let cells = [
            record("a", 0.5, 150.0, 90.0),
            record("a", 0.0, 1.0, 12.0),
            record("a", 0.9, 400.0, 300.0),
            record("b", 0.0, 1.0, 11.0),
            record("b", 0.9, 2.0, 14.0),
        ];
        let found = crossings(&cells);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].lag_p99_over, found[0].io_p99_over),
            (Some(0.5), Some(0.9))
        );
        assert_eq!((found[1].lag_p99_over, found[1].io_p99_over), (None, None));
    }
}
