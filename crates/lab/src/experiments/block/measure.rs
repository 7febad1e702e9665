//! One cell, measured: start the server, run the `/io` load and the `/cpu`
//! load side by side, read `/stats` for the loops' lag, stop it. The result
//! is working data ([`Observed`]); [`super::figures`] makes the record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::TrialError;
use harness::cost::Limits;
use harness::kernel::Runtime;
use harness::loadgen::{LoadOutcome, LoadSpec};
use harness::probe::{self, StatsRead};
use harness::procs::{self, Counters};
use harness::record::chain;
use harness::servers::{Server, Servers, StartRequest};
use harness::session::Session;

use super::{Cell, Settings};

const GRACE_MS: u64 = 2_000;
/// Idle time between the ready line and the load.
const IDLE: Duration = Duration::from_millis(300);
const STATS_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of each load: enough that an open loop is never short of
/// one, even when requests queue for a second.
const CONNECTIONS: u32 = 256;

/// What a cell needs besides itself.
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub servers: &'a Servers,
    pub settings: &'a Settings,
    pub cpu_iters: u32,
    /// The cores the server may use.
    pub cores: usize,
    /// One `/cpu` request's cost, ms, per runtime.
    pub cost_ms: &'a BTreeMap<Runtime, f64>,
}

/// What one cell measured, as far as it got.
#[derive(Debug, Default)]
pub struct Observed {
    /// The two loads' rates, requests per second.
    pub io_rate: Option<f64>,
    pub cpu_rate: Option<f64>,
    pub io: Option<LoadOutcome>,
    pub cpu: Option<LoadOutcome>,
    /// `/stats` right after the loads: the loops' lag since they started.
    pub stats: Option<StatsRead>,
    /// What all of the server's processes spent during the loads, how long
    /// they lasted, and the limits the server ran under.
    pub server: Option<Counters>,
    pub load_wall_s: f64,
    pub limits: Option<Limits>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
}

/// Measures `cell`; `None` only when interrupted.
pub fn cell(setup: &Setup, cell: &Cell) -> Option<Observed> {
    crate::cells::observe(
        setup.session,
        |out| measure(setup, cell, out),
        |out: &mut Observed, error| out.error = Some(error),
    )
}

/// The `/cpu` rate that offers `cell.share` of the server's usable cores:
/// share × cores ÷ one request's cost in the kind's runtime. The same
/// offered work for every kind of one runtime, whatever it can absorb.
pub fn cpu_rate(share: f64, cores: usize, cost_ms: f64) -> f64 {
    share * cores as f64 * 1000.0 / cost_ms
}

fn measure(setup: &Setup, cell: &Cell, out: &mut Observed) -> Result<(), TrialError> {
    let request = StartRequest {
        offload: cell.variant.offload,
        ..StartRequest::new(setup.settings.workers, GRACE_MS)
    };
    // A loop that fell behind may still be working through queued CPU
    // jobs: the stop gives it its grace period and the slack, as `lab run`
    // does.
    let (code, _left) = crate::cells::with_server(
        setup.servers,
        &cell.variant.kind,
        &request,
        out,
        |out| &mut out.stderr_tail,
        |server, out| load(setup, cell, server, out),
    )?;
    out.exit_code = code;
    Ok(())
}

fn load(
    setup: &Setup,
    cell: &Cell,
    server: &mut Server,
    out: &mut Observed,
) -> Result<(), TrialError> {
    let settings = setup.settings;
    let addr = server.addr;
    out.io_rate = Some(settings.io_rate);
    let io = LoadSpec {
        rate: Some(settings.io_rate),
        ..LoadSpec::new(
            vec![format!("http://{addr}/io?ms={}", settings.io_ms)],
            CONNECTIONS,
            settings.duration,
        )
    };
    let cpu = if cell.share > 0.0 {
        let cost_ms = cell
            .variant
            .kind
            .runtime
            .and_then(|runtime| setup.cost_ms.get(&runtime))
            .ok_or_else(|| {
                TrialError::Message("the kind's request cost is not known here".into())
            })?;
        let rate = cpu_rate(cell.share, setup.cores, *cost_ms);
        out.cpu_rate = Some(rate);
        Some(LoadSpec {
            rate: Some(rate),
            ..LoadSpec::new(
                vec![format!("http://{addr}/cpu?iters={}", setup.cpu_iters)],
                CONNECTIONS,
                settings.duration,
            )
        })
    } else {
        None
    };
    std::thread::sleep(IDLE);
    let interrupted = &setup.session.interrupted;
    // Both loads at once, each in its own load generator.
    let before = procs::counters(server.pid());
    let started = Instant::now();
    let cpu = cpu
        .map(|spec| setup.session.load(&spec, "cpu"))
        .transpose()?;
    let io = setup.session.load(&io, "io")?;
    out.io = Some(io.wait(interrupted)?);
    out.cpu = cpu.map(|cpu| cpu.wait(interrupted)).transpose()?;
    out.load_wall_s = started.elapsed().as_secs_f64();
    out.server = Some(procs::counters(server.pid()).since(before));
    let workers = if cell.variant.kind.single {
        1
    } else {
        settings.workers
    };
    out.limits = Some(Limits::new(
        usize::from(workers),
        setup.session.meta.machine.logical_cores,
        settings.servers.pinning.as_ref(),
    ));
    out.stats = Some(
        probe::stats(addr, STATS_TIMEOUT)
            .map_err(|e| TrialError::Message(format!("reading /stats: {}", chain(&e))))?,
    );
    server.check_alive()?;
    Ok(())
}
