//! From what a cell measured to what `run.json` says about it: a pure
//! function, so every figure's arithmetic is tested without a server.

use std::collections::BTreeMap;

use harness::kernel::{self, Runtime};
use harness::record::CellStatus;

use super::measure::Measured;
use super::plan::{Cell, Workload};
use super::report::{CellRecord, CpuRecord, Efficiency, MemoryRecord};

/// What the ceilings of a run rest on.
#[derive(Clone, Debug)]
pub struct Ceilings {
    /// One `/cpu` request's cost on one core, in seconds, in each runtime,
    /// measured in that runtime (when a cpu cell runs).
    pub cpu_cost_s: BTreeMap<Runtime, f64>,
    pub cores: usize,
    pub io_ms: u32,
}

/// The record of `cell`, from what it measured.
pub fn cell_record(cell: &Cell, measured: Measured, ceilings: &Ceilings) -> CellRecord {
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
    CellRecord {
        model: cell.kind.name.clone(),
        workload: cell.workload,
        workers: cell.workers,
        concurrency: cell.concurrency,
        status,
        error,
        stderr_tail,
        efficiency: load
            .as_ref()
            .and_then(|l| efficiency(cell, l.summary.rps, ceilings)),
        cpu: match (&load, measured.server_cpu_s) {
            (Some(l), Some(server_s)) => Some(CpuRecord {
                server_s,
                loadgen_s: l.cpu_seconds,
                wall_s: measured.load_wall_s,
            }),
            _ => None,
        },
        memory: match (measured.idle, measured.peak) {
            (Some(idle), Some(peak)) => Some(MemoryRecord {
                idle: idle.into(),
                peak: peak.into(),
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
    use harness::loadgen::{LoadOutcome, LoadSummary};
    use harness::procs::Memory;
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
        }
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
            server_cpu_s: Some(1.5),
            load_wall_s: 1.0,
            load: Some(LoadOutcome {
                summary: LoadSummary {
                    rps,
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
            io_ms: 20,
        }
    }

    #[test]
    fn a_clean_cell_is_ok_with_its_figures() {
        let record = cell_record(&cell(Workload::Cpu, 4), measured(900.0), &ceilings());
        assert_eq!(record.status, CellStatus::Ok);
        // 4 workers on 2 cores use 2: 2 / 2 ms = 1000 req/s.
        let efficiency = record.efficiency.unwrap();
        assert_eq!(efficiency.ceiling_rps, 1000.0);
        assert!((efficiency.value - 0.9).abs() < 1e-9);
        let cpu = record.cpu.unwrap();
        assert_eq!((cpu.server_s, cpu.loadgen_s, cpu.wall_s), (1.5, 0.5, 1.0));
        assert_eq!(record.memory.unwrap().idle.pss_bytes, 4);
    }

    #[test]
    fn each_runtime_is_held_to_its_own_kernel_cost() {
        let node = cell_record(
            &kind_cell("node-cluster", Workload::Cpu, 2),
            measured(450.0),
            &ceilings(),
        );
        // 2 cores / 4 ms (Node's cost) = 500 req/s.
        assert_eq!(node.efficiency.unwrap().ceiling_rps, 500.0);
        // A template's runtime is unknown: no ceiling, rather than a guess.
        let mine = cell_record(
            &kind_cell("mine", Workload::Cpu, 2),
            measured(450.0),
            &ceilings(),
        );
        assert!(mine.efficiency.is_none());
    }

    #[test]
    fn io_cells_are_held_to_littles_law_and_noop_to_nothing() {
        let io = cell_record(&cell(Workload::Io, 1), measured(4000.0), &ceilings());
        // 100 connections / 20 ms = 5000 req/s.
        assert_eq!(io.efficiency.unwrap().ceiling_rps, 5000.0);
        let noop = cell_record(&cell(Workload::Noop, 1), measured(4000.0), &ceilings());
        assert!(noop.efficiency.is_none());
    }

    #[test]
    fn a_bad_exit_or_a_leftover_process_fails_the_cell_and_keeps_the_stderr() {
        let mut bad_exit = measured(1.0);
        bad_exit.exit_code = Some(1);
        bad_exit.stderr_tail = vec!["boom".into()];
        let record = cell_record(&cell(Workload::Noop, 1), bad_exit, &ceilings());
        assert_eq!(record.status, CellStatus::Failed);
        assert!(record.error.unwrap().contains("exited with 1"));
        assert_eq!(record.stderr_tail, ["boom"]);
        let mut leftover = measured(1.0);
        leftover.left_running = vec![42];
        let record = cell_record(&cell(Workload::Noop, 1), leftover, &ceilings());
        assert!(record.error.unwrap().contains("[42]"));
    }
}
