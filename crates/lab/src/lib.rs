//! `lab`: the harness that runs the server models under load and tabulates
//! what it measured.
//!
//! A run is a matrix of cells, (model, workload, workers, concurrency). For
//! each cell the harness starts the server on a free port, waits for the
//! contract's ready line, warms it up, loads it with oha for the cell's
//! duration while sampling the server's process tree every 100 ms, stops it
//! with SIGTERM and checks it exited 0 and left nothing running. Results are
//! written after every cell to `results/<run name>/`.
//!
//! The tour, in the order a run goes:
//!
//! - [`cli`]: `lab run`'s flags and the hidden `lab loadgen`.
//! - [`matrix`]: models, workloads, the quick and default profiles, cells.
//! - [`servers`]: finding (and, under cargo, building) the server binaries;
//!   the [`servers::Server`] guard that starts one, reads its ready line and
//!   stderr, stops it, and kills its tree if dropped.
//! - [`loadgen`]: oha, run as a library in a `lab loadgen` child process.
//!   The only module that knows oha's flags and JSON.
//! - [`procs`]: process trees, PSS/RSS/USS from `smaps_rollup`, CPU time,
//!   and the background [`procs::Sampler`].
//! - [`efficiency`]: each row's ceiling (cpu: cores / kernel cost; io:
//!   Little's law) and the in-process timing of the `/cpu` kernel.
//! - [`runner`]: one cell, then the whole run.
//! - [`report`]: the output types (`run.json`'s schema), `cells.csv`,
//!   `summary.md` and the terminal table.
//!
//! `lab crash` reuses the servers, the loadgen child and the guards, and
//! adds [`crash`]: one fault per (model, fault) under a steady load, per
//! 100 ms window, written to `crash.json`, `crash.md` and SVG charts.

pub mod cli;
pub mod crash;
pub mod efficiency;
pub mod loadgen;
pub mod matrix;
pub mod procs;
pub mod report;
pub mod runner;
pub mod servers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cli::RunArgs;
use crate::matrix::{Plan, Profile, Workload};
use crate::report::{KernelCost, Machine, Params, RunRecord};

/// What stops a run before or outside its cells. (A cell's own failure is
/// recorded in the cell and does not stop the run.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user asked for something impossible; the binary exits 2.
    #[error("{0}")]
    BadInput(String),
    #[error("cannot find lab's own executable")]
    OwnExe(#[source] std::io::Error),
    #[error("cannot write results to {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Loadgen(#[from] loadgen::LoadgenError),
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub record: RunRecord,
}

impl RunOutcome {
    pub fn failed_cells(&self) -> usize {
        self.record
            .cells
            .iter()
            .filter(|c| c.status == report::CellStatus::Failed)
            .count()
    }
}

/// `lab loadgen`.
pub fn loadgen(args: &cli::LoadgenArgs) -> Result<(), Error> {
    Ok(loadgen::run_in_process(args)?)
}

/// `lab crash`: every (model, fault) asked for. Prints the table and the
/// timelines to stdout at the end.
pub fn crash(args: &cli::CrashArgs) -> Result<crash::report::CrashRun, Error> {
    let pairs = crash::plan(args).map_err(Error::BadInput)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-crash", timestamp()));
    let dir = args.out.join(&name);
    if dir.exists() {
        return Err(Error::BadInput(format!(
            "{} already exists; choose another --name",
            dir.display()
        )));
    }
    if args.before < crash::WINDOW * 2 + Duration::from_secs_f64(crash::BASELINE_FROM_S)
        || args.after < crash::WINDOW * 2
    {
        return Err(Error::BadInput(
            "--before must leave whole windows after the first 0.5 s, and --after at least 200ms"
                .into(),
        ));
    }
    let interrupted = interrupt_flag();
    let models: Vec<matrix::Model> = pairs.iter().fold(Vec::new(), |mut all, &(m, _)| {
        if !all.contains(&m) {
            all.push(m);
        }
        all
    });
    let server_dir = match &args.servers.server_dir {
        Some(dir) => dir.clone(),
        None => {
            if let Err(e) = servers::build_with_cargo(&models) {
                tracing::warn!("{e}");
            }
            servers::own_dir().map_err(Error::OwnExe)?
        }
    };
    let cpu_iters = args
        .cpu_iters
        .unwrap_or_else(|| efficiency::calibrate_iters(0.0015));
    let run = crash::report::CrashRun {
        schema_version: crash::report::SCHEMA_VERSION,
        name: name.clone(),
        started_at: now_rfc3339(),
        complete: false,
        interrupted: false,
        git_commit: git_commit(),
        machine: machine(),
        params: crash::report::CrashParams {
            models,
            faults: pairs.iter().fold(Vec::new(), |mut all, &(_, f)| {
                if !all.contains(&f) {
                    all.push(f);
                }
                all
            }),
            workers: args.workers,
            concurrency: args.concurrency,
            load_share: args.rate.is_none().then_some(args.load),
            fixed_rate_rps: args.rate,
            probe_s: args.probe.as_secs_f64(),
            before_s: args.before.as_secs_f64(),
            after_s: args.after.as_secs_f64(),
            window_ms: crash::WINDOW.as_millis() as u64,
            worker_timeout_ms: args.worker_timeout_ms,
            cpu_iters,
            recover_threshold: crash::RECOVERY.threshold,
            recover_sustain_windows: crash::RECOVERY.sustain,
            baseline_from_s: crash::BASELINE_FROM_S,
            servers: report::ServerParams::new(&args.servers, server_dir.clone()),
        },
        results: Vec::new(),
    };
    let work_dir = std::env::temp_dir().join(format!("lab-crash-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir).map_err(|source| Error::Output {
        path: work_dir.clone(),
        source,
    })?;
    let ctx = crash::Context {
        args: args.clone(),
        cpu_iters,
        server_dir,
        lab_exe: std::env::current_exe().map_err(Error::OwnExe)?,
        work_dir: work_dir.clone(),
        interrupted,
    };
    let result = crash::run_all(&ctx, &pairs, run, &dir);
    let _ = std::fs::remove_dir_all(&work_dir);
    let run = result.map_err(|source| Error::Output {
        path: dir.clone(),
        source,
    })?;
    println!("{}", crash::report::render_markdown(&run));
    println!("results in {}", dir.display());
    Ok(run)
}

/// `lab run`: the whole matrix. Prints the table to stdout at the end.
pub fn run(args: &RunArgs) -> Result<RunOutcome, Error> {
    let plan = Plan::from_args(args);
    plan.check().map_err(Error::BadInput)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_run_name(plan.profile));
    let dir = args.out.join(&name);
    if dir.exists() {
        return Err(Error::BadInput(format!(
            "{} already exists; choose another --name",
            dir.display()
        )));
    }
    if plan.duration.is_zero() {
        return Err(Error::BadInput("--duration must be more than 0".into()));
    }
    let interrupted = interrupt_flag();

    // The servers: built by the cargo that runs us, unless told where they are.
    let mut build_errors = HashMap::new();
    let server_dir = match &args.servers.server_dir {
        Some(dir) => dir.clone(),
        None => {
            build_servers(&plan, &mut build_errors);
            servers::own_dir().map_err(Error::OwnExe)?
        }
    };
    for &model in &plan.models {
        if let Err(e) = servers::locate(&server_dir, model)
            && !build_errors.contains_key(&model)
        {
            tracing::warn!("{e}; its cells will fail");
        }
    }

    // The cpu workload's size and cost, timed in this process.
    let cpu_iters = args
        .cpu_iters
        .unwrap_or_else(|| efficiency::calibrate_iters(0.0015));
    let kernel = plan
        .workloads
        .iter()
        .any(|w| matches!(w, Workload::Cpu | Workload::Mixed))
        .then(|| {
            let runs: Vec<f64> = efficiency::time_kernel(cpu_iters, 25)
                .into_iter()
                .map(|s| s * 1000.0)
                .collect();
            KernelCost {
                iters: cpu_iters,
                median_ms: efficiency::median(&runs).unwrap_or(f64::NAN),
                runs_ms: runs,
            }
        });
    if let Some(k) = &kernel {
        tracing::info!(
            iters = k.iters,
            median_ms = format!("{:.3}", k.median_ms),
            "cpu kernel timed"
        );
    }

    let machine = machine();
    let record = RunRecord {
        schema_version: report::SCHEMA_VERSION,
        name: name.clone(),
        started_at: now_rfc3339(),
        complete: false,
        interrupted: false,
        git_commit: git_commit(),
        params: Params {
            profile: plan.profile,
            models: plan.models.clone(),
            workloads: plan.workloads.clone(),
            workers: plan.workers.clone(),
            concurrency: plan.concurrency.clone(),
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            cpu_iters,
            io_ms: plan.io_ms,
            mixed_cpu_percent: matrix::MIXED_CPU_PERCENT,
            ready_timeout_s: plan.servers.ready_timeout.as_secs_f64(),
            grace_ms: runner::GRACE_MS,
            sample_interval_ms: runner::SAMPLE_INTERVAL.as_millis() as u64,
            servers: report::ServerParams::new(&plan.servers, server_dir.clone()),
        },
        cpu_kernel: kernel.clone(),
        cells: Vec::new(),
        machine: machine.clone(),
    };

    let work_dir = std::env::temp_dir().join(format!("lab-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir).map_err(|source| Error::Output {
        path: work_dir.clone(),
        source,
    })?;
    let ctx = runner::Context {
        plan,
        cpu_iters,
        kernel,
        server_dir,
        build_errors,
        lab_exe: std::env::current_exe().map_err(Error::OwnExe)?,
        work_dir: work_dir.clone(),
        cores: machine.logical_cores,
        interrupted,
    };
    let result = runner::run_all(&ctx, record, &dir);
    // Scratch files only; losing them loses nothing measured.
    let _ = std::fs::remove_dir_all(&work_dir);
    let record = result.map_err(|source| Error::Output {
        path: dir.clone(),
        source,
    })?;
    println!("{}", report::render_terminal(&record.cells));
    println!("results in {}", dir.display());
    Ok(RunOutcome { dir, record })
}

/// Builds the plan's servers with cargo, if cargo runs us. If the combined
/// build fails, each model is built alone, so one broken crate does not
/// take the other model's cells down with it.
fn build_servers(plan: &Plan, errors: &mut HashMap<matrix::Model, String>) {
    match servers::build_with_cargo(&plan.models) {
        Ok(_) => {}
        Err(_) if plan.models.len() > 1 => {
            for &model in &plan.models {
                if let Err(e) = servers::build_with_cargo(&[model]) {
                    tracing::warn!("{e}");
                    errors.insert(model, format!("building {model} failed: {e}"));
                }
            }
        }
        Err(e) => {
            tracing::warn!("{e}");
            for &model in &plan.models {
                errors.insert(model, format!("building {model} failed: {e}"));
            }
        }
    }
}

/// Set on the first Ctrl-C. The runner checks it between steps; the guards
/// kill the children. A second Ctrl-C exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    // A tiny runtime of its own: the only portable, safe way to catch SIGINT
    // with the crates at hand, and it keeps signal code out of the runner.
    let spawned = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    tracing::warn!("interrupted: stopping after cleaning up this cell");
                    set.store(true, Ordering::Relaxed);
                }
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for Ctrl-C: {e}");
    }
    flag
}

/// Machine facts for `run.json`, from sysinfo.
pub fn machine() -> Machine {
    let mut system = sysinfo::System::new();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    system.refresh_memory();
    Machine {
        cpu_model: system
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_owned())
            .unwrap_or_default(),
        logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        physical_cores: system.physical_core_count(),
        memory_bytes: system.total_memory(),
        kernel: sysinfo::System::kernel_version(),
        os: sysinfo::System::long_os_version(),
    }
}

/// The commit of the checkout `lab` was built from (or the current folder),
/// with `+dirty` if tracked files have changed.
fn git_commit() -> Option<String> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = if repo.exists() {
        repo
    } else {
        PathBuf::from(".")
    };
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { head + "+dirty" } else { head })
}

/// Now as `20250101T093000`, for run folder names.
fn timestamp() -> String {
    now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect()
}

fn default_run_name(profile: Profile) -> String {
    let stamp = timestamp();
    let profile = match profile {
        Profile::Default => "default",
        Profile::Quick => "quick",
    };
    // 20250101T093000-quick
    format!("{stamp}-{profile}")
}

/// Now, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the epoch as UTC text (Howard Hinnant's civil-from-days).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn machine_facts_are_filled() {
        let m = machine();
        assert!(m.logical_cores >= 1);
        assert!(m.memory_bytes > 0);
    }
}
