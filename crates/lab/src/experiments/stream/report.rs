//! What `lab stream` writes: the output types (`stream.json`'s schema),
//! the `stream.md` table, and `stream.svg` (memory per client against the
//! clients, one line per model and endpoint). These types are the
//! published format and nothing else.

use std::fmt::Write as _;
use std::path::Path;

use harness::chart::{self, Chart, Panel, Series};
use harness::cost::PerRequest;
use harness::cpus::Pinning;
use harness::record::{self, CellStatus, failed_row, markdown_table, mib, opt, to_json};
use harness::servers::ServerParams;
use serde::{Deserialize, Serialize};

use crate::cells;

use super::Endpoint;

/// Bumped whenever a field of [`StreamRun`] changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// `stream.json`: the run, its parameters and its cells.
pub type StreamRun = cells::Run<StreamParams, CellRecord>;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StreamParams {
    pub quick: bool,
    pub models: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    pub clients: Vec<usize>,
    pub workers: u16,
    /// MiB per download.
    pub mb: u32,
    /// How fast each client reads, at most.
    pub rate_bytes_per_s: u64,
    /// Each client's socket receive buffer, as asked of the kernel.
    pub recv_buffer_bytes: usize,
    #[serde(flatten)]
    pub servers: ServerParams,
    pub pinning: Option<Pinning>,
}

/// Min, median and max over the downloads of a cell.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CellRecord {
    pub model: String,
    pub endpoint: Endpoint,
    pub clients: usize,
    pub mb: u32,
    pub status: CellStatus,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
    /// The server tree's memory before the downloads, and its peak during
    /// them (sampled every 100 ms).
    pub pss_idle_bytes: Option<u64>,
    pub pss_peak_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
    /// The peak's growth over idle, per client.
    pub pss_per_client_bytes: Option<f64>,
    /// The most memory the kernel held for TCP sockets during the
    /// downloads, machine-wide (`/proc/net/sockstat`): the clients' side
    /// included, so an upper bound on the server's.
    pub kernel_tcp_peak_bytes: Option<u64>,
    pub samples: u32,
    /// The server's CPU and context switches per completed download.
    /// (Added within version 1.)
    #[serde(default)]
    pub per_download: Option<PerRequest>,
    /// Downloads that got every byte, and those that did not.
    pub completed: usize,
    pub failed: usize,
    /// From the request to the first byte of the body, ms.
    pub first_byte_ms: Option<Spread>,
    /// From the request to the last byte, s.
    pub total_s: Option<Spread>,
    pub exit_code: Option<i32>,
}

impl cells::CellRecord for CellRecord {
    fn failure(&self) -> Option<&str> {
        (self.status == CellStatus::Failed).then(|| self.error.as_deref().unwrap_or("?"))
    }

    fn summary(&self) -> String {
        summary_line(self)
    }
}

/// Writes `stream.json`, `stream.md` and `stream.svg`, each whole.
pub fn write_all(dir: &Path, run: &StreamRun) -> std::io::Result<()> {
    record::write_files(
        dir,
        &[
            ("stream.json".into(), to_json(run)?),
            ("stream.md".into(), markdown(run)),
        ],
    )?;
    if run.cells.is_empty() {
        return Ok(());
    }
    chart::write_files(dir, &[("stream.svg".into(), chart(run))])
}

/// One line for the terminal as a cell finishes.
pub fn summary_line(cell: &CellRecord) -> String {
    format!(
        "PSS peak {} MiB, {} MiB per client, total {} s median",
        cell.pss_peak_bytes.map_or("-".into(), mib),
        opt(cell.pss_per_client_bytes.map(|b| b / 1048576.0), 2),
        opt(cell.total_s.map(|s| s.median), 2)
    )
}

const HEADER: [&str; 11] = [
    "model",
    "endpoint",
    "clients",
    "PSS idle MiB",
    "PSS peak MiB",
    "per client MiB",
    "RSS peak MiB",
    "kernel TCP MiB",
    "first byte ms min / median / max",
    "total s min / median / max",
    "CPU ms per download",
];

/// Every cell, in run order.
pub fn table(run: &StreamRun) -> String {
    let spread = |s: Option<Spread>, decimals: usize| match s {
        Some(s) => format!(
            "{:.d$} / {:.d$} / {:.d$}",
            s.min,
            s.median,
            s.max,
            d = decimals
        ),
        None => "-".into(),
    };
    let rows = run
        .cells
        .iter()
        .map(|c| {
            let labels = vec![
                c.model.clone(),
                c.endpoint.to_string(),
                c.clients.to_string(),
            ];
            if c.status == CellStatus::Failed {
                return failed_row(labels, c.error.as_deref(), HEADER.len());
            }
            let mut row = labels;
            row.extend([
                c.pss_idle_bytes.map_or("-".into(), mib),
                c.pss_peak_bytes.map_or("-".into(), mib),
                opt(c.pss_per_client_bytes.map(|b| b / 1048576.0), 2),
                c.rss_peak_bytes.map_or("-".into(), mib),
                c.kernel_tcp_peak_bytes.map_or("-".into(), mib),
                spread(c.first_byte_ms, 1),
                spread(c.total_s, 2),
                opt(c.per_download.map(|p| p.cpu_us / 1000.0), 2),
            ]);
            row
        })
        .collect();
    markdown_table(&HEADER, rows, 2)
}

fn markdown(run: &StreamRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lab stream `{}`\n", run.meta.name);
    let _ = writeln!(out, "{}\n", run.meta.describe());
    let p = &run.params;
    let _ = writeln!(
        out,
        "Workers: {}. Each client downloads {} MiB from `/stream` (made chunk by chunk as the \
         connection takes them) or `/buffer` (built whole first), reading at most {} KiB/s \
         through a {} KiB receive buffer; all of a cell's clients start together. Memory is \
         the server tree's, sampled every 100 ms; per client is the peak's growth over idle \
         divided by the clients. Socket buffers are kernel memory, outside PSS: kernel TCP is \
         the most the kernel held for all TCP sockets of the machine during the downloads \
         (`/proc/net/sockstat`), the clients' included.\n",
        p.workers,
        p.mb,
        p.rate_bytes_per_s / 1024,
        p.recv_buffer_bytes / 1024,
    );
    out.push_str(&table(run));
    out.push_str("\n\n![server memory per client against the clients](stream.svg)\n");
    out.push_str(&cells::failures(&run.cells, |c| {
        format!("{} /{} x{}", c.model, c.endpoint, c.clients)
    }));
    out
}

/// The server's peak PSS against the clients, one line per model and
/// endpoint.
pub fn chart(run: &StreamRun) -> Chart {
    let mut series = Vec::new();
    for model in &run.params.models {
        for &endpoint in &run.params.endpoints {
            series.push(Series {
                name: format!("{model} /{endpoint}"),
                points: run
                    .cells
                    .iter()
                    .filter(|c| {
                        &c.model == model && c.endpoint == endpoint && c.status == CellStatus::Ok
                    })
                    .filter_map(|c| Some((c.clients as f64, c.pss_peak_bytes? as f64 / 1048576.0)))
                    .collect(),
            });
        }
    }
    Chart {
        x_desc: "clients downloading at once".into(),
        log_x: false,
        marker_x: None,
        panels: vec![Panel {
            caption: format!(
                "server PSS peak, {} MiB each to slow clients",
                run.params.mb
            ),
            y_desc: "MiB".into(),
            log_y: true,
            bars: false,
            series,
        }],
    }
}
