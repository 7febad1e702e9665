//! The flags every model takes (the contract's table), to be flattened into
//! each binary's own `clap` parser next to its model flags.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::http::HttpConfig;

/// The contract's flags.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Workers, 1..=1024 [default: available parallelism].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Enable `POST /crash?how=panic|abort|exit|segv|hang` (otherwise it answers 403).
    #[arg(long)]
    pub allow_crash: bool,

    /// How long a graceful shutdown waits for in-flight requests.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub grace_ms: u64,

    /// Size of the read-only in-memory dataset served by `/data` (0: none).
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub dataset_mb: usize,

    /// Close a connection whose request headers take longer than this to
    /// arrive (slow clients), or that sits idle between requests this long.
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
}

impl CommonArgs {
    /// `--workers`, or one per available core.
    pub fn workers(&self) -> usize {
        self.workers
            .map(usize::from)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn http_config(&self) -> HttpConfig {
        HttpConfig {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            grace: Duration::from_millis(self.grace_ms),
        }
    }
}
