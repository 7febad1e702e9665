//! `lab crash`: crash isolation under load, measured.
//!
//! For each (server kind, fault): start the server with `--allow-crash` and
//! a short `--worker-timeout-ms`; measure its capacity on the cpu workload
//! with a short unthrottled probe; hold a steady rate-limited load at a
//! share of it (oha `-q` with latency correction, every answered request
//! recorded); read `/stats` and inject one fault a few seconds in; watch
//! `/stats` for the replacement; keep the load on; then turn the records
//! into 100 ms windows and the figures (see [`report::FaultRecord`]).
//!
//! Time: oha's records are seconds since oha's start; the loadgen child
//! stamps `CLOCK_MONOTONIC` right before it starts oha, and the harness
//! stamps the fault and the `/stats` reads on the same clock, so all of
//! them share one axis (to within oha's setup time; see `loadgen`).
//!
//! - [`args`]: the command line, converted into [`Settings`].
//! - [`measure`]: one fault run, into working data ([`measure::Observed`]).
//! - [`figures`]: working data into the record (pure).
//! - [`report`]: `crash.json`, `crash.md`, the SVG charts.

pub mod args;
pub mod figures;
pub mod measure;
pub mod report;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use harness::capacity::Offered;
use harness::kernel;
use harness::record::CellStatus;
use harness::servers::ServerKind;
use harness::timeline::RecoveryRule;
use serde::{Deserialize, Serialize};
use service::contract::CrashMode;

pub use args::CrashArgs;

use crate::Error;
use crate::args::{ServerSettings, dedup};
use report::{CrashParams, CrashRun};

/// The width of a timeline window.
pub const WINDOW: Duration = Duration::from_millis(100);
/// When a window counts as back, and for how long it must stay back.
pub const RECOVERY: RecoveryRule = RecoveryRule {
    threshold: 0.9,
    sustain: 3,
};
/// The pre-fault mean starts this far into the load: oha's connections and
/// the servers' first requests are still settling before it.
pub const BASELINE_FROM_S: f64 = 0.5;

/// One fault to inject.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL of one worker process from outside.
    Kill,
    /// SIGKILL of the supervising process (prefork's master, Node's
    /// primary) from outside, while one worker is busy with a long request:
    /// do its workers outlive it?
    KillPrimary,
    /// `POST /crash?how=panic`.
    Panic,
    /// `POST /crash?how=abort`.
    Abort,
    /// `POST /crash?how=segv`.
    Segv,
    /// `POST /crash?how=exit`.
    Exit,
    /// `POST /crash?how=hang`.
    Hang,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Kill,
        Fault::KillPrimary,
        Fault::Panic,
        Fault::Abort,
        Fault::Segv,
        Fault::Exit,
        Fault::Hang,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillPrimary => "kill-primary",
            _ => self.crash_mode().map_or("?", CrashMode::name),
        }
    }

    /// The `/crash?how=` of this fault; `None` for a kill from outside.
    pub fn crash_mode(self) -> Option<CrashMode> {
        match self {
            Fault::Kill | Fault::KillPrimary => None,
            Fault::Panic => Some(CrashMode::Panic),
            Fault::Abort => Some(CrashMode::Abort),
            Fault::Segv => Some(CrashMode::Segv),
            Fault::Exit => Some(CrashMode::Exit),
            Fault::Hang => Some(CrashMode::Hang),
        }
    }

    /// Whether `kind` can take this fault. A kill needs worker processes
    /// that `/stats` names (a pool thread cannot be killed from outside),
    /// and so does killing the primary (with no workers, it is the whole
    /// server); `/crash` is tried on any kind that serves more than `/`.
    pub fn applies_to(self, kind: &ServerKind) -> bool {
        let kill = matches!(self, Fault::Kill | Fault::KillPrimary);
        !kind.noop_only && (!kill || (kind.contract && kind.worker_processes))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `lab crash`'s plain settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kinds: Vec<ServerKind>,
    /// The (kind, fault) runs, in order.
    pub pairs: Vec<(ServerKind, Fault)>,
    pub workers: u16,
    pub concurrency: u32,
    pub offered: Offered,
    pub probe: Duration,
    pub before: Duration,
    pub after: Duration,
    pub worker_timeout_ms: u64,
    pub cpu_iters: Option<u32>,
    pub servers: ServerSettings,
}

impl Settings {
    fn check(&self) -> Result<(), String> {
        if self.before < WINDOW * 2 + Duration::from_secs_f64(BASELINE_FROM_S)
            || self.after < WINDOW * 2
        {
            return Err(
                "--before must leave whole windows after the first 0.5 s, and --after at least 200ms"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The (kind, fault) pairs to run, in order, or why the flags make none.
/// A kind the user named must take at least one of the faults; a default
/// kind that takes none of them is left out.
fn pairs(
    kinds: &[ServerKind],
    faults: &[Fault],
    named: bool,
) -> Result<Vec<(ServerKind, Fault)>, String> {
    let mut pairs: Vec<(ServerKind, Fault)> = Vec::new();
    for kind in kinds {
        if kind.noop_only {
            return Err(format!(
                "--models {}: it has no /crash and no workers to kill",
                kind.name
            ));
        }
        let mine: Vec<Fault> = faults
            .iter()
            .copied()
            .filter(|f| f.applies_to(kind))
            .collect();
        if mine.is_empty() && !named {
            continue;
        }
        if mine.is_empty() {
            return Err(format!(
                "--faults: none of them applies to {} (only kinds with worker processes can be killed)",
                kind.name
            ));
        }
        for fault in mine {
            if !pairs
                .iter()
                .any(|(k, f)| k.name == kind.name && *f == fault)
            {
                pairs.push((kind.clone(), fault));
            }
        }
    }
    Ok(pairs)
}

/// Runs every pair, rewriting the files after each; prints the table and
/// the timelines at the end.
pub fn main(args: &CrashArgs, lab_exe: PathBuf) -> Result<CrashRun, Error> {
    let settings = args.settings().map_err(Error::BadInput)?;
    let session = args
        .output
        .session("crash", lab_exe, settings.servers.pinning.clone())?;
    let (servers, kinds) = settings.servers.prepare(&settings.kinds)?;
    let pairs: Vec<(ServerKind, Fault)> = settings
        .pairs
        .iter()
        .filter(|(k, _)| kinds.iter().any(|kept| kept.name == k.name))
        .cloned()
        .collect();
    let cpu_iters = settings
        .cpu_iters
        .unwrap_or_else(|| kernel::calibrate_iters(kernel::REQUEST_COST_S));
    let mut run = CrashRun {
        schema_version: report::SCHEMA_VERSION,
        meta: session.meta.clone(),
        params: CrashParams {
            models: kinds.iter().map(|k| k.name.clone()).collect(),
            faults: dedup(&pairs.iter().map(|&(_, f)| f).collect::<Vec<_>>()),
            workers: settings.workers,
            concurrency: settings.concurrency,
            load_share: match settings.offered {
                Offered::Share(share) => Some(share),
                Offered::Rate(_) => None,
            },
            fixed_rate_rps: match settings.offered {
                Offered::Rate(rate) => Some(rate),
                Offered::Share(_) => None,
            },
            probe_s: settings.probe.as_secs_f64(),
            before_s: settings.before.as_secs_f64(),
            after_s: settings.after.as_secs_f64(),
            window_ms: WINDOW.as_millis() as u64,
            worker_timeout_ms: settings.worker_timeout_ms,
            cpu_iters,
            recover_threshold: RECOVERY.threshold,
            recover_sustain_windows: RECOVERY.sustain,
            baseline_from_s: BASELINE_FROM_S,
            servers: servers.params(&kinds),
            pinning: settings.servers.pinning.clone(),
        },
        results: Vec::new(),
    };
    let setup = measure::Setup {
        session: &session,
        servers: &servers,
        settings: &settings,
        cpu_iters,
    };
    let write = |run: &CrashRun| {
        report::write_all(&session.dir, run).map_err(|source| Error::Output {
            path: session.dir.clone(),
            source,
        })
    };
    write(&run)?;
    let label = |(kind, fault): &(ServerKind, Fault)| format!("{} {fault}", kind.name);
    session.each(
        &pairs,
        label,
        |(kind, fault), progress| -> Result<bool, Error> {
            let Some(observed) = measure::fault(&setup, kind, *fault) else {
                return Ok(false);
            };
            let record = figures::fault_record(&kind.name, *fault, observed, &figures::RULES);
            progress.suspend(|| {
                if record.status == CellStatus::Ok {
                    tracing::info!(
                        "{} {fault}: {}  {}",
                        kind.name,
                        record.timeline,
                        report::summary_line(&record)
                    );
                } else {
                    tracing::warn!(
                        "{} {fault} failed: {}",
                        kind.name,
                        record.error.as_deref().unwrap_or("?")
                    );
                }
            });
            run.results.push(record);
            write(&run)?;
            Ok(true)
        },
    )?;
    session.finish(&mut run.meta);
    write(&run)?;
    println!("{}", report::render_markdown(&run));
    println!("results in {}", session.dir.display());
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: CrashArgs,
    }

    fn settings(line: &[&str]) -> Result<Settings, String> {
        let line = Line::try_parse_from(["crash"].iter().chain(line).copied()).unwrap();
        line.args.settings()
    }

    fn names(settings: &Settings) -> Vec<(String, Fault)> {
        settings
            .pairs
            .iter()
            .map(|(k, f)| (k.name.clone(), *f))
            .collect()
    }

    #[test]
    fn the_default_plan_is_every_fault_each_kind_can_take() {
        let pairs = names(&settings(&[]).unwrap());
        // prefork and node-cluster have worker processes (and a primary)
        // to kill; the others take the five /crash faults.
        assert_eq!(pairs.len(), 7 + 5 + 5 + 7 + 5);
        assert!(!pairs.contains(&("threadpool".into(), Fault::Kill)));
        assert!(!pairs.contains(&("node-single".into(), Fault::Kill)));
        assert!(pairs.contains(&("node-cluster".into(), Fault::Kill)));
    }

    #[test]
    fn impossible_plans_are_refused() {
        assert!(settings(&["--models", "bare"]).is_err());
        assert!(settings(&["--models", "threadpool", "--faults", "kill"]).is_err());
        assert!(settings(&["--before", "100ms"]).is_err());
        let mixed =
            settings(&["--models", "prefork,threadpool", "--faults", "kill,panic"]).unwrap();
        assert_eq!(
            names(&mixed),
            [
                ("prefork".into(), Fault::Kill),
                ("prefork".into(), Fault::Panic),
                ("threadpool".into(), Fault::Panic)
            ]
        );
    }

    #[test]
    fn a_default_kind_that_takes_none_of_the_faults_is_left_out() {
        let kills = names(&settings(&["--faults", "kill"]).unwrap());
        assert_eq!(
            kills,
            [
                ("prefork".into(), Fault::Kill),
                ("node-cluster".into(), Fault::Kill)
            ]
        );
    }

    #[test]
    fn a_foreign_server_takes_crash_requests_but_no_kill() {
        let foreign =
            settings(&["--server", "mine=./mine --port {port}", "--models", "mine"]).unwrap();
        let faults: Vec<Fault> = foreign.pairs.iter().map(|(_, f)| *f).collect();
        assert_eq!(faults, &Fault::ALL[2..]);
    }
}
