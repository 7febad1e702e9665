//! What `lab run` writes: the output types (the schema of `run.json`), and
//! the three files `run.json`, `cells.csv` and `summary.md` with the table
//! that is also printed on the terminal.
//!
//! These types are the published format and nothing else: the measurement
//! fills working data ([`super::measure::Measured`]), and
//! [`super::figures`] turns it into a [`CellRecord`], so the file format
//! changes only on purpose (and then `SCHEMA_VERSION` changes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use harness::chart::{self, Chart, Panel, Series};
pub use harness::cost::{Bound, BoundBy, CpuRecord, PerRequest};
use harness::cpus::Pinning;
use harness::kernel::Runtime;
use harness::loadgen::LoadSummary;
use harness::procs;
use harness::record::{
    self, CellStatus, RunMeta, TableStyle, failed_row, mib, opt, render_table, to_json,
};
use harness::servers::ServerParams;
use serde::{Deserialize, Serialize};

use super::plan::{Offered, Profile, Workload};

/// Bumped whenever a field of [`RunRecord`] changes meaning or goes away.
/// Within a version, fields are only added, with a default that means what
/// older files meant, and `cells.csv` only gains columns at its end.
/// 2: the run metadata is shared with every experiment (`dirty`, `build`
/// moved there), and `model` is any server kind's name.
pub const SCHEMA_VERSION: u32 = 2;

/// `run.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RunRecord {
    pub schema_version: u32,
    #[serde(flatten)]
    pub meta: RunMeta,
    pub params: Params,
    /// The `/cpu` kernel timed in each runtime that served cpu cells, in
    /// that runtime.
    pub cpu_kernels: BTreeMap<Runtime, KernelCost>,
    pub cells: Vec<CellRecord>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Params {
    pub profile: Profile,
    pub models: Vec<String>,
    pub workloads: Vec<Workload>,
    pub workers: Vec<u16>,
    /// Empty: each workload's default.
    pub concurrency: Vec<u32>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub repeat: u32,
    pub cpu_iters: u32,
    pub io_ms: u32,
    pub mixed_cpu_percent: u32,
    pub ready_timeout_s: f64,
    pub grace_ms: u64,
    pub sample_interval_ms: u64,
    #[serde(flatten)]
    pub servers: ServerParams,
    /// The CPUs of the server and of the load generator, if pinned.
    pub pinning: Option<Pinning>,
    /// `--url`: the server was already running there, on its own machine
    /// or not; its CPU and memory are what its `/stats` reported. (Added
    /// within version 2.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct KernelCost {
    pub iters: u32,
    /// Median of `runs_ms`: the cost of one request on one core.
    pub median_ms: f64,
    pub runs_ms: Vec<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CellRecord {
    pub model: String,
    pub workload: Workload,
    pub workers: u16,
    pub concurrency: u32,
    /// How the load was offered: closed loop, or open loop at a share of
    /// the closed cell's throughput or at a fixed rate. (Added within
    /// version 2; files without it were all closed loop.)
    #[serde(default)]
    pub offered: Offered,
    /// The open loop's rate, requests per second.
    #[serde(default)]
    pub offered_rps: Option<f64>,
    /// Which repeat of this cell (1-based; see `--repeat`).
    pub repeat: u32,
    pub status: CellStatus,
    /// Why the cell failed: the error and its causes.
    pub error: Option<String>,
    /// The server's last stderr lines, kept when the cell failed.
    pub stderr_tail: Vec<String>,
    pub load: Option<LoadSummary>,
    pub memory: Option<MemoryRecord>,
    pub cpu: Option<CpuRecord>,
    pub efficiency: Option<Efficiency>,
    /// What the server spent per 2xx answer: the figure that does not
    /// depend on the load generator.
    pub per_request: Option<PerRequest>,
    /// What limited the cell, with the evidence.
    pub bound: Option<Bound>,
    /// The server's exit code after SIGTERM (the contract says 0).
    pub exit_code: Option<i32>,
    /// Server processes still running after it exited (should be empty).
    pub left_running: Vec<i32>,
    /// Wall time of the whole cell, start to stop.
    pub wall_s: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct MemoryRecord {
    /// Summed over the server's process tree once it was ready, before load.
    pub idle: MemoryBytes,
    /// Each field's maximum over the samples taken during warm-up and load.
    pub peak: MemoryBytes,
    pub samples: u32,
    /// The most processes the tree had at once.
    pub processes: usize,
}

/// RSS, PSS and USS (private pages only) of a process tree.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBytes {
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    /// `null` when not measured: a server's `/stats` (`--url`) reports no
    /// USS.
    pub uss_bytes: Option<u64>,
}

impl MemoryBytes {
    /// `m` as measured from `/proc` here, or, `reported`, as a server's
    /// `/stats` gave it (without USS).
    pub fn new(m: procs::Memory, reported: bool) -> MemoryBytes {
        MemoryBytes {
            rss_bytes: m.rss,
            pss_bytes: m.pss,
            uss_bytes: (!reported).then_some(m.uss),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Efficiency {
    /// `cpu` (cores / kernel cost) or `io` (Little's law).
    pub kind: String,
    /// The most requests per second the machine allows for this cell.
    pub ceiling_rps: f64,
    /// `rps / ceiling_rps`.
    pub value: f64,
}

/// Writes all three files, each through a temporary file and a rename.
pub fn write_all(dir: &Path, run: &RunRecord) -> std::io::Result<()> {
    record::write_files(
        dir,
        &[
            ("run.json".into(), to_json(run)?),
            ("cells.csv".into(), csv(&run.cells)),
            ("summary.md".into(), summary_markdown(run)),
        ],
    )
}

/// Writes the run's charts; once, at the end of a run (summary.md links
/// them from the start).
pub fn write_charts(dir: &Path, run: &RunRecord) -> std::io::Result<()> {
    chart::write_files(dir, &charts(run))
}

/// The median of `figure` over the closed-loop runs of each (kind,
/// workers) of `workload` that succeeded, as one series per kind.
fn series_against_workers(
    cells: &[CellRecord],
    workload: Workload,
    figure: fn(&CellRecord) -> Option<f64>,
) -> Vec<Series> {
    let mut kinds: Vec<&str> = Vec::new();
    for cell in cells.iter().filter(|c| c.workload == workload) {
        if !kinds.contains(&cell.model.as_str()) {
            kinds.push(&cell.model);
        }
    }
    kinds
        .into_iter()
        .map(|kind| {
            let mine: Vec<&CellRecord> = cells
                .iter()
                .filter(|c| {
                    c.model == kind
                        && c.workload == workload
                        && c.offered == Offered::Closed
                        && c.status == CellStatus::Ok
                })
                .collect();
            let mut workers: Vec<u16> = mine.iter().map(|c| c.workers).collect();
            workers.sort_unstable();
            workers.dedup();
            let points = workers
                .into_iter()
                .filter_map(|w| {
                    let values: Vec<f64> = mine
                        .iter()
                        .filter(|c| c.workers == w)
                        .filter_map(|c| figure(c))
                        .collect();
                    Some((f64::from(w), Spread::of(&values)?.median))
                })
                .collect();
            Series {
                name: kind.to_owned(),
                points,
            }
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// The run's charts, by file name: per workload, throughput and CPU per
/// request against workers; and memory against workers, from the noop
/// cells if there are any (else the first workload's). Medians over
/// repeats, closed-loop cells only.
pub fn charts(run: &RunRecord) -> Vec<(String, Chart)> {
    const MIB: f64 = 1024.0 * 1024.0;
    let cells = &run.cells;
    let panel = |caption: String, y_desc: &str, series: Vec<Series>| Panel {
        caption,
        y_desc: y_desc.into(),
        log_y: false,
        bars: false,
        series,
    };
    let mut charts = Vec::new();
    for &workload in &run.params.workloads {
        let rps = series_against_workers(cells, workload, |c| Some(c.load.as_ref()?.rps));
        if rps.is_empty() {
            continue;
        }
        let cpu = series_against_workers(cells, workload, |c| Some(c.per_request?.cpu_us));
        charts.push((
            format!("run-{workload}.svg"),
            Chart {
                x_desc: "workers".into(),
                log_x: false,
                marker_x: None,
                panels: vec![
                    panel(format!("{workload}: 2xx answers per second"), "rps", rps),
                    panel(format!("{workload}: server CPU per 2xx answer"), "µs", cpu),
                ],
            },
        ));
    }
    let memory_workload = if run.params.workloads.contains(&Workload::Noop) {
        Some(Workload::Noop)
    } else {
        run.params.workloads.first().copied()
    };
    if let Some(workload) = memory_workload {
        let pss = series_against_workers(cells, workload, |c| {
            Some(c.memory.as_ref()?.idle.pss_bytes as f64 / MIB)
        });
        let rss = series_against_workers(cells, workload, |c| {
            Some(c.memory.as_ref()?.peak.rss_bytes as f64 / MIB)
        });
        if !pss.is_empty() {
            charts.push((
                "memory.svg".into(),
                Chart {
                    x_desc: "workers".into(),
                    log_x: false,
                    marker_x: None,
                    panels: vec![
                        panel(
                            format!("PSS when idle, whole server ({workload} cells)"),
                            "MiB",
                            pss,
                        ),
                        panel(
                            format!("RSS at peak, summed over processes ({workload} cells)"),
                            "MiB",
                            rss,
                        ),
                    ],
                },
            ));
        }
    }
    charts
}

/// The table's columns, shared by the terminal, Markdown and (with more
/// columns) CSV.
const COLUMNS: [&str; 17] = [
    "model",
    "workload",
    "workers",
    "conc",
    "load",
    "rps",
    "p50 ms",
    "p99 ms",
    "errors",
    "CPU µs/req",
    "PSS idle MiB",
    "PSS peak MiB",
    "RSS peak MiB",
    "server cores",
    "loadgen cores",
    "efficiency",
    "bound",
];

/// Errors the reader should see: everything but the deadline cut-offs,
/// which every duration-bound load has, plus non-2xx answers.
fn error_count(load: &LoadSummary) -> u64 {
    load.client_errors() + load.non_2xx
}

/// One table row per cell, as text.
pub fn table_rows(cells: &[CellRecord]) -> Vec<Vec<String>> {
    cells
        .iter()
        .map(|cell| {
            let mut row = vec![
                cell.model.clone(),
                cell.workload.to_string(),
                cell.workers.to_string(),
                cell.concurrency.to_string(),
                match (cell.offered, cell.offered_rps) {
                    (Offered::Share(_), Some(rps)) => format!("{} ({rps:.0}/s)", cell.offered),
                    (offered, _) => offered.to_string(),
                },
            ];
            if cell.status == CellStatus::Failed {
                return failed_row(row, cell.error.as_deref(), COLUMNS.len());
            }
            let load = cell.load.clone().unwrap_or_default();
            // A throughput the load generator or the shared cores capped is
            // the machine's, not the server's: marked, never shown bare.
            let capped = cell.bound.as_ref().is_some_and(|b| b.by.not_the_server());
            row.push(format!("{:.0}{}", load.rps, if capped { "*" } else { "" }));
            row.push(opt(load.latency_ms.p50, 2));
            row.push(opt(load.latency_ms.p99, 2));
            row.push(error_count(&load).to_string());
            row.push(opt(cell.per_request.map(|p| p.cpu_us), 1));
            match &cell.memory {
                Some(m) => {
                    row.push(mib(m.idle.pss_bytes));
                    row.push(mib(m.peak.pss_bytes));
                    row.push(mib(m.peak.rss_bytes));
                }
                None => row.extend(["-".to_owned(), "-".to_owned(), "-".to_owned()]),
            }
            match &cell.cpu {
                Some(c) if c.wall_s > 0.0 => {
                    row.push(format!("{:.2}", c.server_s / c.wall_s));
                    row.push(format!("{:.2}", c.loadgen_s / c.wall_s));
                }
                _ => row.extend(["-".to_owned(), "-".to_owned()]),
            }
            row.push(match &cell.efficiency {
                Some(e) => format!("{:.0}% ({})", e.value * 100.0, e.kind),
                None => "-".to_owned(),
            });
            row.push(cell.bound.as_ref().map_or("-", |b| b.by.name()).to_owned());
            row
        })
        .collect()
}

/// Min, median and max of one figure over a cell's repeats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// `None` when there is no value.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Spread {
            min: *sorted.first()?,
            median: harness::kernel::median(&sorted)?,
            max: *sorted.last()?,
        })
    }

    fn show(spread: Option<Spread>, decimals: usize) -> String {
        spread.map_or("-".into(), |s| {
            format!(
                "{:.d$} / {:.d$} / {:.d$}",
                s.min,
                s.median,
                s.max,
                d = decimals
            )
        })
    }
}

const SPREAD_COLUMNS: [&str; 9] = [
    "model",
    "workload",
    "workers",
    "conc",
    "load",
    "runs ok",
    "rps min / median / max",
    "CPU µs/req min / median / max",
    "p99 ms min / median / max",
];

/// One row per cell over its repeats (the cells that succeeded), in the
/// order the cells first ran.
pub fn spread_rows(cells: &[CellRecord]) -> Vec<Vec<String>> {
    let key = |c: &CellRecord| {
        (
            c.model.clone(),
            c.workload,
            c.workers,
            c.concurrency,
            c.offered.to_string(),
        )
    };
    let mut keys = Vec::new();
    for cell in cells {
        if !keys.contains(&key(cell)) {
            keys.push(key(cell));
        }
    }
    keys.into_iter()
        .map(|k| {
            let runs: Vec<&CellRecord> = cells
                .iter()
                .filter(|c| key(c) == k && c.status == CellStatus::Ok)
                .collect();
            let figure = |f: &dyn Fn(&CellRecord) -> Option<f64>| {
                Spread::of(&runs.iter().filter_map(|c| f(c)).collect::<Vec<f64>>())
            };
            vec![
                k.0.clone(),
                k.1.to_string(),
                k.2.to_string(),
                k.3.to_string(),
                k.4.clone(),
                runs.len().to_string(),
                Spread::show(figure(&|c| Some(c.load.as_ref()?.rps)), 0),
                Spread::show(figure(&|c| Some(c.per_request?.cpu_us)), 1),
                Spread::show(figure(&|c| c.load.as_ref()?.latency_ms.p99), 2),
            ]
        })
        .collect()
}

/// The spread table: every figure over a cell's repeats.
pub fn render_spread(cells: &[CellRecord], style: TableStyle) -> String {
    render_table(&SPREAD_COLUMNS, spread_rows(cells), 2, style)
}

/// The table for a terminal or for Markdown.
pub fn render(cells: &[CellRecord], style: TableStyle) -> String {
    // Numbers, from `workers` on, read best right-aligned.
    render_table(&COLUMNS, table_rows(cells), 2, style)
}

/// ` (1.52 ms in Rust, 4.40 ms in Node on one core here)`, or nothing.
fn kernel_costs(kernels: &BTreeMap<Runtime, KernelCost>) -> String {
    if kernels.is_empty() {
        return String::new();
    }
    let each: Vec<String> = kernels
        .iter()
        .map(|(runtime, k)| format!("{:.2} ms in {runtime:?}", k.median_ms))
        .collect();
    format!(" ({} on one core here)", each.join(", "))
}

fn summary_markdown(run: &RunRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lab run `{}`\n", run.meta.name);
    let _ = writeln!(
        out,
        "{} profile. {}\n",
        run.params.profile.name(),
        run.meta.describe()
    );
    let _ = writeln!(
        out,
        "Load {} s per cell after {} s of warm-up. cpu: {} PBKDF2 iterations per request{}; io: {} ms wait. {}\n",
        run.params.duration_s,
        run.params.warmup_s,
        run.params.cpu_iters,
        kernel_costs(&run.cpu_kernels),
        run.params.io_ms,
        run.params.servers.describe(),
    );
    if let Some(pinning) = &run.params.pinning {
        let _ = writeln!(out, "CPUs: {}.\n", pinning.describe());
    }
    if let Some(url) = &run.params.url {
        let _ = writeln!(
            out,
            "The server at {url} was not started by the lab: its CPU and memory are what its \
             `/stats` reported (no USS, no context switches), and the cores it had are unknown \
             here, so no cell is called bound by its CPU.\n"
        );
    }
    if run.params.repeat > 1 {
        let _ = writeln!(
            out,
            "Each cell ran {} times, interleaved. Over the repeats:\n",
            run.params.repeat
        );
        out.push_str(&render_spread(&run.cells, TableStyle::Markdown));
        out.push_str("\n\nEvery run:\n\n");
    }
    out.push_str(&render(&run.cells, TableStyle::Markdown));
    out.push_str("\n\n");
    for (name, chart) in charts(run) {
        let caption = &chart.panels[0].caption;
        let _ = writeln!(out, "![{caption}]({name})\n");
    }
    out.push_str(
        "\n\nrps counts 2xx responses only. errors: non-2xx answers and client errors, not \
         counting requests cut off when the load's time ran out. Memory is summed over the \
         server's process tree; PSS splits shared pages among the processes that share them. \
         cores: CPU seconds per wall second during the load. CPU µs/req: the server's CPU \
         time (every process and thread, user + system) per 2xx answer, the figure that does \
         not depend on the load generator. efficiency: rps over the machine's ceiling (cpu: \
         usable cores / the kernel's cost in the server's own runtime; io: connections / \
         wait, Little's law). bound: what limited the cell, with the evidence in run.json; \
         rps marked * was capped by the load generator or by the cores it shares with the \
         server, so it measures the machine, not the server: compare CPU µs/req instead.\n",
    );
    for cell in run.cells.iter().filter(|c| c.status == CellStatus::Failed) {
        let _ = writeln!(
            out,
            "\n**Failed: {} {} w={} c={}**: {}\n",
            cell.model,
            cell.workload,
            cell.workers,
            cell.concurrency,
            cell.error.as_deref().unwrap_or("?")
        );
        if !cell.stderr_tail.is_empty() {
            let _ = writeln!(out, "```\n{}\n```", cell.stderr_tail.join("\n"));
        }
    }
    out
}

/// One line per cell, with every number the table shows and more.
pub fn csv(cells: &[CellRecord]) -> String {
    let header = "model,workload,workers,concurrency,status,rps,ok,non_2xx,client_errors,\
                  p50_ms,p90_ms,p99_ms,max_ms,rss_idle_bytes,pss_idle_bytes,uss_idle_bytes,\
                  rss_peak_bytes,pss_peak_bytes,uss_peak_bytes,server_cpu_s,loadgen_cpu_s,\
                  load_s,efficiency_kind,ceiling_rps,efficiency,cpu_us_per_req,user_us_per_req,\
                  system_us_per_req,voluntary_switches_per_req,involuntary_switches_per_req,\
                  bound,repeat,exit_code,error,offered,offered_rps\n";
    let mut out = String::from(header);
    for cell in cells {
        let load = cell.load.clone().unwrap_or_default();
        let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let client_errors = load.client_errors();
        let (idle, peak) = cell
            .memory
            .as_ref()
            .map_or((None, None), |m| (Some(m.idle), Some(m.peak)));
        let mem = |m: Option<MemoryBytes>, f: fn(MemoryBytes) -> Option<u64>| {
            m.and_then(f).map(|v| v.to_string())
        };
        let fields: Vec<String> = vec![
            cell.model.clone(),
            cell.workload.to_string(),
            cell.workers.to_string(),
            cell.concurrency.to_string(),
            match cell.status {
                CellStatus::Ok => "ok".into(),
                CellStatus::Failed => "failed".into(),
            },
            num(cell.load.as_ref().map(|l| l.rps)),
            load.ok.to_string(),
            load.non_2xx.to_string(),
            client_errors.to_string(),
            num(load.latency_ms.p50),
            num(load.latency_ms.p90),
            num(load.latency_ms.p99),
            num(load.latency_ms.max),
            mem(idle, |m| Some(m.rss_bytes)).unwrap_or_default(),
            mem(idle, |m| Some(m.pss_bytes)).unwrap_or_default(),
            mem(idle, |m| m.uss_bytes).unwrap_or_default(),
            mem(peak, |m| Some(m.rss_bytes)).unwrap_or_default(),
            mem(peak, |m| Some(m.pss_bytes)).unwrap_or_default(),
            mem(peak, |m| m.uss_bytes).unwrap_or_default(),
            num(cell.cpu.as_ref().map(|c| c.server_s)),
            num(cell.cpu.as_ref().map(|c| c.loadgen_s)),
            num(cell.cpu.as_ref().map(|c| c.wall_s)),
            cell.efficiency
                .as_ref()
                .map(|e| e.kind.clone())
                .unwrap_or_default(),
            num(cell.efficiency.as_ref().map(|e| e.ceiling_rps)),
            num(cell.efficiency.as_ref().map(|e| e.value)),
            num(cell.per_request.map(|p| p.cpu_us)),
            num(cell.per_request.map(|p| p.user_us)),
            num(cell.per_request.map(|p| p.system_us)),
            num(cell.per_request.and_then(|p| p.voluntary_switches)),
            num(cell.per_request.and_then(|p| p.involuntary_switches)),
            cell.bound
                .as_ref()
                .map(|b| b.by.name().to_owned())
                .unwrap_or_default(),
            cell.repeat.to_string(),
            cell.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            cell.error.clone().unwrap_or_default(),
            cell.offered.to_string(),
            num(cell.offered_rps),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// Quotes a field that holds a comma, quote or line break (RFC 4180).
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use harness::loadgen::Latency;

    fn ok_cell() -> CellRecord {
        CellRecord {
            model: "prefork".into(),
            workload: Workload::Cpu,
            workers: 2,
            concurrency: 16,
            offered: Offered::Closed,
            offered_rps: None,
            repeat: 1,
            status: CellStatus::Ok,
            error: None,
            stderr_tail: Vec::new(),
            load: Some(LoadSummary {
                duration_s: 5.0,
                ok: 5000,
                non_2xx: 3,
                rps: 1000.0,
                latency_ms: Latency {
                    p50: Some(1.5),
                    p99: Some(12.25),
                    ..Latency::default()
                },
                errors: [
                    ("aborted due to deadline".to_owned(), 16),
                    ("connection refused".to_owned(), 2),
                ]
                .into_iter()
                .collect(),
                ..LoadSummary::default()
            }),
            memory: Some(MemoryRecord {
                idle: MemoryBytes {
                    rss_bytes: 8 << 20,
                    pss_bytes: 3 << 20,
                    uss_bytes: Some(2 << 20),
                },
                peak: MemoryBytes {
                    rss_bytes: 12 << 20,
                    pss_bytes: 5 << 20,
                    uss_bytes: Some(4 << 20),
                },
                samples: 50,
                processes: 3,
            }),
            cpu: Some(CpuRecord {
                server_s: 9.0,
                server_user_s: 7.0,
                server_system_s: 2.0,
                server_voluntary_switches: Some(100),
                server_involuntary_switches: Some(10),
                loadgen_s: 2.5,
                wall_s: 5.0,
            }),
            efficiency: Some(Efficiency {
                kind: "cpu".into(),
                ceiling_rps: 1250.0,
                value: 0.8,
            }),
            per_request: Some(PerRequest {
                cpu_us: 1800.0,
                user_us: 1400.0,
                system_us: 400.0,
                voluntary_switches: Some(0.02),
                involuntary_switches: Some(0.002),
            }),
            bound: Some(Bound {
                by: BoundBy::ServerCpu,
                evidence: "server 1.80 of 2 usable cores".into(),
            }),
            exit_code: Some(0),
            left_running: Vec::new(),
            wall_s: 7.0,
        }
    }

    fn failed_cell() -> CellRecord {
        CellRecord {
            model: "threadpool".into(),
            workload: Workload::Io,
            status: CellStatus::Failed,
            error: Some("server did not start, in 15s\ncaused by: x, y".into()),
            stderr_tail: vec!["boom".into()],
            load: None,
            memory: None,
            cpu: None,
            efficiency: None,
            exit_code: None,
            ..ok_cell()
        }
    }

    #[test]
    fn rows_show_the_measured_figures() {
        let rows = table_rows(&[ok_cell()]);
        assert_eq!(
            rows[0],
            [
                "prefork",
                "cpu",
                "2",
                "16",
                "closed",
                "1000",
                "1.50",
                "12.25",
                "5",
                "1800.0",
                "3.0",
                "5.0",
                "12.0",
                "1.80",
                "0.50",
                "80% (cpu)",
                "server cpu"
            ]
        );
    }

    #[test]
    fn a_failed_row_keeps_the_table_width() {
        let rows = table_rows(&[failed_cell()]);
        assert_eq!(rows[0].len(), COLUMNS.len());
        assert_eq!(rows[0][5], "FAILED: server did not start, in 15s");
    }

    #[test]
    fn markdown_and_terminal_tables_hold_every_row() {
        let cells = [ok_cell(), failed_cell()];
        let md = render(&cells, TableStyle::Markdown);
        let lines: Vec<&str> = md.lines().collect();
        // Header, separator, two rows.
        assert_eq!(lines.len(), 4, "{md}");
        assert!(lines[0].starts_with("| model") && lines[0].contains("PSS peak MiB"));
        assert!(lines[1].starts_with("|-"));
        assert!(lines[2].contains("| prefork") && lines[2].contains("80% (cpu)"));
        assert!(lines[3].contains("FAILED: server did not start"));
        let term = render(&cells, TableStyle::Terminal);
        assert!(term.contains("prefork") && term.contains("threadpool"));
        assert!(term.contains("PSS idle MiB"));
    }

    #[test]
    fn the_spread_is_min_median_max_of_the_runs_that_succeeded() {
        let run = |repeat: u32, rps: f64| {
            let mut cell = ok_cell();
            cell.repeat = repeat;
            cell.load.as_mut().unwrap().rps = rps;
            cell
        };
        let mut failed = failed_cell();
        failed.model = "prefork".into();
        failed.workload = Workload::Cpu;
        failed.workers = 2;
        failed.concurrency = 16;
        let cells = [run(1, 900.0), run(2, 1100.0), failed, run(3, 1000.0)];
        let rows = spread_rows(&cells);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][5], "3");
        assert_eq!(rows[0][6], "900 / 1000 / 1100");
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn charts_plot_the_median_of_closed_runs_against_workers() {
        let cell = |model: &str, workers: u16, repeat: u32, rps: f64| {
            let mut cell = ok_cell();
            cell.model = model.into();
            cell.workers = workers;
            cell.repeat = repeat;
            cell.load.as_mut().unwrap().rps = rps;
            cell
        };
        let mut open = cell("prefork", 1, 1, 1.0);
        open.offered = Offered::Share(0.5);
        let cells = vec![
            cell("prefork", 1, 1, 500.0),
            cell("prefork", 2, 1, 900.0),
            cell("prefork", 1, 2, 700.0),
            cell("prefork", 1, 3, 600.0),
            open,
            cell("threadpool", 1, 1, 400.0),
        ];
        let series = series_against_workers(&cells, Workload::Cpu, |c| Some(c.load.as_ref()?.rps));
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].name, "prefork");
        // Median of 500, 700, 600; the open-loop cell left out.
        assert_eq!(series[0].points, [(1.0, 600.0), (2.0, 900.0)]);
        assert_eq!(series[1].points, [(1.0, 400.0)]);
        assert!(series_against_workers(&cells, Workload::Io, |_| Some(1.0)).is_empty());
    }

    #[test]
    fn csv_quotes_and_counts_fields() {
        let text = csv(&[ok_cell(), failed_cell()]);
        let lines: Vec<&str> = text.lines().collect();
        let columns = lines[0].split(',').count();
        assert_eq!(lines[1].split(',').count(), columns);
        // The failed cell's error has a comma and a newline: quoted.
        assert!(text.contains("\"server did not start, in 15s\ncaused by: x, y\""));
    }

    /// A run whose cells are `ok_cell`s (prefork-like, cpu, 16
    /// connections) with these kinds, workers and rps; a repeated cell
    /// counts as the next repeat.
    pub(crate) fn sample_run(cells: &[(&str, u16, f64)]) -> RunRecord {
        let mut records: Vec<CellRecord> = Vec::new();
        for &(model, workers, rps) in cells {
            let mut cell = ok_cell();
            cell.model = model.into();
            cell.workers = workers;
            cell.repeat = 1 + records
                .iter()
                .filter(|c| c.model == model && c.workers == workers)
                .count() as u32;
            cell.load.as_mut().unwrap().rps = rps;
            records.push(cell);
        }
        RunRecord {
            schema_version: SCHEMA_VERSION,
            meta: RunMeta::new("t", None, harness::session::machine()),
            params: Params {
                profile: Profile::Quick,
                models: vec!["prefork".into()],
                workloads: vec![Workload::Cpu],
                workers: vec![2],
                concurrency: vec![],
                duration_s: 1.0,
                warmup_s: 0.0,
                repeat: 1,
                cpu_iters: 1000,
                io_ms: 20,
                mixed_cpu_percent: 10,
                ready_timeout_s: 15.0,
                grace_ms: 2000,
                sample_interval_ms: 100,
                servers: ServerParams {
                    server_dir: "/x".into(),
                    balance: [("prefork".to_owned(), service::contract::Balance::Reuseport)]
                        .into_iter()
                        .collect(),
                    dataset_mb: 0,
                    dataset_load: Default::default(),
                    templates: Default::default(),
                    node_version: None,
                },
                pinning: None,
                url: None,
            },
            cpu_kernels: BTreeMap::new(),
            cells: records,
        }
    }

    #[test]
    fn run_record_round_trips_through_json() {
        let run = RunRecord {
            cells: vec![ok_cell(), failed_cell()],
            ..sample_run(&[])
        };
        let text = serde_json::to_string(&run).unwrap();
        let back: RunRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.cells.len(), 2);
        assert_eq!(back.cells[1].status, CellStatus::Failed);
        assert!(summary_markdown(&back).contains("**Failed: threadpool io"));
    }
}
