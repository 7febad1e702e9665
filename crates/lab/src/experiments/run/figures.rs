//! From what a cell measured to what `run.json` says about it: a pure
//! function, so every figure's arithmetic is tested without a server.

use std::collections::BTreeMap;

use harness::cost::{self, Limits};
use harness::cpus::Pinning;
use harness::kernel::{self, Runtime};
use harness::record::CellStatus;

use super::measure::Measured;
use super::plan::{Cell, Offered, Workload};
use super::report::{CellRecord, CpuRecord, Efficiency, KernelCost, MemoryBytes, MemoryRecord};

/// What the ceilings of a run rest on.
#[derive(Clone, Debug)]
pub struct Ceilings {
    /// One `/cpu` request's cost on one core, in seconds, in each runtime,
    /// measured in that runtime (when a cpu cell runs).
    pub cpu_cost_s: BTreeMap<Runtime, f64>,
    /// The cores the server may use: its pinned set, or the machine's; 0
    /// when unknown (a server elsewhere).
    pub cores: usize,
    /// The cores the load generator may use: its pinned set, or the
    /// machine's (the same cores as the server's, then).
    pub loadgen_cores: usize,
    /// Whether the server and the load generator share cores: not when
    /// pinned apart, nor when the server runs elsewhere.
    pub shared: bool,
    pub io_ms: u32,
}

impl Ceilings {
    /// The ceilings of a run on `machine_cores`, pinned or not.
    pub fn new(
        kernel_costs: &BTreeMap<Runtime, KernelCost>,
        machine_cores: usize,
        pinning: Option<&Pinning>,
        io_ms: u32,
    ) -> Ceilings {
        Ceilings {
            cpu_cost_s: kernel_costs
                .iter()
                .map(|(&runtime, k)| (runtime, k.median_ms / 1000.0))
                .collect(),
            cores: pinning.map_or(machine_cores, |p| p.server.len()),
            loadgen_cores: pinning.map_or(machine_cores, |p| p.loadgen.len()),
            shared: pinning.is_none(),
            io_ms,
        }
    }

    /// What the bound rule needs for `cell`: the cores its server can use
    /// (min(workers, cores), one for a kind without workers), the load
    /// generator's, and the machine's when the two share it.
    pub fn limits(&self, cell: &Cell) -> Limits {
        let workers = if cell.kind.single { 1 } else { cell.workers };
        Limits {
            usable_cores: f64::from(workers).min(self.cores as f64),
            loadgen_cores: self.loadgen_cores as f64,
            shared_cores: self.shared.then_some(self.cores as f64),
        }
    }

    /// The ceilings of a run against a server elsewhere (`--url`): its
    /// cores and its kernel's cost are unknown here, so only the load
    /// generator's cores and Little's law apply.
    pub fn remote(loadgen_cores: usize, io_ms: u32) -> Ceilings {
        Ceilings {
            cpu_cost_s: BTreeMap::new(),
            cores: 0,
            loadgen_cores,
            shared: false,
            io_ms,
        }
    }
}

/// The rate an open-loop `cell` offers: its fixed rate, or its share of
/// what the same run's closed cell measured. `Ok(None)` for a closed
/// cell; `Err` when the closed cell has no throughput to take a share of.
pub fn offered_rps(cell: &Cell, done: &[(Cell, CellRecord)]) -> Result<Option<f64>, String> {
    match cell.offered {
        Offered::Closed => Ok(None),
        Offered::Rate(rps) => Ok(Some(rps)),
        Offered::Share(share) => {
            let closed = done.iter().find(|(c, r)| {
                c.offered == Offered::Closed && c.same_but_load(cell) && r.status == CellStatus::Ok
            });
            let capacity = closed
                .and_then(|(_, r)| r.load.as_ref())
                .map(|l| l.rps)
                .filter(|&rps| rps > 0.0)
                .ok_or("its closed-loop cell measured no throughput to take a share of")?;
            Ok(Some(capacity * share))
        }
    }
}

/// The record of a cell that could not run, and why.
pub fn not_run(cell: &Cell, why: &str) -> CellRecord {
    cell_record(
        cell,
        None,
        Measured {
            error: Some(why.to_owned()),
            ..Measured::default()
        },
        &Ceilings::new(&BTreeMap::new(), 1, None, 0),
    )
}

/// The record of `cell`, from what it measured under the load it offered.
pub fn cell_record(
    cell: &Cell,
    offered_rps: Option<f64>,
    measured: Measured,
    ceilings: &Ceilings,
) -> CellRecord {
    let mut problems: Vec<String> = measured.error.iter().cloned().collect();
    if let Some(code) = measured.exit_code.filter(|&c| c != 0) {
        problems.push(format!(
            "the server exited with {code} after SIGTERM, not 0"
        ));
    }
    if !measured.left_running.is_empty() {
        problems.push(format!(
            "server processes left running after it exited: {:?}",
            measured.left_running
        ));
    }
    let (status, error, stderr_tail) = if problems.is_empty() {
        (CellStatus::Ok, None, Vec::new())
    } else {
        (
            CellStatus::Failed,
            Some(problems.join("; ")),
            measured.stderr_tail,
        )
    };
    let load = measured.load;
    let cpu = match (&load, measured.server) {
        (Some(l), Some(server)) => Some(CpuRecord::new(
            server,
            measured.reported,
            l.cpu_seconds,
            measured.load_wall_s,
        )),
        _ => None,
    };
    let efficiency = load
        .as_ref()
        .and_then(|l| efficiency(cell, l.summary.rps, ceilings));
    let ok = load.as_ref().map_or(0, |l| l.summary.ok);
    CellRecord {
        model: cell.kind.name.clone(),
        workload: cell.workload,
        workers: cell.workers,
        concurrency: cell.concurrency,
        offered: cell.offered,
        offered_rps,
        repeat: cell.repeat,
        status,
        error,
        stderr_tail,
        per_request: cpu.as_ref().and_then(|c| cost::per_request(c, ok)),
        bound: match (&load, &cpu) {
            (Some(l), Some(c)) => Some(cost::bound(
                &l.summary,
                c,
                &ceilings.limits(cell),
                offered_rps,
                efficiency
                    .as_ref()
                    .filter(|e| e.kind == "io")
                    .map(|e| (e.value, cell.concurrency)),
            )),
            _ => None,
        },
        efficiency,
        cpu,
        memory: match (measured.idle, measured.peak) {
            (Some(idle), Some(peak)) => Some(MemoryRecord {
                idle: MemoryBytes::new(idle, measured.reported),
                peak: MemoryBytes::new(peak, measured.reported),
                samples: measured.samples,
                processes: measured.processes,
            }),
            _ => None,
        },
        load: load.map(|l| l.summary),
        exit_code: measured.exit_code,
        left_running: measured.left_running,
        wall_s: measured.wall_s,
    }
}

/// How close `rps` came to the cell's ceiling: cpu (usable cores over the
/// kernel's cost in the kind's own runtime; none for a kind whose runtime is
/// unknown) or io (Little's law); none for noop and mixed.
fn efficiency(cell: &Cell, rps: f64, ceilings: &Ceilings) -> Option<Efficiency> {
    let (kind, ceiling) = match cell.workload {
        Workload::Cpu => (
            "cpu",
            kernel::cpu_ceiling_rps(
                cell.workers,
                ceilings.cores,
                *ceilings.cpu_cost_s.get(&cell.kind.runtime?)?,
            ),
        ),
        Workload::Io => (
            "io",
            kernel::io_ceiling_rps(cell.concurrency, f64::from(ceilings.io_ms) / 1000.0),
        ),
        Workload::Noop | Workload::Mixed => return None,
    };
    Some(Efficiency {
        kind: kind.into(),
        ceiling_rps: ceiling,
        value: kernel::efficiency(rps, ceiling)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::cost::{Bound, BoundBy};
    use harness::loadgen::{LoadOutcome, LoadSummary};
    use harness::procs::{Counters, Memory};
    use harness::servers::{Registry, Template};

    fn cell(workload: Workload, workers: u16) -> Cell {
        kind_cell("prefork", workload, workers)
    }

    fn kind_cell(kind: &str, workload: Workload, workers: u16) -> Cell {
        let registry = Registry::with_templates(&[Template::parse("mine=./mine").unwrap()]);
        Cell {
            kind: registry.unwrap().get(kind).unwrap().clone(),
            workload,
            workers,
            concurrency: 100,
            offered: Offered::Closed,
            repeat: 1,
        }
    }

    fn cell_record_closed(cell: &Cell, measured: Measured, ceilings: &Ceilings) -> CellRecord {
        cell_record(cell, None, measured, ceilings)
    }

    fn measured(rps: f64) -> Measured {
        let memory = Memory {
            rss: 8,
            pss: 4,
            uss: 2,
        };
        Measured {
            idle: Some(memory),
            peak: Some(memory),
            samples: 3,
            processes: 2,
            server: Some(Counters {
                user_s: 1.2,
                system_s: 0.3,
                voluntary: 300,
                involuntary: 30,
            }),
            load_wall_s: 1.0,
            load: Some(LoadOutcome {
                summary: LoadSummary {
                    rps,
                    ok: 1000,
                    ..LoadSummary::default()
                },
                cpu_seconds: 0.5,
                records: None,
            }),
            exit_code: Some(0),
            ..Measured::default()
        }
    }

    fn ceilings() -> Ceilings {
        Ceilings {
            cpu_cost_s: [(Runtime::Rust, 0.002), (Runtime::Node, 0.004)]
                .into_iter()
                .collect(),
            cores: 2,
            loadgen_cores: 2,
            shared: true,
            io_ms: 20,
        }
    }

    #[test]
    fn a_clean_cell_is_ok_with_its_figures() {
        let record = cell_record_closed(&cell(Workload::Cpu, 4), measured(900.0), &ceilings());
        assert_eq!(record.status, CellStatus::Ok);
        // 4 workers on 2 cores use 2: 2 / 2 ms = 1000 req/s.
        let efficiency = record.efficiency.unwrap();
        assert_eq!(efficiency.ceiling_rps, 1000.0);
        assert!((efficiency.value - 0.9).abs() < 1e-9);
        let cpu = record.cpu.unwrap();
        assert_eq!((cpu.server_s, cpu.loadgen_s, cpu.wall_s), (1.5, 0.5, 1.0));
        assert_eq!(record.memory.unwrap().idle.pss_bytes, 4);
        // 1.5 CPU seconds over 1000 answers.
        let per = record.per_request.unwrap();
        assert!((per.cpu_us - 1500.0).abs() < 1e-9, "{per:?}");
        assert!((per.user_us - 1200.0).abs() < 1e-9 && (per.system_us - 300.0).abs() < 1e-9);
        assert_eq!(
            (per.voluntary_switches, per.involuntary_switches),
            (Some(0.3), Some(0.03))
        );
    }

    /// A record with the server and load generator at these cores.
    fn bound_of(kind: &str, workload: Workload, workers: u16, server: f64, loadgen: f64) -> Bound {
        let mut seen = measured(500.0);
        seen.server = Some(Counters {
            user_s: server,
            ..Counters::default()
        });
        if let Some(load) = seen.load.as_mut() {
            load.cpu_seconds = loadgen;
        }
        cell_record_closed(&kind_cell(kind, workload, workers), seen, &ceilings())
            .bound
            .unwrap()
    }

    #[test]
    fn a_server_elsewhere_is_never_called_cpu_bound_nor_sharing_cores() {
        let mut seen = measured(500.0);
        seen.reported = true;
        seen.server = Some(Counters {
            user_s: 1.9,
            ..Counters::default()
        });
        if let Some(load) = seen.load.as_mut() {
            load.cpu_seconds = 0.5;
        }
        let record = cell_record_closed(&cell(Workload::Cpu, 2), seen, &Ceilings::remote(2, 20));
        let bound = record.bound.unwrap();
        assert_eq!(bound.by, BoundBy::None, "{bound:?}");
        assert!(bound.evidence.contains("not measured"), "{bound:?}");
        assert!(record.efficiency.is_none(), "no kernel cost for it here");
        let per = record.per_request.unwrap();
        assert_eq!(
            (per.voluntary_switches, per.involuntary_switches),
            (None, None)
        );
        assert_eq!(record.memory.unwrap().idle.uss_bytes, None);
    }

    #[test]
    fn the_bound_is_the_resource_near_its_limit() {
        // 1.9 of 2 usable cores: the server.
        assert_eq!(
            bound_of("prefork", Workload::Cpu, 2, 1.9, 0.1).by,
            BoundBy::ServerCpu
        );
        // One worker can use one core, however many the machine has.
        assert_eq!(
            bound_of("prefork", Workload::Cpu, 1, 0.95, 0.1).by,
            BoundBy::ServerCpu
        );
        // node-single has no workers: one core, whatever --workers says.
        assert_eq!(
            bound_of("node-single", Workload::Cpu, 4, 0.95, 0.1).by,
            BoundBy::ServerCpu
        );
        // The load generator alone near the machine.
        assert_eq!(
            bound_of("prefork", Workload::Noop, 4, 0.2, 1.8).by,
            BoundBy::Loadgen
        );
        // Neither alone, both together: the usual case on 2 cores.
        let shared = bound_of("prefork", Workload::Noop, 4, 0.8, 1.0);
        assert_eq!(shared.by, BoundBy::SharedCores);
        assert_eq!(
            shared.evidence,
            "server 0.80 + load generator 1.00 of 2 cores"
        );
        assert_eq!(
            bound_of("prefork", Workload::Noop, 4, 0.3, 0.3).by,
            BoundBy::None
        );
    }

    #[test]
    fn failures_and_a_full_queue_come_before_any_core() {
        let mut seen = measured(500.0);
        if let Some(load) = seen.load.as_mut() {
            load.summary.non_2xx = 40;
            load.summary.status_codes.insert("503".into(), 40);
        }
        let record = cell_record_closed(&cell(Workload::Cpu, 2), seen, &ceilings());
        assert_eq!(record.bound.unwrap().by, BoundBy::Queue);
        let mut seen = measured(500.0);
        if let Some(load) = seen.load.as_mut() {
            load.summary.errors.insert("connection refused".into(), 20);
            load.summary
                .errors
                .insert("aborted due to deadline".into(), 900);
        }
        let record = cell_record_closed(&cell(Workload::Cpu, 2), seen, &ceilings());
        let bound = record.bound.unwrap();
        assert_eq!(bound.by, BoundBy::Errors);
        // Deadline cut-offs are not failures.
        assert_eq!(bound.evidence, "20 of 1020 requests failed");
    }

    #[test]
    fn an_open_loop_takes_its_share_of_the_closed_cells_throughput() {
        let closed = cell(Workload::Cpu, 2);
        let record = cell_record_closed(&closed, measured(900.0), &ceilings());
        let half = Cell {
            offered: Offered::Share(0.5),
            ..closed.clone()
        };
        let done = vec![(closed.clone(), record)];
        assert_eq!(offered_rps(&half, &done), Ok(Some(450.0)));
        assert_eq!(offered_rps(&closed, &done), Ok(None));
        let fixed = Cell {
            offered: Offered::Rate(300.0),
            ..closed.clone()
        };
        assert_eq!(offered_rps(&fixed, &[]), Ok(Some(300.0)));
        // Another repeat's closed cell is not this one's.
        let other = Cell {
            repeat: 2,
            ..half.clone()
        };
        assert!(offered_rps(&other, &done).is_err());
        // An open loop that got its rate was paced by it.
        let open = cell_record(&half, Some(450.0), measured(440.0), &ceilings());
        let bound = open.bound.unwrap();
        assert_eq!(bound.by, BoundBy::OfferedRate);
        assert_eq!(bound.evidence, "440 of the 450 req/s offered");
        assert_eq!(open.offered_rps, Some(450.0));
    }

    #[test]
    fn an_io_cell_near_littles_law_is_bound_by_its_concurrency() {
        // 100 connections / 20 ms = 5000 req/s; 4500 is 90% of it.
        let mut seen = measured(4500.0);
        seen.server = Some(Counters::default());
        let record = cell_record_closed(&cell(Workload::Io, 1), seen, &ceilings());
        assert_eq!(record.bound.unwrap().by, BoundBy::Concurrency);
    }

    #[test]
    fn each_runtime_is_held_to_its_own_kernel_cost() {
        let node = cell_record_closed(
            &kind_cell("node-cluster", Workload::Cpu, 2),
            measured(450.0),
            &ceilings(),
        );
        // 2 cores / 4 ms (Node's cost) = 500 req/s.
        assert_eq!(node.efficiency.unwrap().ceiling_rps, 500.0);
        // A template's runtime is unknown: no ceiling, rather than a guess.
        let mine = cell_record_closed(
            &kind_cell("mine", Workload::Cpu, 2),
            measured(450.0),
            &ceilings(),
        );
        assert!(mine.efficiency.is_none());
    }

    #[test]
    fn io_cells_are_held_to_littles_law_and_noop_to_nothing() {
        let io = cell_record_closed(&cell(Workload::Io, 1), measured(4000.0), &ceilings());
        // 100 connections / 20 ms = 5000 req/s.
        assert_eq!(io.efficiency.unwrap().ceiling_rps, 5000.0);
        let noop = cell_record_closed(&cell(Workload::Noop, 1), measured(4000.0), &ceilings());
        assert!(noop.efficiency.is_none());
    }

    #[test]
    fn a_bad_exit_or_a_leftover_process_fails_the_cell_and_keeps_the_stderr() {
        let mut bad_exit = measured(1.0);
        bad_exit.exit_code = Some(1);
        bad_exit.stderr_tail = vec!["boom".into()];
        let record = cell_record_closed(&cell(Workload::Noop, 1), bad_exit, &ceilings());
        assert_eq!(record.status, CellStatus::Failed);
        assert!(record.error.unwrap().contains("exited with 1"));
        assert_eq!(record.stderr_tail, ["boom"]);
        let mut leftover = measured(1.0);
        leftover.left_running = vec![42];
        let record = cell_record_closed(&cell(Workload::Noop, 1), leftover, &ceilings());
        assert!(record.error.unwrap().contains("[42]"));
    }
}
