//! `lab split`: what splitting one request across cores buys.
//!
//! One expensive request (PBKDF2, about 50 ms of work in all in Rust) is
//! asked for in P parts (`/cpu?iters=N/P&parts=P`, the same work whatever
//! P), at concurrency 1 (a lone request: can the model put more than one
//! core on it?) and at saturation (more requests than cores: is there
//! anything left to gain?). Threads can run a request's parts at once:
//! threadpool's queue and its rayon pool, node-threads. A process runs its
//! request on its one thread, parts one after another: prefork's workers,
//! node-cluster's, node-single. The expected lesson, which the numbers
//! confirm or refute: threads cut a lone request's latency by up to the
//! number of cores and gain nothing at saturation; a process cannot split
//! its request at all.
//!
//! - [`args`]: the command line, converted into [`Settings`].
//! - [`measure`]: one cell, into working data ([`measure::Observed`]).
//! - [`figures`]: working data into the record, and each variant's speedup
//!   over one part (pure).
//! - [`report`]: `split.json`, `split.md`, `split.svg`.

pub mod args;
pub mod figures;
pub mod measure;
pub mod report;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use harness::kernel::{self, Runtime};
use harness::servers::ServerKind;
use serde::{Deserialize, Serialize};
use service::contract::PoolKind;

pub use args::SplitArgs;

use crate::args::{ServerSettings, dedup};
use crate::{Error, cells};
use report::{SplitParams, SplitRun};

/// A server kind, and what runs its jobs when it has a choice.
#[derive(Clone, Debug)]
pub struct Variant {
    pub kind: ServerKind,
    /// threadpool's `--pool`; `None` for a kind without the flag.
    pub pool: Option<PoolKind>,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pool {
            Some(pool) => write!(f, "{} --pool {pool}", self.kind.name),
            None => f.write_str(&self.kind.name),
        }
    }
}

/// How many requests are in flight at once.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Load {
    /// One connection, one request at a time: the latency of a lone
    /// request on an idle server.
    Lone,
    /// Enough connections to keep every core busy: throughput.
    Saturated,
}

impl Load {
    pub fn name(self) -> &'static str {
        match self {
            Load::Lone => "lone",
            Load::Saturated => "saturated",
        }
    }
}

/// One measurement: a variant, its request in `parts` parts, under `load`.
#[derive(Clone, Debug)]
pub struct Cell {
    pub variant: Variant,
    pub parts: u32,
    pub load: Load,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} parts={} {}",
            self.variant,
            self.parts,
            self.load.name()
        )
    }
}

/// `lab split`'s plain settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub kinds: Vec<ServerKind>,
    pub workers: u16,
    /// Each a cell per variant and load, rising.
    pub parts: Vec<u32>,
    /// Connections of the saturated load.
    pub saturate: u32,
    pub duration: Duration,
    /// What one whole request should cost in Rust, when `iters` is not
    /// given: calibrated here.
    pub work_ms: f64,
    /// PBKDF2 iterations of one whole request, over all its parts.
    pub iters: Option<u32>,
    pub servers: ServerSettings,
}

impl Settings {
    /// Every variant (threadpool twice: its queue, then rayon) at every
    /// part count, lone then saturated.
    pub fn cells(&self, kinds: &[ServerKind]) -> Vec<Cell> {
        let variants = kinds.iter().flat_map(|kind| {
            let pools = if kind.pool_flags {
                vec![Some(PoolKind::Queue), Some(PoolKind::Rayon)]
            } else {
                vec![None]
            };
            pools.into_iter().map(|pool| Variant {
                kind: kind.clone(),
                pool,
            })
        });
        variants
            .flat_map(|variant| {
                self.parts.iter().flat_map(move |&parts| {
                    let variant = variant.clone();
                    [Load::Lone, Load::Saturated].map(move |load| Cell {
                        variant: variant.clone(),
                        parts,
                        load,
                    })
                })
            })
            .collect()
    }
}

/// Runs every cell, rewriting the files after each; prints the tables at
/// the end.
pub fn main(args: &SplitArgs, lab_exe: PathBuf) -> Result<SplitRun, Error> {
    let settings = args.settings().map_err(Error::BadInput)?;
    let what = if settings.quick {
        "split-quick"
    } else {
        "split"
    };
    let session = args
        .output
        .session(what, lab_exe, settings.servers.pinning.clone())?;
    let (servers, kinds) = settings.servers.prepare(&settings.kinds)?;
    let cells = settings.cells(&kinds);
    let iters = settings
        .iters
        .unwrap_or_else(|| kernel::calibrate_iters(settings.work_ms / 1000.0));
    let max_parts = settings.parts.iter().copied().max().unwrap_or(1);
    if iters < max_parts {
        return Err(Error::BadInput(format!(
            "{iters} iterations cannot be split into {max_parts} parts of at least one"
        )));
    }
    // What the whole request costs on one core, in each runtime, timed in
    // that runtime: the floor a lone request cannot go below on one core.
    let kernel_ms: BTreeMap<Runtime, f64> = kernel::time_in_each(
        kinds.iter().filter_map(|k| k.runtime),
        iters,
        5,
        "its speedups have no one-core reference",
    )
    .into_iter()
    .map(|(runtime, ms)| (runtime, kernel::median(&ms).unwrap_or(f64::NAN)))
    .collect();
    let cores = settings.servers.cores(session.meta.machine.logical_cores);
    let mut run = SplitRun {
        schema_version: report::SCHEMA_VERSION,
        meta: session.meta.clone(),
        params: SplitParams {
            quick: settings.quick,
            variants: dedup(
                &cells
                    .iter()
                    .map(|c| c.variant.to_string())
                    .collect::<Vec<_>>(),
            ),
            workers: settings.workers,
            parts: settings.parts.clone(),
            saturate: settings.saturate,
            duration_s: settings.duration.as_secs_f64(),
            iters,
            kernel_ms,
            cores,
            servers: servers.params(&kinds),
            pinning: settings.servers.pinning.clone(),
        },
        cells: Vec::new(),
    };
    let setup = measure::Setup {
        session: &session,
        servers: &servers,
        settings: &settings,
        iters,
    };
    cells::each(
        &session,
        &mut run,
        &cells,
        ToString::to_string,
        report::write_all,
        |cell| {
            let observed = measure::cell(&setup, cell)?;
            Some(figures::cell_record(cell, iters, observed))
        },
    )?;
    println!("{}", report::tables(&run));
    println!("results in {}", session.dir.display());
    Ok(run)
}
