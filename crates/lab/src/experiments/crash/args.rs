//! `lab crash`'s command line, and its conversion into [`Settings`].

use std::time::Duration;

use clap::Args;
use harness::capacity::Offered;

use super::{Fault, Settings};
use crate::args::{OutputArgs, ServerArgs, parse_duration, parse_rate, parse_share};

/// `lab crash`'s flags. Every one has a default; with none, every fault
/// runs on every kind (about 6 minutes on 2 cores).
#[derive(Args, Debug, Clone)]
pub struct CrashArgs {
    /// Server kinds [default: prefork, threadpool, and, where `node` is on
    /// PATH, node-single, node-cluster, node-threads], and any added with
    /// --server. (bare has no /crash.)
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub models: Vec<String>,

    /// Faults [default: every fault the kind can take]. `kill` and
    /// `kill-primary`: SIGKILL of one worker process, or of the supervisor,
    /// from outside (kinds with worker processes that `/stats` lists); the
    /// others are `POST /crash?how=...`: a panic, `abort()`, a real SIGSEGV,
    /// the worker (prefork) or pool thread (threadpool) exiting, and a busy
    /// loop.
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

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub servers: ServerArgs,
}

impl CrashArgs {
    /// The settings, or one line saying why the flags make no sense.
    pub fn settings(&self) -> Result<Settings, String> {
        let servers = self.servers.settings()?;
        // Every built-in kind that has a /crash when none is named; where
        // `node` is missing the Node kinds are skipped later, with one line.
        let kinds = servers.kinds(&self.models, |k| !k.noop_only)?;
        let faults = if self.faults.is_empty() {
            Fault::ALL.to_vec()
        } else {
            self.faults.clone()
        };
        let settings = Settings {
            pairs: super::pairs(&kinds, &faults, !self.models.is_empty())?,
            kinds,
            workers: self.workers,
            concurrency: self.concurrency,
            offered: match self.rate {
                Some(rate) => Offered::Rate(rate),
                None => Offered::Share(self.load),
            },
            probe: self.probe,
            before: self.before,
            after: self.after,
            worker_timeout_ms: self.worker_timeout_ms,
            cpu_iters: self.cpu_iters,
            servers,
        };
        settings.check()?;
        Ok(settings)
    }
}
