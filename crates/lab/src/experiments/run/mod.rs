//! `lab run`: the matrix. Every (server kind, workload, workers,
//! concurrency) cell: start the server, warm it up, load it with oha while
//! its processes are sampled, stop it, and record throughput, latency,
//! memory (PSS/USS/RSS), CPU and efficiency against the machine's limits.
//!
//! - [`args`]: the command line, converted into a [`plan::Plan`].
//! - [`plan`]: workloads, profiles, cells.
//! - [`measure`]: one cell, into working data.
//! - [`figures`]: working data into the published record (pure).
//! - [`report`]: `run.json`, `cells.csv`, `summary.md`, the charts, the
//!   terminal table.
//! - [`compare`]: `lab compare`, what changed between two runs.

pub mod args;
pub mod compare;
pub mod figures;
pub mod measure;
pub mod plan;
pub mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;

use harness::kernel;
use harness::record::{CellStatus, TableStyle};

pub use args::RunArgs;

use crate::Error;
use figures::Ceilings;
use plan::Workload;
use report::{CellRecord, Params, RunRecord};

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    pub record: RunRecord,
}

impl Outcome {
    pub fn failed_cells(&self) -> usize {
        self.record
            .cells
            .iter()
            .filter(|c| c.status == CellStatus::Failed)
            .count()
    }
}

/// Runs the whole matrix; prints the table to stdout at the end.
pub fn main(args: &RunArgs, lab_exe: PathBuf) -> Result<Outcome, Error> {
    let plan = args.plan().map_err(Error::BadInput)?;
    let session =
        args.output
            .session(plan.profile.name(), lab_exe, plan.servers.pinning.clone())?;
    let plan = match &plan.remote {
        Some(remote) => named_remote(plan.clone(), remote)?,
        None => plan,
    };
    let (servers, kinds) = plan.servers.prepare(&plan.kinds)?;
    let plan = plan::Plan { kinds, ..plan };

    // The cpu workload's size (calibrated in Rust), and its cost in each
    // runtime that serves it, timed in that runtime.
    let cpu_iters = plan
        .cpu_iters
        .unwrap_or_else(|| kernel::calibrate_iters(kernel::REQUEST_COST_S));
    let kernel_costs = if plan
        .workloads
        .iter()
        .any(|w| matches!(w, Workload::Cpu | Workload::Mixed))
    {
        measure::kernel_costs(&plan.kinds, cpu_iters)
    } else {
        BTreeMap::new()
    };
    let ceilings = if plan.remote.is_some() {
        Ceilings::remote(session.meta.machine.logical_cores, plan.io_ms)
    } else {
        Ceilings::new(
            &kernel_costs,
            session.meta.machine.logical_cores,
            plan.servers.pinning.as_ref(),
            plan.io_ms,
        )
    };
    let mut record = RunRecord {
        schema_version: report::SCHEMA_VERSION,
        meta: session.meta.clone(),
        params: Params {
            profile: plan.profile,
            models: plan.kinds.iter().map(|k| k.name.clone()).collect(),
            workloads: plan.workloads.clone(),
            workers: plan.workers.clone(),
            concurrency: plan.concurrency.clone(),
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            repeat: plan.repeat,
            cpu_iters,
            io_ms: plan.io_ms,
            mixed_cpu_percent: plan::MIXED_CPU_PERCENT,
            ready_timeout_s: plan.servers.ready_timeout.as_secs_f64(),
            grace_ms: measure::GRACE_MS,
            sample_interval_ms: measure::SAMPLE_INTERVAL.as_millis() as u64,
            servers: servers.params(&plan.kinds),
            pinning: plan.servers.pinning.clone(),
            url: plan.remote.as_ref().map(|r| r.url.clone()),
        },
        cpu_kernels: kernel_costs,
        cells: Vec::new(),
    };
    let setup = measure::Setup {
        session: &session,
        servers: &servers,
        duration: plan.duration,
        warmup: plan.warmup,
        cpu_iters,
        io_ms: plan.io_ms,
    };
    let write = |record: &RunRecord| {
        report::write_all(&session.dir, record).map_err(|source| Error::Output {
            path: session.dir.clone(),
            source,
        })
    };

    write(&record)?;
    // Each cell as it was run, for the open loops that take their rate
    // from their closed cell.
    let mut done = Vec::new();
    session.each(
        &plan.cells(),
        ToString::to_string,
        |cell, progress| -> Result<bool, Error> {
            let cell_record = match figures::offered_rps(cell, &done) {
                Ok(rate) => {
                    let Some(measured) = measure::cell(&setup, cell, rate) else {
                        return Ok(false);
                    };
                    figures::cell_record(cell, rate, measured, &ceilings)
                }
                Err(why) => figures::not_run(cell, &why),
            };
            progress.suspend(|| log_cell(&cell_record));
            done.push((cell.clone(), cell_record.clone()));
            record.cells.push(cell_record);
            write(&record)?;
            Ok(true)
        },
    )?;
    session.finish(&mut record.meta);
    write(&record)?;
    report::write_charts(&session.dir, &record).map_err(|source| Error::Output {
        path: session.dir.clone(),
        source,
    })?;
    println!("{}", report::render(&record.cells, TableStyle::Terminal));
    if plan.repeat > 1 {
        println!("over {} repeats:", plan.repeat);
        println!(
            "{}",
            report::render_spread(&record.cells, TableStyle::Terminal)
        );
    }
    println!("results in {}", session.dir.display());
    Ok(Outcome {
        dir: session.dir.clone(),
        record,
    })
}

/// The plan for a server at `remote`, its one kind named after what its
/// `/stats` says it is, at the worker count it has. One that does not
/// answer at all is bad input: nothing would be measured.
fn named_remote(plan: plan::Plan, remote: &plan::Remote) -> Result<plan::Plan, Error> {
    let (name, workers) = match measure::identify(remote.addr) {
        Ok(Some((model, workers))) => (model, workers),
        Ok(None) => {
            tracing::warn!(
                "{} has no contract /stats: its CPU and memory are not measured",
                remote.url
            );
            ("remote".to_owned(), 0)
        }
        Err(error) => {
            return Err(Error::BadInput(format!(
                "--url {}: {}",
                remote.url,
                harness::record::chain(&error)
            )));
        }
    };
    Ok(plan::Plan {
        kinds: vec![harness::servers::ServerKind::remote(name, remote.addr)],
        workers: vec![u16::try_from(workers).unwrap_or(u16::MAX)],
        ..plan
    })
}

fn log_cell(cell: &CellRecord) {
    match (&cell.status, &cell.load) {
        (CellStatus::Ok, Some(load)) => tracing::info!(
            model = %cell.model, workload = %cell.workload, workers = cell.workers,
            concurrency = cell.concurrency, rps = format!("{:.0}", load.rps), "cell done"
        ),
        _ => {
            // The server's last words usually say why; show the end of them
            // here too, not only in the files.
            let tail = cell.stderr_tail.len().saturating_sub(5);
            tracing::warn!(
                model = %cell.model, workload = %cell.workload, workers = cell.workers,
                concurrency = cell.concurrency, error = cell.error.as_deref().unwrap_or("?"),
                stderr_tail = cell.stderr_tail[tail..].join("\n"),
                "cell failed"
            )
        }
    }
}
