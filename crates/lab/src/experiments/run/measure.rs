//! Runs a plan: one cell after another, each recorded and written to disk as
//! soon as it finishes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::efficiency;
use crate::loadgen::{LoadSpec, Loadgen, LoadgenError};
use crate::matrix::{Cell, MIXED_CPU_PERCENT, Plan, Workload};
use crate::procs::{self, ProcEntry, Sampler};
use crate::report::{
    self, CellRecord, CellStatus, CpuRecord, Efficiency, KernelCost, MemoryRecord, RunRecord,
};
use crate::servers::{Server, ServerError};

/// The grace period servers get on SIGTERM (`--grace-ms`). Short, because
/// when the harness stops a server its load has already ended.
pub const GRACE_MS: u64 = 2_000;
/// How often the server's tree is sampled during the load.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Everything a cell needs besides itself.
#[derive(Debug)]
pub struct Context {
    pub plan: Plan,
    pub cpu_iters: u32,
    pub kernel: Option<KernelCost>,
    pub server_dir: PathBuf,
    /// Models whose build failed, with the reason: their cells fail.
    pub build_errors: HashMap<crate::matrix::Model, String>,
    /// The `lab` executable, started again as `lab loadgen`.
    pub lab_exe: PathBuf,
    /// Scratch space for the load generator's files.
    pub work_dir: PathBuf,
    pub cores: usize,
    pub interrupted: Arc<AtomicBool>,
}

/// How a cell ended, when it produced no record.
#[derive(Debug)]
pub enum CellEnd {
    Recorded(Box<CellRecord>),
    Interrupted,
}

/// Runs every cell, rewriting the output files after each one. Returns the
/// record as it stands when the run ended (complete or interrupted).
pub fn run_all(
    ctx: &Context,
    mut record: RunRecord,
    out_dir: &Path,
) -> Result<RunRecord, std::io::Error> {
    let cells = ctx.plan.cells();
    let progress = ProgressBar::new(cells.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    report::write_all(out_dir, &record)?;
    for cell in cells {
        if ctx.interrupted.load(Ordering::Relaxed) {
            record.interrupted = true;
            break;
        }
        progress.set_message(cell.to_string());
        match run_cell(ctx, cell) {
            CellEnd::Recorded(cell_record) => {
                progress.suspend(|| log_cell(&cell_record));
                record.cells.push(*cell_record);
                report::write_all(out_dir, &record)?;
            }
            CellEnd::Interrupted => {
                record.interrupted = true;
                break;
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    record.complete = !record.interrupted;
    report::write_all(out_dir, &record)?;
    Ok(record)
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

/// Formats an error with its causes, `outer: inner: innermost`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a cell stopped early.
enum Failure {
    Server(ServerError),
    Loadgen(LoadgenError),
    Message(String),
}

impl From<ServerError> for Failure {
    fn from(e: ServerError) -> Failure {
        Failure::Server(e)
    }
}

impl From<LoadgenError> for Failure {
    fn from(e: LoadgenError) -> Failure {
        Failure::Loadgen(e)
    }
}

impl Failure {
    fn text(&self) -> String {
        match self {
            Failure::Server(e) => chain(e),
            Failure::Loadgen(e) => chain(e),
            Failure::Message(m) => m.clone(),
        }
    }
}

/// The URLs a workload requests.
pub fn urls(workload: Workload, addr: SocketAddr, cpu_iters: u32, io_ms: u32) -> Vec<String> {
    let cpu = format!("http://{addr}/cpu?iters={cpu_iters}");
    let io = format!("http://{addr}/io?ms={io_ms}");
    match workload {
        Workload::Noop => vec![format!("http://{addr}/")],
        Workload::Cpu => vec![cpu],
        Workload::Io => vec![io],
        // oha picks one line of the URL file at random for each request, so
        // 1 cpu line in 10 gives 10% cpu requests.
        Workload::Mixed => {
            let cpu_lines = (MIXED_CPU_PERCENT / 10) as usize;
            let mut lines = vec![cpu; cpu_lines];
            lines.extend(vec![io; 10 - cpu_lines]);
            lines
        }
    }
}

fn empty_record(cell: Cell) -> CellRecord {
    CellRecord {
        model: cell.model,
        workload: cell.workload,
        workers: cell.workers,
        concurrency: cell.concurrency,
        status: CellStatus::Failed,
        error: None,
        stderr_tail: Vec::new(),
        load: None,
        memory: None,
        cpu: None,
        efficiency: None,
        exit_code: None,
        left_running: Vec::new(),
        wall_s: 0.0,
    }
}

/// Runs one cell. A failure becomes a failed record; only an interruption
/// produces no record, since its numbers would be cut short.
pub fn run_cell(ctx: &Context, cell: Cell) -> CellEnd {
    let started = Instant::now();
    let mut record = empty_record(cell);
    let mut stderr = crate::servers::StderrTail::default();
    let result = measure(ctx, cell, &mut record, &mut stderr);
    record.wall_s = started.elapsed().as_secs_f64();
    if ctx.interrupted.load(Ordering::Relaxed) {
        return CellEnd::Interrupted;
    }
    let mut problems = Vec::new();
    if let Err(failure) = result {
        problems.push(failure.text());
    }
    if let Some(code) = record.exit_code.filter(|&c| c != 0) {
        problems.push(format!(
            "the server exited with {code} after SIGTERM, not 0"
        ));
    }
    if !record.left_running.is_empty() {
        problems.push(format!(
            "server processes left running after it exited: {:?}",
            record.left_running
        ));
    }
    if problems.is_empty() {
        record.status = CellStatus::Ok;
    } else {
        record.status = CellStatus::Failed;
        record.error = Some(problems.join("; "));
        if record.stderr_tail.is_empty() {
            record.stderr_tail = stderr.lines();
        }
    }
    CellEnd::Recorded(Box::new(record))
}

/// The body of a cell; fills `record` as far as it gets.
fn measure(
    ctx: &Context,
    cell: Cell,
    record: &mut CellRecord,
    stderr_out: &mut crate::servers::StderrTail,
) -> Result<(), Failure> {
    if let Some(error) = ctx.build_errors.get(&cell.model) {
        return Err(Failure::Message(error.clone()));
    }
    let exe = crate::servers::locate(&ctx.server_dir, cell.model)?;
    let plan = &ctx.plan;
    let flags = cell.model.flags(&plan.servers);
    let mut server = match Server::start_with(
        &exe,
        cell.workers,
        GRACE_MS,
        plan.servers.ready_timeout,
        &flags,
        &[],
    ) {
        Ok(server) => server,
        Err(failure) => {
            record.stderr_tail = failure.stderr;
            return Err(failure.error.into());
        }
    };
    *stderr_out = server.stderr.clone();
    let root = server.pid();
    tracing::debug!(%cell, addr = %server.ready.addr, pid = root, "server ready");

    // Idle memory: after the ready line every worker has started; a short
    // pause lets the last one finish initialising before the snapshot.
    std::thread::sleep(Duration::from_millis(100));
    let idle = procs::sample_tree(root);
    let sampler = Sampler::start(root, SAMPLE_INTERVAL);

    let spec = LoadSpec::new(
        urls(cell.workload, server.ready.addr, ctx.cpu_iters, plan.io_ms),
        cell.concurrency,
        plan.duration,
    );
    if !plan.warmup.is_zero() {
        let warmup = LoadSpec {
            duration: plan.warmup,
            ..spec.clone()
        };
        Loadgen::spawn(&ctx.lab_exe, &warmup, &ctx.work_dir, "warmup")?.wait(&ctx.interrupted)?;
        server.check_alive()?;
    }

    let cpu_before = procs::sample_tree(root).cpu_seconds;
    let load_started = Instant::now();
    let outcome =
        Loadgen::spawn(&ctx.lab_exe, &spec, &ctx.work_dir, "load")?.wait(&ctx.interrupted)?;
    let wall_s = load_started.elapsed().as_secs_f64();
    let after = procs::sample_tree(root);
    server.check_alive()?;
    let sampled = sampler.stop();

    // A worker replaced mid-load takes its CPU time with it; never report a
    // negative figure.
    record.cpu = Some(CpuRecord {
        server_s: (after.cpu_seconds - cpu_before).max(0.0),
        loadgen_s: outcome.cpu_seconds,
        wall_s,
    });
    record.memory = Some(MemoryRecord {
        idle: idle.memory.into(),
        peak: sampled.peak.max_each(after.memory).into(),
        samples: sampled.samples + 1,
        processes: sampled.max_processes.max(after.processes.len()),
    });
    record.efficiency = efficiency_for(ctx, cell, outcome.summary.rps);
    record.load = Some(outcome.summary);

    // Every process ever seen in the tree must be gone after the stop.
    let mut tree: Vec<ProcEntry> = idle.processes;
    for p in sampled.seen.into_iter().chain(after.processes) {
        if !tree.contains(&p) {
            tree.push(p);
        }
    }
    let stop_timeout = Duration::from_millis(GRACE_MS) + Duration::from_secs(3);
    let (code, left) = server.stop(&tree, stop_timeout)?;
    record.exit_code = code;
    record.left_running = left.iter().map(|p| p.pid).collect();
    if code.is_none() {
        return Err(Failure::Message(
            "the server was killed by a signal after SIGTERM".into(),
        ));
    }
    Ok(())
}

fn efficiency_for(ctx: &Context, cell: Cell, rps: f64) -> Option<Efficiency> {
    let (kind, ceiling) = match cell.workload {
        Workload::Cpu => {
            let cost = ctx.kernel.as_ref()?.median_ms / 1000.0;
            (
                "cpu",
                efficiency::cpu_ceiling_rps(cell.workers, ctx.cores, cost),
            )
        }
        Workload::Io => (
            "io",
            efficiency::io_ceiling_rps(cell.concurrency, f64::from(ctx.plan.io_ms) / 1000.0),
        ),
        Workload::Noop | Workload::Mixed => return None,
    };
    Some(Efficiency {
        kind: kind.into(),
        ceiling_rps: ceiling,
        value: efficiency::efficiency(rps, ceiling)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_is_one_cpu_url_in_ten() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let lines = urls(Workload::Mixed, addr, 1000, 20);
        assert_eq!(lines.len(), 10);
        assert_eq!(lines.iter().filter(|l| l.contains("/cpu?")).count(), 1);
        assert_eq!(
            urls(Workload::Io, addr, 1000, 20),
            ["http://127.0.0.1:9/io?ms=20"]
        );
    }
}
