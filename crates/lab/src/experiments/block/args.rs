//! `lab block`'s command line, and its conversion into [`Settings`].

use std::time::Duration;

use clap::Args;

use super::Settings;
use crate::args::{OutputArgs, ServerArgs, dedup, parse_duration, parse_share};

/// `lab block`'s flags. With none: prefork, threadpool (its CPU work on the
/// pool, then on the loop) and, where `node` is on PATH, node-single,
/// node-cluster and node-threads, each at five CPU shares; about 3 minutes
/// on 2 cores.
#[derive(Args, Debug, Clone)]
pub struct BlockArgs {
    /// The short version: three shares, 1 s each; under a minute here.
    #[arg(long)]
    pub quick: bool,

    /// Server kinds [default: prefork, threadpool, node-single,
    /// node-cluster, node-threads]. threadpool runs twice, with `--offload
    /// cpu` and `--offload none`.
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub models: Vec<String>,

    /// Worker processes or pool threads.
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// The `/cpu` work offered alongside, as shares of the cores the server
    /// may use (the machine's, or its `--pin` set), 0 to 1: the same work
    /// for every kind, whether it can absorb it or not [default:
    /// 0,0.25,0.5,0.75,0.9; quick: 0,0.5,0.9].
    #[arg(long, value_delimiter = ',', value_name = "SHARE,..", value_parser = parse_share_or_zero)]
    pub shares: Vec<f64>,

    /// Load per cell [default: 3s; quick: 1s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// `/io` requests per second, the traffic whose latency is watched.
    #[arg(long, default_value_t = 200.0, value_name = "RPS")]
    pub io_rate: f64,

    /// PBKDF2 iterations per `/cpu` request [default: calibrated here so one
    /// costs about 10 ms in Rust].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub cpu_iters: Option<u32>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub servers: ServerArgs,
}

/// A share of the cores, 0 (no CPU load) to 1.
fn parse_share_or_zero(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v == 0.0 => Ok(v),
        _ => parse_share(text)
            .map_err(|_| format!("`{text}` is not 0 or a share between 0.05 and 1")),
    }
}

impl BlockArgs {
    /// The settings, the profile filling every flag left out.
    pub fn settings(&self) -> Result<Settings, String> {
        let servers = self.servers.settings()?;
        let kinds = servers.kinds(&self.models, |k| k.contract)?;
        if let Some(kind) = kinds.iter().find(|k| k.noop_only) {
            return Err(format!("--models {}: it serves no /cpu or /io", kind.name));
        }
        if !(1.0..=10_000.0).contains(&self.io_rate) {
            return Err("--io-rate must be between 1 and 10000".into());
        }
        let duration = self.duration.unwrap_or(if self.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3)
        });
        if duration < Duration::from_millis(500) {
            return Err("--duration must be at least 500ms".into());
        }
        let shares = if !self.shares.is_empty() {
            dedup(&self.shares)
        } else if self.quick {
            vec![0.0, 0.5, 0.9]
        } else {
            vec![0.0, 0.25, 0.5, 0.75, 0.9]
        };
        Ok(Settings {
            quick: self.quick,
            kinds,
            workers: self.workers,
            shares,
            duration,
            io_rate: self.io_rate,
            io_ms: 10,
            cpu_ms: 10.0,
            cpu_iters: self.cpu_iters,
            servers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: BlockArgs,
    }

    fn settings(line: &[&str]) -> Result<Settings, String> {
        Line::try_parse_from(["block"].iter().chain(line).copied())
            .map_err(|e| e.to_string())?
            .args
            .settings()
    }

    #[test]
    fn threadpool_runs_with_its_cpu_on_the_pool_and_on_the_loop() {
        let all = settings(&[]).unwrap();
        let cells = all.cells(&all.kinds);
        let variants: Vec<String> = cells
            .iter()
            .filter(|c| c.share == 0.0)
            .map(|c| c.variant.to_string())
            .collect();
        assert_eq!(
            variants,
            [
                "prefork",
                "threadpool --offload cpu",
                "threadpool --offload none",
                "node-single",
                "node-cluster",
                "node-threads"
            ]
        );
        assert_eq!(cells.len(), 6 * 5);
        assert_eq!(settings(&["--quick"]).unwrap().shares, [0.0, 0.5, 0.9]);
    }

    #[test]
    fn bad_shares_and_kinds_are_refused() {
        assert!(settings(&["--shares", "1.5"]).is_err());
        assert!(settings(&["--shares", "0,0.5"]).is_ok());
        assert!(
            settings(&["--models", "bare"])
                .unwrap_err()
                .contains("no /cpu")
        );
    }
}
