//! One cell, measured: start the server, warm it up, load it while its
//! processes are sampled, stop it. The result is working data
//! ([`Measured`]); turning it into the published record is
//! [`super::figures`]'s job.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::TrialError;
use harness::kernel::{self, Runtime};
use harness::loadgen::{LoadOutcome, LoadSpec};
use harness::probe::{self, Reported};
use harness::procs::{self, Counters, Memory, ProcEntry, Sampler};
use harness::record::chain;
use harness::servers::{Launch, ServerKind, Servers, StartRequest};
use harness::session::Session;

use super::plan::{Cell, MIXED_CPU_PERCENT, Workload};
use super::report::KernelCost;

/// The grace period servers get on SIGTERM (`--grace-ms`). Short, because
/// when the harness stops a server its load has already ended.
pub const GRACE_MS: u64 = 2_000;
/// How often the server's processes are sampled during the load.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// What one cell measured, as far as it got.
#[derive(Debug, Default)]
pub struct Measured {
    /// Memory once the server was ready, before any load.
    pub idle: Option<Memory>,
    /// Each field's maximum over warm-up and load.
    pub peak: Option<Memory>,
    pub samples: u32,
    /// The most processes the server had at once.
    pub processes: usize,
    /// What the server's processes spent during the measured load: CPU
    /// time and context switches.
    pub server: Option<Counters>,
    /// Wall seconds of the measured load.
    pub load_wall_s: f64,
    pub load: Option<LoadOutcome>,
    /// The server's exit code after SIGTERM.
    pub exit_code: Option<i32>,
    /// Its processes still running after it exited.
    pub left_running: Vec<i32>,
    /// Memory and CPU came from the server's own `/stats` (`--url`), not
    /// from `/proc` here: no USS and no context switches.
    pub reported: bool,
    /// Why the cell stopped early, if it did.
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
    /// Start to stop.
    pub wall_s: f64,
}

/// The URLs a workload requests.
pub fn urls(workload: Workload, addr: SocketAddr, cpu_iters: u32, io_ms: u32) -> Vec<String> {
    let cpu = format!("http://{addr}/cpu?iters={cpu_iters}");
    let io = format!("http://{addr}/io?ms={io_ms}");
    match workload {
        Workload::Noop => vec![format!("http://{addr}/")],
        Workload::Cpu => vec![cpu],
        Workload::Io => vec![io],
        // oha picks one line of the URL file at random for each request, so
        // 1 cpu line in 10 gives 10% cpu requests.
        Workload::Mixed => {
            let cpu_lines = (MIXED_CPU_PERCENT / 10) as usize;
            let mut lines = vec![cpu; cpu_lines];
            lines.extend(vec![io; 10 - cpu_lines]);
            lines
        }
    }
}

/// The `/cpu` kernel's cost at `iters`, timed in each runtime of `kinds`,
/// in that runtime. A runtime that cannot be timed is left out, with a
/// warning: its cpu cells then get no efficiency.
pub fn kernel_costs(kinds: &[ServerKind], iters: u32) -> BTreeMap<Runtime, KernelCost> {
    let runtimes = kinds.iter().filter_map(|k| k.runtime);
    kernel::time_in_each(runtimes, iters, 25, "its cpu cells get no efficiency")
        .into_iter()
        .map(|(runtime, runs_ms)| {
            let cost = KernelCost {
                iters,
                median_ms: kernel::median(&runs_ms).unwrap_or(f64::NAN),
                runs_ms,
            };
            (runtime, cost)
        })
        .collect()
}

/// What a cell needs besides itself.
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub servers: &'a Servers,
    pub duration: Duration,
    pub warmup: Duration,
    pub cpu_iters: u32,
    pub io_ms: u32,
}

/// Measures one cell, closed loop or, with `rate`, open loop at that many
/// requests per second (latency-corrected, so a stall shows as latency).
/// `None` only when interrupted: its numbers would be cut short.
pub fn cell(setup: &Setup, cell: &Cell, rate: Option<f64>) -> Option<Measured> {
    let started = Instant::now();
    let mut measured = Measured::default();
    let result = measure(setup, cell, rate, &mut measured);
    measured.wall_s = started.elapsed().as_secs_f64();
    if setup.session.is_interrupted() {
        return None;
    }
    if let Err(failure) = result {
        measured.error = Some(chain(&failure));
    }
    Some(measured)
}

fn measure(
    setup: &Setup,
    cell: &Cell,
    rate: Option<f64>,
    out: &mut Measured,
) -> Result<(), TrialError> {
    if let Launch::Remote(addr) = cell.kind.launch {
        return measure_remote(setup, cell, addr, rate, out);
    }
    let request = StartRequest::new(cell.workers, GRACE_MS);
    let mut server = match setup.servers.start(&cell.kind, &request) {
        Ok(server) => server,
        Err(failure) => {
            out.stderr_tail = failure.stderr;
            return Err(failure.error.into());
        }
    };
    let stderr = server.stderr.clone();
    let result = (|| {
        let pgid = server.pid();
        tracing::debug!(%cell, addr = %server.addr, pid = pgid, "server ready");

        // Idle memory: after the ready line every worker has started; a
        // short pause lets the last one finish initialising.
        std::thread::sleep(Duration::from_millis(100));
        let idle = procs::sample_group(pgid);
        out.idle = Some(idle.memory);
        let sampler = Sampler::start(pgid, SAMPLE_INTERVAL);

        let spec = load_spec(setup, cell, server.addr, rate);
        warm_up(setup, &spec)?;
        server.check_alive()?;

        let before = procs::counters(pgid);
        let load_started = Instant::now();
        let outcome = setup
            .session
            .load(&spec, "load")?
            .wait(&setup.session.interrupted)?;
        out.load_wall_s = load_started.elapsed().as_secs_f64();
        out.server = Some(procs::counters(pgid).since(before));
        let after = procs::sample_group(pgid);
        server.check_alive()?;
        let sampled = sampler.stop();
        out.peak = Some(sampled.peak.max_each(after.memory));
        out.samples = sampled.samples + 1;
        out.processes = sampled.max_processes.max(after.processes.len());
        out.load = Some(outcome);
        Ok::<_, TrialError>(())
    })();
    if let Err(failure) = result {
        out.stderr_tail = stderr.lines();
        return Err(failure);
    }
    let stop_timeout = Duration::from_millis(GRACE_MS) + Duration::from_secs(3);
    let (code, left) = server.stop(stop_timeout).inspect_err(|_| {
        out.stderr_tail = stderr.lines();
    })?;
    out.exit_code = code;
    out.left_running = left.iter().map(|p: &ProcEntry| p.pid).collect();
    if code.is_none() {
        out.stderr_tail = stderr.lines();
        return Err(TrialError::Message(
            "the server was killed by a signal after SIGTERM".into(),
        ));
    }
    if code != Some(0) || !out.left_running.is_empty() {
        out.stderr_tail = stderr.lines();
    }
    Ok(())
}

/// The cell's load against `addr`: closed, or open at `rate`.
fn load_spec(setup: &Setup, cell: &Cell, addr: SocketAddr, rate: Option<f64>) -> LoadSpec {
    LoadSpec {
        rate,
        ..LoadSpec::new(
            urls(cell.workload, addr, setup.cpu_iters, setup.io_ms),
            cell.concurrency,
            setup.duration,
        )
    }
}

/// `spec` for the warm-up's length, if there is a warm-up.
fn warm_up(setup: &Setup, spec: &LoadSpec) -> Result<(), TrialError> {
    if !setup.warmup.is_zero() {
        let warmup = LoadSpec {
            duration: setup.warmup,
            ..spec.clone()
        };
        setup
            .session
            .load(&warmup, "warmup")?
            .wait(&setup.session.interrupted)?;
    }
    Ok(())
}

/// How long a `/stats` read of a server elsewhere may take.
const REMOTE_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// A `--url` cell: the server runs elsewhere, never started or stopped
/// here, so its CPU and memory come from its `/stats` `processes`, read
/// before and after the load and sampled in between. A server without them
/// gets its load figures only.
fn measure_remote(
    setup: &Setup,
    cell: &Cell,
    addr: SocketAddr,
    rate: Option<f64>,
    out: &mut Measured,
) -> Result<(), TrialError> {
    out.reported = true;
    let read = move || Reported::read(addr, REMOTE_STATS_TIMEOUT).ok().flatten();
    let idle = read();
    out.idle = idle.as_ref().map(Reported::memory);
    let spec = load_spec(setup, cell, addr, rate);
    let sampler = procs::Sampler::with(SAMPLE_INTERVAL, move || {
        read().map(|r| (r.memory(), r.0.len()))
    });
    warm_up(setup, &spec)?;

    let before = read();
    let load_started = Instant::now();
    let outcome = setup
        .session
        .load(&spec, "load")?
        .wait(&setup.session.interrupted)?;
    out.load_wall_s = load_started.elapsed().as_secs_f64();
    let after = read();
    let sampled = sampler.stop();
    if let (Some(before), Some(after)) = (&before, &after) {
        out.server = Some(after.counters().since(before.counters()));
        out.peak = Some(sampled.peak.max_each(after.memory()));
        out.samples = sampled.samples + 1;
        out.processes = sampled.max_processes.max(after.0.len());
    }
    out.load = Some(outcome);
    Ok(())
}

/// What a server at `addr` calls itself and how many workers it has, from
/// its `/stats`; `None` for a server without one.
pub fn identify(addr: SocketAddr) -> Result<Option<(String, usize)>, probe::ProbeError> {
    match probe::stats(addr, REMOTE_STATS_TIMEOUT) {
        Ok(read) => Ok(Some((read.stats.model, read.stats.workers.len()))),
        Err(error @ probe::ProbeError::Io { .. }) => Err(error),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_is_one_cpu_url_in_ten() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let lines = urls(Workload::Mixed, addr, 1000, 20);
        assert_eq!(lines.len(), 10);
        assert_eq!(lines.iter().filter(|l| l.contains("/cpu?")).count(), 1);
        assert_eq!(
            urls(Workload::Io, addr, 1000, 20),
            ["http://127.0.0.1:9/io?ms=20"]
        );
    }
}
