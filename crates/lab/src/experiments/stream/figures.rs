//! From what a cell measured to what `stream.json` says about it: a pure
//! function, tested without a server.

use harness::cost::{self, CpuRecord};
use harness::kernel;
use harness::record::CellStatus;

use super::Cell;
use super::measure::Observed;
use super::report::{CellRecord, Spread};

/// The record of `cell`, whose clients each asked for `mb` MiB.
pub fn cell_record(cell: &Cell, mb: u32, observed: Observed) -> CellRecord {
    let failed: Vec<&str> = observed
        .downloads
        .iter()
        .filter_map(|d| d.error.as_deref())
        .collect();
    let mut problems: Vec<String> = observed.error.iter().cloned().collect();
    if let Some(first) = failed.first() {
        problems.push(format!(
            "{} of the downloads failed, e.g.: {first}",
            failed.len()
        ));
    }
    if let Some(code) = observed.exit_code.filter(|&c| c != 0) {
        problems.push(format!(
            "the server exited with {code} after SIGTERM, not 0"
        ));
    }
    let is_failed = !problems.is_empty();
    let idle = observed.idle;
    let peak = observed.peak;
    let downloads = &observed.downloads;
    CellRecord {
        model: cell.kind.name.clone(),
        endpoint: cell.endpoint,
        clients: cell.clients,
        mb,
        status: if is_failed {
            CellStatus::Failed
        } else {
            CellStatus::Ok
        },
        error: is_failed.then(|| problems.join("; ")),
        stderr_tail: if is_failed {
            observed.stderr_tail
        } else {
            Vec::new()
        },
        pss_idle_bytes: idle.map(|m| m.pss),
        pss_peak_bytes: peak.map(|m| m.pss),
        rss_peak_bytes: peak.map(|m| m.rss),
        pss_per_client_bytes: idle
            .zip(peak)
            .map(|(idle, peak)| peak.pss.saturating_sub(idle.pss) as f64 / cell.clients as f64),
        kernel_tcp_peak_bytes: observed.kernel_tcp_peak,
        samples: observed.samples,
        // A download is the request here: the server's CPU and switches
        // per completed one (no load generator: the clients' CPU is not
        // the lab's to count).
        per_download: observed
            .server
            .map(|server| CpuRecord::new(server, false, 0.0, observed.wall_s))
            .and_then(|cpu| {
                let done = downloads.iter().filter(|d| d.error.is_none()).count();
                cost::per_request(&cpu, done as u64)
            }),
        completed: downloads.iter().filter(|d| d.error.is_none()).count(),
        failed: failed.len(),
        first_byte_ms: Spread::of(
            downloads
                .iter()
                .filter_map(|d| d.first_byte_s)
                .map(|s| s * 1e3),
        ),
        total_s: Spread::of(downloads.iter().filter_map(|d| d.total_s)),
        exit_code: observed.exit_code,
    }
}

impl Spread {
    /// Min, median and max of `values`; `None` without any.
    pub fn of(values: impl Iterator<Item = f64>) -> Option<Spread> {
        let values: Vec<f64> = values.collect();
        Some(Spread {
            min: values.iter().copied().reduce(f64::min)?,
            median: kernel::median(&values)?,
            max: values.iter().copied().reduce(f64::max)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::procs::Memory;
    use harness::servers::Registry;
    use harness::slowread::Download;

    use crate::experiments::stream::Endpoint;

    fn download(first: f64, total: f64) -> Download {
        Download {
            first_byte_s: Some(first),
            total_s: Some(total),
            bytes: 1 << 20,
            declared: Some(1 << 20),
            error: None,
        }
    }

    #[test]
    fn memory_per_client_is_the_growth_over_idle_shared_out() {
        let cell = Cell {
            kind: Registry::default().get("prefork").unwrap().clone(),
            endpoint: Endpoint::Buffer,
            clients: 4,
        };
        let memory = |pss| Memory {
            rss: pss * 2,
            pss,
            uss: pss,
        };
        let observed = Observed {
            idle: Some(memory(10 << 20)),
            peak: Some(memory(18 << 20)),
            samples: 5,
            downloads: vec![
                download(0.010, 1.0),
                download(0.020, 2.0),
                download(0.030, 3.0),
                Download {
                    error: Some("got 5 body bytes".into()),
                    ..Download::default()
                },
            ],
            exit_code: Some(0),
            ..Observed::default()
        };
        let record = cell_record(&cell, 1, observed);
        assert_eq!(record.pss_per_client_bytes, Some((2 << 20) as f64));
        assert_eq!((record.completed, record.failed), (3, 1));
        assert_eq!(
            record.status,
            CellStatus::Failed,
            "a failed download fails the cell"
        );
        let total = record.total_s.unwrap();
        assert_eq!((total.min, total.median, total.max), (1.0, 2.0, 3.0));
        assert!((record.first_byte_ms.unwrap().max - 30.0).abs() < 1e-9);
    }
}
