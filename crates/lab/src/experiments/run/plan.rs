//! What to run: models, workloads, the profiles, and the cells they expand to.

use std::fmt;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::cli::{RunArgs, ServerArgs};

/// A server model: the name is also its binary's name.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// A bare forked hyper hello-world: the no-op ceiling prefork is
    /// measured against. It answers `ok` to anything, so only the noop
    /// workload means something on it.
    Bare,
    Prefork,
    Threadpool,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Bare => "bare",
            Model::Prefork => "prefork",
            Model::Threadpool => "threadpool",
        }
    }

    /// Whether this model serves `workload` as the contract says. `bare`
    /// answers every path with `ok`, so a cpu or io cell on it would
    /// measure nothing the label claims.
    pub fn serves(self, workload: Workload) -> bool {
        self != Model::Bare || workload == Workload::Noop
    }

    /// The flags the harness starts this model with, beyond `--listen`,
    /// `--workers` and `--grace-ms`: the dataset for the contract's models,
    /// and prefork's own `--balance` and `--dataset-load`.
    pub fn flags(self, servers: &ServerArgs) -> Vec<String> {
        let mut flags = Vec::new();
        if servers.dataset_mb > 0 && self != Model::Bare {
            flags.extend(["--dataset-mb".into(), servers.dataset_mb.to_string()]);
        }
        if self == Model::Prefork {
            flags.extend(["--balance".into(), servers.balance.name().into()]);
            flags.extend(["--dataset-load".into(), servers.dataset_load.name().into()]);
        }
        flags
    }
}

/// prefork's `--dataset-load` choices.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetLoad {
    #[default]
    BeforeFork,
    PerWorker,
}

impl DatasetLoad {
    pub fn name(self) -> &'static str {
        match self {
            DatasetLoad::BeforeFork => "before-fork",
            DatasetLoad::PerWorker => "per-worker",
        }
    }
}

/// prefork's `--balance` policies.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    Shared,
    #[default]
    Reuseport,
}

impl Balance {
    pub fn name(self) -> &'static str {
        match self {
            Balance::Shared => "shared",
            Balance::Reuseport => "reuseport",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the load generator asks for.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `GET /`: the cost of HTTP alone.
    Noop,
    /// `GET /cpu?iters=N`: CPU-bound work of about 1 to 2 ms.
    Cpu,
    /// `GET /io?ms=N`: a non-blocking wait, at high concurrency.
    Io,
    /// 10% cpu and 90% io requests, through oha's URL file.
    Mixed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Noop => "noop",
            Workload::Cpu => "cpu",
            Workload::Io => "io",
            Workload::Mixed => "mixed",
        }
    }

    /// Connections when `--concurrency` is not given. cpu stays low because
    /// more clients than cores only queue; io is high because waiting
    /// requests cost nothing but memory, which is what the cell shows.
    pub fn default_concurrency(self) -> u32 {
        match self {
            Workload::Noop => 50,
            Workload::Cpu => 16,
            Workload::Io => 512,
            Workload::Mixed => 256,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Share of cpu requests in the mixed workload, in percent.
pub const MIXED_CPU_PERCENT: u32 = 10;

/// One measurement: a server model under one workload at one size and load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub model: Model,
    pub workload: Workload,
    pub workers: u16,
    pub concurrency: u32,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} w={} c={}",
            self.model, self.workload, self.workers, self.concurrency
        )
    }
}

/// Which set of defaults fills the flags left out.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Default,
    Quick,
}

/// The run's parameters once the profile filled every gap.
#[derive(Clone, Debug)]
pub struct Plan {
    pub profile: Profile,
    pub models: Vec<Model>,
    pub workloads: Vec<Workload>,
    pub workers: Vec<u16>,
    /// Empty: each workload's default.
    pub concurrency: Vec<u32>,
    pub duration: Duration,
    pub warmup: Duration,
    pub io_ms: u32,
    /// How the servers are found, started and configured.
    pub servers: ServerArgs,
}

impl Plan {
    pub fn from_args(args: &RunArgs) -> Plan {
        let profile = if args.quick {
            Profile::Quick
        } else {
            Profile::Default
        };
        let or = |given: &Vec<u16>, default: &[u16]| {
            if given.is_empty() {
                default.to_vec()
            } else {
                given.clone()
            }
        };
        // Budget: the default profile is 21 cells (18, and bare's 3 noop
        // cells) of about 7 s (warm-up, load, start and stop) on a 2-core
        // machine, so under 5 minutes; quick is 14 cells of about 3 s, under
        // a minute.
        let (workers, duration, warmup) = match profile {
            Profile::Default => (
                or(&args.workers, &[1, 2, 4]),
                Duration::from_secs(5),
                Duration::from_secs(1),
            ),
            Profile::Quick => (
                or(&args.workers, &[1, 2]),
                Duration::from_millis(1500),
                Duration::from_millis(500),
            ),
        };
        Plan {
            profile,
            // bare first, so its noop rows sit right above prefork's.
            models: if args.models.is_empty() {
                vec![Model::Bare, Model::Prefork, Model::Threadpool]
            } else {
                dedup(&args.models)
            },
            workloads: if args.workloads.is_empty() {
                vec![Workload::Noop, Workload::Cpu, Workload::Io]
            } else {
                dedup(&args.workloads)
            },
            workers: dedup(&workers),
            concurrency: dedup(&args.concurrency),
            duration: args.duration.unwrap_or(duration),
            warmup: args.warmup.unwrap_or(warmup),
            io_ms: args.io_ms,
            servers: args.servers.clone(),
        }
    }

    /// A plan with nothing to run for a model the user named is a mistake
    /// worth an exit 2: `--models bare` without the noop workload.
    pub fn check(&self) -> Result<(), String> {
        for &model in &self.models {
            if !self.workloads.iter().any(|&w| model.serves(w)) {
                return Err(format!(
                    "--models {model} serves only the noop workload; add noop to --workloads"
                ));
            }
        }
        Ok(())
    }

    /// The cells in run order: model, then workload, then workers, so that
    /// neighbouring rows of the table differ in one thing. A workload a
    /// model does not serve (bare's cpu, io, mixed) has no cells: skipped
    /// rather than refused, so one plan can hold bare and the real models.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &model in &self.models {
            for &workload in self.workloads.iter().filter(|&&w| model.serves(w)) {
                for &workers in &self.workers {
                    let concurrency = if self.concurrency.is_empty() {
                        vec![workload.default_concurrency()]
                    } else {
                        self.concurrency.clone()
                    };
                    for concurrency in concurrency {
                        cells.push(Cell {
                            model,
                            workload,
                            workers,
                            concurrency,
                        });
                    }
                }
            }
        }
        cells
    }
}

/// Keeps the first of each value, in the order given.
fn dedup<T: PartialEq + Clone>(values: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for value in values {
        if !out.contains(value) {
            out.push(value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_model_gets_only_the_flags_it_takes() {
        let servers = ServerArgs {
            dataset_mb: 8,
            dataset_load: DatasetLoad::PerWorker,
            balance: Balance::Shared,
            ..ServerArgs::default()
        };
        assert_eq!(
            Model::Prefork.flags(&servers),
            [
                "--dataset-mb",
                "8",
                "--balance",
                "shared",
                "--dataset-load",
                "per-worker"
            ]
        );
        assert_eq!(Model::Threadpool.flags(&servers), ["--dataset-mb", "8"]);
        assert!(Model::Bare.flags(&servers).is_empty());
        let no_dataset = ServerArgs::default();
        assert_eq!(Model::Threadpool.flags(&no_dataset), Vec::<String>::new());
    }

    #[test]
    fn default_profile_is_both_models_three_workloads_three_sizes_and_bare_noop() {
        let plan = Plan::from_args(&RunArgs::default());
        assert_eq!(plan.cells().len(), 2 * 3 * 3 + 3);
        let bare: Vec<Cell> = plan
            .cells()
            .into_iter()
            .filter(|c| c.model == Model::Bare)
            .collect();
        assert_eq!(bare.len(), 3);
        assert!(bare.iter().all(|c| c.workload == Workload::Noop));
        assert!(plan.check().is_ok());
        let quick = Plan::from_args(&RunArgs {
            quick: true,
            ..RunArgs::default()
        });
        assert_eq!(quick.cells().len(), 2 * 3 * 2 + 2);
        assert_eq!(plan.duration, Duration::from_secs(5));
        let io = plan
            .cells()
            .into_iter()
            .find(|c| c.workload == Workload::Io)
            .unwrap();
        assert_eq!(io.concurrency, 512);
    }

    #[test]
    fn flags_override_the_profile() {
        let args = RunArgs {
            quick: true,
            models: vec![Model::Prefork, Model::Prefork],
            workloads: vec![Workload::Noop],
            concurrency: vec![8, 16],
            ..RunArgs::default()
        };
        let plan = Plan::from_args(&args);
        assert_eq!(plan.profile, Profile::Quick);
        let cells = plan.cells();
        // 1 model x 1 workload x 2 workers (quick) x 2 concurrencies.
        assert_eq!(cells.len(), 4);
        assert_eq!(cells[1].concurrency, 16);
        assert_eq!(cells[2].workers, 2);
    }

    #[test]
    fn bare_runs_only_noop_and_is_refused_without_it() {
        let args = RunArgs {
            models: vec![Model::Bare, Model::Prefork],
            workloads: vec![Workload::Noop, Workload::Cpu],
            workers: vec![1],
            ..RunArgs::default()
        };
        let plan = Plan::from_args(&args);
        assert!(plan.check().is_ok());
        let cells: Vec<(Model, Workload)> =
            plan.cells().iter().map(|c| (c.model, c.workload)).collect();
        assert_eq!(
            cells,
            [
                (Model::Bare, Workload::Noop),
                (Model::Prefork, Workload::Noop),
                (Model::Prefork, Workload::Cpu)
            ]
        );
        let only_cpu = Plan::from_args(&RunArgs {
            models: vec![Model::Bare],
            workloads: vec![Workload::Cpu],
            ..RunArgs::default()
        });
        assert!(only_cpu.check().unwrap_err().contains("noop"));
    }
}
