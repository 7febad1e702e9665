//! The lab's core: what every experiment shares, and nothing about any one
//! experiment or about the command line (this crate does not depend on
//! clap; experiments hand it plain settings; the one clap type that passes
//! through is `loadgen::LoadgenArgs`, the `lab loadgen` child's own flags).
//!
//! The tour, in the order an experiment uses it:
//!
//! - [`session`]: open `results/<name>/`, stamp the commit (and `+dirty`)
//!   and the machine, watch for Ctrl-C.
//! - [`servers`]: server kinds by name (the built-in binaries and
//!   `--server` command templates), and the [`servers::Server`] guard that
//!   starts one in its own process group, waits until it is ready, stops it
//!   and kills the group if dropped.
//! - [`loadgen`] (a crate of its own, re-exported): oha in a child process.
//! - [`capacity`]: measure a server's capacity, offer a share of it.
//! - [`slowread`]: clients that download slowly, for backpressure.
//! - [`holder`]: idle connections held open by `lab hold` children, for
//!   memory per connection, and the descriptor limit raised for them.
//! - [`procs`]: memory (PSS/USS/RSS) and CPU time of a server's processes.
//! - [`cost`]: what the server spent per request during a load, and what
//!   bound the load (the same figures in every experiment).
//! - [`probe`]: the harness's own requests, `/stats` as the contract's type.
//! - [`kernel`]: the `/cpu` kernel timed in-process, and the ceilings a
//!   cell is measured against.
//! - [`timeline`]: per-window counts, baseline and recovery.
//! - [`record`]: the metadata every result file carries, atomic writes,
//!   tables. [`chart`]: SVG line and bar charts. [`clock`]: UTC timestamps.
//! - [`cpus`]: disjoint CPU sets for the server and the load generator.

pub mod capacity;
pub mod chart;
pub mod clock;
pub mod cost;
pub mod cpus;
pub mod holder;
pub mod kernel;
pub mod probe;
pub mod procs;
pub mod record;
pub mod servers;
pub mod session;
pub mod slowread;
pub mod timeline;

pub use loadgen;

impl session::Session {
    /// Starts the load generator for `spec`, on its CPUs if the session
    /// pins; its files go in the session's scratch folder under `tag`.
    pub fn load(
        &self,
        spec: &loadgen::LoadSpec,
        tag: &str,
    ) -> Result<loadgen::Loadgen, loadgen::LoadgenError> {
        match &self.pinning {
            Some(pinning) => {
                let pinned = loadgen::LoadSpec {
                    cpus: pinning.loadgen.clone(),
                    ..spec.clone()
                };
                loadgen::Loadgen::spawn(&self.lab_exe, &pinned, &self.work_dir, tag)
            }
            None => loadgen::Loadgen::spawn(&self.lab_exe, spec, &self.work_dir, tag),
        }
    }
}

/// Why one trial of an experiment (a cell, a fault run) stopped early: the
/// server, the load generator, or something the experiment found wrong.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error(transparent)]
    Server(#[from] servers::ServerError),
    #[error(transparent)]
    Loadgen(#[from] loadgen::LoadgenError),
    #[error("{0}")]
    Message(String),
}
