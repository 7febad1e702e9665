//! `lab run`'s command line, and its conversion into [`Plan`].

use std::time::Duration;

use clap::{Args, ValueEnum};
use harness::servers::ServerKind;

use super::plan::{Offered, Plan, Profile, Remote, Workload};
use crate::args::{OutputArgs, ServerArgs, dedup, parse_duration, parse_rate, parse_share};

/// `lab run`'s flags. Lists are comma-separated (`--workers 1,2,4`).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The short profile: about a minute and a half here, every kind.
    #[arg(long)]
    pub quick: bool,

    /// Server kinds to run [default: bare, prefork, threadpool, and, where
    /// `node` is on PATH, node-single, node-cluster, node-threads], and any
    /// added with --server. `bare`, the no-op ceiling, runs only the noop
    /// workload; node-single, which has no workers, runs at one worker only.
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub models: Vec<String>,

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

    /// Run every cell this many times, interleaved (all cells once, then
    /// all again), and report min / median / max of each figure.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    pub repeat: u32,

    /// Also run each cell open-loop, at these shares of the throughput its
    /// closed-loop run measured (0.05 to 1, e.g. `0.5,0.8`): a fixed
    /// request rate with latency correction, so latencies of different
    /// kinds compare at the same share of their capacity [default: 0.5,0.8
    /// for the cpu and io cells; quick: none]. With --load or --rate given,
    /// every workload's cells get exactly those.
    #[arg(long = "load", value_name = "SHARE,..", value_delimiter = ',',
          value_parser = parse_share)]
    pub load: Vec<f64>,

    /// Also run each cell open-loop at these fixed rates (requests per
    /// second), the same offered load for every kind.
    #[arg(long = "rate", value_name = "RPS,..", value_delimiter = ',',
          value_parser = parse_rate)]
    pub rate: Vec<f64>,

    /// How long each `/io` request waits, in ms.
    #[arg(long, value_name = "MS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub io_ms: u32,

    /// Load a server the lab did not start, at `http://HOST:PORT`, for
    /// example one on a second machine, so that the load generator has
    /// this one to itself. Its CPU and memory come from its `/stats`
    /// `processes` (recorded as not measured if it has none); the lab
    /// never starts, stops or signals it. Runs the workloads at the one
    /// size the server has.
    #[arg(long, value_name = "URL", value_parser = parse_url,
          conflicts_with_all = ["models", "workers", "servers", "balance", "dataset_mb", "pin"])]
    pub url: Option<Remote>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub servers: ServerArgs,
}

impl RunArgs {
    /// The plan: the profile fills every flag left out. Bad combinations
    /// are refused here, in one line, before anything starts.
    pub fn plan(&self) -> Result<Plan, String> {
        let profile = if self.quick {
            Profile::Quick
        } else {
            Profile::Default
        };
        let given = |given: &Vec<u16>, default: &[u16]| {
            if given.is_empty() {
                default.to_vec()
            } else {
                given.clone()
            }
        };
        // Budget: the default profile is 94 cells with every kind (42
        // closed, and the cpu and io ones again open-loop at half and 80%
        // of what they measured), of about 6.5 s each (warm-up, load, start
        // and stop) on a 2-core machine, so about 10 minutes a repeat;
        // quick is 29 closed cells of about 2.5 s, about a minute and a
        // half.
        let (workers, duration, warmup) = match profile {
            Profile::Default => (
                given(&self.workers, &[1, 2, 4]),
                Duration::from_secs(5),
                Duration::from_secs(1),
            ),
            Profile::Quick => (
                given(&self.workers, &[1, 2]),
                Duration::from_millis(1500),
                Duration::from_millis(500),
            ),
        };
        let given_open: Vec<Offered> = dedup(&self.load)
            .into_iter()
            .map(Offered::Share)
            .chain(dedup(&self.rate).into_iter().map(Offered::Rate))
            .collect();
        // Latency means something only at a load below capacity: by
        // default the cells whose latency matters (cpu, io) are run again
        // at half and 80% of what they measured closed-loop.
        let (open, open_workloads) = match profile {
            _ if !given_open.is_empty() => (given_open, Workload::value_variants().to_vec()),
            Profile::Default => (
                vec![Offered::Share(0.5), Offered::Share(0.8)],
                vec![Workload::Cpu, Workload::Io],
            ),
            Profile::Quick => (Vec::new(), Vec::new()),
        };
        let servers = self.servers.settings()?;
        // Every built-in kind when none is named; where `node` is missing
        // the Node kinds are skipped later, with one line.
        let kinds = if let Some(remote) = &self.url {
            // Named once its `/stats` says what it is (`super::main`).
            vec![ServerKind::remote("remote".into(), remote.addr)]
        } else {
            servers.kinds(&self.models, |_| true)?
        };
        let plan = Plan {
            profile,
            kinds,
            workloads: if self.workloads.is_empty() {
                vec![Workload::Noop, Workload::Cpu, Workload::Io]
            } else {
                dedup(&self.workloads)
            },
            workers: dedup(&workers),
            concurrency: dedup(&self.concurrency),
            duration: self.duration.unwrap_or(duration),
            warmup: self.warmup.unwrap_or(warmup),
            cpu_iters: self.cpu_iters,
            io_ms: self.io_ms,
            repeat: self.repeat,
            open,
            open_workloads,
            remote: self.url.clone(),
            servers,
        };
        if plan.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        plan.check()?;
        Ok(plan)
    }
}

/// `--url`: `http://HOST:PORT`, with at most a trailing `/`. HOST may be a
/// name; it is resolved once, here.
fn parse_url(text: &str) -> Result<Remote, String> {
    use std::net::ToSocketAddrs;
    let bad = |why: &str| format!("`{text}` {why} (expected http://HOST:PORT)");
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| bad("is not an http:// URL"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err(bad("has a path; the workloads choose the paths"));
    }
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| bad(&format!("has no host and port to connect to: {e}")))?
        .next()
        .ok_or_else(|| bad("resolves to no address"))?;
    Ok(Remote {
        url: format!("http://{authority}"),
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_host_and_port_only() {
        let remote = parse_url("http://127.0.0.1:8080/").unwrap();
        assert_eq!(remote.url, "http://127.0.0.1:8080");
        assert_eq!(remote.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(
            parse_url("https://127.0.0.1:8080")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            parse_url("http://127.0.0.1:8080/cpu")
                .unwrap_err()
                .contains("path")
        );
        assert!(
            parse_url("http://127.0.0.1")
                .unwrap_err()
                .contains("host and port")
        );
    }
}
