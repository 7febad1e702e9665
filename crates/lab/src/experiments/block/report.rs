//! What `lab block` writes: the output types (`block.json`'s schema), the
//! `block.md` tables, and `block.svg` (the `/io` p99 and the loops' lag
//! against the CPU share offered, one line per variant). These types are
//! the published format and nothing else.

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

use crate::cells;
use service::contract::{LoopLag, Offload};

use super::figures::crossings;

/// Bumped whenever a field of [`BlockRun`] changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// `block.json`: the run, its parameters and its cells.
pub type BlockRun = cells::Run<BlockParams, CellRecord>;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct BlockParams {
    pub quick: bool,
    /// In run order.
    pub variants: Vec<String>,
    pub workers: u16,
    pub shares: Vec<f64>,
    pub duration_s: f64,
    /// The `/io` load: requests per second, and each one's wait.
    pub io_rate: f64,
    pub io_ms: u32,
    pub cpu_iters: u32,
    /// One `/cpu` request's cost on one core, ms, per runtime.
    pub kernel_ms: BTreeMap<Runtime, f64>,
    /// The cores the CPU shares are of.
    pub cores: usize,
    pub lag_threshold_ms: f64,
    #[serde(flatten)]
    pub servers: ServerParams,
    pub pinning: Option<Pinning>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CellRecord {
    /// `KIND`, or `KIND --offload X`.
    pub variant: String,
    pub model: String,
    pub offload: Option<Offload>,
    /// The `/cpu` work offered, as a share of the cores.
    pub share: f64,
    pub cpu_offered_rps: Option<f64>,
    /// The watched traffic, and the CPU work beside it.
    pub io: Option<LoadSummary>,
    pub cpu: Option<LoadSummary>,
    /// The worst of the server's event loops, each figure on its own:
    /// how late a 10 ms timer fired, since the server started (one fresh
    /// server per cell, so mostly during the load).
    pub loop_lag_ms: Option<LoopLag>,
    /// What the whole server (every process) spent during the loads, per
    /// request answered (both loads), and what bound the cell: the CPU
    /// load when there is one, the `/io` load otherwise. (Added within
    /// version 1.)
    #[serde(default)]
    pub server_cpu: Option<CpuRecord>,
    #[serde(default)]
    pub per_request: Option<PerRequest>,
    #[serde(default)]
    pub bound: Option<Bound>,
    pub status: CellStatus,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
    pub exit_code: Option<i32>,
}

/// Where a variant passed the threshold, as a share of the cores.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Crossing {
    pub variant: String,
    pub lag_p99_over: Option<f64>,
    pub io_p99_over: Option<f64>,
}

impl cells::CellRecord for CellRecord {
    fn failure(&self) -> Option<&str> {
        (self.status == CellStatus::Failed).then(|| self.error.as_deref().unwrap_or("?"))
    }

    fn summary(&self) -> String {
        summary_line(self)
    }
}

/// Writes `block.json`, `block.md` and `block.svg`, each whole.
pub fn write_all(dir: &Path, run: &BlockRun) -> std::io::Result<()> {
    record::write_files(
        dir,
        &[
            ("block.json".into(), to_json(run)?),
            ("block.md".into(), markdown(run)),
        ],
    )?;
    if run.cells.is_empty() {
        return Ok(());
    }
    chart::write_files(dir, &[("block.svg".into(), chart(run))])
}

/// One line for the terminal as a cell finishes.
pub fn summary_line(cell: &CellRecord) -> String {
    format!(
        "io p99 {} ms, loop lag p99 {} ms",
        opt(cell.io.as_ref().and_then(|l| l.latency_ms.p99), 1),
        opt(cell.loop_lag_ms.map(|l| l.p99), 1)
    )
}

const HEADER: [&str; 13] = [
    "variant",
    "cpu share",
    "cpu req/s offered",
    "cpu req/s",
    "io req/s",
    "io p50 ms",
    "io p99 ms",
    "io max ms",
    "lag p50 ms",
    "lag p99 ms",
    "lag max ms",
    "CPU µs/req",
    "bound",
];

/// The cells, then where each variant crossed the threshold.
pub fn tables(run: &BlockRun) -> String {
    let rows: Vec<Vec<String>> = run.cells.iter().map(row).collect();
    let mut out = markdown_table(&HEADER, rows, 1);
    let crossed = |share: Option<f64>| match share {
        Some(share) => format!("{:.0}%", share * 100.0),
        None => "not reached".into(),
    };
    let rows: Vec<Vec<String>> = crossings(&run.cells)
        .into_iter()
        .map(|c| vec![c.variant, crossed(c.lag_p99_over), crossed(c.io_p99_over)])
        .collect();
    let threshold = run.params.lag_threshold_ms;
    out.push_str("\n\n");
    out.push_str(&markdown_table(
        &[
            "variant",
            &format!("loop lag p99 over {threshold} ms from"),
            &format!("io p99 over {threshold} ms from"),
        ],
        rows,
        1,
    ));
    out
}

fn row(cell: &CellRecord) -> Vec<String> {
    let labels = vec![cell.variant.clone(), format!("{:.0}%", cell.share * 100.0)];
    if cell.status == CellStatus::Failed {
        return failed_row(labels, cell.error.as_deref(), HEADER.len());
    }
    let io = |f: fn(&LoadSummary) -> Option<f64>| opt(cell.io.as_ref().and_then(f), 2);
    let lag = |f: fn(&LoopLag) -> f64| opt(cell.loop_lag_ms.as_ref().map(f), 1);
    let mut row = labels;
    row.extend([
        opt(cell.cpu_offered_rps, 0),
        opt(cell.cpu.as_ref().map(|l| l.rps), 0),
        opt(cell.io.as_ref().map(|l| l.rps), 0),
        io(|l| l.latency_ms.p50),
        io(|l| l.latency_ms.p99),
        io(|l| l.latency_ms.max),
        lag(|l| l.p50),
        lag(|l| l.p99),
        lag(|l| l.max),
        opt(cell.per_request.map(|p| p.cpu_us), 1),
        cell.bound.as_ref().map_or("-", |b| b.by.name()).to_owned(),
    ]);
    row
}

fn markdown(run: &BlockRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lab block `{}`\n", run.meta.name);
    let _ = writeln!(out, "{}\n", run.meta.describe());
    let p = &run.params;
    let kernels: Vec<String> = p
        .kernel_ms
        .iter()
        .map(|(runtime, ms)| format!("{ms:.1} ms in {runtime:?}"))
        .collect();
    let _ = writeln!(
        out,
        "Workers: {}. Per cell, {} s of two open-loop loads at once: `/io?ms={}` at {} req/s, \
         and `/cpu?iters={}` ({} on one core) at the rate that offers the share of the {} \
         cores. Loop lag is how late a 10 ms timer fired on the worst of the server's event \
         loops, since the server started (a fresh server per cell). CPU µs/req: every server \
         process's CPU time during the loads per request answered, both loads together; bound: \
         what limited the CPU load (the `/io` load where there is none), as in `lab run`.\n",
        p.workers,
        p.duration_s,
        p.io_ms,
        p.io_rate,
        p.cpu_iters,
        kernels.join(", "),
        p.cores,
    );
    out.push_str(&tables(run));
    out.push_str("\n\n![/io p99 and loop lag against the CPU share](block.svg)\n");
    out.push_str(&cells::failures(&run.cells, |cell| {
        format!("{} at {:.0}%", cell.variant, cell.share * 100.0)
    }));
    out
}

/// Two panels against the CPU share (%): the `/io` p99 and the worst
/// loop's p99 lag, both log scale, one line per variant.
pub fn chart(run: &BlockRun) -> Chart {
    let series = |f: &dyn Fn(&CellRecord) -> Option<f64>| -> Vec<Series> {
        run.params
            .variants
            .iter()
            .map(|variant| Series {
                name: variant.clone(),
                points: run
                    .cells
                    .iter()
                    .filter(|c| &c.variant == variant && c.status == CellStatus::Ok)
                    .filter_map(|c| Some((c.share * 100.0, f(c)?)))
                    .collect(),
            })
            .collect()
    };
    Chart {
        x_desc: "CPU work offered, % of the cores".into(),
        log_x: false,
        marker_x: None,
        panels: vec![
            Panel {
                caption: format!("/io p99 latency (each waits {} ms)", run.params.io_ms),
                y_desc: "ms".into(),
                log_y: true,
                bars: false,
                series: series(&|c| c.io.as_ref()?.latency_ms.p99),
            },
            Panel {
                caption: "event-loop lag p99, worst loop".into(),
                y_desc: "ms".into(),
                log_y: true,
                bars: false,
                series: series(&|c| c.loop_lag_ms.map(|l| l.p99)),
            },
        ],
    }
}
