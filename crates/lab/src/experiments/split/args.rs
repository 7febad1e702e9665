//! `lab split`'s command line, and its conversion into [`Settings`].

use std::time::Duration;

use clap::Args;

use super::Settings;
use crate::args::{OutputArgs, ServerArgs, dedup, parse_duration};

/// `lab split`'s flags. With none: prefork, threadpool (its queue, then a
/// rayon pool) and, where `node` is on PATH, node-single, node-cluster
/// and node-threads, each with its request in 1, 2, 4 and 8 parts, lone
/// and saturated; about 3 minutes on 2 cores.
#[derive(Args, Debug, Clone)]
pub struct SplitArgs {
    /// The short version: 1 and 4 parts, 1 s each; under a minute here.
    #[arg(long)]
    pub quick: bool,

    /// Server kinds [default: prefork, threadpool, node-single,
    /// node-cluster, node-threads]. threadpool runs twice, with `--pool
    /// queue` and `--pool rayon`.
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub models: Vec<String>,

    /// Worker processes or pool threads [default: the machine's cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// How many parts to ask for, each a cell: the request's iterations
    /// are divided among them, so the work stays the same [default:
    /// 1,2,4,8; quick: 1,4].
    #[arg(long, value_delimiter = ',', value_name = "P,..",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parts: Vec<u32>,

    /// Connections of the saturated load: requests in flight at once
    /// [default: 4 per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=1024))]
    pub saturate: Option<u32>,

    /// Load per cell [default: 3s; quick: 1s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// PBKDF2 iterations of one whole request, over all its parts
    /// [default: calibrated here so it costs about 50 ms in Rust].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub iters: Option<u32>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub servers: ServerArgs,
}

impl SplitArgs {
    /// The settings, the profile filling every flag left out.
    pub fn settings(&self) -> Result<Settings, String> {
        let servers = self.servers.settings()?;
        let kinds = servers.kinds(&self.models, |k| k.contract)?;
        if let Some(kind) = kinds.iter().find(|k| k.noop_only) {
            return Err(format!("--models {}: it serves no /cpu", kind.name));
        }
        let duration = self.duration.unwrap_or(if self.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3)
        });
        if duration < Duration::from_millis(500) {
            return Err("--duration must be at least 500ms".into());
        }
        let mut parts = if !self.parts.is_empty() {
            dedup(&self.parts)
        } else if self.quick {
            vec![1, 4]
        } else {
            vec![1, 2, 4, 8]
        };
        parts.sort_unstable();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = self.workers.unwrap_or(cores.min(1024) as u16);
        Ok(Settings {
            quick: self.quick,
            kinds,
            workers,
            parts,
            saturate: self.saturate.unwrap_or(4 * cores.min(256) as u32),
            duration,
            work_ms: 50.0,
            iters: self.iters,
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
        args: SplitArgs,
    }

    fn settings(line: &[&str]) -> Result<Settings, String> {
        Line::try_parse_from(["split"].iter().chain(line).copied())
            .map_err(|e| e.to_string())?
            .args
            .settings()
    }

    #[test]
    fn threadpool_runs_with_its_queue_and_with_rayon_at_every_part_count() {
        let all = settings(&[]).unwrap();
        let cells = all.cells(&all.kinds);
        let variants: Vec<String> = cells
            .iter()
            .filter(|c| c.parts == 1 && c.load == super::super::Load::Lone)
            .map(|c| c.variant.to_string())
            .collect();
        assert_eq!(
            variants,
            [
                "prefork",
                "threadpool --pool queue",
                "threadpool --pool rayon",
                "node-single",
                "node-cluster",
                "node-threads"
            ]
        );
        assert_eq!(cells.len(), 6 * 4 * 2);
        assert_eq!(settings(&["--quick"]).unwrap().parts, [1, 4]);
        assert_eq!(settings(&["--parts", "8,1,8"]).unwrap().parts, [1, 8]);
    }

    #[test]
    fn bad_parts_and_kinds_are_refused() {
        assert!(settings(&["--parts", "0"]).is_err());
        assert!(settings(&["--parts", "65"]).is_err());
        assert!(settings(&["--saturate", "1"]).is_err());
        assert!(settings(&["--duration", "100ms"]).is_err());
        assert!(
            settings(&["--models", "bare"])
                .unwrap_err()
                .contains("no /cpu")
        );
    }
}
