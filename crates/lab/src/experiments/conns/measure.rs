//! One kind, measured step by step: start the server with an idle timeout
//! longer than the run, then at each step open connections up to the
//! step's count, let them settle, and read memory and a light stream's
//! latency while all of them are held. The result is working data
//! ([`Observed`]); [`super::figures`] makes the record.

use std::time::{Duration, Instant};

use harness::TrialError;
use harness::cost::{CpuRecord, Limits};
use harness::holder::Held;
use harness::loadgen::{LoadSpec, LoadSummary};
use harness::procs::{self, Memory};
use harness::servers::{ServerKind, Servers, StartRequest};
use harness::session::Session;

use super::Settings;

const GRACE_MS: u64 = 2_000;
/// Longer than any run: held connections must not be closed as idle.
const IDLE_TIMEOUT_MS: u64 = 3_600_000;
/// How long one connection may take to open and be answered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The light stream's connections.
const LIGHT_CONNECTIONS: u32 = 4;
/// Lets the server finish setting up what it just accepted before its
/// memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// What a kind needs besides itself.
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub servers: &'a Servers,
    pub settings: &'a Settings,
}

/// One step: the connections held, and what was read while they were.
#[derive(Debug, Default)]
pub struct Step {
    /// The step's count, and how many were really held.
    pub target: usize,
    pub held: usize,
    pub memory: Option<Memory>,
    /// The kernel's TCP memory, machine-wide.
    pub kernel_tcp: Option<u64>,
    pub light: Option<LoadSummary>,
    /// What the server spent during the light stream, and the load
    /// generator's CPU and the stream's length.
    pub light_cpu: Option<CpuRecord>,
    /// Whether every held connection was still open after the light
    /// stream.
    pub all_open: bool,
}

/// What one kind measured, as far as it got.
#[derive(Debug, Default)]
pub struct Observed {
    /// Before any connection is held.
    pub base: Option<Memory>,
    pub base_kernel_tcp: Option<u64>,
    pub steps: Vec<Step>,
    /// Why the connections stopped growing short of a step, if they did.
    pub stopped: Option<String>,
    /// The light stream's rate, and the limits the server ran under.
    pub light_rate: f64,
    pub limits: Option<Limits>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
}

/// Measures `kind`; `None` only when interrupted.
pub fn kind(setup: &Setup, kind: &ServerKind) -> Option<Observed> {
    crate::cells::observe(
        setup.session,
        |out| measure(setup, kind, out),
        |out: &mut Observed, error| out.error = Some(error),
    )
}

fn measure(setup: &Setup, kind: &ServerKind, out: &mut Observed) -> Result<(), TrialError> {
    let settings = setup.settings;
    let request = StartRequest {
        workers: settings.workers,
        grace_ms: GRACE_MS,
        allow_crash: false,
        worker_timeout_ms: None,
        env: Vec::new(),
        balance: None,
        offload: None,
        pool: None,
        idle_timeout_ms: Some(IDLE_TIMEOUT_MS),
    };
    let mut server = match setup.servers.start(kind, &request) {
        Ok(server) => server,
        Err(failure) => {
            out.stderr_tail = failure.stderr;
            return Err(failure.error.into());
        }
    };
    let stderr = server.stderr.clone();
    let pgid = server.pid();
    std::thread::sleep(SETTLE);
    out.base = Some(procs::sample_group(pgid).memory);
    out.base_kernel_tcp = procs::kernel_tcp_bytes();
    let light = LoadSpec {
        rate: Some(settings.light_rate),
        ..LoadSpec::new(
            vec![format!("http://{}/", server.addr)],
            LIGHT_CONNECTIONS,
            settings.light_duration,
        )
    };
    out.light_rate = settings.light_rate;
    out.limits = Some(Limits::new(
        usize::from(if kind.single { 1 } else { settings.workers }),
        setup.session.meta.machine.logical_cores,
        settings.servers.pinning.as_ref(),
    ));
    let mut held = Held::default();
    for &target in &settings.steps {
        let grown = held.grow_to(server.addr, target, "/", CONNECT_TIMEOUT);
        std::thread::sleep(SETTLE);
        let mut step = Step {
            target,
            held: held.len(),
            memory: Some(procs::sample_group(pgid).memory),
            kernel_tcp: procs::kernel_tcp_bytes(),
            ..Step::default()
        };
        let before = procs::counters(pgid);
        let started = Instant::now();
        let outcome = setup
            .session
            .load(&light, "light")?
            .wait(&setup.session.interrupted)?;
        let spent = procs::counters(pgid).since(before);
        step.light_cpu = Some(CpuRecord::new(
            spent,
            false,
            outcome.cpu_seconds,
            started.elapsed().as_secs_f64(),
        ));
        step.light = Some(outcome.summary);
        step.all_open = held.all_open();
        out.steps.push(step);
        if let Err(stopped) = grown {
            out.stopped = Some(stopped.to_string());
            break;
        }
        if let Err(error) = server.check_alive() {
            out.stderr_tail = stderr.lines();
            return Err(error.into());
        }
    }
    drop(held);
    let (code, _left) = server.stop(Duration::from_millis(GRACE_MS + 3_000))?;
    out.exit_code = code;
    if code != Some(0) {
        out.stderr_tail = stderr.lines();
    }
    Ok(())
}
