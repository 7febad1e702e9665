//! One kind, measured step by step: start the server with an idle timeout
//! longer than the run, then at each step have the holders open
//! connections up to the step's count, let them settle, and read the
//! server's sockets, memory and a light stream's latency while all of them
//! are held. The result is working data
//! ([`Observed`]); [`super::figures`] makes the record.

use std::time::{Duration, Instant};

use harness::TrialError;
use harness::cost::{CpuRecord, Limits};
use harness::holder::{Caps, HoldError, Holders};
use harness::loadgen::{LoadSpec, LoadSummary};
use harness::procs::{self, Memory};
use harness::servers::{Server, ServerKind, Servers, StartRequest};
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
/// How often a long step logs how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What a kind needs besides itself.
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub servers: &'a Servers,
    pub settings: &'a Settings,
    /// Connections per holder process and per source address.
    pub caps: Caps,
}

/// One step: the connections held, and what was read while they were.
#[derive(Debug, Default)]
pub struct Step {
    /// The step's count, and how many were really held.
    pub target: usize,
    pub held: usize,
    /// The holder processes and source addresses they came from, and the
    /// sockets the server's processes had open.
    pub holders: usize,
    pub source_addresses: usize,
    pub server_sockets: Option<usize>,
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
        idle_timeout_ms: Some(IDLE_TIMEOUT_MS),
        ..StartRequest::new(settings.workers, GRACE_MS)
    };
    let (code, _left) = crate::cells::with_server(
        setup.servers,
        kind,
        &request,
        out,
        |out| &mut out.stderr_tail,
        |server, out| hold(setup, kind, server, out),
    )?;
    out.exit_code = code;
    Ok(())
}

/// The steps against a running server: grow the held connections, then
/// measure memory and the light stream at each.
fn hold(
    setup: &Setup,
    kind: &ServerKind,
    server: &mut Server,
    out: &mut Observed,
) -> Result<(), TrialError> {
    let settings = setup.settings;
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
    let mut holders = Holders::new(
        &setup.session.lab_exe,
        server.addr,
        "/",
        CONNECT_TIMEOUT,
        setup.caps,
    );
    for &target in &settings.steps {
        let started = Instant::now();
        let mut logged = Instant::now();
        let grown = holders.grow_to(target, |held| {
            // A large step takes a while: say so now and then.
            if logged.elapsed() >= PROGRESS_EVERY {
                logged = Instant::now();
                tracing::info!("{}: {held} of {target} connections held", kind.name);
            }
        });
        if started.elapsed() >= PROGRESS_EVERY {
            tracing::info!(
                "{}: {} connections held in {:.0} s",
                kind.name,
                holders.held(),
                started.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(SETTLE);
        let mut step = Step {
            target,
            held: holders.held(),
            holders: holders.processes(),
            source_addresses: holders.sources(),
            server_sockets: Some(procs::group_sockets(pgid)),
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
        step.all_open = holders.all_open().map_err(message)?;
        out.steps.push(step);
        match grown {
            Ok(()) => {}
            // A connection failed, or the plan ran out of source
            // addresses: as far as this machine goes, a finding.
            Err(stopped @ (HoldError::Stopped { .. } | HoldError::Plan(_))) => {
                out.stopped = Some(stopped_because(&stopped, pgid));
                break;
            }
            // The holders themselves failed: not a finding about the server.
            Err(error) => return Err(message(error)),
        }
        server.check_alive()?;
    }
    drop(holders);
    Ok(())
}

fn message(error: HoldError) -> TrialError {
    TrialError::Message(harness::record::chain(&error))
}

/// Why the connections stopped, with what the server's fullest process
/// had open against its descriptor limit: a server out of descriptors
/// does not refuse a connection, it leaves it unanswered in its listen
/// queue, so the holder's error alone would not say so.
fn stopped_because(stopped: &HoldError, pgid: i32) -> String {
    match procs::fullest_descriptors(pgid) {
        Some(procs::Descriptors {
            pid,
            open,
            limit: Some(limit),
        }) => format!(
            "{stopped} (the server's process {pid} had {open} of its {limit} descriptors open)"
        ),
        _ => stopped.to_string(),
    }
}
