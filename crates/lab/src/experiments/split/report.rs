//! What `lab split` writes: the output types (`split.json`'s schema), the
//! `split.md` tables, and `split.svg` (a lone request's p50 and a
//! saturated server's req/s against the parts, one line per variant).
//! These types are the published format and nothing else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use harness::chart::{self, Chart, Panel, Series};
use harness::cost::{Bound, CpuRecord, PerRequest};
use harness::cpus::Pinning;
use harness::kernel::Runtime;
use harness::loadgen::LoadSummary;
use harness::record::{self, CellStatus, failed_row, markdown_table, opt, to_json};
use harness::servers::ServerParams;
use serde::{Deserialize, Serialize};
use service::contract::PoolKind;

use super::Load;
use super::figures::speedups;
use crate::cells;

/// Bumped whenever a field of [`SplitRun`] changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// `split.json`: the run, its parameters and its cells.
pub type SplitRun = cells::Run<SplitParams, CellRecord>;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SplitParams {
    pub quick: bool,
    /// In run order.
    pub variants: Vec<String>,
    pub workers: u16,
    pub parts: Vec<u32>,
    /// Connections of the saturated load.
    pub saturate: u32,
    pub duration_s: f64,
    /// Iterations of one whole request, over all its parts.
    pub iters: u32,
    /// One whole request's cost on one core, ms, per runtime.
    pub kernel_ms: BTreeMap<Runtime, f64>,
    /// The cores the server may use.
    pub cores: usize,
    #[serde(flatten)]
    pub servers: ServerParams,
    pub pinning: Option<Pinning>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CellRecord {
    /// `KIND`, or `KIND --pool X`.
    pub variant: String,
    pub model: String,
    pub pool: Option<PoolKind>,
    pub parts: u32,
    pub iters_per_part: u32,
    pub load: Load,
    pub connections: u32,
    pub summary: Option<LoadSummary>,
    /// What the whole server (every process) spent per request answered,
    /// and what bound the cell.
    pub per_request: Option<PerRequest>,
    pub bound: Option<Bound>,
    pub server_cpu: Option<CpuRecord>,
    pub status: CellStatus,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
    pub exit_code: Option<i32>,
}

/// A variant's request in `parts` parts against the same in one part.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Speedup {
    pub variant: String,
    pub parts: u32,
    /// A lone request's p50 with one part over its p50 with `parts`: above
    /// 1, splitting made it faster.
    pub lone_p50: Option<f64>,
    /// A saturated server's req/s with `parts` over its req/s with one.
    pub saturated_rps: Option<f64>,
}

impl cells::CellRecord for CellRecord {
    fn failure(&self) -> Option<&str> {
        (self.status == CellStatus::Failed).then(|| self.error.as_deref().unwrap_or("?"))
    }

    fn summary(&self) -> String {
        let summary = self.summary.as_ref();
        format!(
            "{} req/s, p50 {} ms",
            opt(summary.map(|s| s.rps), 1),
            opt(summary.and_then(|s| s.latency_ms.p50), 1)
        )
    }
}

/// Writes `split.json`, `split.md` and `split.svg`, each whole.
pub fn write_all(dir: &Path, run: &SplitRun) -> std::io::Result<()> {
    record::write_files(
        dir,
        &[
            ("split.json".into(), to_json(run)?),
            ("split.md".into(), markdown(run)),
        ],
    )?;
    if run.cells.is_empty() {
        return Ok(());
    }
    chart::write_files(dir, &[("split.svg".into(), chart(run))])
}

const HEADER: [&str; 10] = [
    "variant",
    "parts",
    "load",
    "connections",
    "req/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "CPU µs/req",
    "bound",
];

/// The cells, then each variant's speedups.
pub fn tables(run: &SplitRun) -> String {
    let rows: Vec<Vec<String>> = run.cells.iter().map(row).collect();
    let mut out = markdown_table(&HEADER, rows, 3);
    let times = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}×"));
    let rows: Vec<Vec<String>> = speedups(&run.cells)
        .into_iter()
        .map(|s| {
            vec![
                s.variant,
                s.parts.to_string(),
                times(s.lone_p50),
                times(s.saturated_rps),
            ]
        })
        .collect();
    out.push_str("\n\n");
    out.push_str(&markdown_table(
        &[
            "variant",
            "parts",
            "lone request: p50 speedup",
            "saturated: req/s ratio",
        ],
        rows,
        2,
    ));
    out
}

fn row(cell: &CellRecord) -> Vec<String> {
    let labels = vec![
        cell.variant.clone(),
        cell.parts.to_string(),
        cell.load.name().to_owned(),
    ];
    if cell.status == CellStatus::Failed {
        return failed_row(labels, cell.error.as_deref(), HEADER.len());
    }
    let latency = |f: fn(&LoadSummary) -> Option<f64>| opt(cell.summary.as_ref().and_then(f), 1);
    let mut row = labels;
    row.extend([
        cell.connections.to_string(),
        opt(cell.summary.as_ref().map(|s| s.rps), 1),
        latency(|s| s.latency_ms.p50),
        latency(|s| s.latency_ms.p99),
        latency(|s| s.latency_ms.max),
        opt(cell.per_request.map(|p| p.cpu_us), 0),
        cell.bound.as_ref().map_or("-", |b| b.by.name()).to_owned(),
    ]);
    row
}

fn markdown(run: &SplitRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lab split `{}`\n", run.meta.name);
    let _ = writeln!(out, "{}\n", run.meta.describe());
    let p = &run.params;
    let kernels: Vec<String> = p
        .kernel_ms
        .iter()
        .map(|(runtime, ms)| format!("{ms:.1} ms in {runtime:?}"))
        .collect();
    let _ = writeln!(
        out,
        "Workers: {}, on {} cores. One request is {} PBKDF2 iterations in all ({} on one core, \
         timed alone), asked for as `/cpu?iters={{{} ÷ P}}&parts=P`: the same work in P \
         independent parts. Each cell is {} s of a closed loop: `lone`, one connection (a \
         request on an idle server), and `saturated`, {} connections. A model that can runs a \
         request's parts at once on its threads; a process runs them one after another. CPU \
         µs/req: every server process's CPU time during the load per request answered; bound: \
         what limited the load, as in `lab run`. The speedups compare each cell with the same \
         variant's one-part cell.\n",
        p.workers,
        p.cores,
        p.iters,
        kernels.join(", "),
        p.iters,
        p.duration_s,
        p.saturate,
    );
    out.push_str(&tables(run));
    out.push_str("\n\n![lone p50 and saturated req/s against the parts](split.svg)\n");
    out.push_str(&cells::failures(&run.cells, |cell| {
        format!("{} parts={} {}", cell.variant, cell.parts, cell.load.name())
    }));
    out
}

/// Two panels against the parts: a lone request's p50 (log scale) and a
/// saturated server's req/s, one line per variant.
pub fn chart(run: &SplitRun) -> Chart {
    let series = |load: Load, f: &dyn Fn(&LoadSummary) -> Option<f64>| -> Vec<Series> {
        run.params
            .variants
            .iter()
            .map(|variant| Series {
                name: variant.clone(),
                points: run
                    .cells
                    .iter()
                    .filter(|c| {
                        &c.variant == variant && c.load == load && c.status == CellStatus::Ok
                    })
                    .filter_map(|c| Some((f64::from(c.parts), f(c.summary.as_ref()?)?)))
                    .collect(),
            })
            .collect()
    };
    Chart {
        x_desc: "parts per request".into(),
        log_x: false,
        marker_x: None,
        panels: vec![
            Panel {
                caption: "a lone request: p50 latency".into(),
                y_desc: "ms".into(),
                log_y: true,
                bars: false,
                series: series(Load::Lone, &|s| s.latency_ms.p50),
            },
            Panel {
                caption: format!(
                    "saturated ({} connections): throughput",
                    run.params.saturate
                ),
                y_desc: "req/s".into(),
                log_y: false,
                bars: false,
                series: series(Load::Saturated, &|s| Some(s.rps)),
            },
        ],
    }
}
