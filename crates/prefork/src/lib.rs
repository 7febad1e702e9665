//! `prefork`: the process-per-core model, the way Node's `cluster` works.
//!
//! A master process binds the listening sockets, maps a shared stats region,
//! and forks N workers, each of which runs one single-threaded event loop,
//! like a Node process. CPU work runs on that loop and blocks it; that is
//! the point of comparison with `threadpool`. How connections reach the
//! workers is `--balance`:
//!
//! - `reuseport` (the default): one `SO_REUSEPORT` socket per worker on the
//!   port; the kernel hashes connections across them, and a dead worker's
//!   socket stays open in the master for its replacement.
//! - `shared`: one socket that every worker accepts on; each connection goes
//!   to whichever worker's `accept` wins.
//! - `rr` (Node's cluster default, `SCHED_RR`): the master accepts every
//!   connection itself and hands its descriptor to the next worker in turn
//!   that has room, over a UNIX socket ([`handoff`]). A worker has room when
//!   it is ready and has acknowledged every connection handed to it: one
//!   hand-off in flight per worker, as in Node, so a worker whose loop is
//!   busy is passed over. The master keeps each connection until the worker
//!   acknowledges it; a worker that dies first gets it taken back and given
//!   to another (or, with none ready, to the first one ready within 10 s;
//!   after that it is closed). Connections the master has not accepted yet
//!   wait in the kernel's backlog, as with the other policies.
//!
//! - [`master`]: binding, forking, supervision (respawn, the hung-worker
//!   timeout), graceful shutdown, the ready line, and `rr`'s hand-offs.
//! - [`backoff`]: when a dead worker is replaced: at once, unless its slot
//!   is in a crash loop, where the delay doubles from 100 ms up to 10 s.
//! - [`handoff`]: `rr`'s channel: a descriptor over `SCM_RIGHTS`, and the
//!   acknowledgement back.
//! - [`worker`]: what a forked child runs: the orphan guard, a current-thread
//!   tokio runtime, and the shared `service` crate.
//! - [`region`]: the `MAP_SHARED` memory holding every worker's counters.
//!
//! The invariant that makes `fork` safe here: the master never starts a
//! thread or an async runtime. A child of a multi-threaded process inherits
//! only the forking thread, with any lock the others held stuck forever.

pub mod backoff;
pub mod handoff;
pub mod master;
pub mod region;
pub mod worker;

use clap::{Parser, ValueEnum};
use service::cli::CommonArgs;
pub use service::contract::DatasetLoad;

pub use master::run;

/// Command-line flags: the contract's, plus this model's own.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "prefork",
    version,
    about = "The lab's process-per-core server (Node's cluster): a master forks \
             workers that accept on one port, each on its own SO_REUSEPORT socket \
             or all on one shared socket, or that the master hands connections to.",
    long_about = None,
)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// How connections are spread over the workers. `shared`: every worker
    /// accepts on the one inherited socket, and whichever loop gets there
    /// first wins (a burst of connections can all land on one worker).
    /// `reuseport`: one socket per worker on the same port (SO_REUSEPORT),
    /// and the kernel assigns each connection by a hash of its addresses;
    /// the connections queued on a dead worker's socket wait there for its
    /// replacement instead of piling onto the survivors. `rr`: the master
    /// accepts every connection and hands it to the next worker that has
    /// room (Node's cluster default); one that dies before taking it does
    /// not lose it.
    #[arg(long, value_enum, default_value_t = Balance::Reuseport)]
    pub balance: Balance,

    /// Kill and replace a worker whose event loop has not ticked for this
    /// long (0: never). Node's cluster has no such guard; gunicorn does.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub worker_timeout_ms: u64,

    /// Where the `--dataset-mb` dataset is built. `before-fork`: once, in the
    /// master, so workers share its pages copy-on-write (gunicorn's
    /// preload_app). `per-worker`: each worker builds a private copy.
    #[arg(long, value_enum, default_value_t = DatasetLoad::BeforeFork)]
    pub dataset_load: DatasetLoad,

    /// Test-only: every worker exits with status 3 as soon as it starts, to
    /// exercise the respawn backoff (a crash loop).
    #[arg(long, hide = true)]
    pub die_at_boot: bool,

    /// Test-only, `--balance rr`: slot 0's first worker exits with status 3
    /// on receiving its first connection, before acknowledging it, so a test
    /// can check that the master hands that connection to another worker.
    #[arg(long, hide = true)]
    pub die_on_handoff: bool,
}

/// The `--balance` policies prefork has: all of the contract's. Its own
/// enum, so that a policy added to the contract is refused by the flag
/// parser until prefork implements it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    Shared,
    Reuseport,
    Rr,
}

impl From<Balance> for service::contract::Balance {
    fn from(balance: Balance) -> Self {
        match balance {
            Balance::Shared => Self::Shared,
            Balance::Reuseport => Self::Reuseport,
            Balance::Rr => Self::Rr,
        }
    }
}

/// What can stop the master. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot map the shared stats region")]
    Region(#[source] nix::Error),
    #[error("cannot set up signal handling")]
    Signals(#[source] nix::Error),
    #[error("cannot create a worker's hand-off channel")]
    Channel(#[source] nix::Error),
    #[error("cannot fork a worker")]
    Fork(#[source] nix::Error),
    #[error("cannot wait for workers")]
    Wait(#[source] nix::Error),
    #[error("cannot write the ready line")]
    Stdout(#[source] std::io::Error),
}
