//! The load generator: oha, run as a library inside `lab loadgen`, a child
//! process of the harness. This crate is the only one that links oha and
//! knows its flags, its JSON report and its SQLite records; the harness sees
//! [`LoadSpec`] going in and [`LoadOutcome`] ([`LoadSummary`],
//! [`RequestRecord`]) coming out. Keeping it a crate lets the compiler, not
//! a sentence, say that nothing else knows oha.
//!
//! Why a child process: the load generator burns CPU on the same machine as
//! the server, and its CPU time is part of the result (a noop cell is often
//! limited by the load generator, not the server). As its own process its
//! CPU time is its own, and it cannot disturb the sampler's timing.
//!
//! For `lab crash` the child also stamps `CLOCK_MONOTONIC` right before it
//! hands over to oha (the clock file), and oha writes every answered request
//! to SQLite (`--db-url`), with times in seconds since oha's own start. The
//! parent reads those rows back as [`RequestRecord`]s and places its own
//! events (the fault) on the same clock. The stamp is taken before oha's
//! setup (parsing the URL, reading the resolver configuration, building the
//! client), so oha's zero lies that setup time (well under 10 ms, typically
//! about 1 ms) after the stamp: events placed through the stamp land at most
//! that much late on oha's time axis.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Deserialize;

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("cannot start the load generator ({exe})")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the load generator's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot pin the load generator to its CPUs")]
    Pin(#[source] nix::Error),
    #[error("the load generator failed: {0}")]
    Oha(String),
    #[error("the load generator exited with {status}: {stderr}")]
    Exit { status: String, stderr: String },
    #[error("the load generator's report {path} is unreadable")]
    Report {
        path: PathBuf,
        #[source]
        source: ReportError,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the load generator")]
    Wait(#[source] std::io::Error),
    #[error("the load generator did not finish in {after:?}; killed: {stderr}")]
    Hung { after: Duration, stderr: String },
    #[error("the load generator's request records {path} are unreadable")]
    Records {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("interrupted")]
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// What one load asks for.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// One URL, or several that oha picks from at random for each request.
    pub urls: Vec<String>,
    pub concurrency: u32,
    pub duration: Duration,
    /// Rate limit in requests per second (oha `-q`), with oha's latency
    /// correction, so a stall shows as latency (no coordinated omission).
    /// `None`: as fast as the server answers.
    pub rate: Option<f64>,
    /// Write every answered request to SQLite and stamp the start clock
    /// (see the module docs).
    pub per_request: bool,
    /// Run the load generator on these CPUs only, with one oha thread per
    /// CPU; empty: anywhere, with oha's default threads.
    pub cpus: Vec<usize>,
    /// Each request on a connection of its own (oha
    /// `--disable-keepalive`), instead of keep-alive connections.
    pub new_connections: bool,
}

impl LoadSpec {
    /// An unthrottled load without per-request records.
    pub fn new(urls: Vec<String>, concurrency: u32, duration: Duration) -> LoadSpec {
        LoadSpec {
            urls,
            concurrency,
            duration,
            rate: None,
            per_request: false,
            cpus: Vec::new(),
            new_connections: false,
        }
    }
}

/// One answered request, from oha's SQLite rows. Times are seconds since
/// oha's start; `duration_s` counts from the intended start when latency
/// correction is on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestRecord {
    pub start_s: f64,
    pub end_s: f64,
    pub duration_s: f64,
    pub status: u16,
}

/// What the harness gets back from one load.
#[derive(Clone, Debug)]
pub struct LoadOutcome {
    pub summary: LoadSummary,
    /// User + system seconds of the load generator process.
    pub cpu_seconds: f64,
    /// Every answered request, when the spec asked for them.
    pub records: Option<Vec<RequestRecord>>,
}

// ---------------------------------------------------------------------------
// The child side: `lab loadgen`.

/// `lab loadgen`'s flags: where to report its own CPU time and start
/// instant, then oha's own flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Write this process's CPU seconds here, as JSON, after oha finishes.
    #[arg(long, value_name = "PATH")]
    pub cpu_file: Option<PathBuf>,

    /// Write the CLOCK_MONOTONIC instant (ns) right before oha starts here.
    #[arg(long, value_name = "PATH")]
    pub clock_file: Option<PathBuf>,

    /// Run only on these CPUs (comma-separated ids), every thread of oha's
    /// included: this process pins itself before it starts any.
    #[arg(long, value_name = "CPU,..", value_delimiter = ',')]
    pub cpus: Vec<usize>,

    /// Everything after `--` goes to oha unchanged.
    #[arg(last = true, required = true, value_name = "OHA ARGS")]
    pub oha_args: Vec<String>,
}

/// Restricts the calling thread, and every thread it starts from now on, to
/// `cpus`.
pub fn pin_to(cpus: &[usize]) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// This process's user + system CPU seconds, all threads included.
fn own_cpu_seconds() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// Runs oha in this process with `args.oha_args`, then reports this
/// process's CPU time. Called by `lab loadgen`.
pub fn run_in_process(args: &LoadgenArgs) -> Result<(), LoadgenError> {
    // oha's own parser, so any oha flag works; it exits 2 on bad flags,
    // which the parent reports with the stderr it captured.
    let opts =
        oha::Opts::parse_from(std::iter::once("oha".to_owned()).chain(args.oha_args.clone()));
    if !args.cpus.is_empty() {
        pin_to(&args.cpus).map_err(LoadgenError::Pin)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.worker_threads.get())
        .enable_all()
        .build()
        .map_err(LoadgenError::Runtime)?;
    // As late as possible before oha's own start; see the module docs.
    if let Some(path) = &args.clock_file {
        let text = serde_json::json!({ "monotonic_ns": monotonic_ns() }).to_string();
        std::fs::write(path, text).map_err(|source| LoadgenError::Write {
            path: path.clone(),
            source,
        })?;
    }
    runtime
        .block_on(oha::run(opts))
        .map_err(|e| LoadgenError::Oha(format!("{e:#}")))?;
    // Read after oha finished: all of its threads' time is in the total.
    if let Some(path) = &args.cpu_file {
        let cpu = own_cpu_seconds().unwrap_or(f64::NAN);
        let text = serde_json::json!({ "cpu_seconds": cpu }).to_string();
        std::fs::write(path, text).map_err(|source| LoadgenError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Nanoseconds on `CLOCK_MONOTONIC`: the same clock in every process on
/// the machine, so the loadgen child and the harness can compare instants.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

// ---------------------------------------------------------------------------
// The parent side.

/// A running `lab loadgen` child; killed if dropped before it finished.
#[derive(Debug)]
pub struct Loadgen {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    report: PathBuf,
    cpu_file: PathBuf,
    /// With `per_request`: oha's SQLite file and the start clock file.
    db: Option<PathBuf>,
    clock_file: Option<PathBuf>,
    deadline: Duration,
    done: bool,
}

/// The oha command line for `spec`, writing its JSON to `report` (and its
/// per-request rows to `db`, if given).
pub fn oha_args(
    spec: &LoadSpec,
    report: &Path,
    url_file: Option<&Path>,
    db: Option<&Path>,
) -> Vec<String> {
    let mut args = vec![
        "-z".to_owned(),
        format!("{}ms", spec.duration.as_millis().max(1)),
        "-c".to_owned(),
        spec.concurrency.to_string(),
        // No live display, JSON into a file: stdout stays free for errors.
        "--no-tui".to_owned(),
        "--output-format".to_owned(),
        "json".to_owned(),
        "--output".to_owned(),
        report.display().to_string(),
    ];
    if !spec.cpus.is_empty() {
        args.push("--worker-threads".to_owned());
        args.push(spec.cpus.len().to_string());
    }
    if let Some(rate) = spec.rate {
        args.push("-q".to_owned());
        args.push(format!("{rate:.1}"));
        args.push("--latency-correction".to_owned());
    }
    if spec.new_connections {
        args.push("--disable-keepalive".to_owned());
    }
    if let Some(db) = db {
        args.push("--db-url".to_owned());
        args.push(db.display().to_string());
    }
    match url_file {
        Some(file) => {
            args.push("--urls-from-file".to_owned());
            args.push(file.display().to_string());
        }
        None => args.push(spec.urls.first().cloned().unwrap_or_default()),
    }
    args
}

impl Loadgen {
    /// Starts `lab_exe loadgen` for `spec`. Its files go in `work_dir`,
    /// named after `tag` so successive loads do not mix.
    pub fn spawn(
        lab_exe: &Path,
        spec: &LoadSpec,
        work_dir: &Path,
        tag: &str,
    ) -> Result<Loadgen, LoadgenError> {
        let report = work_dir.join(format!("{tag}.oha.json"));
        let cpu_file = work_dir.join(format!("{tag}.cpu.json"));
        let db = spec
            .per_request
            .then(|| work_dir.join(format!("{tag}.requests.sqlite")));
        let clock_file = spec
            .per_request
            .then(|| work_dir.join(format!("{tag}.clock.json")));
        for stale in [
            Some(&report),
            Some(&cpu_file),
            db.as_ref(),
            clock_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = std::fs::remove_file(stale);
        }
        let url_file = if spec.urls.len() > 1 {
            let path = work_dir.join(format!("{tag}.urls"));
            std::fs::write(&path, spec.urls.join("\n") + "\n").map_err(|source| {
                LoadgenError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            Some(path)
        } else {
            None
        };
        let mut command = Command::new(lab_exe);
        command.arg("loadgen").arg("--cpu-file").arg(&cpu_file);
        if let Some(clock) = &clock_file {
            command.arg("--clock-file").arg(clock);
        }
        if !spec.cpus.is_empty() {
            let list: Vec<String> = spec.cpus.iter().map(usize::to_string).collect();
            command.arg("--cpus").arg(list.join(","));
        }
        let mut child = command
            .arg("--")
            .args(oha_args(spec, &report, url_file.as_deref(), db.as_deref()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LoadgenError::Spawn {
                exe: lab_exe.to_owned(),
                source,
            })?;
        // Drain stderr on a thread so a chatty child can never block on a
        // full pipe; keep only its end.
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                tail(&text, 2000)
            })
        });
        Ok(Loadgen {
            child,
            stderr,
            report,
            cpu_file,
            db,
            clock_file,
            // oha stops at the deadline; allow generous time to start,
            // connect and write its report before calling it hung.
            deadline: spec.duration + Duration::from_secs(30),
            done: false,
        })
    }

    /// The `CLOCK_MONOTONIC` instant (ns) the child stamped right before
    /// oha started, once it is there; `None` if it is not there within
    /// `timeout` or the load has no clock file.
    pub fn started_at_ns(&mut self, timeout: Duration) -> Option<u64> {
        let path = self.clock_file.as_ref()?;
        let until = Instant::now() + timeout;
        loop {
            let stamp = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|v| v["monotonic_ns"].as_u64());
            if stamp.is_some() {
                return stamp;
            }
            if Instant::now() > until || matches!(self.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The end of what the child wrote on stderr, once it has exited.
    fn stderr_tail(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Waits for the load to finish, checking `interrupted` as it goes.
    pub fn wait(mut self, interrupted: &AtomicBool) -> Result<LoadOutcome, LoadgenError> {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().map_err(LoadgenError::Wait)? {
                break status;
            }
            if interrupted.load(Ordering::Relaxed) {
                return Err(LoadgenError::Interrupted);
            }
            if started.elapsed() > self.deadline {
                // Kill it first, so its stderr reader sees the end.
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.done = true;
                return Err(LoadgenError::Hung {
                    after: self.deadline,
                    stderr: self.stderr_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.done = true;
        let stderr = self.stderr_tail();
        if !status.success() {
            return Err(LoadgenError::Exit {
                status: status.to_string(),
                stderr,
            });
        }
        let summary = read_report(&self.report).map_err(|source| LoadgenError::Report {
            path: self.report.clone(),
            source,
        })?;
        let cpu_seconds = std::fs::read_to_string(&self.cpu_file)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| v["cpu_seconds"].as_f64())
            .unwrap_or(f64::NAN);
        let records = match &self.db {
            Some(db) => Some(read_records(db).map_err(|source| LoadgenError::Records {
                path: db.clone(),
                source,
            })?),
            None => None,
        };
        Ok(LoadOutcome {
            summary,
            cpu_seconds,
            records,
        })
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn tail(text: &str, max: usize) -> String {
    let text = text.trim_end();
    let start = text.len().saturating_sub(max);
    // Step forward to a char boundary so the slice is valid UTF-8.
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// The load generator's view of one load: what the harness records.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct LoadSummary {
    /// How long the load ran.
    pub duration_s: f64,
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Responses with any other status.
    pub non_2xx: u64,
    /// Successful responses per second: `ok / duration_s`.
    pub rps: f64,
    /// The load generator's own figure, which also counts errors and the
    /// requests cut off at the deadline.
    pub loadgen_rps: Option<f64>,
    /// Share of requests answered (deadline cut-offs not counted).
    pub success_rate: Option<f64>,
    pub latency_ms: Latency,
    pub bytes: u64,
    pub status_codes: BTreeMap<String, u64>,
    /// Client-side errors by message, e.g. refused connections. Requests cut
    /// off by the end of the load are counted in `deadline_cutoffs` too.
    pub errors: BTreeMap<String, u64>,
}

impl LoadSummary {
    /// Requests cut off by the end of a duration-bound load: not a failure
    /// of the server.
    pub fn deadline_cutoffs(&self) -> u64 {
        self.errors
            .iter()
            .filter(|(message, _)| is_deadline_cutoff(message))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests that got no answer, deadline cut-offs left out.
    pub fn client_errors(&self) -> u64 {
        self.errors.values().sum::<u64>() - self.deadline_cutoffs()
    }
}

/// Response time percentiles, milliseconds; absent when nothing succeeded.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Latency {
    pub mean: Option<f64>,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
    pub max: Option<f64>,
}

// ---------------------------------------------------------------------------
// oha's JSON (printer.rs, `print_json`). Times are seconds except under
// `metrics`. Floats that are NaN (nothing succeeded) come out as `null`.

#[derive(Deserialize)]
struct OhaJson {
    summary: OhaSummary,
    #[serde(rename = "latencyPercentiles", default)]
    latency_percentiles: BTreeMap<String, Option<f64>>,
    #[serde(rename = "statusCodeDistribution", default)]
    status_code_distribution: BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution", default)]
    error_distribution: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct OhaSummary {
    #[serde(rename = "successRate")]
    success_rate: Option<f64>,
    total: Option<f64>,
    slowest: Option<f64>,
    fastest: Option<f64>,
    average: Option<f64>,
    #[serde(rename = "requestsPerSec")]
    requests_per_sec: Option<f64>,
    #[serde(rename = "totalData", default)]
    total_data: u64,
}

/// oha's per-request rows (`db.rs`: table `oha`, seconds since its start).
/// A load with no answered request leaves no table; that is no rows.
pub fn read_records(path: &Path) -> Result<Vec<RequestRecord>, rusqlite::Error> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has_table: bool = db.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'oha')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(Vec::new());
    }
    let mut query = db.prepare("SELECT start, end, duration, status FROM oha ORDER BY end")?;
    let rows = query.query_map([], |row| {
        Ok(RequestRecord {
            start_s: row.get(0)?,
            end_s: row.get(1)?,
            duration_s: row.get(2)?,
            status: row.get::<_, i64>(3)?.clamp(0, i64::from(u16::MAX)) as u16,
        })
    })?;
    rows.collect()
}

/// Whether an oha error message is a request cut off by the end of a
/// duration-bound load (not a failure of the server).
fn is_deadline_cutoff(message: &str) -> bool {
    message.contains("deadline")
}

fn read_report(path: &Path) -> Result<LoadSummary, ReportError> {
    Ok(parse_report(&std::fs::read_to_string(path)?)?)
}

/// Turns oha's JSON report into the harness's summary.
pub fn parse_report(json: &str) -> Result<LoadSummary, serde_json::Error> {
    let oha: OhaJson = serde_json::from_str(json)?;
    let ms = |seconds: Option<f64>| seconds.filter(|s| s.is_finite()).map(|s| s * 1000.0);
    let pct = |key: &str| ms(oha.latency_percentiles.get(key).copied().flatten());
    let is_2xx = |code: &str| code.starts_with('2') && code.len() == 3;
    let ok: u64 = oha
        .status_code_distribution
        .iter()
        .filter(|(code, _)| is_2xx(code))
        .map(|(_, n)| n)
        .sum();
    let non_2xx: u64 = oha
        .status_code_distribution
        .iter()
        .filter(|(code, _)| !is_2xx(code))
        .map(|(_, n)| n)
        .sum();
    let duration_s = oha.summary.total.unwrap_or(0.0);
    Ok(LoadSummary {
        duration_s,
        ok,
        non_2xx,
        // oha's requestsPerSec counts errors and deadline cut-offs too, so
        // the harness computes its own from 2xx answers.
        rps: if duration_s > 0.0 {
            ok as f64 / duration_s
        } else {
            0.0
        },
        loadgen_rps: oha.summary.requests_per_sec.filter(|v| v.is_finite()),
        success_rate: oha.summary.success_rate.filter(|v| v.is_finite()),
        latency_ms: Latency {
            mean: ms(oha.summary.average),
            min: ms(oha.summary.fastest),
            p50: pct("p50"),
            p90: pct("p90"),
            p99: pct("p99"),
            p99_9: pct("p99.9"),
            max: ms(oha.summary.slowest),
        },
        bytes: oha.summary.total_data,
        status_codes: oha.status_code_distribution,
        errors: oha.error_distribution,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape oha 1.16's `print_json` writes, trimmed.
    const SAMPLE: &str = r#"{
      "summary": {"successRate": 1.0, "total": 2.0, "slowest": 0.010, "fastest": 0.0001,
                  "average": 0.002, "requestsPerSec": 1510.0, "totalData": 9000,
                  "sizePerRequest": 3, "sizePerSec": 4500.0},
      "metrics": {"success_rate": 1.0, "requests_per_sec": 1510.0,
                  "latency_ms": {"min": 0.1, "mean": 2.0, "p50": 1.5, "p95": 5.0, "p99": 8.0, "max": 10.0}},
      "responseTimeHistogram": {"0.001": 10},
      "latencyPercentiles": {"p10": 0.0005, "p50": 0.0015, "p90": 0.004, "p99": 0.008,
                             "p99.9": 0.0095, "p99.99": 0.01},
      "rps": {"mean": 1500.0, "stddev": 10.0, "max": 1600.0, "min": 1400.0, "percentiles": {}},
      "details": {},
      "statusCodeDistribution": {"200": 3000, "503": 20},
      "errorDistribution": {"aborted due to deadline": 16}
    }"#;

    #[test]
    fn parses_oha_json() {
        let s = parse_report(SAMPLE).unwrap();
        assert_eq!(s.ok, 3000);
        assert_eq!(s.non_2xx, 20);
        assert_eq!(s.rps, 1500.0);
        assert_eq!(s.loadgen_rps, Some(1510.0));
        assert_eq!(s.latency_ms.p50, Some(1.5));
        assert_eq!(s.latency_ms.p99_9, Some(9.5));
        assert_eq!(s.latency_ms.max, Some(10.0));
        assert_eq!(s.errors["aborted due to deadline"], 16);
    }

    #[test]
    fn nothing_succeeded_gives_no_latency() {
        let json = r#"{"summary": {"successRate": null, "total": 1.0, "slowest": null,
            "fastest": null, "average": null, "requestsPerSec": 12.0, "totalData": 0},
            "latencyPercentiles": {"p50": null},
            "statusCodeDistribution": {},
            "errorDistribution": {"connection refused": 12}}"#;
        let s = parse_report(json).unwrap();
        assert_eq!(s.ok, 0);
        assert_eq!(s.rps, 0.0);
        assert_eq!(s.latency_ms.p50, None);
        assert_eq!(s.errors["connection refused"], 12);
    }

    #[test]
    fn oha_args_for_one_url_and_for_a_url_file() {
        let spec = LoadSpec::new(
            vec!["http://127.0.0.1:1/".into()],
            8,
            Duration::from_millis(1500),
        );
        let args = oha_args(&spec, Path::new("/tmp/r.json"), None, None);
        assert_eq!(args[..4], ["-z", "1500ms", "-c", "8"]);
        assert_eq!(args.last().unwrap(), "http://127.0.0.1:1/");
        let args = oha_args(
            &spec,
            Path::new("/tmp/r.json"),
            Some(Path::new("/tmp/u")),
            None,
        );
        assert_eq!(args[args.len() - 2..], ["--urls-from-file", "/tmp/u"]);
        // oha itself accepts what we build.
        assert!(oha::Opts::try_parse_from(std::iter::once("oha".to_owned()).chain(args)).is_ok());
        let limited = LoadSpec {
            rate: Some(500.0),
            per_request: true,
            new_connections: true,
            ..spec
        };
        let args = oha_args(
            &limited,
            Path::new("/r"),
            None,
            Some(Path::new("/d.sqlite")),
        );
        for flag in [
            "-q",
            "500.0",
            "--latency-correction",
            "--db-url",
            "/d.sqlite",
            "--disable-keepalive",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
        }
        assert!(oha::Opts::try_parse_from(std::iter::once("oha".to_owned()).chain(args)).is_ok());
    }

    #[test]
    fn reads_oha_sqlite_rows() {
        let dir = std::env::temp_dir().join(format!("lab-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.sqlite");
        let _ = std::fs::remove_file(&path);
        assert!(read_records(&path).unwrap().is_empty());
        let db = rusqlite::Connection::open(&path).unwrap();
        // oha's db.rs schema.
        db.execute_batch(
            "CREATE TABLE oha (url TEXT NOT NULL, start REAL NOT NULL,
             start_latency_correction REAL, end REAL NOT NULL, duration REAL NOT NULL,
             status INTEGER NOT NULL, len_bytes INTEGER NOT NULL, run INTEGER NOT NULL);
             INSERT INTO oha VALUES ('u', 0.5, NULL, 0.7, 0.2, 200, 3, 1);
             INSERT INTO oha VALUES ('u', 0.1, 0.05, 0.2, 0.15, 500, 3, 1);",
        )
        .unwrap();
        drop(db);
        let rows = read_records(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].status, 500);
        assert_eq!(rows[1].end_s, 0.7);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pinning_restricts_this_thread_and_its_children() {
        std::thread::spawn(|| {
            pin_to(&[0]).unwrap();
            let child = std::thread::spawn(|| std::fs::read_to_string("/proc/thread-self/status"));
            let status = child.join().unwrap().unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list"))
                .unwrap();
            assert_eq!(line.split(':').nth(1).unwrap().trim(), "0");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pinned_loads_get_one_oha_thread_per_cpu() {
        let spec = LoadSpec {
            cpus: vec![1, 3],
            ..LoadSpec::new(
                vec!["http://127.0.0.1:1/".into()],
                8,
                Duration::from_secs(1),
            )
        };
        let args = oha_args(&spec, Path::new("/r"), None, None);
        let at = args.iter().position(|a| a == "--worker-threads").unwrap();
        assert_eq!(args[at + 1], "2");
        assert!(oha::Opts::try_parse_from(std::iter::once("oha".to_owned()).chain(args)).is_ok());
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef\n", 3), "def");
        assert_eq!(tail("ééé", 3), "é");
    }
}
