//! The flags every model takes (the contract's table), to be flattened into
//! each binary's own `clap` parser next to its model flags, and the `main`
//! every server binary shares.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};

use crate::contract;
use crate::http::{HttpConfig, Piece, Without};

/// The contract's flags.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Workers, 1..=1024 [default: available parallelism].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=contract::MAX_WORKERS as i64))]
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

    /// Measurement only, and a break of the contract: switch off these
    /// pieces of per-request machinery to measure what each costs
    /// (`scripts/machinery-cost.sh`).
    #[arg(
        long,
        hide = true,
        value_enum,
        value_delimiter = ',',
        value_name = "PIECE,.."
    )]
    pub without: Vec<Piece>,
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
            without: Without::new(&self.without),
        }
    }
}

/// The whole `main` of a server binary, so that every model exits the way
/// the contract says: bad flags exit 2 with clap's message naming the flag;
/// logs go to stderr (stdout is for the ready line only), filtered by
/// `RUST_LOG` (default `info`); a failure exits 1 with its cause chain on
/// one line, e.g. `prefork: cannot listen on 127.0.0.1:80: Permission
/// denied (os error 13)`.
pub fn server_main<A: Parser, E: std::error::Error>(
    name: &str,
    run: impl FnOnce(A) -> Result<(), E>,
) -> ExitCode {
    let args = A::parse();
    init_logging();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut line = format!("{name}: {error}");
            let mut cause = error.source();
            while let Some(inner) = cause {
                line += &format!(": {inner}");
                cause = inner.source();
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}

/// Sends `tracing` to stderr (stdout is for the ready line only), filtered
/// by `RUST_LOG` (default `info`). [`server_main`] calls it; so does `bare`,
/// whose only log lines are about running out of descriptors.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}
