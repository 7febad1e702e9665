//! `lab`: the experiments, and the command line that runs them.
//!
//! The shape, dependencies pointing one way:
//!
//! ```text
//! main.rs ─► cli ─► experiments::{run, crash, balance, block, split, stream, conns, ipc}
//!                       ├─► args, cells
//!                       ├─► harness (the core) ─► loadgen (oha)
//!                       └─► ipc (lab ipc's transports)
//! ```
//!
//! - [`cli`]: the `lab` command and its subcommands; exit codes.
//! - [`args`]: flags more than one experiment takes, and value parsers.
//! - [`cells`]: the experiments whose record is a list of cells: that
//!   record's shape, and their loop (measure, record, log, rewrite).
//! - [`experiments`]: one folder each, with the same few files: `args`
//!   (its command line, converted there into plain settings), `measure`
//!   (working data), `figures` (working data into records, pure), `report`
//!   (its files). Experiments never import each other.
//! - The core, the `harness` crate, holds what they share: the session,
//!   server kinds and guards, the load generator, `/stats` probes, timelines,
//!   charts, records. It parses no command line and knows no experiment.
//!
//! `tests/architecture.rs` checks these directions on the source.

pub mod args;
pub mod cells;
pub mod cli;
pub mod experiments;

use std::path::PathBuf;

/// What stops an experiment before or outside its cells. (A cell's own
/// failure is recorded in the cell and does not stop the run.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something impossible; the binary exits 2.
    #[error("{0}")]
    BadInput(String),
    #[error("cannot find lab's own executable")]
    OwnExe(#[source] std::io::Error),
    #[error(transparent)]
    Session(#[from] harness::session::SessionError),
    #[error("cannot write results to {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Loadgen(#[from] harness::loadgen::LoadgenError),
}
