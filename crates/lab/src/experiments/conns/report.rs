//! What `lab conns` writes: the output types (`conns.json`'s schema), the
//! `conns.md` table, and `conns.svg` (PSS against connections, one line per
//! model). These types are the published format and nothing else.

use std::fmt::Write as _;
use std::path::Path;

use harness::chart::{self, Chart, Panel, Series};
use harness::cost::{Bound, PerRequest};
use harness::cpus::Pinning;
use harness::holder::{Caps, DescriptorLimit, HardLimit};
use harness::loadgen::LoadSummary;
use harness::record::{self, CellStatus, failed_row, markdown_table, mib, opt, to_json};
use harness::servers::ServerParams;
use serde::{Deserialize, Serialize};

use crate::cells;

/// Bumped whenever a field of [`ConnsRun`] changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// `conns.json`: the run, its parameters and its cells.
pub type ConnsRun = cells::Run<ConnsParams, CellRecord>;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ConnsParams {
    pub quick: bool,
    pub models: Vec<String>,
    /// Connections asked for at each step.
    pub steps: Vec<usize>,
    pub workers: u16,
    /// The light stream run at each step: requests per second, seconds.
    pub light_rate: f64,
    pub light_duration_s: f64,
    /// The descriptor limit of the lab and of the servers and holders it
    /// started.
    pub descriptor_limit: u64,
    /// How that limit was reached: what was wanted, the hard limit before,
    /// `fs.nr_open`, and whether the hard limit could be raised. (Added
    /// within version 1, like every field with a default.)
    #[serde(default)]
    pub descriptors: Option<DescriptorLimit>,
    /// The ephemeral port range, and the caps it and the descriptor limit
    /// gave: connections per holder process, per source address.
    #[serde(default)]
    pub port_range: Option<(u16, u16)>,
    #[serde(default)]
    pub caps: Option<Caps>,
    /// The connections the fit is extrapolated to.
    pub extrapolate_to: usize,
    #[serde(flatten)]
    pub servers: ServerParams,
    pub pinning: Option<Pinning>,
}

/// One kind.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CellRecord {
    pub model: String,
    pub status: CellStatus,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
    /// Before any connection was held.
    pub base_pss_bytes: Option<u64>,
    pub base_kernel_tcp_bytes: Option<u64>,
    pub steps: Vec<StepRecord>,
    /// The most connections really held.
    pub largest_held: usize,
    /// Why the connections stopped growing short of a step, if they did.
    pub stopped: Option<String>,
    /// The line through (connections, PSS), the base point included.
    pub fit: Option<Fit>,
    /// That line at `extrapolate_to` connections: an extrapolation.
    pub pss_extrapolated_bytes: Option<f64>,
    /// The largest step alone, scaled to `extrapolate_to` connections: the
    /// base plus that step's growth over the base per connection, times
    /// `extrapolate_to`. A measurement when the largest step held
    /// `extrapolate_to` connections, an extrapolation otherwise.
    #[serde(default)]
    pub pss_from_largest_bytes: Option<f64>,
    /// The kernel's TCP memory's growth per connection at the largest
    /// step, machine-wide: both ends of each connection.
    pub kernel_tcp_per_connection_bytes: Option<f64>,
    pub exit_code: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StepRecord {
    pub target: usize,
    pub held: usize,
    /// The holder processes and source addresses the connections came
    /// from, and the sockets the server's processes had open (listeners
    /// included): that the server really held them.
    #[serde(default)]
    pub holders: usize,
    #[serde(default)]
    pub source_addresses: usize,
    #[serde(default)]
    pub server_sockets: Option<usize>,
    /// The server tree's memory with the connections held.
    pub pss_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub kernel_tcp_bytes: Option<u64>,
    /// The light stream on fresh connections meanwhile, what the server
    /// spent per request of it, and what bound it.
    pub light: Option<LoadSummary>,
    /// (Added within version 1.)
    #[serde(default)]
    pub per_request: Option<PerRequest>,
    #[serde(default)]
    pub bound: Option<Bound>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub per_connection_bytes: f64,
    pub base_bytes: f64,
    pub points: usize,
}

impl cells::CellRecord for CellRecord {
    fn failure(&self) -> Option<&str> {
        (self.status == CellStatus::Failed).then(|| self.error.as_deref().unwrap_or("?"))
    }

    fn summary(&self) -> String {
        summary_line(self)
    }
}

/// Writes `conns.json`, `conns.md` and `conns.svg`, each whole.
pub fn write_all(dir: &Path, run: &ConnsRun) -> std::io::Result<()> {
    record::write_files(
        dir,
        &[
            ("conns.json".into(), to_json(run)?),
            ("conns.md".into(), markdown(run)),
        ],
    )?;
    if run.cells.is_empty() {
        return Ok(());
    }
    chart::write_files(dir, &[("conns.svg".into(), chart(run))])
}

/// One line for the terminal as a kind finishes.
pub fn summary_line(cell: &CellRecord) -> String {
    format!(
        "{} held, {} bytes each, {} MiB at {n} (fit), {} MiB (largest step){}",
        cell.largest_held,
        opt(cell.fit.map(|f| f.per_connection_bytes), 0),
        opt(cell.pss_extrapolated_bytes.map(|b| b / 1048576.0), 0),
        opt(cell.pss_from_largest_bytes.map(|b| b / 1048576.0), 0),
        cell.stopped
            .as_deref()
            .map_or(String::new(), |why| format!("; {why}")),
        n = super::EXTRAPOLATE_TO
    )
}

const HEADER: [&str; 13] = [
    "model",
    "held",
    "holders",
    "sources",
    "server sockets",
    "PSS MiB",
    "RSS MiB",
    "kernel TCP MiB",
    "light p50 ms",
    "light p99 ms",
    "light errors",
    "light CPU µs/req",
    "bound",
];

/// Every step of every kind, then each kind's fit.
pub fn table(run: &ConnsRun) -> String {
    let mut rows = Vec::new();
    for cell in &run.cells {
        if cell.status == CellStatus::Failed {
            rows.push(failed_row(
                vec![cell.model.clone()],
                cell.error.as_deref(),
                HEADER.len(),
            ));
        }
        let base = vec![
            cell.model.clone(),
            "0".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            cell.base_pss_bytes.map_or("-".into(), mib),
            "-".into(),
            cell.base_kernel_tcp_bytes.map_or("-".into(), mib),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ];
        rows.push(base);
        for step in &cell.steps {
            let light = step.light.as_ref();
            rows.push(vec![
                cell.model.clone(),
                step.held.to_string(),
                step.holders.to_string(),
                step.source_addresses.to_string(),
                step.server_sockets.map_or("-".into(), |n| n.to_string()),
                step.pss_bytes.map_or("-".into(), mib),
                step.rss_bytes.map_or("-".into(), mib),
                step.kernel_tcp_bytes.map_or("-".into(), mib),
                opt(light.and_then(|l| l.latency_ms.p50), 2),
                opt(light.and_then(|l| l.latency_ms.p99), 2),
                light.map_or("-".into(), |l| (l.non_2xx + l.client_errors()).to_string()),
                opt(step.per_request.map(|p| p.cpu_us), 1),
                step.bound.as_ref().map_or("-", |b| b.by.name()).to_owned(),
            ]);
        }
    }
    let mut out = markdown_table(&HEADER, rows, 1);
    let fits: Vec<Vec<String>> = run
        .cells
        .iter()
        .map(|c| {
            vec![
                c.model.clone(),
                opt(c.fit.map(|f| f.per_connection_bytes / 1024.0), 2),
                opt(c.fit.map(|f| f.base_bytes / 1048576.0), 1),
                opt(c.pss_extrapolated_bytes.map(|b| b / 1048576.0), 0),
                opt(c.pss_from_largest_bytes.map(|b| b / 1048576.0), 0),
                c.largest_held.to_string(),
                opt(c.kernel_tcp_per_connection_bytes.map(|b| b / 1024.0), 2),
                c.stopped.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str("\n\n");
    out.push_str(&markdown_table(
        &[
            "model",
            "PSS KiB per connection (fit)",
            "base MiB (fit)",
            &format!("PSS MiB at {} (fit)", run.params.extrapolate_to),
            &format!("PSS MiB at {} (largest step)", run.params.extrapolate_to),
            "most held",
            "kernel TCP KiB per connection",
            "stopped early",
        ],
        fits,
        1,
    ));
    out
}

fn markdown(run: &ConnsRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lab conns `{}`\n", run.meta.name);
    let _ = writeln!(out, "{}\n", run.meta.describe());
    let p = &run.params;
    let _ = writeln!(
        out,
        "Workers: {}. Idle keep-alive connections, each after one `GET /`, held in rising steps \
         by `lab hold` processes (each up to {} connections) from loopback source addresses \
         127.0.0.2 upwards (each up to {} connections); {}. At each step, after 0.5 s, the \
         sockets the server's processes have open, the server tree's memory and the kernel's \
         TCP memory (machine-wide: both ends of each connection), then a light stream of {} \
         req/s for {} s on 4 fresh connections.\n",
        p.workers,
        p.caps.map_or("?".into(), |c| c.per_holder.to_string()),
        p.caps.map_or("?".into(), |c| c.per_source.to_string()),
        describe_limit(p),
        p.light_rate,
        p.light_duration_s,
    );
    let _ = writeln!(
        out,
        "Two figures for {n} connections: the fit is the least-squares line through \
         (connections, PSS), the idle server included, at {n}; the largest step's is that \
         step's growth per connection, times {n}, plus the base. Each is an extrapolation \
         unless the kind really held {n} (the `most held` column).\n",
        n = p.extrapolate_to,
    );
    out.push_str(&table(run));
    out.push_str("\n\n![server PSS against idle connections held](conns.svg)\n");
    out
}

/// The descriptor limit, as the run's text says it.
fn describe_limit(p: &ConnsParams) -> String {
    let Some(d) = p.descriptors else {
        return format!("descriptor limit {}", p.descriptor_limit);
    };
    let how = match d.hard {
        HardLimit::NotNeeded => "the hard limit was enough".to_owned(),
        HardLimit::Raised => format!("the hard limit raised from {}", d.hard_before),
        HardLimit::Refused => format!(
            "raising the hard limit from {} was refused (no CAP_SYS_RESOURCE)",
            d.hard_before
        ),
    };
    format!(
        "descriptor limit {} for the lab, the holders and the servers ({} wanted, {how}; \
         fs.nr_open {})",
        d.limit, d.wanted, d.nr_open
    )
}

/// The server tree's PSS against the connections held, one line per
/// model.
pub fn chart(run: &ConnsRun) -> Chart {
    let series = run
        .cells
        .iter()
        .map(|c| Series {
            name: c.model.clone(),
            points: c
                .base_pss_bytes
                .map(|b| (0.0, b as f64 / 1048576.0))
                .into_iter()
                .chain(
                    c.steps
                        .iter()
                        .filter_map(|s| Some((s.held as f64, s.pss_bytes? as f64 / 1048576.0))),
                )
                .collect(),
        })
        .collect();
    Chart {
        x_desc: "idle connections held".into(),
        log_x: false,
        marker_x: None,
        panels: vec![Panel {
            caption: "server PSS against idle connections".into(),
            y_desc: "MiB".into(),
            log_y: false,
            bars: false,
            series,
        }],
    }
}
