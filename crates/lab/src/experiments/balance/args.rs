//! `lab balance`'s command line, and its conversion into [`Settings`].

use std::time::Duration;

use clap::Args;

use super::{Scenario, Settings};
use crate::args::{OutputArgs, ServerArgs, dedup, parse_duration};

/// `lab balance`'s flags. With none: every scenario, 4 and 8 workers,
/// every policy of prefork and (where `node` is on PATH) node-cluster,
/// about 3 minutes on 2 cores.
#[derive(Args, Debug, Clone)]
pub struct BalanceArgs {
    /// The short version: 4 workers, 1 s per cell; under a minute here.
    #[arg(long)]
    pub quick: bool,

    /// Server kinds whose `--balance` policies to compare [default:
    /// prefork, node-cluster]. Every policy each has runs, or only
    /// --balance's.
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub models: Vec<String>,

    /// Scenarios [default: all]. short: each request on a new connection;
    /// long: one keep-alive connection per worker; uneven: cheap and
    /// expensive requests at a fixed rate over two connections per worker;
    /// burst: eight connections per worker at once after idle.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SCENARIO,..")]
    pub scenarios: Vec<Scenario>,

    /// Worker counts, more than the cores so that imbalance can show
    /// [default: 4,8; quick: 4].
    #[arg(long, value_delimiter = ',', value_name = "N,..",
          value_parser = clap::value_parser!(u16).range(2..=1024))]
    pub workers: Vec<u16>,

    /// Load per cell; the burst lasts a third of it [default: 3s; quick: 1s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// PBKDF2 iterations of the cpu workload's request, which the scenarios'
    /// requests are a tenth of (four times, for uneven's expensive ones)
    /// [default: calibrated here to about 1.5 ms].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(10..=10_000_000))]
    pub cpu_iters: Option<u32>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub servers: ServerArgs,
}

impl BalanceArgs {
    /// The settings, the profile filling every flag left out; bad
    /// combinations are refused in one line.
    pub fn settings(&self) -> Result<Settings, String> {
        let servers = self.servers.settings()?;
        let kinds = servers.kinds(&self.models, |k| !k.balances.is_empty())?;
        if let Some(kind) = kinds.iter().find(|k| k.balances.is_empty()) {
            return Err(format!(
                "--models {}: it has no --balance policies to compare",
                kind.name
            ));
        }
        let duration = self.duration.unwrap_or(if self.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3)
        });
        if duration < Duration::from_millis(300) {
            return Err("--duration must be at least 300ms".into());
        }
        let workers = if self.workers.is_empty() {
            if self.quick { vec![4] } else { vec![4, 8] }
        } else {
            dedup(&self.workers)
        };
        Ok(Settings {
            quick: self.quick,
            kinds,
            scenarios: if self.scenarios.is_empty() {
                Scenario::ALL.to_vec()
            } else {
                dedup(&self.scenarios)
            },
            workers,
            duration,
            burst: duration / 3,
            uneven_share: 0.6,
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
        args: BalanceArgs,
    }

    fn settings(line: &[&str]) -> Result<Settings, String> {
        let line = Line::try_parse_from(["balance"].iter().chain(line).copied()).unwrap();
        line.args.settings()
    }

    #[test]
    fn the_default_is_every_policy_of_prefork_and_node_cluster_in_every_scenario() {
        let all = settings(&[]).unwrap();
        let cells = all.cells(&all.kinds);
        // (3 prefork + 2 node-cluster policies) x 4 scenarios x 2 sizes.
        assert_eq!(cells.len(), 5 * 4 * 2);
        let first: Vec<String> = cells[..5].iter().map(|c| c.policy.to_string()).collect();
        assert_eq!(
            first,
            [
                "prefork reuseport",
                "prefork shared",
                "prefork rr",
                "node-cluster rr",
                "node-cluster shared"
            ]
        );
        assert_eq!(settings(&["--quick"]).unwrap().workers, [4]);
    }

    #[test]
    fn balance_narrows_the_policies_and_kinds_without_any_are_refused() {
        let rr = settings(&["--balance", "rr", "--models", "prefork"]).unwrap();
        let cells = rr.cells(&rr.kinds);
        assert!(cells.iter().all(|c| c.policy.to_string() == "prefork rr"));
        assert_eq!(cells.len(), 4 * 2);
        let error = settings(&["--models", "threadpool"]).unwrap_err();
        assert!(error.contains("no --balance"), "{error}");
    }
}
