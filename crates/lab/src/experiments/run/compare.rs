//! `lab compare RUN_A RUN_B`: what changed between two runs of `lab run`.
//!
//! For every cell the two runs share (same kind, workload, workers,
//! connections and offered load), each figure's median over the repeats in
//! each run, with its min and max, and the change from A to B. A change is
//! marked when the two runs' ranges do not overlap: smaller changes are
//! within the noise of these runs. With `--fail-over`, the command exits 1
//! when the chosen figure got worse by more than that anywhere, so a team
//! can gate a change on it. It reads `run.json` files of the current schema
//! only, like every reader of results.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use harness::record::{CellStatus, TableStyle, render_table};

use super::report::{CellRecord, RunRecord, SCHEMA_VERSION, Spread};
use crate::Error;

/// `lab compare`'s flags.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The run before: its folder (with run.json) or its run.json.
    #[arg(value_name = "RUN_A")]
    pub a: PathBuf,

    /// The run after.
    #[arg(value_name = "RUN_B")]
    pub b: PathBuf,

    /// The figure --fail-over watches.
    #[arg(long, value_enum, default_value_t = Figure::CpuPerRequest, requires = "fail_over")]
    pub figure: Figure,

    /// Exit 1 when the watched figure got worse by more than this, e.g.
    /// `10%`, in any shared cell.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub fail_over: Option<f64>,
}

/// A figure of a cell that can be compared.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// 2xx answers per second (higher is better).
    Rps,
    /// p99 latency (lower is better).
    P99,
    /// Server CPU per 2xx answer (lower is better).
    CpuPerRequest,
    /// Idle PSS of the whole server (lower is better).
    PssIdle,
}

impl Figure {
    const ALL: [Figure; 4] = [
        Figure::Rps,
        Figure::P99,
        Figure::CpuPerRequest,
        Figure::PssIdle,
    ];

    fn name(self) -> &'static str {
        match self {
            Figure::Rps => "rps",
            Figure::P99 => "p99 ms",
            Figure::CpuPerRequest => "CPU µs/req",
            Figure::PssIdle => "PSS idle MiB",
        }
    }

    fn of(self, cell: &CellRecord) -> Option<f64> {
        match self {
            Figure::Rps => Some(cell.load.as_ref()?.rps),
            Figure::P99 => cell.load.as_ref()?.latency_ms.p99,
            Figure::CpuPerRequest => Some(cell.per_request?.cpu_us),
            Figure::PssIdle => {
                Some(cell.memory.as_ref()?.idle.pss_bytes as f64 / (1024.0 * 1024.0))
            }
        }
    }

    /// How much worse `change` (B over A, minus one) is: positive when
    /// worse.
    fn worse_by(self, change: f64) -> f64 {
        match self {
            Figure::Rps => -change,
            Figure::P99 | Figure::CpuPerRequest | Figure::PssIdle => change,
        }
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(v) if (0.0..=1000.0).contains(&v) => Ok(v / 100.0),
        _ => Err(format!("`{text}` is not a percentage such as 10%")),
    }
}

/// One figure of one shared cell, in both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The cell: kind, workload, workers, connections, load.
    pub cell: [String; 5],
    pub figure: Figure,
    pub a: Spread,
    pub b: Spread,
    /// B's median over A's, minus one.
    pub change: f64,
    /// The two runs' ranges do not overlap; `None` when either run has a
    /// single value, which has no spread to compare with.
    pub beyond_spread: Option<bool>,
}

fn key(cell: &CellRecord) -> [String; 5] {
    [
        cell.model.clone(),
        cell.workload.to_string(),
        cell.workers.to_string(),
        cell.concurrency.to_string(),
        cell.offered.to_string(),
    ]
}

/// Every figure of every cell both runs have, in A's order.
pub fn compare(a: &RunRecord, b: &RunRecord) -> Vec<Change> {
    let mut keys: Vec<[String; 5]> = Vec::new();
    for cell in &a.cells {
        let k = key(cell);
        if !keys.contains(&k) && b.cells.iter().any(|c| key(c) == k) {
            keys.push(k);
        }
    }
    let spread = |run: &RunRecord, k: &[String; 5], figure: Figure| {
        let values: Vec<f64> = run
            .cells
            .iter()
            .filter(|c| &key(c) == k && c.status == CellStatus::Ok)
            .filter_map(|c| figure.of(c))
            .collect();
        Some((Spread::of(&values)?, values.len()))
    };
    let mut changes = Vec::new();
    for k in keys {
        for figure in Figure::ALL {
            let (Some((a, runs_a)), Some((b, runs_b))) =
                (spread(a, &k, figure), spread(b, &k, figure))
            else {
                continue;
            };
            if a.median == 0.0 {
                continue;
            }
            changes.push(Change {
                cell: k.clone(),
                figure,
                a,
                b,
                change: b.median / a.median - 1.0,
                beyond_spread: (runs_a > 1 && runs_b > 1).then_some(b.min > a.max || b.max < a.min),
            });
        }
    }
    changes
}

/// The cells that succeeded at least once in A and never in B: the worst
/// change there is.
pub fn failed_in_b(a: &RunRecord, b: &RunRecord) -> Vec<[String; 5]> {
    let ok = |run: &RunRecord, k: &[String; 5]| {
        run.cells
            .iter()
            .any(|c| &key(c) == k && c.status == CellStatus::Ok)
    };
    let mut failed: Vec<[String; 5]> = Vec::new();
    for cell in &b.cells {
        let k = key(cell);
        if !failed.contains(&k) && ok(a, &k) && !ok(b, &k) {
            failed.push(k);
        }
    }
    failed
}

/// The changes of `figure` that are worse than `threshold`.
pub fn worse_than(changes: &[Change], figure: Figure, threshold: f64) -> Vec<&Change> {
    changes
        .iter()
        .filter(|c| c.figure == figure && figure.worse_by(c.change) > threshold)
        .collect()
}

/// The lines that say how the two runs differ in where they ran.
fn differences(a: &RunRecord, b: &RunRecord) -> Vec<String> {
    let (ma, mb) = (&a.meta, &b.meta);
    let mut out = Vec::new();
    let mut differ = |what: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{what}: {x} → {y}"));
        }
    };
    differ(
        "commit",
        ma.git_commit.clone().unwrap_or_default(),
        mb.git_commit.clone().unwrap_or_default(),
    );
    differ("build", ma.build.clone(), mb.build.clone());
    differ(
        "cpu",
        ma.machine.cpu_model.clone(),
        mb.machine.cpu_model.clone(),
    );
    differ(
        "logical cores",
        ma.machine.logical_cores.to_string(),
        mb.machine.logical_cores.to_string(),
    );
    differ(
        "kernel",
        ma.machine.kernel.clone().unwrap_or_default(),
        mb.machine.kernel.clone().unwrap_or_default(),
    );
    differ(
        "pinning",
        format!("{:?}", a.params.pinning),
        format!("{:?}", b.params.pinning),
    );
    // Settings that change what a figure means.
    let (pa, pb) = (&a.params, &b.params);
    differ(
        "cpu iterations",
        pa.cpu_iters.to_string(),
        pb.cpu_iters.to_string(),
    );
    differ("io wait ms", pa.io_ms.to_string(), pb.io_ms.to_string());
    differ(
        "load s",
        pa.duration_s.to_string(),
        pb.duration_s.to_string(),
    );
    differ(
        "warm-up s",
        pa.warmup_s.to_string(),
        pb.warmup_s.to_string(),
    );
    differ(
        "dataset MiB",
        pa.servers.dataset_mb.to_string(),
        pb.servers.dataset_mb.to_string(),
    );
    out
}

/// The report: the runs, how they differ, and the table of changes.
pub fn render(a: &RunRecord, b: &RunRecord, changes: &[Change]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {} ({})", a.meta.name, a.meta.describe());
    let _ = writeln!(out, "B: {} ({})", b.meta.name, b.meta.describe());
    for line in differences(a, b) {
        let _ = writeln!(out, "differs: {line}");
    }
    for cell in failed_in_b(a, b) {
        let _ = writeln!(out, "failed in B: {} (it succeeded in A)", cell.join(" "));
    }
    if changes.is_empty() {
        out.push_str("no figure in common\n");
        return out;
    }
    let show = |s: Spread| format!("{:.1} [{:.1}–{:.1}]", s.median, s.min, s.max);
    let rows = changes
        .iter()
        .map(|c| {
            let mut row = c.cell.to_vec();
            row.push(c.figure.name().into());
            row.push(show(c.a));
            row.push(show(c.b));
            row.push(format!("{:+.1}%", c.change * 100.0));
            row.push(
                match c.beyond_spread {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "- (one run)",
                }
                .into(),
            );
            row
        })
        .collect();
    out.push_str(&render_table(
        &[
            "model",
            "workload",
            "workers",
            "conc",
            "load",
            "figure",
            "A median [min–max]",
            "B median [min–max]",
            "change",
            "beyond spread",
        ],
        rows,
        2,
        TableStyle::Terminal,
    ));
    out.push('\n');
    out
}

fn read(path: &Path) -> Result<RunRecord, Error> {
    let file = if path.is_dir() {
        path.join("run.json")
    } else {
        path.to_owned()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::BadInput(format!("cannot read {}: {e}", file.display())))?;
    let not_current = |why: String| {
        Error::BadInput(format!(
            "{} is not a run.json of schema {SCHEMA_VERSION}: {why}",
            file.display()
        ))
    };
    let run: RunRecord = serde_json::from_str(&text).map_err(|e| not_current(e.to_string()))?;
    if run.schema_version != SCHEMA_VERSION {
        return Err(not_current(format!("it is schema {}", run.schema_version)));
    }
    Ok(run)
}

/// Prints the comparison; `Ok(false)` when `--fail-over` was exceeded.
pub fn main(args: &CompareArgs) -> Result<bool, Error> {
    let (a, b) = (read(&args.a)?, read(&args.b)?);
    let changes = compare(&a, &b);
    print!("{}", render(&a, &b, &changes));
    let Some(threshold) = args.fail_over else {
        return Ok(true);
    };
    let failed = failed_in_b(&a, &b);
    for cell in &failed {
        eprintln!("worse: {} failed in B", cell.join(" "));
    }
    let worse = worse_than(&changes, args.figure, threshold);
    for change in &worse {
        eprintln!(
            "worse: {} {} by {:+.1}% (over {:.0}%)",
            change.cell.join(" "),
            change.figure.name(),
            change.change * 100.0,
            threshold * 100.0
        );
    }
    Ok(worse.is_empty() && failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::run::report::tests::sample_run;

    #[test]
    fn a_change_beyond_the_spread_is_marked_and_a_worse_one_caught() {
        let a = sample_run(&[
            ("prefork", 1, 1000.0),
            ("prefork", 1, 1010.0),
            ("prefork", 1, 990.0),
            ("prefork", 2, 1100.0),
        ]);
        let b = sample_run(&[
            ("prefork", 1, 800.0),
            ("prefork", 1, 810.0),
            ("prefork", 1, 790.0),
            ("prefork", 4, 1050.0),
        ]);
        let changes = compare(&a, &b);
        let rps: Vec<&Change> = changes.iter().filter(|c| c.figure == Figure::Rps).collect();
        assert_eq!(rps.len(), 1, "one cell in common: {rps:?}");
        assert!((rps[0].change + 0.2).abs() < 1e-9);
        assert_eq!(rps[0].beyond_spread, Some(true));
        assert_eq!(worse_than(&changes, Figure::Rps, 0.1).len(), 1);
        assert!(worse_than(&changes, Figure::Rps, 0.25).is_empty());
        // Higher CPU per request is worse; the samples have the same.
        assert!(worse_than(&changes, Figure::CpuPerRequest, 0.0).is_empty());
    }

    #[test]
    fn overlapping_ranges_are_within_the_noise() {
        let a = sample_run(&[("prefork", 1, 900.0), ("prefork", 1, 1100.0)]);
        let b = sample_run(&[("prefork", 1, 1000.0), ("prefork", 1, 1200.0)]);
        let rps = compare(&a, &b)
            .into_iter()
            .find(|c| c.figure == Figure::Rps)
            .unwrap();
        assert!((rps.change - 0.1).abs() < 1e-9);
        assert_eq!(rps.beyond_spread, Some(false));
        // One run each: no spread to judge by.
        let single = compare(
            &sample_run(&[("prefork", 1, 1.0)]),
            &sample_run(&[("prefork", 1, 2.0)]),
        );
        assert_eq!(single[0].beyond_spread, None);
    }

    #[test]
    fn a_cell_that_failed_in_b_is_the_worst_change() {
        let a = sample_run(&[("prefork", 1, 1000.0)]);
        let mut b = sample_run(&[("prefork", 1, 1000.0)]);
        b.cells[0].status = CellStatus::Failed;
        assert!(compare(&a, &b).is_empty());
        assert_eq!(failed_in_b(&a, &b).len(), 1);
        assert!(failed_in_b(&a, &a).is_empty());
        assert!(render(&a, &b, &[]).contains("failed in B: prefork cpu 1 16 closed"));
    }

    #[test]
    fn percentages_parse() {
        assert_eq!(parse_percent("10%"), Ok(0.1));
        assert_eq!(parse_percent("2.5"), Ok(0.025));
        assert!(parse_percent("ten").is_err());
    }
}
