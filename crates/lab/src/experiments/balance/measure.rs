//! One cell, measured: start the server with the policy's `--balance`,
//! read `/stats`, load it, read `/stats` again, stop it. The result is
//! working data ([`Observed`]); [`super::figures`] makes the record.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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

use super::{Cell, HEAVY_FACTOR, HEAVY_IN_TEN, LIGHT_DIVISOR, Scenario, Settings};

/// The grace period servers get on SIGTERM.
const GRACE_MS: u64 = 2_000;
/// Idle time between the server's ready line and the load: every worker
/// is idle when the load (the burst, above all) begins.
pub const IDLE: Duration = Duration::from_millis(300);
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// What a cell needs besides itself.
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub servers: &'a Servers,
    pub settings: &'a Settings,
    pub cpu_iters: u32,
    /// The cores the server may use.
    pub cores: usize,
    /// One cpu-workload request's cost, ms, per runtime.
    pub cost_ms: &'a BTreeMap<Runtime, f64>,
}

impl Setup<'_> {
    /// The limits `cell`'s server runs under.
    pub fn limits(&self, cell: &Cell) -> Limits {
        let workers = if cell.policy.kind.single {
            1
        } else {
            cell.workers
        };
        Limits::new(
            usize::from(workers),
            self.session.meta.machine.logical_cores,
            self.settings.servers.pinning.as_ref(),
        )
    }
}

/// What one cell measured, as far as it got.
#[derive(Debug, Default)]
pub struct Observed {
    pub before: Option<StatsRead>,
    pub after: Option<StatsRead>,
    pub load: Option<LoadOutcome>,
    /// The open loop's rate (uneven only).
    pub offered_rps: Option<f64>,
    /// CPU seconds the server's first process (prefork's master, Node's
    /// primary) spent during the load.
    pub primary_cpu_s: Option<f64>,
    /// What all of the server's processes spent during the load, how long
    /// it lasted, and the limits it ran under.
    pub server: Option<Counters>,
    pub load_wall_s: f64,
    pub limits: Option<Limits>,
    pub exit_code: Option<i32>,
    pub left_running: Vec<i32>,
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

/// The scenario's load against `addr`.
pub fn load_spec(setup: &Setup, cell: &Cell, addr: SocketAddr) -> Result<LoadSpec, TrialError> {
    let light = (setup.cpu_iters / LIGHT_DIVISOR).max(1);
    let url = |iters: u32| format!("http://{addr}/cpu?iters={iters}");
    let concurrency = cell.scenario.concurrency(cell.workers);
    let settings = setup.settings;
    let spec = match cell.scenario {
        Scenario::Short => LoadSpec {
            new_connections: true,
            ..LoadSpec::new(vec![url(light)], concurrency, settings.duration)
        },
        Scenario::Long => LoadSpec::new(vec![url(light)], concurrency, settings.duration),
        Scenario::Burst => LoadSpec::new(vec![url(light)], concurrency, settings.burst),
        Scenario::Uneven => {
            // oha picks a line of the URL file at random for each request.
            let mut urls = vec![url(light); (10 - HEAVY_IN_TEN) as usize];
            urls.extend(vec![
                url(setup.cpu_iters * HEAVY_FACTOR);
                HEAVY_IN_TEN as usize
            ]);
            LoadSpec {
                rate: Some(uneven_rate(setup, cell)?),
                ..LoadSpec::new(urls, concurrency, settings.duration)
            }
        }
    };
    Ok(spec)
}

/// The uneven scenario's offered rate: its share of what the server's
/// cores can do at the mean cost of its mix, in the kind's runtime.
fn uneven_rate(setup: &Setup, cell: &Cell) -> Result<f64, TrialError> {
    let cost_ms = cell
        .policy
        .kind
        .runtime
        .and_then(|runtime| setup.cost_ms.get(&runtime))
        .ok_or_else(|| TrialError::Message("the kind's request cost is not known here".into()))?;
    let light = f64::from(10 - HEAVY_IN_TEN) / f64::from(LIGHT_DIVISOR);
    let heavy = f64::from(HEAVY_IN_TEN * HEAVY_FACTOR);
    let mean_ms = cost_ms * (light + heavy) / 10.0;
    let workers = (cell.workers as usize).min(setup.cores) as f64;
    Ok(setup.settings.uneven_share * workers * 1000.0 / mean_ms)
}

fn measure(setup: &Setup, cell: &Cell, out: &mut Observed) -> Result<(), TrialError> {
    let request = StartRequest {
        balance: Some(cell.policy.balance),
        ..StartRequest::new(cell.workers, GRACE_MS)
    };
    let (code, left) = crate::cells::with_server(
        setup.servers,
        &cell.policy.kind,
        &request,
        out,
        |out| &mut out.stderr_tail,
        |server, out| load(setup, cell, server, out),
    )?;
    out.exit_code = code;
    out.left_running = left.iter().map(|p| p.pid).collect();
    Ok(())
}

fn load(
    setup: &Setup,
    cell: &Cell,
    server: &mut Server,
    out: &mut Observed,
) -> Result<(), TrialError> {
    let stats = |addr| {
        probe::stats(addr, STATS_TIMEOUT)
            .map_err(|e| TrialError::Message(format!("reading /stats: {}", chain(&e))))
    };
    let spec = load_spec(setup, cell, server.addr)?;
    out.offered_rps = spec.rate;
    std::thread::sleep(IDLE);
    let primary = server.pid();
    out.before = Some(stats(server.addr)?);
    let cpu_before = procs::process_cpu_s(primary);
    let tree_before = procs::counters(primary);
    let started = Instant::now();
    let outcome = setup
        .session
        .load(&spec, "load")?
        .wait(&setup.session.interrupted)?;
    out.load_wall_s = started.elapsed().as_secs_f64();
    out.server = Some(procs::counters(primary).since(tree_before));
    let cpu_after = procs::process_cpu_s(primary);
    out.primary_cpu_s = cpu_before.zip(cpu_after).map(|(b, a)| (a - b).max(0.0));
    out.limits = Some(setup.limits(cell));
    out.after = Some(stats(server.addr)?);
    out.load = Some(outcome);
    server.check_alive()?;
    Ok(())
}
