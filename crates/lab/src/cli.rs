//! The `lab` command line: `lab run`, `lab crash` and the hidden
//! `lab loadgen`.
//!
//! Every flag of `lab run` is optional: a missing one takes its value from
//! the profile (`--quick` or the default), which [`crate::matrix::Plan`]
//! resolves. Bad values are rejected here, by clap, so the binary can turn
//! them into one line and exit code 2.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::crash::Fault;
use crate::matrix::{Balance, DatasetLoad, Model, Workload};

/// The harness for the lab's server models.
#[derive(Parser, Debug)]
#[command(name = "lab", version, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the experiment matrix and write results/<run name>/.
    Run(RunArgs),
    /// Crash isolation under load: hold a steady load, inject one fault per
    /// (model, fault), and write results/<run name>/crash.{json,md} and an
    /// SVG timeline per model.
    Crash(CrashArgs),
    /// Internal: run the load generator (oha) in this process. The harness
    /// starts it as a child so the load generator is its own process.
    #[command(hide = true)]
    Loadgen(LoadgenArgs),
}

/// `lab run`'s flags. Lists are comma-separated (`--workers 1,2,4`).
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// The short profile: at most a minute in all.
    #[arg(long)]
    pub quick: bool,

    /// Server models to run [default: bare,prefork,threadpool]. `bare`, the
    /// no-op ceiling, runs only the noop workload; its other cells are
    /// skipped.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MODEL,..")]
    pub models: Vec<Model>,

    /// Workloads to run [default: noop,cpu,io].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "WORKLOAD,..")]
    pub workloads: Vec<Workload>,

    /// Worker counts (processes for prefork, pool threads for threadpool)
    /// [default: 1,2,4; quick: 1,2].
    #[arg(long, value_delimiter = ',', value_name = "N,..",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Vec<u16>,

    /// Concurrent connections [default per workload: noop 50, cpu 16, io 512,
    /// mixed 256].
    #[arg(long, value_delimiter = ',', value_name = "N,..",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Vec<u32>,

    /// Load per cell, e.g. `5s`, `1500ms` [default: 5s; quick: 1.5s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Warm-up before the measured load [default: 1s; quick: 0.5s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Option<Duration>,

    /// PBKDF2 iterations per `/cpu` request [default: calibrated here so one
    /// request costs about 1.5 ms].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub cpu_iters: Option<u32>,

    /// How long each `/io` request waits, in ms.
    #[arg(long, value_name = "MS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub io_ms: u32,

    /// Folder the run's folder is created in.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,

    /// The run's folder name [default: UTC date and time, and the profile].
    #[arg(long, value_name = "NAME", value_parser = parse_run_name)]
    pub name: Option<String>,

    #[command(flatten)]
    pub servers: ServerArgs,
}

/// `lab crash`'s flags. Every one has a default; with none, every fault
/// runs on both models (about 2 minutes on 2 cores).
#[derive(Args, Debug, Clone)]
pub struct CrashArgs {
    /// Server models [default: prefork,threadpool]. (bare has no /crash.)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "MODEL,..")]
    pub models: Vec<Model>,

    /// Faults [default: every fault the model has]. `kill`: SIGKILL of one
    /// worker process from outside (prefork only); the others are
    /// `POST /crash?how=...`: a panic, `abort()`, a real SIGSEGV, the worker
    /// (prefork) or pool thread (threadpool) exiting, and a busy loop.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FAULT,..")]
    pub faults: Vec<Fault>,

    /// Worker processes (prefork) or pool threads (threadpool).
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Connections the load generator keeps open.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,

    /// The steady load as a share of the capacity measured by an
    /// unthrottled probe of the same server just before (0.05 to 1).
    #[arg(long, default_value_t = 0.65, value_name = "SHARE", value_parser = parse_share)]
    pub load: f64,

    /// A fixed rate in requests per second instead: no probe.
    #[arg(long, value_name = "RPS", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// The unthrottled probe that measures capacity.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "1s")]
    pub probe: Duration,

    /// Steady load before the fault.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "2s")]
    pub before: Duration,

    /// Load kept on after the fault.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "4s")]
    pub after: Duration,

    /// The servers' `--worker-timeout-ms`: how long a hung worker (prefork)
    /// or pool thread (threadpool) runs before it is killed or abandoned and
    /// replaced. Short, so a hang recovers within the run.
    #[arg(long, default_value_t = 1000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub worker_timeout_ms: u64,

    /// PBKDF2 iterations per `/cpu` request [default: calibrated here so one
    /// request costs about 1.5 ms].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub cpu_iters: Option<u32>,

    /// Folder the run's folder is created in.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,

    /// The run's folder name [default: UTC date and time, then `-crash`].
    #[arg(long, value_name = "NAME", value_parser = parse_run_name)]
    pub name: Option<String>,

    #[command(flatten)]
    pub servers: ServerArgs,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.05..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a share between 0.05 and 1")),
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (1.0..=1_000_000.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a rate between 1 and 1000000")),
    }
}

/// `lab loadgen`'s flags: where to report its own CPU time, then oha's.
#[derive(Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Write this process's CPU seconds here, as JSON, after oha finishes.
    #[arg(long, value_name = "PATH")]
    pub cpu_file: Option<PathBuf>,

    /// Write the CLOCK_MONOTONIC instant (ns) right before oha starts here.
    #[arg(long, value_name = "PATH")]
    pub clock_file: Option<PathBuf>,

    /// Everything after `--` goes to oha unchanged.
    #[arg(last = true, required = true, value_name = "OHA ARGS")]
    pub oha_args: Vec<String>,
}

/// Parses `5s`, `1500ms`, `1.5s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 5s, 1500ms or 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s or m)"
            ));
        }
    };
    // Zero is a valid warm-up ("none"); anything over a day is a typo.
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A run name becomes a folder name: keep it to one safe path component.
fn parse_run_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text != "."
        && text != ".."
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("use letters, digits, `-`, `_` and `.` only".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn bad_input_is_rejected_by_the_parser() {
        for bad in [
            &["lab", "run", "--models", "forking"][..],
            &["lab", "run", "--workloads", "disk"],
            &["lab", "run", "--workers", "0"],
            &["lab", "run", "--duration", "soon"],
            &["lab", "run", "--name", "../x"],
            &["lab", "crash", "--faults", "explode"],
            &["lab", "crash", "--load", "1.5"],
            &["lab", "crash", "--rate", "0"],
            &["lab", "crash", "--before", "soon"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
        let good = Cli::try_parse_from(["lab", "run", "--workers", "1,2", "--models", "prefork"]);
        let Ok(Cli {
            command: Command::Run(args),
        }) = good
        else {
            panic!("a good command line was rejected: {good:?}");
        };
        assert_eq!(args.workers, [1, 2]);
        assert_eq!(args.models, [Model::Prefork]);
    }
}

/// How `lab run` and `lab crash` find, start and configure the servers.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// How long to wait for a server's ready line.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "15s")]
    pub ready_timeout: Duration,

    /// How prefork spreads connections over its workers (its `--balance`).
    /// `reuseport` (one socket per worker, the kernel hashes connections
    /// across them) keeps the comparison about processes versus threads:
    /// with `shared`, keep-alive clients that reconnect while a dead worker
    /// is being replaced all land on the survivors and stay there.
    #[arg(long, value_enum, default_value_t = Balance::Reuseport)]
    pub balance: Balance,

    /// Give every server a read-only dataset of this many MiB (their
    /// `--dataset-mb`), to see how each model's memory grows with it.
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub dataset_mb: usize,

    /// Where prefork builds the dataset (its `--dataset-load`):
    /// `before-fork` once in the master, its pages shared copy-on-write by
    /// every worker; `per-worker` a private copy in each.
    #[arg(long, value_enum, default_value_t = DatasetLoad::BeforeFork)]
    pub dataset_load: DatasetLoad,

    /// Take the server binaries from this folder instead of building them
    /// next to `lab`.
    #[arg(long, value_name = "DIR")]
    pub server_dir: Option<PathBuf>,
}
