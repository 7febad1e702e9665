//! `lab balance`: how each way of spreading connections over a server's
//! workers spreads the work.
//!
//! A policy is a server kind and one of its `--balance` values: prefork's
//! `shared` (one socket, every worker accepts on it), `reuseport` (one
//! socket per worker, the kernel hashes connections over them) and `rr`
//! (the master accepts every connection and hands it to the next worker
//! with room), and Node cluster's `rr` (its default, `SCHED_RR`) and
//! `shared` (Node's `none`). For each (scenario, workers, policy) cell:
//! start the server with that `--balance` and more workers than cores, read
//! `/stats`, apply the scenario's load, read `/stats` again, and record per
//! worker the connections and requests it took (the difference of the two
//! reads, less the second read's own connection and request), the latency,
//! and the primary's CPU time: the price of a policy whose primary accepts
//! every connection.
//!
//! - [`args`]: the command line, converted into [`Settings`].
//! - [`measure`]: one cell, into working data ([`measure::Observed`]).
//! - [`figures`]: working data into the record, fairness included (pure).
//! - [`report`]: `balance.json`, `balance.md`, an SVG per scenario.

pub mod args;
pub mod figures;
pub mod measure;
pub mod report;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use harness::kernel::{self, Runtime};
use harness::servers::ServerKind;
use serde::{Deserialize, Serialize};
use service::contract::Balance;

pub use args::BalanceArgs;

use crate::args::{ServerSettings, dedup};
use crate::{Error, cells};
use report::{BalanceParams, BalanceRun};

/// A load shape that lets one policy or another show its imbalance.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Many short connections: each request on a new connection, so every
    /// request is a fresh choice of worker.
    Short,
    /// Few long connections: one keep-alive connection per worker, so the
    /// worker each connection landed on decides its share of the requests.
    Long,
    /// Uneven work: one request in ten costs 40 times the others, at a
    /// fixed open-loop rate, over two keep-alive connections per worker;
    /// a worker busy with an expensive request holds its connections.
    Uneven,
    /// A burst after idle: eight connections per worker opened at once
    /// against workers that were idle, for one short second.
    Burst,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Short,
        Scenario::Long,
        Scenario::Uneven,
        Scenario::Burst,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Short => "short",
            Scenario::Long => "long",
            Scenario::Uneven => "uneven",
            Scenario::Burst => "burst",
        }
    }

    /// Connections the load generator keeps open with `workers` workers.
    pub fn concurrency(self, workers: u16) -> u32 {
        let workers = u32::from(workers);
        match self {
            Scenario::Short => 2 * workers,
            Scenario::Long => workers,
            Scenario::Uneven => 2 * workers,
            Scenario::Burst => 8 * workers,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The uneven scenario's requests: in ten, nine cost a tenth of the cpu
/// workload's request and one four times it.
pub const LIGHT_DIVISOR: u32 = 10;
pub const HEAVY_FACTOR: u32 = 4;
pub const HEAVY_IN_TEN: u32 = 1;

/// A server kind with one of its `--balance` policies.
#[derive(Clone, Debug)]
pub struct Policy {
    pub kind: ServerKind,
    pub balance: Balance,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name, self.balance)
    }
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Cell {
    pub scenario: Scenario,
    pub workers: u16,
    pub policy: Policy,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} w={} {}", self.scenario, self.workers, self.policy)
    }
}

/// `lab balance`'s plain settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub kinds: Vec<ServerKind>,
    pub scenarios: Vec<Scenario>,
    pub workers: Vec<u16>,
    /// Load per cell, and the burst's, shorter.
    pub duration: Duration,
    pub burst: Duration,
    /// The uneven scenario's rate, as a share of what the cores can do.
    pub uneven_share: f64,
    pub cpu_iters: Option<u32>,
    pub servers: ServerSettings,
}

impl Settings {
    /// Every (scenario, workers, policy), in that order, so that the
    /// policies of one scenario and size run side by side. Policies are
    /// each kind's balances, filtered by `--balance` when given.
    pub fn cells(&self, kinds: &[ServerKind]) -> Vec<Cell> {
        let policies: Vec<Policy> = kinds
            .iter()
            .flat_map(|kind| {
                kind.balances
                    .iter()
                    .filter(|&&b| self.servers.options.balance.is_none_or(|only| only == b))
                    .map(|&balance| Policy {
                        kind: kind.clone(),
                        balance,
                    })
            })
            .collect();
        let mut cells = Vec::new();
        for &scenario in &self.scenarios {
            for &workers in &self.workers {
                for policy in &policies {
                    cells.push(Cell {
                        scenario,
                        workers,
                        policy: policy.clone(),
                    });
                }
            }
        }
        cells
    }
}

/// Runs every cell, rewriting the files after each; prints the tables at
/// the end.
pub fn main(args: &BalanceArgs, lab_exe: PathBuf) -> Result<BalanceRun, Error> {
    let settings = args.settings().map_err(Error::BadInput)?;
    let what = if settings.quick {
        "balance-quick"
    } else {
        "balance"
    };
    let session = args
        .output
        .session(what, lab_exe, settings.servers.pinning.clone())?;
    let (servers, kinds) = settings.servers.prepare(&settings.kinds)?;
    let cells = settings.cells(&kinds);
    if cells.is_empty() {
        return Err(Error::BadInput(
            "no kind asked for has the --balance asked for".into(),
        ));
    }
    let cpu_iters = settings
        .cpu_iters
        .unwrap_or_else(|| kernel::calibrate_iters(kernel::REQUEST_COST_S));
    // The uneven rate rests on what a request costs in each runtime, timed
    // in that runtime.
    let cost_ms: BTreeMap<Runtime, f64> = if settings.scenarios.contains(&Scenario::Uneven) {
        kernel::time_in_each(
            kinds.iter().filter_map(|k| k.runtime),
            cpu_iters,
            9,
            "its uneven cells fail",
        )
        .into_iter()
        .map(|(runtime, ms)| (runtime, kernel::median(&ms).unwrap_or(f64::NAN)))
        .collect()
    } else {
        BTreeMap::new()
    };
    let mut run = BalanceRun {
        schema_version: report::SCHEMA_VERSION,
        meta: session.meta.clone(),
        params: BalanceParams {
            quick: settings.quick,
            scenarios: settings.scenarios.clone(),
            workers: settings.workers.clone(),
            policies: dedup(
                &cells
                    .iter()
                    .map(|c| c.policy.to_string())
                    .collect::<Vec<_>>(),
            ),
            duration_s: settings.duration.as_secs_f64(),
            burst_s: settings.burst.as_secs_f64(),
            cpu_iters,
            kernel_ms: cost_ms.clone(),
            uneven_share: settings.uneven_share,
            servers: servers.params(&kinds),
            pinning: settings.servers.pinning.clone(),
        },
        cells: Vec::new(),
    };
    let setup = measure::Setup {
        session: &session,
        servers: &servers,
        settings: &settings,
        cpu_iters,
        cores: settings.servers.cores(session.meta.machine.logical_cores),
        cost_ms: &cost_ms,
    };
    cells::each(
        &session,
        &mut run,
        &cells,
        ToString::to_string,
        report::write_all,
        |cell| {
            let observed = measure::cell(&setup, cell)?;
            Some(figures::cell_record(cell, observed))
        },
    )?;
    println!("{}", report::tables(&run));
    println!("results in {}", session.dir.display());
    Ok(run)
}
