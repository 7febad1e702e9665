//! `lab conns`'s command line, and its conversion into [`Settings`].

use std::time::Duration;

use clap::Args;

use super::Settings;
use crate::args::{OutputArgs, ServerArgs, dedup};

/// `lab conns`'s flags. With none: every built-in kind (bare, prefork,
/// threadpool and, where `node` is on PATH, the Node kinds), held
/// connections rising 1000, 4000, 10000; about 2 minutes.
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
    /// 1000,4000,10000; quick: 500]. Each connection is a descriptor
    /// in the lab and in the server: the machine's limits decide how far
    /// this can go, and the record says where it stopped and why.
    #[arg(long, value_delimiter = ',', value_name = "N,..",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub steps: Vec<u32>,

    /// Worker processes or pool threads.
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

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
                vec![1000, 4000, 10_000]
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
        assert_eq!(settings(&[]).unwrap().steps, [1000, 4000, 10_000]);
        assert_eq!(settings(&["--steps", "50,10,50"]).unwrap().steps, [10, 50]);
        assert!(settings(&["--steps", "0"]).is_err());
    }
}
