//! What `lab crash` writes: the output types (`crash.json`'s schema), the
//! `crash.md` table, the terminal timelines, and one SVG chart per model.
//! Like `run.json`, these types are the published format and nothing else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use harness::chart::{self, Chart, Panel, Series};
use harness::cost::{Bound, CpuRecord, PerRequest};
use harness::cpus::Pinning;
use harness::record::{self, CellStatus, RunMeta, to_json};
use harness::servers::ServerParams;
use serde::{Deserialize, Serialize};

use super::Fault;

/// Bumped whenever a field of [`CrashRun`] changes meaning or goes away.
/// 2: the run metadata is shared with every experiment, and `model` is any
/// server kind's name.
pub const SCHEMA_VERSION: u32 = 2;

/// `crash.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CrashRun {
    pub schema_version: u32,
    #[serde(flatten)]
    pub meta: RunMeta,
    pub params: CrashParams,
    pub results: Vec<FaultRecord>,
}

impl CrashRun {
    /// How many fault runs failed (not the faults: the runs themselves).
    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.status == CellStatus::Failed)
            .count()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CrashParams {
    pub models: Vec<String>,
    pub faults: Vec<Fault>,
    pub workers: u16,
    pub concurrency: u32,
    /// The steady load as a share of the probed capacity (absent with a
    /// fixed rate).
    pub load_share: Option<f64>,
    pub fixed_rate_rps: Option<f64>,
    pub probe_s: f64,
    pub before_s: f64,
    pub after_s: f64,
    pub window_ms: u64,
    pub worker_timeout_ms: u64,
    pub cpu_iters: u32,
    /// A window is back at this share of the pre-fault mean ...
    pub recover_threshold: f64,
    /// ... when this many windows in a row are.
    pub recover_sustain_windows: usize,
    /// The pre-fault mean leaves out the load's first this many seconds.
    pub baseline_from_s: f64,
    #[serde(flatten)]
    pub servers: ServerParams,
    /// The CPUs of the server and of the load generator, if pinned.
    pub pinning: Option<Pinning>,
}

/// One (model, fault). Times `*_at_s` are seconds on the load generator's
/// clock (since oha started); see `loadgen` for how they are aligned.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FaultRecord {
    pub model: String,
    pub fault: Fault,
    pub status: CellStatus,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
    /// 2xx answers per second of the unthrottled probe.
    pub capacity_rps: Option<f64>,
    /// The steady load's rate (oha `-q`).
    pub rate_rps: Option<f64>,
    /// When `/stats` was read for the in-flight count (just before the fault).
    pub stats_read_at_s: Option<f64>,
    /// When the fault was injected: the SIGKILL, or the `/crash` request sent.
    pub fault_at_s: Option<f64>,
    /// When `/stats` first showed a replacement worker or thread ready.
    pub replaced_at_s: Option<f64>,
    /// The worker slot hit (for `/crash`: the one that restarted, if any).
    pub faulted_slot: Option<usize>,
    /// Requests the server held at the `/stats` read before the fault, that
    /// read itself not counted.
    pub in_flight_at_fault: Option<u64>,
    /// Of those, the faulted worker's (prefork).
    pub in_flight_on_faulted_worker: Option<u64>,
    /// threadpool: jobs waiting in the queue at that read.
    pub queued_at_fault: Option<u64>,
    /// Load requests answered 2xx.
    pub answered_ok: u64,
    /// Load errors + load non-2xx answers + the `/crash` request itself when
    /// it got no 2xx.
    pub requests_failed: u64,
    /// Load requests that got no answer (connection errors), by oha's message.
    pub load_errors: u64,
    pub load_non_2xx: u64,
    /// Load requests cut off by the end of the load: not counted as failed.
    pub deadline_cutoffs: u64,
    pub errors: BTreeMap<String, u64>,
    /// How the `/crash` request itself went (`none` for kill).
    pub crash_request: String,
    pub crash_request_failed: bool,
    /// The server's process was alive at the end of the load.
    pub survived: bool,
    /// Mean 2xx answers per window before the fault.
    pub baseline_ok_per_window: Option<f64>,
    pub recovered: bool,
    /// From the fault to the first sustained window back; `None`: never.
    pub time_to_recover_ms: Option<f64>,
    pub capacity_after: Option<CapacityAfter>,
    /// After `kill-primary`: what became of its workers.
    pub orphans: Option<Orphans>,
    /// How the server ended when the run stopped it (`None`: the run
    /// failed before that).
    pub stopped: Option<Stopped>,
    /// Server processes still running after it was stopped.
    pub left_running: Vec<i32>,
    /// What the server's processes spent during the load (a process that
    /// died took its share with it), per request answered, and what bound
    /// the load. (Added within version 2.)
    #[serde(default)]
    pub cpu: Option<CpuRecord>,
    #[serde(default)]
    pub per_request: Option<PerRequest>,
    #[serde(default)]
    pub bound: Option<Bound>,
    /// The terminal line, one char per window.
    pub timeline: String,
    pub windows: Vec<WindowRecord>,
}

/// What became of the workers after their primary was SIGKILLed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Orphans {
    /// Workers `/stats` listed before the fault.
    pub workers: usize,
    /// When the last of them was gone; `None`: not within the watch.
    pub gone_after_ms: Option<f64>,
    /// How many were still running when the watch ended (3 s).
    pub left_after_watch: usize,
}

/// How a server ended at the end of a fault run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Stopped {
    /// It exited after SIGTERM with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// It did not exit within its grace period of SIGTERM (a hung event
    /// loop never runs its handler), and was killed.
    IgnoredSigterm,
    /// It was dead already.
    WasDead,
}

impl Stopped {
    fn describe(self) -> String {
        match self {
            Stopped::Exited(Some(code)) => format!("exit {code}"),
            Stopped::Exited(None) => "killed by a signal".into(),
            Stopped::IgnoredSigterm => "ignored SIGTERM; killed".into(),
            Stopped::WasDead => "was dead".into(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CapacityAfter {
    pub workers: usize,
    /// Workers (or pool threads) in state `ready`, whose process is alive.
    pub workers_alive: usize,
    pub restarts: u64,
    /// threadpool: threads given up as hung, still running.
    pub lost_threads: Vec<LostThread>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LostThread {
    pub slot: usize,
    pub tid: u32,
    /// Its CPU time so far, from `/stats`.
    pub cpu_ms: Option<u64>,
    /// Its CPU time over two `/stats` reads after the load, divided by the
    /// wall time between them: the share of a core it still burns.
    pub cores_burning: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WindowRecord {
    pub start_s: f64,
    pub ok: u64,
    pub non_2xx: u64,
    pub p99_ms: Option<f64>,
}

/// Writes `crash.json`, `crash.md` and the charts, each whole or not at
/// all.
pub fn write_all(dir: &Path, run: &CrashRun) -> std::io::Result<()> {
    record::write_files(
        dir,
        &[
            ("crash.json".into(), to_json(run)?),
            ("crash.md".into(), render_markdown(run)),
        ],
    )?;
    let charts: Vec<(String, Chart)> = run
        .params
        .models
        .iter()
        .filter_map(|model| {
            let results: Vec<&FaultRecord> = run
                .results
                .iter()
                .filter(|r| &r.model == model && !r.windows.is_empty())
                .collect();
            (!results.is_empty()).then(|| {
                (
                    format!("crash-{model}.svg"),
                    timeline_chart(model, &results, run.params.window_ms),
                )
            })
        })
        .collect();
    chart::write_files(dir, &charts)
}

const COLUMNS: [&str; 12] = [
    "model",
    "fault",
    "failed",
    "in flight at fault",
    "survived",
    "replaced in",
    "recovered in",
    "capacity after",
    "the /crash request",
    "stopped",
    "CPU µs/req",
    "bound",
];

fn row(r: &FaultRecord) -> Vec<String> {
    let mut row = vec![r.model.clone(), r.fault.to_string()];
    if r.status == CellStatus::Failed {
        return record::failed_row(row, r.error.as_deref(), COLUMNS.len());
    }
    // Requests still waiting when the load's time ran out were cut off,
    // not answered: few on a live server, every connection on a hung one.
    row.push(match r.deadline_cutoffs {
        0 => r.requests_failed.to_string(),
        cut => format!("{} (+{cut} cut off at the end)", r.requests_failed),
    });
    row.push(
        match (r.in_flight_at_fault, r.in_flight_on_faulted_worker) {
            (Some(all), Some(there)) => format!("{all} ({there} on it)"),
            (Some(all), None) => all.to_string(),
            _ => "not measured".into(),
        },
    );
    row.push(if r.survived { "yes" } else { "no" }.into());
    row.push(match (r.replaced_at_s, r.fault_at_s) {
        (Some(at), Some(fault)) => format!("{:.0} ms", (at - fault) * 1000.0),
        _ if r.stats_read_at_s.is_none() => "not measured".into(),
        _ => "-".into(),
    });
    row.push(match r.time_to_recover_ms {
        Some(ms) => format!("{ms:.0} ms"),
        None => "never".into(),
    });
    row.push(match &r.capacity_after {
        None => "not measured".into(),
        Some(c) => {
            let mut text = format!("{}/{} alive", c.workers_alive, c.workers);
            for lost in &c.lost_threads {
                let _ = write!(
                    text,
                    "; 1 lost thread burning {} core",
                    lost.cores_burning
                        .map_or("?".into(), |cores| format!("{cores:.2}"))
                );
            }
            text
        }
    });
    row.push(r.crash_request.clone());
    row.push(match (r.orphans, r.stopped) {
        (Some(o), _) => match o.gone_after_ms {
            Some(ms) => format!("its {} workers gone in {ms:.0} ms", o.workers),
            None => format!(
                "{} of {} workers still running after {} s",
                o.left_after_watch,
                o.workers,
                super::measure::ORPHAN_WATCH.as_secs()
            ),
        },
        (None, stopped) => stopped.map_or("-".into(), Stopped::describe),
    });
    row.push(record::opt(r.per_request.map(|p| p.cpu_us), 1));
    row.push(r.bound.as_ref().map_or("-", |b| b.by.name()).to_owned());
    row
}

/// `crash.md`: the table, how to read it, then each fault's timeline.
pub fn render_markdown(run: &CrashRun) -> String {
    let p = &run.params;
    let mut md = format!(
        "# lab crash: {}\n\n{}\n\n",
        run.meta.name,
        run.meta.describe()
    );
    let _ = writeln!(
        md,
        "{} workers, `/cpu?iters={}` at {} connections, load {} with latency correction; \
         fault after {:.1} s, load kept {:.1} s more; `--worker-timeout-ms {}`. {}\n",
        p.workers,
        p.cpu_iters,
        p.concurrency,
        match (p.fixed_rate_rps, p.load_share) {
            (Some(rate), _) => format!("{rate:.0} req/s"),
            (None, Some(share)) => format!("{:.0}% of the probed capacity", share * 100.0),
            _ => "?".into(),
        },
        p.before_s,
        p.after_s,
        p.worker_timeout_ms,
        p.servers.describe(),
    );
    md.push_str(&record::markdown_table(
        &COLUMNS,
        run.results.iter().map(row).collect(),
        2,
    ));
    md.push('\n');
    let _ = writeln!(
        md,
        "\n**failed**: load requests with no answer or a non-2xx answer, plus the `/crash` \
         request itself when it got no 2xx; requests still waiting when the load's time ran out are \
         counted apart (cut off at the end). **in flight at fault**: requests the server held \
         at a `/stats` read just before the fault, that read not counted. **replaced in**: from \
         the fault to the first `/stats` poll (every 20 ms) that shows the slot restarted and \
         ready. **recovered in**: \
         from the fault to the first of {} windows in a row back at ≥ {:.0}% of the \
         pre-fault mean 2xx per {} ms window (resolution: one window). **capacity after**: \
         workers or pool threads ready at the end; for threadpool, threads lost to a hang \
         and the CPU they still burn. **stopped**: how the server ended when the run sent it \
         SIGTERM at the end; after `kill-primary`, what became of the workers of the killed \
         primary, one of them busy with a long request when it was killed (watched for 3 s, \
         then killed by the harness). **CPU µs/req**: the server's processes' CPU time during \
         the load per 2xx answer (a process that died took its share with it); **bound**: what \
         limited the load, as in `lab run`.\n",
        p.recover_sustain_windows,
        p.recover_threshold * 100.0,
        p.window_ms,
    );
    let _ = writeln!(md, "## Timelines\n\n```");
    md.push_str(&render_timelines(run));
    md.push_str("```\n");
    let errors: Vec<&FaultRecord> = run.results.iter().filter(|r| r.error.is_some()).collect();
    if !errors.is_empty() {
        md.push_str("\n## Errors\n\n");
        for r in errors {
            let _ = writeln!(
                md,
                "- {} {}: {}",
                r.model,
                r.fault,
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    md
}

/// One line per fault, for the terminal and `crash.md`.
pub fn render_timelines(run: &CrashRun) -> String {
    let mut text = format!("{}\n", harness::timeline::LEGEND);
    for r in &run.results {
        let _ = writeln!(
            text,
            "{:<10} {:<5} {}  {}",
            r.model,
            r.fault.to_string(),
            r.timeline,
            summary_line(r)
        );
    }
    text
}

/// The few words after a timeline.
pub fn summary_line(r: &FaultRecord) -> String {
    if r.status == CellStatus::Failed {
        return format!("FAILED: {}", r.error.as_deref().unwrap_or("?"));
    }
    format!(
        "failed {}, {}, {}",
        r.requests_failed,
        if r.survived { "survived" } else { "died" },
        match r.time_to_recover_ms {
            Some(ms) => format!("recovered in {ms:.0} ms"),
            None => "never recovered".into(),
        }
    )
}

/// The per-model chart: 2xx per window (top) and p99 (bottom) against time
/// since the fault, one line per fault.
fn timeline_chart(model: &str, results: &[&FaultRecord], window_ms: u64) -> Chart {
    let window_s = window_ms as f64 / 1000.0;
    let series = |pick: fn(&WindowRecord) -> Option<f64>| -> Vec<Series> {
        results
            .iter()
            .map(|r| {
                // Each fault's windows, shifted so its fault is at 0.
                let fault = r.fault_at_s.unwrap_or(0.0);
                Series {
                    name: r.fault.to_string(),
                    points: r
                        .windows
                        .iter()
                        .filter_map(|w| Some((w.start_s + window_s / 2.0 - fault, pick(w)?)))
                        .collect(),
                }
            })
            .collect()
    };
    Chart {
        x_desc: "seconds since the fault".into(),
        log_x: false,
        marker_x: Some(0.0),
        panels: vec![
            Panel {
                caption: format!("{model}: 2xx answers per {window_ms} ms window"),
                y_desc: "2xx / window".into(),
                log_y: false,
                bars: false,
                series: series(|w| Some(w.ok as f64)),
            },
            Panel {
                caption: format!("{model}: p99 latency per window (ms, latency-corrected)"),
                y_desc: "p99 ms".into(),
                log_y: true,
                bars: false,
                series: series(|w| w.p99_ms),
            },
        ],
    }
}
