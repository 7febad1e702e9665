//! What `lab run` runs: workloads, the profiles, and the cells a plan
//! expands to.

use std::fmt;
use std::time::Duration;

use clap::ValueEnum;
use harness::servers::ServerKind;
use serde::{Deserialize, Serialize};

use crate::args::ServerSettings;

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

/// How a cell's load is offered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Offered {
    /// Closed loop: each connection sends its next request when the last
    /// is answered, as fast as the server goes. Measures throughput; its
    /// latency is mostly queueing.
    #[default]
    Closed,
    /// Open loop at this share of the throughput the same run's closed
    /// cell measured (same kind, workload, workers, connections, repeat).
    Share(f64),
    /// Open loop at this many requests per second.
    Rate(f64),
}

impl fmt::Display for Offered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offered::Closed => f.write_str("closed"),
            Offered::Share(share) => write!(f, "{:.0}%", share * 100.0),
            Offered::Rate(rps) => write!(f, "{rps:.0}/s"),
        }
    }
}

/// One measurement: a server kind under one workload at one size and load,
/// and which repeat of it this is (1-based).
#[derive(Clone, Debug)]
pub struct Cell {
    pub kind: ServerKind,
    pub workload: Workload,
    pub workers: u16,
    pub concurrency: u32,
    pub offered: Offered,
    pub repeat: u32,
}

impl Cell {
    /// Whether `other` is the same cell but for how the load is offered:
    /// the closed cell an open one takes its capacity from.
    pub fn same_but_load(&self, other: &Cell) -> bool {
        self.kind.name == other.kind.name
            && self.workload == other.workload
            && self.workers == other.workers
            && self.concurrency == other.concurrency
            && self.repeat == other.repeat
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} w={} c={} {} #{}",
            self.kind.name,
            self.workload,
            self.workers,
            self.concurrency,
            self.offered,
            self.repeat
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

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Quick => "quick",
        }
    }
}

/// The run's parameters once the profile filled every gap: plain data.
#[derive(Clone, Debug)]
pub struct Plan {
    pub profile: Profile,
    pub kinds: Vec<ServerKind>,
    pub workloads: Vec<Workload>,
    pub workers: Vec<u16>,
    /// Empty: each workload's default.
    pub concurrency: Vec<u32>,
    pub duration: Duration,
    pub warmup: Duration,
    /// `None`: calibrated here to about 1.5 ms a request.
    pub cpu_iters: Option<u32>,
    pub io_ms: u32,
    /// Times each cell runs, interleaved.
    pub repeat: u32,
    /// Open-loop loads run after each closed cell of `open_workloads`:
    /// shares of its measured throughput, and fixed rates.
    pub open: Vec<Offered>,
    pub open_workloads: Vec<Workload>,
    /// `--url`: the one server, not started by the lab.
    pub remote: Option<Remote>,
    pub servers: ServerSettings,
}

/// A server the lab loads but did not start (`--url`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Remote {
    /// As given, without a trailing `/`.
    pub url: String,
    /// What it resolved to.
    pub addr: std::net::SocketAddr,
}

/// Whether `kind` serves `workload` as the contract says. `bare` answers
/// every path with `ok`, so a cpu or io cell on it would measure nothing
/// the label claims.
pub fn serves(kind: &ServerKind, workload: Workload) -> bool {
    !kind.noop_only || workload == Workload::Noop
}

impl Plan {
    /// A plan with nothing to run for a kind the user named is a mistake
    /// worth an exit 2: `--models bare` without the noop workload.
    pub fn check(&self) -> Result<(), String> {
        for kind in &self.kinds {
            if !self.workloads.iter().any(|&w| serves(kind, w)) {
                return Err(format!(
                    "--models {}: it serves only the noop workload; add noop to --workloads",
                    kind.name
                ));
            }
        }
        Ok(())
    }

    /// The cells in run order: kind, then workload, then workers, so that
    /// neighbouring rows of the table differ in one thing; with repeats, all
    /// cells once, then all again, so that a slow minute of a shared
    /// machine spreads over every cell instead of landing on one. A
    /// workload a kind does not serve (bare's cpu, io, mixed) has no cells:
    /// skipped rather than refused, so one plan can hold bare and the real
    /// models.
    pub fn cells(&self) -> Vec<Cell> {
        let once = self.cells_once();
        (1..=self.repeat.max(1))
            .flat_map(|repeat| {
                once.iter().map(move |c| Cell {
                    repeat,
                    ..c.clone()
                })
            })
            .collect()
    }

    fn cells_once(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for kind in &self.kinds {
            // A kind without workers runs once per workload, at one.
            let workers = if kind.single {
                &[1][..]
            } else {
                &self.workers[..]
            };
            for &workload in self.workloads.iter().filter(|&&w| serves(kind, w)) {
                for &workers in workers {
                    let concurrency = if self.concurrency.is_empty() {
                        vec![workload.default_concurrency()]
                    } else {
                        self.concurrency.clone()
                    };
                    for concurrency in concurrency {
                        // The closed cell first: the open ones at a share
                        // take their rate from it.
                        let open = if self.open_workloads.contains(&workload) {
                            &self.open[..]
                        } else {
                            &[]
                        };
                        for &offered in std::iter::once(&Offered::Closed).chain(open) {
                            cells.push(Cell {
                                kind: kind.clone(),
                                workload,
                                workers,
                                concurrency,
                                offered,
                                repeat: 1,
                            });
                        }
                    }
                }
            }
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::run::RunArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: RunArgs,
    }

    fn plan(line: &[&str]) -> Result<Plan, String> {
        let line = Line::try_parse_from(["run"].iter().chain(line).copied()).unwrap();
        line.args.plan()
    }

    fn names(cells: &[Cell]) -> Vec<(String, Workload)> {
        cells
            .iter()
            .map(|c| (c.kind.name.clone(), c.workload))
            .collect()
    }

    #[test]
    fn default_profile_is_every_kind_three_workloads_three_sizes_bare_noop_node_single_once() {
        let default = plan(&[]).unwrap();
        let cells = default.cells();
        // prefork, threadpool, node-cluster, node-threads: 3 workloads x
        // 3 sizes, cpu and io again at 2 open-loop shares; bare: noop x 3
        // sizes; node-single: 3 workloads at 1, cpu and io again at 2.
        assert_eq!(cells.len(), 4 * 3 * (3 + 2 * 2) + 3 + (3 + 2 * 2));
        let open: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.offered != Offered::Closed)
            .collect();
        assert!(open.iter().all(|c| c.workload != Workload::Noop));
        assert!(
            open.iter()
                .all(|c| matches!(c.offered, Offered::Share(s) if s == 0.5 || s == 0.8))
        );
        let single: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.kind.name == "node-single")
            .collect();
        assert!(single.iter().all(|c| c.workers == 1));
        let bare: Vec<&Cell> = cells.iter().filter(|c| c.kind.name == "bare").collect();
        assert_eq!(bare.len(), 3);
        assert!(bare.iter().all(|c| c.workload == Workload::Noop));
        assert_eq!(default.duration, Duration::from_secs(5));
        let io = cells.iter().find(|c| c.workload == Workload::Io).unwrap();
        assert_eq!(io.concurrency, 512);
        let quick = plan(&["--quick"]).unwrap();
        assert_eq!(quick.cells().len(), 4 * 3 * 2 + 2 + 3);
    }

    #[test]
    fn flags_override_the_profile() {
        let plan = plan(&[
            "--quick",
            "--models",
            "prefork,prefork",
            "--workloads",
            "noop",
            "--concurrency",
            "8,16",
        ])
        .unwrap();
        assert_eq!(plan.profile, Profile::Quick);
        let cells = plan.cells();
        // 1 kind x 1 workload x 2 workers (quick) x 2 concurrencies.
        assert_eq!(cells.len(), 4);
        assert_eq!(cells[1].concurrency, 16);
        assert_eq!(cells[2].workers, 2);
    }

    #[test]
    fn repeats_are_interleaved() {
        let plan = plan(&[
            // Quick: closed cells only.
            "--quick",
            "--models",
            "prefork",
            "--workloads",
            "noop,cpu",
            "--workers",
            "1",
            "--repeat",
            "3",
        ])
        .unwrap();
        let order: Vec<(Workload, u32)> = plan
            .cells()
            .iter()
            .map(|c| (c.workload, c.repeat))
            .collect();
        assert_eq!(
            order,
            [
                (Workload::Noop, 1),
                (Workload::Cpu, 1),
                (Workload::Noop, 2),
                (Workload::Cpu, 2),
                (Workload::Noop, 3),
                (Workload::Cpu, 3)
            ]
        );
    }

    #[test]
    fn open_loads_follow_the_closed_cell_they_take_their_rate_from() {
        let plan = plan(&[
            "--models",
            "prefork",
            "--workloads",
            "cpu",
            "--workers",
            "1",
            "--load",
            "0.5,0.8",
            "--rate",
            "300",
        ])
        .unwrap();
        let cells = plan.cells();
        let offered: Vec<Offered> = cells.iter().map(|c| c.offered).collect();
        assert_eq!(
            offered,
            [
                Offered::Closed,
                Offered::Share(0.5),
                Offered::Share(0.8),
                Offered::Rate(300.0)
            ]
        );
        assert!(cells[1].same_but_load(&cells[0]));
        assert_eq!(cells[1].to_string(), "prefork cpu w=1 c=16 50% #1");
    }

    #[test]
    fn bare_runs_only_noop_and_is_refused_without_it() {
        let mixed = plan(&[
            // Quick: closed cells only.
            "--quick",
            "--models",
            "bare,prefork",
            "--workloads",
            "noop,cpu",
            "--workers",
            "1",
        ])
        .unwrap();
        assert_eq!(
            names(&mixed.cells()),
            [
                ("bare".to_owned(), Workload::Noop),
                ("prefork".to_owned(), Workload::Noop),
                ("prefork".to_owned(), Workload::Cpu)
            ]
        );
        let error = plan(&["--models", "bare", "--workloads", "cpu"]).unwrap_err();
        assert!(error.contains("noop"), "{error}");
    }

    #[test]
    fn a_template_is_a_kind_to_name_and_an_unknown_name_is_refused() {
        let with_mine = plan(&[
            // Quick: closed cells only.
            "--quick",
            "--server",
            "mine=python3 app.py --port {port}",
            "--models",
            "mine",
            "--workloads",
            "cpu",
            "--workers",
            "1",
        ])
        .unwrap();
        assert_eq!(
            names(&with_mine.cells()),
            [("mine".to_owned(), Workload::Cpu)]
        );
        let error = plan(&["--models", "forking"]).unwrap_err();
        assert!(error.contains("unknown server `forking`"), "{error}");
    }
}
