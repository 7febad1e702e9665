//! Everything the server models share, and nothing about processes or threads.
//!
//! The lab compares two ways of using every core, `prefork` (processes, like
//! Node's `cluster`) and `threadpool` (threads, like `worker_threads`). For the
//! comparison to be fair they must do identical work per request, so all of
//! it lives here:
//!
//! - [`http`]: the contract's endpoints on hyper, validation, `x-worker`,
//!   connection limits and graceful shutdown ([`serve`]). A model plugs in
//!   through the [`Model`] trait: where jobs run, and what `/stats` says.
//! - [`accept`]: running out of descriptors while accepting (`EMFILE`):
//!   one logged episode and a backoff instead of a spinning loop, shared by
//!   [`serve`], prefork's `--balance rr` master and `bare`.
//! - [`job`]: the work a model may move off the event loop ([`Job`]).
//! - [`kernel`]: the CPU work behind `/cpu` (PBKDF2-HMAC-SHA256).
//! - [`slot`]: per-worker counters in a layout that works in shared memory
//!   across processes as well as in an `Arc` across threads.
//! - [`ticker`]: the 10 ms timer that measures event-loop lag and writes the
//!   heartbeat supervisors use to find hung workers.
//! - [`dataset`]: the read-only bytes behind `/data`, for the memory lesson.
//! - [`download`]: `/stream` and `/buffer`, N MiB sent chunk by chunk or
//!   built whole first, for the streams vs buffers lesson.
//! - [`crash`]: the faults behind `/crash`.
//! - [`procself`]: the server's own processes as `/proc` shows them, for
//!   `/stats`.
//! - [`contract`]: the contract's data as serde types (the ready line,
//!   `/stats`, crash modes, balance and dataset options), written by the
//!   servers and read by the harness. `CONTRACT.md` is its prose.
//! - [`cli`]: the contract's flags, and `server_main`, the `main` every
//!   server binary is (flags, stderr logging, exit codes).
//!
//! The crate never forks, spawns threads or builds a runtime: those choices
//! are what distinguishes the models, so they stay in the model crates.

pub mod accept;
pub mod cli;
pub mod contract;
pub mod crash;
pub mod dataset;
pub mod download;
pub mod http;
pub mod job;
pub mod kernel;
pub mod procself;
pub mod slot;
pub mod ticker;

use std::net::SocketAddr;

pub use http::{App, Connections, Drained, HttpConfig, Model, SlotTable, serve};
pub use job::{BoxFuture, Done, ExitRequested, Job, JobError, WorkerId};

/// Prints the one line a server writes on stdout ([`contract::Ready`]), once
/// every worker accepts requests. Harnesses and tests wait for it; nothing
/// else goes to stdout.
pub fn announce_ready(model: &str, addr: SocketAddr, workers: usize) -> std::io::Result<()> {
    use std::io::Write;
    let ready = contract::Ready::new(model, addr, std::process::id(), workers);
    let line = serde_json::to_string(&ready).map_err(std::io::Error::other)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    // stdout is a pipe under a harness: flush, or the line sits in a buffer.
    stdout.flush()
}

/// Binds a listening socket the way every model needs it: `SO_REUSEADDR`
/// (a restarted server can rebind while old connections linger in
/// TIME_WAIT), a backlog of 1024 so bursts queue instead of being refused,
/// and non-blocking so an event loop can poll it.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    listen(addr, false)
}

/// Binds `count` such sockets to one port with `SO_REUSEPORT`, so that the
/// kernel spreads incoming connections over them by a hash of each
/// connection's addresses. Port 0 picks a free port for the first; the rest
/// join it.
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = listen(addr, true)?;
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(listen(SocketAddr::new(addr.ip(), port), true)?);
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The `/stats` document's common part; a model fills in its extras.
/// `pid` is the server's: the process the caller started (prefork's master).
pub fn stats_document(
    model: &str,
    pid: u32,
    started: std::time::Instant,
    workers: Vec<contract::WorkerStats>,
) -> contract::Stats {
    contract::Stats {
        model: model.to_owned(),
        pid,
        uptime_ms: started.elapsed().as_millis() as u64,
        workers,
        ..contract::Stats::default()
    }
}
