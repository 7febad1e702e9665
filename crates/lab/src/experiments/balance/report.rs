//! What `lab balance` writes: the output types (`balance.json`'s schema),
//! the `balance.md` tables, and one SVG per scenario: requests per worker,
//! one bar per worker, grouped by policy. These types are the published
//! format and nothing else.

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
use service::contract::Balance;

use super::Scenario;

/// Bumped whenever a field of [`BalanceRun`] changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// `balance.json`: the run, its parameters and its cells.
pub type BalanceRun = cells::Run<BalanceParams, CellRecord>;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct BalanceParams {
    pub quick: bool,
    pub scenarios: Vec<Scenario>,
    pub workers: Vec<u16>,
    /// `KIND BALANCE`, in run order.
    pub policies: Vec<String>,
    pub duration_s: f64,
    pub burst_s: f64,
    /// The cpu workload's iterations; the scenarios' requests are a tenth
    /// of it, uneven's expensive ones four times it.
    pub cpu_iters: u32,
    /// That request's cost on one core, ms, per runtime (for uneven's rate).
    pub kernel_ms: BTreeMap<Runtime, f64>,
    /// uneven's rate: this share of what the usable cores can do.
    pub uneven_share: f64,
    #[serde(flatten)]
    pub servers: ServerParams,
    pub pinning: Option<Pinning>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CellRecord {
    pub scenario: Scenario,
    pub workers: u16,
    pub model: String,
    pub balance: Balance,
    pub concurrency: u32,
    pub status: CellStatus,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
    /// uneven's open-loop rate, requests per second.
    pub offered_rps: Option<f64>,
    /// Per worker slot, in slot order: what each took during the load.
    pub connections: Vec<u64>,
    pub requests: Vec<u64>,
    pub fairness: Option<Fairness>,
    pub load: Option<LoadSummary>,
    /// What the whole server (every process) spent during the load, per
    /// request, and what bound the load. (Added within version 1.)
    #[serde(default)]
    pub cpu: Option<CpuRecord>,
    #[serde(default)]
    pub per_request: Option<PerRequest>,
    #[serde(default)]
    pub bound: Option<Bound>,
    /// CPU seconds of the server's first process (prefork's master, Node's
    /// primary) during the load, and per connection it took, in µs (only
    /// over 1000 connections or more: CPU time comes in 10 ms ticks).
    pub primary_cpu_s: Option<f64>,
    pub primary_cpu_us_per_connection: Option<f64>,
    pub exit_code: Option<i32>,
    pub left_running: Vec<i32>,
}

impl CellRecord {
    pub fn policy(&self) -> String {
        format!("{} {}", self.model, self.balance)
    }
}

/// How evenly the work was spread over the workers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Fairness {
    /// Jain's index of requests per worker: 1 even, 1/n all on one.
    pub requests_jain: f64,
    pub connections_jain: Option<f64>,
    /// The busiest worker's requests over the idlest's; `None` when a
    /// worker served none.
    pub requests_max_over_min: Option<f64>,
    /// The share of the connections the two busiest workers took (Node's
    /// documentation reports over 70% on 2 of 8 without round-robin).
    pub connections_top2_share: Option<f64>,
}

impl cells::CellRecord for CellRecord {
    fn failure(&self) -> Option<&str> {
        (self.status == CellStatus::Failed).then(|| self.error.as_deref().unwrap_or("?"))
    }

    fn summary(&self) -> String {
        summary_line(self)
    }
}

/// Writes `balance.json`, `balance.md` and the charts, each whole.
pub fn write_all(dir: &Path, run: &BalanceRun) -> std::io::Result<()> {
    record::write_files(
        dir,
        &[
            ("balance.json".into(), to_json(run)?),
            ("balance.md".into(), markdown(run)),
        ],
    )?;
    chart::write_files(dir, &charts(run))
}

/// One line for the terminal as a cell finishes.
pub fn summary_line(cell: &CellRecord) -> String {
    let per = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join("/");
    format!(
        "requests {} connections {} jain {}",
        per(&cell.requests),
        per(&cell.connections),
        opt(cell.fairness.map(|f| f.requests_jain), 2)
    )
}

const HEADER: [&str; 16] = [
    "policy",
    "workers",
    "conns",
    "connections per worker",
    "requests per worker",
    "jain",
    "max/min",
    "top-2 conns",
    "rps",
    "p50 ms",
    "p99 ms",
    "max ms",
    "CPU µs/req",
    "bound",
    "primary CPU ms",
    "primary µs/conn",
];

/// One table per scenario.
pub fn tables(run: &BalanceRun) -> String {
    let mut out = String::new();
    for &scenario in &run.params.scenarios {
        let rows: Vec<Vec<String>> = run
            .cells
            .iter()
            .filter(|c| c.scenario == scenario)
            .map(row)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "### {scenario}\n");
        out.push_str(&markdown_table(&HEADER, rows, 1));
        out.push_str("\n\n");
    }
    out
}

fn row(cell: &CellRecord) -> Vec<String> {
    let labels = vec![cell.policy(), cell.workers.to_string()];
    if cell.status == CellStatus::Failed {
        return failed_row(labels, cell.error.as_deref(), HEADER.len());
    }
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    let latency = |f: fn(&LoadSummary) -> Option<f64>| opt(cell.load.as_ref().and_then(f), 2);
    let fairness = cell.fairness;
    let mut row = labels;
    row.extend([
        cell.concurrency.to_string(),
        list(&cell.connections),
        list(&cell.requests),
        opt(fairness.map(|f| f.requests_jain), 3),
        match fairness {
            Some(Fairness {
                requests_max_over_min: None,
                ..
            }) => "∞".into(),
            _ => opt(fairness.and_then(|f| f.requests_max_over_min), 2),
        },
        opt(
            fairness
                .and_then(|f| f.connections_top2_share)
                .map(|s| s * 100.0),
            0,
        ) + "%",
        opt(cell.load.as_ref().map(|l| l.rps), 0),
        latency(|l| l.latency_ms.p50),
        latency(|l| l.latency_ms.p99),
        latency(|l| l.latency_ms.max),
        opt(cell.per_request.map(|p| p.cpu_us), 1),
        cell.bound.as_ref().map_or("-", |b| b.by.name()).to_owned(),
        opt(cell.primary_cpu_s.map(|s| s * 1000.0), 0),
        opt(cell.primary_cpu_us_per_connection, 1),
    ]);
    row
}

fn markdown(run: &BalanceRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lab balance `{}`\n", run.meta.name);
    let _ = writeln!(out, "{}\n", run.meta.describe());
    let p = &run.params;
    let _ = writeln!(
        out,
        "{} s of load per cell ({:.2} s for the burst), after {} ms idle. Requests are \
         `/cpu?iters={}` (a tenth of the cpu workload's {} iterations); uneven mixes in one \
         request in ten of {} iterations, at {:.0}% of what the usable cores can do. \
         Connections: short 2 per worker (a new one per request), long 1 per worker, uneven 2 \
         per worker, burst 8 per worker.\n",
        p.duration_s,
        p.burst_s,
        super::measure::IDLE.as_millis(),
        p.cpu_iters / super::LIGHT_DIVISOR,
        p.cpu_iters,
        p.cpu_iters * super::HEAVY_FACTOR,
        p.uneven_share * 100.0,
    );
    out.push_str(&tables(run));
    for (name, chart) in charts(run) {
        let _ = writeln!(out, "![{}]({name})\n", chart.panels[0].caption);
    }
    out.push_str(
        "Per worker, in slot order: what it took between two `/stats` reads around the load, \
         less the second read's own connection and request. jain: Jain's fairness index of \
         requests per worker (1: even; 1/n: one worker took all). max/min: the busiest \
         worker's requests over the idlest's (∞: a worker served none). top-2 conns: the share \
         of the connections the two busiest workers took. CPU µs/req: every server process's CPU \
         time during the load per request answered; bound: what limited the load, as in `lab \
         run`. primary CPU ms: the CPU time of the \
         server's first process (prefork's master, Node's primary) during the load, counted in \
         10 ms ticks; primary µs/conn: the same per connection, where there were 1000 or \
         more.\n",
    );
    out.push_str(&cells::failures(&run.cells, |cell| {
        format!("{} {} w={}", cell.scenario, cell.policy(), cell.workers)
    }));
    out
}

/// Per scenario: one panel per worker count, requests per worker as bars,
/// one series per policy.
pub fn charts(run: &BalanceRun) -> Vec<(String, Chart)> {
    let mut charts = Vec::new();
    for &scenario in &run.params.scenarios {
        let panels: Vec<Panel> = run
            .params
            .workers
            .iter()
            .filter_map(|&workers| {
                let series: Vec<Series> = run
                    .cells
                    .iter()
                    .filter(|c| {
                        c.scenario == scenario && c.workers == workers && c.status == CellStatus::Ok
                    })
                    .map(|c| Series {
                        name: c.policy(),
                        points: c
                            .requests
                            .iter()
                            .enumerate()
                            .map(|(slot, &n)| (slot as f64, n as f64))
                            .collect(),
                    })
                    .collect();
                (!series.is_empty()).then(|| Panel {
                    caption: format!("{scenario}: requests per worker, {workers} workers"),
                    y_desc: "requests".into(),
                    log_y: false,
                    bars: true,
                    series,
                })
            })
            .collect();
        if !panels.is_empty() {
            charts.push((
                format!("balance-{scenario}.svg"),
                Chart {
                    x_desc: "worker slot".into(),
                    log_x: false,
                    marker_x: None,
                    panels,
                },
            ));
        }
    }
    charts
}
