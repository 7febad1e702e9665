//! What `lab ipc` writes: the output types (`ipc.json`'s schema), the
//! `ipc.md` tables, and `ipc.svg` (time per message and throughput against
//! the payload size, log-log, one line per transport). These types are
//! the published format and nothing else.

use std::fmt::Write as _;
use std::path::Path;

use harness::chart::{self, Chart, Panel, Series};
use harness::record::{self, CellStatus, failed_row, markdown_table, opt, to_json};
use ipc::{Family, Transport};
use serde::{Deserialize, Serialize};

use crate::cells;

use super::figures::relative;

/// Bumped whenever a field of [`IpcRun`] changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// `ipc.json`: the run, its parameters, a record per transport.
pub type IpcRun = cells::Run<IpcParams, TransportRecord>;

/// The transport every other is compared with in the second table: the
/// cheapest hand-off of bytes that are already shared.
pub const BASELINE: Transport = Transport::ThreadArc;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct IpcParams {
    pub quick: bool,
    /// In run order, those that ran (see `skipped`).
    pub transports: Vec<Transport>,
    /// Payload sizes, bytes, ascending.
    pub sizes: Vec<usize>,
    /// Untimed messages first, then at most `messages` timed ones or
    /// `duration_s`, per transport and size.
    pub warmup: u32,
    pub messages: u32,
    pub duration_s: f64,
    /// What one message is, in words (the same for every transport).
    pub message: String,
    /// `node --version`, when the Node transports ran.
    pub node_version: Option<String>,
    /// Transports asked for that could not run here, and why.
    pub skipped: Vec<String>,
}

/// One transport, all its sizes.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct TransportRecord {
    pub transport: Transport,
    pub family: Family,
    /// How the payload travels, and what it copies.
    pub how: String,
    /// One per size measured, ascending (a failed transport keeps the
    /// sizes it finished).
    pub points: Vec<Point>,
    pub status: CellStatus,
    pub error: Option<String>,
}

/// One transport at one size.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub bytes: usize,
    /// Timed messages.
    pub messages: usize,
    /// Round trip per message, µs.
    pub median_us: f64,
    /// The 99th percentile (nearest rank: of fewer than 100 messages,
    /// their slowest).
    pub p99_us: f64,
    pub min_us: f64,
    /// Payload bytes over the median round trip, 10^9 bytes per second.
    pub gb_per_s: f64,
}

impl cells::CellRecord for TransportRecord {
    fn failure(&self) -> Option<&str> {
        (self.status == CellStatus::Failed).then(|| self.error.as_deref().unwrap_or("?"))
    }

    fn summary(&self) -> String {
        let end = |p: Option<&Point>| {
            p.map_or("-".into(), |p| {
                format!("{} {:.1} µs", size(p.bytes), p.median_us)
            })
        };
        format!("{} … {}", end(self.points.first()), end(self.points.last()))
    }
}

/// Writes `ipc.json`, `ipc.md` and `ipc.svg`, each whole.
pub fn write_all(dir: &Path, run: &IpcRun) -> std::io::Result<()> {
    record::write_files(
        dir,
        &[
            ("ipc.json".into(), to_json(run)?),
            ("ipc.md".into(), markdown(run)),
        ],
    )?;
    if run.cells.iter().all(|c| c.points.is_empty()) {
        return Ok(());
    }
    chart::write_files(dir, &[("ipc.svg".into(), chart(run))])
}

/// `64 B`, `4 KiB`, `16 MiB`; other sizes in the largest unit that
/// divides them.
pub fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

const HEADER: [&str; 7] = [
    "transport",
    "family",
    "payload",
    "messages",
    "median µs",
    "p99 µs",
    "GB/s",
];

/// Every transport at every size, then each median against the
/// baseline's at the same size.
pub fn tables(run: &IpcRun) -> String {
    let mut rows = Vec::new();
    for cell in &run.cells {
        let family = format!("{:?}", cell.family).to_lowercase();
        for p in &cell.points {
            rows.push(vec![
                cell.transport.to_string(),
                family.clone(),
                size(p.bytes),
                p.messages.to_string(),
                format!("{:.2}", p.median_us),
                format!("{:.2}", p.p99_us),
                gb(p.gb_per_s),
            ]);
        }
        if cell.status == CellStatus::Failed {
            let labels = vec![cell.transport.to_string(), family];
            rows.push(failed_row(labels, cell.error.as_deref(), HEADER.len()));
        }
    }
    let mut out = markdown_table(&HEADER, rows, 3);
    if let Some(ratios) = relative(&run.cells, BASELINE) {
        let sizes: Vec<String> = run.params.sizes.iter().map(|&b| size(b)).collect();
        let mut header = vec!["transport"];
        header.extend(sizes.iter().map(String::as_str));
        let rows: Vec<Vec<String>> = ratios
            .into_iter()
            .map(|(transport, ratios)| {
                let mut row = vec![transport.to_string()];
                row.extend(ratios.into_iter().map(|r| match r {
                    Some(r) => format!("{}×", opt(Some(r), if r < 10.0 { 1 } else { 0 })),
                    None => "-".into(),
                }));
                row
            })
            .collect();
        let _ = write!(
            out,
            "\n\nMedian round trip as a multiple of `{BASELINE}`'s at the same size:\n\n{}",
            markdown_table(&header, rows, 1)
        );
    }
    out
}

/// GB/s with three significant figures or so, small ones too.
fn gb(value: f64) -> String {
    match value {
        v if v >= 10.0 => format!("{v:.1}"),
        v if v >= 0.1 => format!("{v:.2}"),
        v => format!("{v:.4}"),
    }
}

fn markdown(run: &IpcRun) -> String {
    let mut out = String::new();
    let p = &run.params;
    let _ = writeln!(out, "# lab ipc `{}`\n", run.meta.name);
    let _ = writeln!(out, "{}\n", run.meta.describe());
    let _ = writeln!(
        out,
        "**A message** {} Per transport and size: {} untimed messages (at most a quarter of \
         the time), then up to {} timed ones or {} s, whichever comes first. GB/s is the \
         payload over the median round trip (10^9 bytes/s); where nothing is copied \
         (thread-move, thread-arc, shm, node-transfer, node-sab) no byte moves at all, and \
         it is how much data changes hands per second, not a copy speed. Node: {}.\n",
        p.message,
        p.warmup,
        p.messages,
        p.duration_s,
        p.node_version.as_deref().unwrap_or("not run"),
    );
    out.push_str("| transport | how |\n|---|---|\n");
    for cell in &run.cells {
        let _ = writeln!(out, "| {} | {} |", cell.transport, cell.how);
    }
    out.push('\n');
    for skipped in &p.skipped {
        let _ = writeln!(out, "Skipped: {skipped}.\n");
    }
    out.push_str(&tables(run));
    out.push_str("\n\n![time per message and throughput against the payload size](ipc.svg)\n");
    out.push_str(&cells::failures(&run.cells, |cell| {
        cell.transport.to_string()
    }));
    out
}

/// Two log-log panels against the payload size: the median round trip,
/// and the throughput; one line per transport.
pub fn chart(run: &IpcRun) -> Chart {
    let series = |f: fn(&Point) -> f64| -> Vec<Series> {
        run.cells
            .iter()
            .map(|cell| Series {
                name: cell.transport.to_string(),
                points: cell.points.iter().map(|p| (p.bytes as f64, f(p))).collect(),
            })
            .collect()
    };
    Chart {
        x_desc: "payload, bytes".into(),
        log_x: true,
        marker_x: None,
        panels: vec![
            Panel {
                caption: "median round trip per message".into(),
                y_desc: "µs".into(),
                log_y: true,
                bars: false,
                series: series(|p| p.median_us),
            },
            Panel {
                caption: "throughput (payload / median round trip)".into(),
                y_desc: "GB/s".into(),
                log_y: true,
                bars: false,
                series: series(|p| p.gb_per_s),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_in_the_largest_unit_that_divides_them() {
        assert_eq!(size(64), "64 B");
        assert_eq!(size(4096), "4 KiB");
        assert_eq!(size(16 << 20), "16 MiB");
        assert_eq!(size(4097), "4097 B");
        assert_eq!(size(1536 << 10), "1536 KiB");
    }

    #[test]
    fn throughput_keeps_its_significant_figures() {
        assert_eq!(gb(123.4), "123.4");
        assert_eq!(gb(2.345), "2.35");
        assert_eq!(gb(0.00123), "0.0012");
    }
}
