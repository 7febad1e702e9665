//! `lab conns`'s command line, and its conversion into [`Settings`].

use std::time::Duration;

use clap::Args;
use harness::holder::Caps;

use super::Settings;
use crate::args::{OutputArgs, ServerArgs, dedup};

/// `lab conns`'s flags. With none: every built-in kind (bare, prefork,
/// threadpool and, where `node` is on PATH, the Node kinds), held
/// connections rising 1000, 4000, 10000, 30000, 100000 as far as the
/// machine allows; a few minutes.
#[derive(Args, Debug, Clone)]
pub struct ConnsArgs {
    /// The short version: one step of 500 connections, a shorter light
    /// stream; under a minute here.
    #[arg(long)]
    pub quick: bool,

    /// Server kinds [default: every built-in kind].
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub models: Vec<String>,

    /// Idle connections to hold at each step, rising [default:
    /// 1000,4000,10000,30000,100000; quick: 500]. Each connection is a
    /// descriptor in a holder process and one in the server: the machine's
    /// limits decide how far this can go, and the record says where each
    /// kind stopped and why.
    #[arg(long, value_delimiter = ',', value_name = "N,..",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub steps: Vec<u32>,

    /// Worker processes or pool threads.
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// Testing: at most this many connections per holder process (more
    /// holders) and per source address (more addresses) than the
    /// machine's limits would allow.
    #[arg(long, hide = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_holder: Option<u32>,
    #[arg(long, hide = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_per_source: Option<u32>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub servers: ServerArgs,
}

impl ConnsArgs {
    /// The settings, the profile filling every flag left out.
    pub fn settings(&self) -> Result<Settings, String> {
        let servers = self.servers.settings()?;
        let kinds = servers.kinds(&self.models, |_| true)?;
        let mut steps: Vec<usize> = if self.steps.is_empty() {
            if self.quick {
                vec![500]
            } else {
                // 1k to 10k as before; 30k is past one source address's
                // ports, 100k the seed's scenario. About a minute a kind.
                vec![1000, 4000, 10_000, 30_000, 100_000]
            }
        } else {
            dedup(&self.steps).into_iter().map(|n| n as usize).collect()
        };
        steps.sort_unstable();
        Ok(Settings {
            quick: self.quick,
            kinds,
            steps,
            workers: self.workers,
            light_rate: 100.0,
            light_duration: if self.quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            },
            lower_caps: Caps {
                per_holder: self.max_per_holder.map_or(usize::MAX, |n| n as usize),
                per_source: self.max_per_source.map_or(usize::MAX, |n| n as usize),
            },
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
        args: ConnsArgs,
    }

    fn settings(line: &[&str]) -> Result<Settings, String> {
        Line::try_parse_from(["conns"].iter().chain(line).copied())
            .map_err(|e| e.to_string())?
            .args
            .settings()
    }

    #[test]
    fn steps_rise_whatever_order_they_were_given_in() {
        assert_eq!(
            settings(&[]).unwrap().steps,
            [1000, 4000, 10_000, 30_000, 100_000]
        );
        assert_eq!(settings(&["--quick"]).unwrap().steps, [500]);
        assert_eq!(settings(&["--steps", "50,10,50"]).unwrap().steps, [10, 50]);
        assert!(settings(&["--steps", "0"]).is_err());
    }

    #[test]
    fn the_caps_are_the_machines_unless_lowered_for_a_test() {
        let default = settings(&[]).unwrap().lower_caps;
        assert_eq!(
            (default.per_holder, default.per_source),
            (usize::MAX, usize::MAX)
        );
        let lowered = settings(&["--max-per-holder", "30", "--max-per-source", "20"])
            .unwrap()
            .lower_caps;
        assert_eq!((lowered.per_holder, lowered.per_source), (30, 20));
        assert!(settings(&["--max-per-holder", "0"]).is_err());
    }
}
