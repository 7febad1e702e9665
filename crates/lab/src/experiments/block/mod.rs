//! `lab block`: what CPU work on an event loop does to everyone else's
//! latency.
//!
//! "Never block the event loop" measured. Each server gets two loads at
//! once, both open loop: a fixed rate of `/io` requests (they only wait,
//! so on a free loop they take their wait and nothing more) and `/cpu`
//! requests (about 10 ms of PBKDF2 each) at a rate that offers a share of
//! the machine's cores, from none to nearly all. What the `/io` requests
//! suffer on top of their wait, and how late each event loop's 10 ms timer
//! fired, show where CPU work runs in each model: on the loop that also
//! serves I/O (prefork's workers, threadpool `--offload none`,
//! node-single, node-cluster's workers) or beside it (threadpool's pool,
//! node-threads' workers).
//!
//! - [`args`]: the command line, converted into [`Settings`].
//! - [`measure`]: one cell, into working data ([`measure::Observed`]).
//! - [`figures`]: working data into the record, and where each variant's
//!   lag passes 100 ms (pure).
//! - [`report`]: `block.json`, `block.md`, `block.svg`.

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
use service::contract::Offload;

pub use args::BlockArgs;

use crate::args::{ServerSettings, dedup};
use crate::{Error, cells};
use report::{BlockParams, BlockRun};

/// The monitoring threshold the lesson is told with: an event loop whose
/// timers run 100 ms late is a server whose users wait.
pub const LAG_THRESHOLD_MS: f64 = 100.0;

/// A server kind, and where it runs CPU work when it has a choice.
#[derive(Clone, Debug)]
pub struct Variant {
    pub kind: ServerKind,
    /// threadpool's `--offload`; `None` for a kind without the flag.
    pub offload: Option<Offload>,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offload {
            Some(offload) => write!(f, "{} --offload {offload}", self.kind.name),
            None => f.write_str(&self.kind.name),
        }
    }
}

/// One measurement: a variant at one offered CPU share.
#[derive(Clone, Debug)]
pub struct Cell {
    pub variant: Variant,
    /// The `/cpu` work offered, as a share of the server's usable cores.
    pub share: f64,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cpu {:.0}%", self.variant, self.share * 100.0)
    }
}

/// `lab block`'s plain settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub kinds: Vec<ServerKind>,
    pub workers: u16,
    /// CPU shares to offer, each a cell.
    pub shares: Vec<f64>,
    pub duration: Duration,
    /// The `/io` load: requests per second, and each one's wait.
    pub io_rate: f64,
    pub io_ms: u32,
    /// What one `/cpu` request costs in Rust, calibrated here.
    pub cpu_ms: f64,
    pub cpu_iters: Option<u32>,
    pub servers: ServerSettings,
}

impl Settings {
    /// Every variant at every share: a kind that takes `--offload` twice
    /// (its CPU work on the pool, then on the loop).
    pub fn cells(&self, kinds: &[ServerKind]) -> Vec<Cell> {
        let variants: Vec<Variant> = kinds
            .iter()
            .flat_map(|kind| {
                let offloads = if kind.pool_flags {
                    vec![Some(Offload::Cpu), Some(Offload::None)]
                } else {
                    vec![None]
                };
                offloads.into_iter().map(|offload| Variant {
                    kind: kind.clone(),
                    offload,
                })
            })
            .collect();
        variants
            .iter()
            .flat_map(|variant| {
                self.shares.iter().map(|&share| Cell {
                    variant: variant.clone(),
                    share,
                })
            })
            .collect()
    }
}

/// Runs every cell, rewriting the files after each; prints the tables at
/// the end.
pub fn main(args: &BlockArgs, lab_exe: PathBuf) -> Result<BlockRun, Error> {
    let settings = args.settings().map_err(Error::BadInput)?;
    let what = if settings.quick {
        "block-quick"
    } else {
        "block"
    };
    let session = args
        .output
        .session(what, lab_exe, settings.servers.pinning.clone())?;
    let (servers, kinds) = settings.servers.prepare(&settings.kinds)?;
    let cells = settings.cells(&kinds);
    let cpu_iters = settings
        .cpu_iters
        .unwrap_or_else(|| kernel::calibrate_iters(settings.cpu_ms / 1000.0));
    // The CPU rate rests on what a request costs in each runtime, timed in
    // that runtime.
    let cost_ms: BTreeMap<Runtime, f64> = kernel::time_in_each(
        kinds.iter().filter_map(|k| k.runtime),
        cpu_iters,
        9,
        "its cells with CPU load fail",
    )
    .into_iter()
    .map(|(runtime, ms)| (runtime, kernel::median(&ms).unwrap_or(f64::NAN)))
    .collect();
    let cores = settings.servers.cores(session.meta.machine.logical_cores);
    let mut run = BlockRun {
        schema_version: report::SCHEMA_VERSION,
        meta: session.meta.clone(),
        params: BlockParams {
            quick: settings.quick,
            variants: dedup(
                &cells
                    .iter()
                    .map(|c| c.variant.to_string())
                    .collect::<Vec<_>>(),
            ),
            workers: settings.workers,
            shares: settings.shares.clone(),
            duration_s: settings.duration.as_secs_f64(),
            io_rate: settings.io_rate,
            io_ms: settings.io_ms,
            cpu_iters,
            kernel_ms: cost_ms.clone(),
            cores,
            lag_threshold_ms: LAG_THRESHOLD_MS,
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
        cores,
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
