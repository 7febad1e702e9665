//! `lab crash`: crash isolation under load, measured.
//!
//! For each (model, fault): start the server with `--allow-crash` and a
//! short `--worker-timeout-ms`; measure its capacity on the cpu workload
//! with a short unthrottled probe; hold a steady rate-limited load at a
//! share of it (oha `-q` with latency correction, every answered request
//! recorded); read `/stats` and inject one fault a few seconds in; watch
//! `/stats` for the replacement; keep the load on; then turn the records
//! into 100 ms windows and the figures (see [`report::FaultRecord`]).
//!
//! Time: oha's records are seconds since oha's start; the loadgen child
//! stamps `CLOCK_MONOTONIC` right before it starts oha, and the harness
//! stamps the fault and the `/stats` reads on the same clock, so all of
//! them share one axis (to within oha's setup time; see `loadgen`).
//!
//! - [`timeline`]: windows, baseline, recovery, the terminal line.
//! - [`probe`]: `/stats` and `/crash` over a plain `TcpStream`.
//! - [`report`]: `crash.json`, `crash.md`, the SVG charts.

pub mod probe;
pub mod report;
pub mod timeline;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cli::CrashArgs;
use crate::loadgen::{LoadSpec, Loadgen, LoadgenError, is_deadline_cutoff, monotonic_ns};
use crate::matrix::{Model, Workload};
use crate::procs::{self, ProcEntry};
use crate::report::CellStatus;
use crate::runner::chain;
use crate::servers::{Server, ServerError};
use report::{CapacityAfter, CrashRun, FaultRecord, LostThread, WindowRecord};
use timeline::RecoveryRule;

/// The width of a timeline window.
pub const WINDOW: Duration = Duration::from_millis(100);
/// When a window counts as back, and for how long it must stay back.
pub const RECOVERY: RecoveryRule = RecoveryRule {
    threshold: 0.9,
    sustain: 3,
};
/// The pre-fault mean starts this far into the load: oha's connections and
/// the servers' first requests are still settling before it.
pub const BASELINE_FROM_S: f64 = 0.5;
/// The servers' `--grace-ms` when stopped at the end.
const GRACE_MS: u64 = 1_000;
/// The servers' environment on top of ours. Without it a caller's
/// `RUST_BACKTRACE=1` makes every panic print a symbolised backtrace first,
/// which freezes a prefork worker for about 100 ms before it exits and fails
/// every request queued on it meanwhile: a figure about the shell, not the
/// model.
pub const SERVER_ENV: [(&str, &str); 1] = [("RUST_BACKTRACE", "0")];
/// How often `/stats` is polled for the replacement after the fault.
const POLL: Duration = Duration::from_millis(20);
/// Timeout of one `/stats` read: one read may land on a hung worker.
const STATS_TIMEOUT: Duration = Duration::from_millis(250);

/// One fault to inject.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// SIGKILL of one worker process from outside (prefork only).
    Kill,
    /// `POST /crash?how=panic`.
    Panic,
    /// `POST /crash?how=abort`.
    Abort,
    /// `POST /crash?how=segv`.
    Segv,
    /// `POST /crash?how=exit`.
    Exit,
    /// `POST /crash?how=hang`.
    Hang,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Kill,
        Fault::Panic,
        Fault::Abort,
        Fault::Segv,
        Fault::Exit,
        Fault::Hang,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Panic => "panic",
            Fault::Abort => "abort",
            Fault::Segv => "segv",
            Fault::Exit => "exit",
            Fault::Hang => "hang",
        }
    }

    /// Whether `model` can take this fault: a pool thread cannot be killed
    /// from outside, and bare has no `/crash`.
    pub fn applies_to(self, model: Model) -> bool {
        match model {
            Model::Bare => false,
            Model::Prefork => true,
            Model::Threadpool => self != Fault::Kill,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The (model, fault) pairs to run, in order, or why the flags make none.
pub fn plan(args: &CrashArgs) -> Result<Vec<(Model, Fault)>, String> {
    let models = if args.models.is_empty() {
        vec![Model::Prefork, Model::Threadpool]
    } else {
        args.models.clone()
    };
    let faults = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let mut pairs = Vec::new();
    for &model in &models {
        if model == Model::Bare {
            return Err("--models bare: bare has no /crash and no workers to kill".into());
        }
        let mine: Vec<Fault> = faults
            .iter()
            .copied()
            .filter(|f| f.applies_to(model))
            .collect();
        if mine.is_empty() {
            return Err(format!(
                "--faults: none of them applies to {model} (threadpool has no worker process to kill)"
            ));
        }
        for fault in mine {
            if !pairs.contains(&(model, fault)) {
                pairs.push((model, fault));
            }
        }
    }
    Ok(pairs)
}

/// Everything a fault run needs besides the (model, fault).
#[derive(Debug)]
pub struct Context {
    pub args: CrashArgs,
    pub cpu_iters: u32,
    pub server_dir: PathBuf,
    pub lab_exe: PathBuf,
    pub work_dir: PathBuf,
    pub interrupted: Arc<AtomicBool>,
}

/// Runs every pair, rewriting the files after each. Progress on stderr.
pub fn run_all(
    ctx: &Context,
    pairs: &[(Model, Fault)],
    mut run: CrashRun,
    out_dir: &Path,
) -> std::io::Result<CrashRun> {
    report::write_all(out_dir, &run)?;
    for (i, &(model, fault)) in pairs.iter().enumerate() {
        if ctx.interrupted.load(Ordering::Relaxed) {
            run.interrupted = true;
            break;
        }
        tracing::info!("[{}/{}] {model} {fault}", i + 1, pairs.len());
        let Some(record) = run_one(ctx, model, fault) else {
            run.interrupted = true;
            break;
        };
        if record.status == CellStatus::Ok {
            tracing::info!(
                "{model} {fault}: {}  {}",
                record.timeline,
                report::summary_line(&record)
            );
        } else {
            tracing::warn!(
                "{model} {fault} failed: {}",
                record.error.as_deref().unwrap_or("?")
            );
        }
        run.results.push(record);
        report::write_all(out_dir, &run)?;
    }
    run.complete = !run.interrupted;
    report::write_all(out_dir, &run)?;
    Ok(run)
}

/// What a fault run hit that stopped it.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Loadgen(#[from] LoadgenError),
    #[error("{0}")]
    Message(String),
}

fn empty_record(model: Model, fault: Fault) -> FaultRecord {
    FaultRecord {
        model,
        fault,
        status: CellStatus::Failed,
        error: None,
        stderr_tail: Vec::new(),
        capacity_rps: None,
        rate_rps: None,
        stats_read_at_s: None,
        fault_at_s: None,
        replaced_at_s: None,
        faulted_slot: None,
        in_flight_at_fault: None,
        in_flight_on_faulted_worker: None,
        queued_at_fault: None,
        answered_ok: 0,
        requests_failed: 0,
        load_errors: 0,
        load_non_2xx: 0,
        deadline_cutoffs: 0,
        errors: Default::default(),
        crash_request: "none".into(),
        crash_request_failed: false,
        survived: false,
        baseline_ok_per_window: None,
        recovered: false,
        time_to_recover_ms: None,
        capacity_after: None,
        exit_code: None,
        left_running: Vec::new(),
        timeline: String::new(),
        windows: Vec::new(),
    }
}

/// One (model, fault); `None` if interrupted (its numbers would be cut short).
pub fn run_one(ctx: &Context, model: Model, fault: Fault) -> Option<FaultRecord> {
    let mut record = empty_record(model, fault);
    let mut stderr = crate::servers::StderrTail::default();
    let result = measure(ctx, model, fault, &mut record, &mut stderr);
    if ctx.interrupted.load(Ordering::Relaxed) {
        return None;
    }
    let mut problems = Vec::new();
    if let Err(failure) = result {
        problems.push(chain(&failure));
    }
    if !record.left_running.is_empty() {
        problems.push(format!(
            "server processes left running after it was stopped: {:?}",
            record.left_running
        ));
    }
    if problems.is_empty() {
        record.status = CellStatus::Ok;
    } else {
        record.error = Some(problems.join("; "));
        record.stderr_tail = stderr.lines();
    }
    Some(record)
}

/// Seconds from `zero_ns` to `at_ns` (negative if before).
fn seconds(zero_ns: u64, at_ns: u64) -> f64 {
    (at_ns as f64 - zero_ns as f64) / 1e9
}

fn sleep_until_ns(at_ns: u64) {
    let now = monotonic_ns();
    if at_ns > now {
        std::thread::sleep(Duration::from_nanos(at_ns - now));
    }
}

/// The body of a fault run; fills `record` as far as it gets.
fn measure(
    ctx: &Context,
    model: Model,
    fault: Fault,
    record: &mut FaultRecord,
    stderr_out: &mut crate::servers::StderrTail,
) -> Result<(), Failure> {
    let args = &ctx.args;
    let exe = crate::servers::locate(&ctx.server_dir, model)?;
    let mut extra = vec![
        "--allow-crash".to_owned(),
        "--worker-timeout-ms".to_owned(),
        args.worker_timeout_ms.to_string(),
    ];
    extra.extend(model.flags(&args.servers));
    let mut server = match Server::start_with(
        &exe,
        args.workers,
        GRACE_MS,
        args.servers.ready_timeout,
        &extra,
        &SERVER_ENV,
    ) {
        Ok(server) => server,
        Err(failure) => {
            record.stderr_tail = failure.stderr;
            return Err(failure.error.into());
        }
    };
    *stderr_out = server.stderr.clone();
    let addr = server.ready.addr;
    let mut tree = Tree::default();
    tree.add(server.pid());
    let urls = crate::runner::urls(Workload::Cpu, addr, ctx.cpu_iters, 0);

    // Capacity, measured on this very server just before.
    let rate = match args.rate {
        Some(rate) => rate,
        None => {
            let probe = LoadSpec::new(urls.clone(), args.concurrency, args.probe);
            let outcome = Loadgen::spawn(&ctx.lab_exe, &probe, &ctx.work_dir, "probe")?
                .wait(&ctx.interrupted)?;
            server.check_alive()?;
            record.capacity_rps = Some(outcome.summary.rps);
            outcome.summary.rps * args.load
        }
    };
    if rate < 1.0 {
        return Err(Failure::Message(format!(
            "the probe measured no capacity ({rate:.1} req/s at the chosen share)"
        )));
    }
    record.rate_rps = Some(rate);

    let spec = LoadSpec {
        rate: Some(rate),
        per_request: true,
        ..LoadSpec::new(urls, args.concurrency, args.before + args.after)
    };
    let mut load = Loadgen::spawn(&ctx.lab_exe, &spec, &ctx.work_dir, "crash")?;
    let zero = load
        .started_at_ns(Duration::from_secs(10))
        .ok_or_else(|| Failure::Message("the load generator never stamped its start".into()))?;
    let end_ns = zero + (args.before + args.after).as_nanos() as u64;
    sleep_until_ns(zero + args.before.as_nanos() as u64);

    // The in-flight count, then the fault, as close together as we can.
    let stats_read_ns = monotonic_ns();
    let before = probe::stats(addr, STATS_TIMEOUT)
        .map_err(|e| Failure::Message(format!("/stats before the fault: {}", chain(&e))))?;
    tree.add(server.pid());
    let Injected {
        at_ns: fault_ns,
        crash_request: crash,
        killed_slot,
    } = inject(addr, fault, &before, args.after)?;
    record.stats_read_at_s = Some(seconds(zero, stats_read_ns));
    record.fault_at_s = Some(seconds(zero, fault_ns));
    record.in_flight_at_fault = Some(before.in_flight());
    record.queued_at_fault = before.queue.as_ref().map(|q| q.depth);

    // Watch for the replacement until the load ends.
    let mut replaced = None;
    let mut last = None;
    while monotonic_ns() < end_ns && !ctx.interrupted.load(Ordering::Relaxed) {
        if let Ok(now) = probe::stats(addr, STATS_TIMEOUT) {
            tree.add(server.pid());
            if replaced.is_none()
                && let Some(slot) = replacement(&before, &now)
            {
                replaced = Some((monotonic_ns(), slot));
            }
            last = Some(now);
        }
        if replaced.is_some() || server.check_alive().is_err() {
            break;
        }
        std::thread::sleep(POLL);
    }
    let outcome = load.wait(&ctx.interrupted)?;
    let crash_answer = crash.map(|handle| handle.join().unwrap_or_else(|_| "?".into()));

    // The state after: the last read, then a second one to see how fast any
    // lost thread still burns CPU.
    record.survived = server.check_alive().is_ok();
    // A dead server answers nothing: its capacity after is the last known
    // layout (or the one before the fault) with nobody alive.
    let after = probe::stats(addr, STATS_TIMEOUT)
        .ok()
        .or(last)
        .or_else(|| (!record.survived).then(|| before.clone()));
    if let Some(after) = &after {
        let mut capacity = capacity_after(after);
        if !capacity.lost_threads.is_empty() && record.survived {
            let gap = Duration::from_millis(500);
            std::thread::sleep(gap);
            if let Ok(later) = probe::stats(addr, STATS_TIMEOUT) {
                burn_rates(&mut capacity.lost_threads, &later, gap);
            }
        }
        if !record.survived {
            capacity.workers_alive = 0;
        }
        record.capacity_after = Some(capacity);
    }

    // Which slot was hit: the one killed, else the one that restarted.
    let slot = killed_slot
        .or(replaced.map(|(_, slot)| slot))
        .or_else(|| after.as_ref().and_then(|a| replacement(&before, a)));
    record.faulted_slot = slot;
    if model == Model::Prefork {
        record.in_flight_on_faulted_worker = slot.and_then(|s| before.in_flight_on(s));
    }
    record.replaced_at_s = replaced.map(|(at, _)| seconds(zero, at));

    // The figures.
    let summary = &outcome.summary;
    record.errors = summary.errors.clone();
    record.deadline_cutoffs = summary
        .errors
        .iter()
        .filter(|(m, _)| is_deadline_cutoff(m))
        .map(|(_, n)| n)
        .sum();
    record.load_errors = summary
        .errors
        .iter()
        .filter(|(m, _)| !is_deadline_cutoff(m))
        .map(|(_, n)| n)
        .sum();
    record.load_non_2xx = summary.non_2xx;
    record.answered_ok = summary.ok;
    if let Some(answer) = crash_answer {
        record.crash_request_failed = !answer.starts_with('2');
        record.crash_request = answer;
    }
    record.requests_failed =
        record.load_errors + record.load_non_2xx + u64::from(record.crash_request_failed);

    let window_s = WINDOW.as_secs_f64();
    let records = outcome.records.unwrap_or_default();
    let windows = timeline::windows(&records, window_s, spec.duration.as_secs_f64());
    let fault_s = seconds(zero, fault_ns);
    let baseline = timeline::baseline(&windows, window_s, BASELINE_FROM_S, fault_s);
    record.baseline_ok_per_window = baseline;
    if let Some(baseline) = baseline {
        let recovery = timeline::recovery_s(&windows, window_s, fault_s, baseline, RECOVERY);
        record.recovered = recovery.is_some();
        record.time_to_recover_ms = recovery.map(|s| s * 1000.0);
        record.timeline = timeline::render(&windows, window_s, fault_s, baseline);
    }
    record.windows = windows
        .iter()
        .enumerate()
        .map(|(i, w)| WindowRecord {
            start_s: i as f64 * window_s,
            ok: w.ok,
            non_2xx: w.non_2xx,
            p99_ms: w.p99_ms,
        })
        .collect();

    // Stop what is left; every process ever seen must be gone after.
    if record.survived {
        tree.add(server.pid());
        let (code, left) = server.stop(&tree.0, Duration::from_millis(GRACE_MS + 3_000))?;
        record.exit_code = code;
        record.left_running = left.iter().map(|p| p.pid).collect();
    } else {
        drop(server);
        std::thread::sleep(Duration::from_millis(100));
        record.left_running = procs::still_running(&tree.0)
            .iter()
            .map(|p| p.pid)
            .collect();
    }
    if baseline.is_none() {
        return Err(Failure::Message(
            "no whole window before the fault to compare with: lengthen --before".into(),
        ));
    }
    Ok(())
}

/// Every process seen in the server's tree.
#[derive(Default)]
struct Tree(Vec<ProcEntry>);

impl Tree {
    fn add(&mut self, root: i32) {
        for p in procs::descendants(root, &procs::process_table()) {
            if !self.0.contains(&p) {
                self.0.push(p);
            }
        }
    }
}

/// What [`inject`] did.
struct Injected {
    /// When, in nanoseconds on CLOCK_MONOTONIC.
    at_ns: u64,
    /// The `/crash` request's thread, which answers how the request went.
    crash_request: Option<std::thread::JoinHandle<String>>,
    /// The slot SIGKILLed from outside.
    killed_slot: Option<usize>,
}

/// Injects `fault`.
fn inject(
    addr: SocketAddr,
    fault: Fault,
    before: &probe::Stats,
    after: Duration,
) -> Result<Injected, Failure> {
    if fault == Fault::Kill {
        let target = before
            .workers
            .iter()
            .find(|w| w.pid > 0)
            .ok_or_else(|| Failure::Message("/stats lists no worker pid".into()))?;
        let at = monotonic_ns();
        kill(Pid::from_raw(target.pid as i32), Signal::SIGKILL)
            .map_err(|e| Failure::Message(format!("cannot SIGKILL worker {}: {e}", target.pid)))?;
        return Ok(Injected {
            at_ns: at,
            crash_request: None,
            killed_slot: Some(target.id),
        });
    }
    let path = format!("/crash?how={fault}");
    let at = monotonic_ns();
    // On its own thread: a hang never answers, and the load goes on.
    let handle = std::thread::spawn(move || match probe::request(addr, "POST", &path, after) {
        Ok(answer) => answer.status.to_string(),
        Err(probe::ProbeError::Io { source, .. }) => format!("no answer ({})", source.kind()),
        Err(e) => format!("no answer ({e})"),
    });
    Ok(Injected {
        at_ns: at,
        crash_request: Some(handle),
        killed_slot: None,
    })
}

/// The slot whose restart count grew and which is ready again, if any.
fn replacement(before: &probe::Stats, now: &probe::Stats) -> Option<usize> {
    now.workers.iter().find_map(|w| {
        let was = before.workers.iter().find(|b| b.id == w.id)?;
        (w.restarts > was.restarts && w.state == "ready").then_some(w.id)
    })
}

fn capacity_after(stats: &probe::Stats) -> CapacityAfter {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    CapacityAfter {
        workers: stats.workers.len(),
        workers_alive: stats
            .workers
            .iter()
            .filter(|w| w.state == "ready" && alive(w.pid))
            .count(),
        restarts: stats.restarts(),
        lost_threads: stats
            .lost
            .iter()
            .map(|l| LostThread {
                slot: l.slot,
                tid: l.tid,
                cpu_ms: l.cpu_ms,
                cores_burning: None,
            })
            .collect(),
    }
}

/// CPU time each lost thread gained between two reads `gap` apart, over
/// `gap`: the share of a core it burns.
fn burn_rates(lost: &mut [LostThread], later: &probe::Stats, gap: Duration) {
    for thread in lost {
        let now = later.lost.iter().find(|l| l.tid == thread.tid);
        if let (Some(before), Some(after)) = (thread.cpu_ms, now.and_then(|l| l.cpu_ms)) {
            thread.cpu_ms = Some(after);
            thread.cores_burning =
                Some(after.saturating_sub(before) as f64 / gap.as_millis() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(line: &[&str]) -> CrashArgs {
        let cli =
            crate::cli::Cli::try_parse_from(["lab", "crash"].iter().chain(line).copied()).unwrap();
        match cli.command {
            crate::cli::Command::Crash(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_default_plan_is_every_fault_on_both_models() {
        let pairs = plan(&args(&[])).unwrap();
        assert_eq!(pairs.len(), 6 + 5);
        assert!(!pairs.contains(&(Model::Threadpool, Fault::Kill)));
    }

    #[test]
    fn impossible_plans_are_refused() {
        assert!(plan(&args(&["--models", "bare"])).is_err());
        assert!(plan(&args(&["--models", "threadpool", "--faults", "kill"])).is_err());
        let mixed = plan(&args(&["--faults", "kill,panic"])).unwrap();
        assert_eq!(
            mixed,
            [
                (Model::Prefork, Fault::Kill),
                (Model::Prefork, Fault::Panic),
                (Model::Threadpool, Fault::Panic)
            ]
        );
    }

    #[test]
    fn a_replacement_is_a_restarted_slot_that_is_ready() {
        let stats = |restarts: u64, state: &str| probe::Stats {
            workers: vec![probe::WorkerStats {
                id: 1,
                pid: 5,
                state: state.into(),
                in_flight: 0,
                restarts,
            }],
            ..Default::default()
        };
        assert_eq!(replacement(&stats(0, "ready"), &stats(1, "starting")), None);
        assert_eq!(replacement(&stats(0, "ready"), &stats(1, "ready")), Some(1));
        assert_eq!(replacement(&stats(1, "ready"), &stats(1, "ready")), None);
    }

    #[test]
    fn burn_rate_is_cpu_gained_over_wall_time() {
        let mut lost = vec![LostThread {
            slot: 0,
            tid: 7,
            cpu_ms: Some(1000),
            cores_burning: None,
        }];
        let later = probe::Stats {
            lost: vec![probe::LostStats {
                slot: 0,
                tid: 7,
                cpu_ms: Some(1450),
                lost_for_ms: 0,
            }],
            ..Default::default()
        };
        burn_rates(&mut lost, &later, Duration::from_millis(500));
        assert_eq!(lost[0].cores_burning, Some(0.9));
    }
}
