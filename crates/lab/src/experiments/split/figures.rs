//! From what a cell measured to what `split.json` says about it, and each
//! variant's speedup over its own one-part request: pure functions, tested
//! without a server.

use harness::cost::{self, CpuRecord};
use harness::record::CellStatus;

use super::measure::Observed;
use super::report::{CellRecord, Speedup};
use super::{Cell, Load};

/// The record of `cell`, whose whole request is `iters` iterations.
pub fn cell_record(cell: &Cell, iters: u32, observed: Observed) -> CellRecord {
    let mut problems: Vec<String> = observed.error.iter().cloned().collect();
    if let Some(code) = observed.exit_code.filter(|&c| c != 0) {
        problems.push(format!(
            "the server exited with {code} after SIGTERM, not 0"
        ));
    }
    let failed = !problems.is_empty();
    let cpu = match (&observed.load, observed.server) {
        (Some(load), Some(server)) => Some(CpuRecord::new(
            server,
            false,
            load.cpu_seconds,
            observed.load_wall_s,
        )),
        _ => None,
    };
    let summary = observed.load.map(|l| l.summary);
    let per_request = match (&cpu, &summary) {
        (Some(cpu), Some(summary)) => cost::per_request(cpu, summary.ok),
        _ => None,
    };
    let bound = match (&summary, &cpu, observed.limits) {
        (Some(summary), Some(cpu), Some(limits)) => {
            Some(cost::bound(summary, cpu, &limits, None, None))
        }
        _ => None,
    };
    CellRecord {
        variant: cell.variant.to_string(),
        model: cell.variant.kind.name.clone(),
        pool: cell.variant.pool,
        parts: cell.parts,
        iters_per_part: (iters / cell.parts).max(1),
        load: cell.load,
        connections: observed.connections,
        summary,
        per_request,
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

/// For each variant and part count above one, in run order: how much
/// faster a lone request answered (its p50 with one part over its p50 with
/// P), and how much more a saturated server answered (req/s with P over
/// req/s with one part), each against the same variant's one-part cell.
/// `None` where either cell failed or is missing.
pub fn speedups(cells: &[CellRecord]) -> Vec<Speedup> {
    let ok = |variant: &str, parts: u32, load: Load| {
        cells.iter().find(|c| {
            c.variant == variant && c.parts == parts && c.load == load && c.status == CellStatus::Ok
        })
    };
    let p50 = |c: &CellRecord| c.summary.as_ref()?.latency_ms.p50;
    let rps = |c: &CellRecord| Some(c.summary.as_ref()?.rps);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut out: Vec<Speedup> = Vec::new();
    for cell in cells {
        let (variant, parts) = (cell.variant.as_str(), cell.parts);
        if parts == 1 || out.iter().any(|s| s.variant == variant && s.parts == parts) {
            continue;
        }
        let lone = |p| ok(variant, p, Load::Lone);
        let saturated = |p| ok(variant, p, Load::Saturated);
        out.push(Speedup {
            variant: variant.to_owned(),
            parts,
            lone_p50: ratio(lone(1).and_then(p50), lone(parts).and_then(p50)),
            saturated_rps: ratio(saturated(parts).and_then(rps), saturated(1).and_then(rps)),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::loadgen::LoadSummary;

    fn cell(variant: &str, parts: u32, load: Load, p50: f64, rps: f64) -> CellRecord {
        let mut summary = LoadSummary {
            rps,
            ..LoadSummary::default()
        };
        summary.latency_ms.p50 = Some(p50);
        CellRecord {
            variant: variant.into(),
            model: variant.into(),
            pool: None,
            parts,
            iters_per_part: 1,
            load,
            connections: 1,
            summary: Some(summary),
            per_request: None,
            bound: None,
            server_cpu: None,
            status: CellStatus::Ok,
            error: None,
            stderr_tail: Vec::new(),
            exit_code: Some(0),
        }
    }

    #[test]
    fn speedups_compare_each_part_count_with_one_part_of_the_same_variant() {
        let mut cells = vec![
            cell("threads", 1, Load::Lone, 50.0, 20.0),
            cell("threads", 1, Load::Saturated, 400.0, 40.0),
            cell("threads", 2, Load::Lone, 25.0, 40.0),
            cell("threads", 2, Load::Saturated, 400.0, 38.0),
            cell("process", 1, Load::Lone, 50.0, 20.0),
            cell("process", 2, Load::Lone, 52.0, 19.0),
        ];
        cells.push(CellRecord {
            status: CellStatus::Failed,
            ..cell("process", 2, Load::Saturated, 1.0, 1.0)
        });
        let found = speedups(&cells);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].variant, "threads");
        assert_eq!(found[0].lone_p50, Some(2.0));
        assert_eq!(found[0].saturated_rps, Some(38.0 / 40.0));
        assert_eq!(found[1].lone_p50, Some(50.0 / 52.0));
        assert_eq!(
            found[1].saturated_rps, None,
            "a failed cell and a missing one"
        );
    }
}
