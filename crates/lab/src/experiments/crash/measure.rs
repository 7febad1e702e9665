//! One fault run, measured: capacity, a steady load, `/stats`, the fault,
//! the watch for a replacement, the state after. What it saw is working
//! data ([`Observed`]); [`super::figures`] turns it into the record.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::TrialError;
use harness::capacity;
use harness::cost::Limits;
use harness::loadgen::{LoadOutcome, LoadSpec, monotonic_ns};
use harness::probe::{self, StatsRead};
use harness::procs::{self, Counters};
use harness::record::chain;
use harness::servers::{Group, Server, ServerError, ServerKind, Servers, StartRequest};
use harness::session::Session;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use service::contract::SlotState;

use super::report::{Orphans, Stopped};
use super::{Fault, Settings};

/// The servers' `--grace-ms` when stopped at the end.
const GRACE_MS: u64 = 1_000;
/// The servers' environment on top of ours. Without it a caller's
/// `RUST_BACKTRACE=1` makes every panic print a symbolised backtrace first,
/// which freezes a prefork worker for about 100 ms before it exits and fails
/// every request queued on it meanwhile: a figure about the shell, not the
/// model.
const SERVER_ENV: (&str, &str) = ("RUST_BACKTRACE", "0");
/// How often `/stats` is polled for the replacement after the fault.
const POLL: Duration = Duration::from_millis(20);
/// Timeout of one `/stats` read: one read may land on a hung worker.
const STATS_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the workers of a killed primary are watched.
pub const ORPHAN_WATCH: Duration = Duration::from_secs(3);
/// The busy request sent before the primary is killed: this many times the
/// cell's `/cpu` iterations (about 0.4 s of Rust's PBKDF2 at the calibrated
/// size, about 1 s of Node's).
const BUSY_FACTOR: u32 = 250;
/// The gap between the two reads that measure how fast a lost thread
/// still burns CPU.
pub const BURN_GAP: Duration = Duration::from_millis(500);

/// What a fault run saw, as far as it got. Instants are nanoseconds on
/// `CLOCK_MONOTONIC`; `zero_ns` is oha's start.
#[derive(Debug, Default)]
pub struct Observed {
    pub capacity_rps: Option<f64>,
    pub rate_rps: Option<f64>,
    pub zero_ns: Option<u64>,
    /// The load's length, seconds.
    pub span_s: f64,
    /// `/stats` just before the fault; `None` from a server without it.
    pub before: Option<(u64, StatsRead)>,
    pub fault_ns: Option<u64>,
    /// The slot SIGKILLed from outside.
    pub killed_slot: Option<usize>,
    /// When `/stats` first showed a restarted slot ready, and which.
    pub replaced: Option<(u64, usize)>,
    /// `/stats` at the end (or the last read that worked).
    pub after: Option<StatsRead>,
    /// Pids of `after`'s workers still alive then.
    pub alive_pids: Vec<u32>,
    /// A read about [`BURN_GAP`] after `after`, when threads were lost,
    /// with the milliseconds really between the two.
    pub later: Option<(f64, StatsRead)>,
    pub survived: bool,
    /// How the `/crash` request went: a status code, or `no answer (...)`.
    pub crash_answer: Option<String>,
    pub load: Option<LoadOutcome>,
    /// What the server's processes spent during the load (a process that
    /// died took its share with it), how long the load lasted, and the
    /// limits the server ran under.
    pub server: Option<Counters>,
    pub load_wall_s: f64,
    pub limits: Option<Limits>,
    /// After [`Fault::KillPrimary`]: what became of its workers.
    pub orphans: Option<Orphans>,
    /// How the server ended when the run stopped it.
    pub stopped: Option<Stopped>,
    pub left_running: Vec<i32>,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
}

/// What a fault run needs besides the (kind, fault).
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub servers: &'a Servers,
    pub settings: &'a Settings,
    pub cpu_iters: u32,
}

/// One (kind, fault); `None` if interrupted (its numbers would be cut short).
pub fn fault(setup: &Setup, kind: &ServerKind, fault: Fault) -> Option<Observed> {
    let mut observed = Observed::default();
    let result = measure(setup, kind, fault, &mut observed);
    if setup.session.is_interrupted() {
        return None;
    }
    if let Err(failure) = result {
        observed.error = Some(chain(&failure));
    }
    Some(observed)
}

impl Observed {
    /// The workers `/stats` listed before the fault (0 if not read).
    fn workers_before(&self) -> usize {
        self.before
            .as_ref()
            .map_or(0, |(_, read)| read.stats.workers.len())
    }
}

fn sleep_until_ns(at_ns: u64) {
    let now = monotonic_ns();
    if at_ns > now {
        std::thread::sleep(Duration::from_nanos(at_ns - now));
    }
}

fn measure(
    setup: &Setup,
    kind: &ServerKind,
    fault: Fault,
    out: &mut Observed,
) -> Result<(), TrialError> {
    let settings = setup.settings;
    let request = StartRequest {
        allow_crash: true,
        worker_timeout_ms: Some(settings.worker_timeout_ms),
        env: vec![(SERVER_ENV.0.into(), SERVER_ENV.1.into())],
        ..StartRequest::new(settings.workers, GRACE_MS)
    };
    let mut server = match setup.servers.start(kind, &request) {
        Ok(server) => server,
        Err(failure) => {
            out.stderr_tail = failure.stderr;
            return Err(failure.error.into());
        }
    };
    let result = load_and_inject(setup, kind, fault, &mut server, out);
    out.stderr_tail = server.stderr.lines();
    result?;
    // Stop what is left; nothing of its group may outlive it. A server
    // whose only event loop hangs never runs its SIGTERM handler: that is
    // an outcome of the fault (recorded), not a failure of the run; the
    // guard then kills the group.
    let group = server.group();
    let stopped = if out.survived {
        match server.stop(Duration::from_millis(GRACE_MS + 3_000)) {
            Ok((code, left)) => {
                out.left_running = left.iter().map(|p| p.pid).collect();
                Stopped::Exited(code)
            }
            Err(ServerError::StopTimeout(_)) => Stopped::IgnoredSigterm,
            Err(e) => return Err(e.into()),
        }
    } else {
        drop(server);
        Stopped::WasDead
    };
    if stopped != Stopped::Exited(Some(0)) && out.left_running.is_empty() {
        std::thread::sleep(Duration::from_millis(100));
        out.left_running = group.members().iter().map(|p| p.pid).collect();
    }
    out.stopped = Some(stopped);
    Ok(())
}

fn load_and_inject(
    setup: &Setup,
    kind: &ServerKind,
    fault: Fault,
    server: &mut Server,
    out: &mut Observed,
) -> Result<(), TrialError> {
    let settings = setup.settings;
    let session = setup.session;
    let addr = server.addr;
    let urls = vec![format!("http://{addr}/cpu?iters={}", setup.cpu_iters)];
    // Capacity, measured on this very server just before.
    let rate = capacity::resolve(
        session,
        settings.offered,
        &urls,
        settings.concurrency,
        settings.probe,
    )?;
    server.check_alive()?;
    out.capacity_rps = rate.capacity_rps;
    if rate.rps < 1.0 {
        return Err(TrialError::Message(format!(
            "the probe measured no capacity ({:.1} req/s at the chosen share)",
            rate.rps
        )));
    }
    out.rate_rps = Some(rate.rps);

    let span = settings.before + settings.after;
    out.span_s = span.as_secs_f64();
    let spec = LoadSpec {
        rate: Some(rate.rps),
        per_request: true,
        ..LoadSpec::new(urls, settings.concurrency, span)
    };
    let counters_before = procs::counters(server.pid());
    let load_started = Instant::now();
    let mut load = session.load(&spec, "crash")?;
    let zero = load
        .started_at_ns(Duration::from_secs(10))
        .ok_or_else(|| TrialError::Message("the load generator never stamped its start".into()))?;
    out.zero_ns = Some(zero);
    let end_ns = zero + span.as_nanos() as u64;
    sleep_until_ns(zero + settings.before.as_nanos() as u64);

    // The in-flight count, then the fault, as close together as we can.
    // A server without the contract's /stats gets the fault unmeasured.
    if kind.contract {
        let read_ns = monotonic_ns();
        let before = probe::stats(addr, STATS_TIMEOUT)
            .map_err(|e| TrialError::Message(format!("/stats before the fault: {}", chain(&e))))?;
        out.before = Some((read_ns, before));
    }
    // Before the primary is killed, one worker is made busy with a long
    // request, so the kill finds a worker that cannot notice it at once.
    let busy = (fault == Fault::KillPrimary).then(|| {
        let iters = setup.cpu_iters.saturating_mul(BUSY_FACTOR).min(10_000_000);
        let path = format!("/cpu?iters={iters}");
        let handle = std::thread::spawn(move || {
            let _ = probe::request(addr, "GET", &path, ORPHAN_WATCH * 2);
        });
        std::thread::sleep(Duration::from_millis(100));
        handle
    });
    let crash_request = inject(
        addr,
        server.pid(),
        server.group(),
        fault,
        out,
        settings.after,
    )?;
    if fault == Fault::KillPrimary {
        out.orphans = Some(watch_orphans(server.pid(), out.workers_before()));
    }
    if let Some(handle) = busy {
        let _ = handle.join();
    }

    // Watch for the replacement until the load ends.
    let mut last = None;
    if kind.contract && fault != Fault::KillPrimary {
        let before = out
            .before
            .as_ref()
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        while monotonic_ns() < end_ns && !session.is_interrupted() {
            if let Ok(now) = probe::stats(addr, STATS_TIMEOUT) {
                let now_ns = monotonic_ns();
                if out.replaced.is_none()
                    && let Some(slot) = super::figures::replacement(&before.stats, &now.stats)
                {
                    out.replaced = Some((now_ns, slot));
                }
                last = Some((now_ns, now));
            }
            if out.replaced.is_some() || server.check_alive().is_err() {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    out.load = Some(load.wait(&session.interrupted)?);
    out.load_wall_s = load_started.elapsed().as_secs_f64();
    out.server = Some(procs::counters(server.pid()).since(counters_before));
    let workers = if kind.single { 1 } else { settings.workers };
    out.limits = Some(Limits::new(
        usize::from(workers),
        session.meta.machine.logical_cores,
        settings.servers.pinning.as_ref(),
    ));
    out.crash_answer = crash_request.map(|handle| handle.join().unwrap_or_else(|_| "?".into()));

    // The state after: the last read, then a second one to see how fast
    // any lost thread still burns CPU.
    out.survived = server.check_alive().is_ok();
    if kind.contract {
        let after = probe::stats(addr, STATS_TIMEOUT)
            .ok()
            .map(|read| (monotonic_ns(), read))
            .or(last);
        let after_ns = after.as_ref().map(|(ns, _)| *ns);
        out.after = after.map(|(_, read)| read);
        if let Some(after) = &out.after {
            out.alive_pids = after
                .stats
                .workers
                .iter()
                .map(|w| w.pid)
                .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
                .collect();
            let lost = after.stats.lost.as_ref().is_some_and(|l| !l.is_empty());
            if lost && out.survived {
                std::thread::sleep(BURN_GAP);
                if let (Ok(later), Some(after_ns)) = (probe::stats(addr, STATS_TIMEOUT), after_ns) {
                    // The real gap: `after` may be an older read.
                    let gap_ms = (monotonic_ns().saturating_sub(after_ns)) as f64 / 1e6;
                    out.later = Some((gap_ms, later));
                }
            }
        }
    }
    Ok(())
}

/// How long the workers of a killed primary take to go: the group's
/// live members, polled every 10 ms for up to [`ORPHAN_WATCH`].
fn watch_orphans(pgid: i32, workers: usize) -> Orphans {
    let start = std::time::Instant::now();
    loop {
        let left = harness::procs::group(pgid, &harness::procs::process_table())
            .iter()
            .filter(|p| p.pid != pgid)
            .count();
        let elapsed = start.elapsed();
        if left == 0 {
            return Orphans {
                workers,
                gone_after_ms: Some(elapsed.as_secs_f64() * 1000.0),
                left_after_watch: 0,
            };
        }
        if elapsed >= ORPHAN_WATCH {
            return Orphans {
                workers,
                gone_after_ms: None,
                left_after_watch: left,
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Injects `fault`; for a `/crash` fault, returns the thread that sends the
/// request (on its own thread: a hang never answers, and the load goes on).
fn inject(
    addr: SocketAddr,
    server_pid: i32,
    group: Group,
    fault: Fault,
    out: &mut Observed,
    after: Duration,
) -> Result<Option<std::thread::JoinHandle<String>>, TrialError> {
    if fault == Fault::KillPrimary {
        // Not reaped yet (only check_alive reaps), so the pid is still ours.
        out.fault_ns = Some(monotonic_ns());
        kill(Pid::from_raw(server_pid), Signal::SIGKILL).map_err(|e| {
            TrialError::Message(format!("cannot SIGKILL the primary {server_pid}: {e}"))
        })?;
        return Ok(None);
    }
    let Some(mode) = fault.crash_mode() else {
        // Only a ready worker whose pid is in the server's own process group:
        // a pid /stats reports is never trusted to be ours by itself.
        let ours = group.members();
        let before = out.before.as_ref().map(|(_, b)| &b.stats);
        let target = before
            .and_then(|s| {
                s.workers.iter().find(|w| {
                    w.state == SlotState::Ready
                        && w.pid as i32 != server_pid
                        && ours.iter().any(|p| p.pid == w.pid as i32)
                })
            })
            .ok_or_else(|| {
                TrialError::Message("/stats lists no ready worker in the server's group".into())
            })?;
        let (pid, slot) = (target.pid, target.id);
        out.fault_ns = Some(monotonic_ns());
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
            .map_err(|e| TrialError::Message(format!("cannot SIGKILL worker {pid}: {e}")))?;
        out.killed_slot = Some(slot);
        return Ok(None);
    };
    let path = format!("/crash?how={mode}");
    out.fault_ns = Some(monotonic_ns());
    Ok(Some(std::thread::spawn(move || {
        match probe::request(addr, "POST", &path, after) {
            Ok(answer) => answer.status.to_string(),
            Err(probe::ProbeError::Io { source, .. }) => format!("no answer ({})", source.kind()),
            Err(e) => format!("no answer ({e})"),
        }
    })))
}
