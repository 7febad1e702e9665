//! One cell, measured: start the server, run a closed-loop load of the
//! cell's request at its concurrency, stop it. The result is working data
//! ([`Observed`]); [`super::figures`] makes the record.

use std::time::{Duration, Instant};

use harness::TrialError;
use harness::cost::Limits;
use harness::loadgen::{LoadOutcome, LoadSpec};
use harness::procs::{self, Counters};
use harness::servers::{Server, Servers, StartRequest};
use harness::session::Session;

use super::{Cell, Load, Settings};

const GRACE_MS: u64 = 2_000;
/// Idle time between the ready line and the load.
const IDLE: Duration = Duration::from_millis(300);

/// What a cell needs besides itself.
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub servers: &'a Servers,
    pub settings: &'a Settings,
    /// Iterations of one whole request.
    pub iters: u32,
}

/// What one cell measured, as far as it got.
#[derive(Debug, Default)]
pub struct Observed {
    pub connections: u32,
    pub load: Option<LoadOutcome>,
    /// What all of the server's processes spent during the load, how long
    /// it lasted, and the limits the server ran under.
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

/// The request of `parts` parts that does `iters` iterations in all (each
/// part gets the same share; what does not divide is dropped).
pub fn path(iters: u32, parts: u32) -> String {
    format!("/cpu?iters={}&parts={parts}", (iters / parts).max(1))
}

fn measure(setup: &Setup, cell: &Cell, out: &mut Observed) -> Result<(), TrialError> {
    let request = StartRequest {
        pool: cell.variant.pool,
        ..StartRequest::new(setup.settings.workers, GRACE_MS)
    };
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
    out.connections = match cell.load {
        Load::Lone => 1,
        Load::Saturated => settings.saturate,
    };
    let spec = LoadSpec::new(
        vec![format!(
            "http://{}{}",
            server.addr,
            path(setup.iters, cell.parts)
        )],
        out.connections,
        settings.duration,
    );
    std::thread::sleep(IDLE);
    let before = procs::counters(server.pid());
    let started = Instant::now();
    let load = setup.session.load(&spec, "split")?;
    out.load = Some(load.wait(&setup.session.interrupted)?);
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
    server.check_alive()?;
    Ok(())
}
