//! The `lab` command line: one subcommand per experiment, and the hidden
//! children `lab loadgen` and `lab hold`. Each experiment owns its flags; this module only lists
//! them and turns how each ended into an exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Error;
use crate::experiments::{balance, block, conns, crash, ipc, run, split, stream};

/// The harness for the lab's server models.
#[derive(Parser, Debug)]
#[command(name = "lab", version, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the experiment matrix and write results/<run name>/.
    Run(run::RunArgs),
    /// Compare two runs of `lab run`: every figure of every shared cell,
    /// with both runs' spreads; exit 1 with --fail-over when a figure got
    /// worse by more than the threshold.
    Compare(run::compare::CompareArgs),
    /// Crash isolation under load: hold a steady load, inject one fault per
    /// (model, fault), and write results/<run name>/crash.{json,md} and an
    /// SVG timeline per model.
    Crash(crash::CrashArgs),
    /// Load balancing: how each `--balance` policy spreads connections and
    /// requests over the workers, in four scenarios, and write
    /// results/<run name>/balance.{json,md} and an SVG per scenario.
    Balance(balance::BalanceArgs),
    /// Event-loop blocking: `/io` latency and each loop's lag while `/cpu`
    /// work arrives alongside at rising shares of the cores, and write
    /// results/<run name>/block.{json,md,svg}.
    Block(block::BlockArgs),
    /// Splitting one request across cores: the same `/cpu` work in 1 to P
    /// parts, a lone request and a saturated server, and write
    /// results/<run name>/split.{json,md,svg}.
    Split(split::SplitArgs),
    /// Streams vs buffers: slow clients download from `/stream` and
    /// `/buffer` while the server's memory is sampled, and write
    /// results/<run name>/stream.{json,md,svg}.
    Stream(stream::StreamArgs),
    /// Idle connections: each kind's memory as it holds rising numbers of
    /// idle keep-alive connections, and write
    /// results/<run name>/conns.{json,md,svg}.
    Conns(conns::ConnsArgs),
    /// Moving data between workers: time per message and throughput of
    /// each transport (threads, processes, Node) from 64 B to 16 MiB, and
    /// write results/<run name>/ipc.{json,md,svg}.
    ///
    /// A message is one round trip: the sender stamps a sequence number
    /// into the payload and hands it over; the receiver reads one byte of
    /// every 4 KiB page and the last, and answers with 16 bytes. Between
    /// threads: a Vec moved, a Vec copied, an Arc. Between processes (the
    /// receiver started by exec): pipe and UNIX socket, raw or serde
    /// (postcard); a shared mapping with an atomic hand-off; a memfd per
    /// message over SCM_RIGHTS. In Node, where `node` is on PATH:
    /// postMessage cloned or transferred, a SharedArrayBuffer, and
    /// process.send. Reported: median and p99 per message, and GB/s.
    Ipc(ipc::IpcArgs),
    /// Internal: the receiving end of one of `lab ipc`'s process
    /// transports, started by exec.
    #[command(hide = true)]
    IpcPeer(ipc::IpcPeerArgs),
    /// Internal: run the load generator (oha) in this process. The harness
    /// starts it as a child so the load generator is its own process.
    #[command(hide = true)]
    Loadgen(harness::loadgen::LoadgenArgs),
    /// Internal: hold idle connections as told on stdin (`lab conns`
    /// starts as many of these as the connections need); no flags.
    #[command(hide = true)]
    Hold,
}

/// Runs `cli.command` and says how it ended: 0, 1 (something failed),
/// 2 (bad input, one line), 130 (interrupted, finished cells kept).
pub fn run(cli: Cli) -> ExitCode {
    let lab_exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return report(Error::OwnExe(e)),
    };
    match cli.command {
        Command::Loadgen(args) => match harness::loadgen::run_in_process(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(e.into()),
        },
        Command::IpcPeer(args) => ipc::peer(&args),
        Command::Ipc(args) => match ipc::main(&args, lab_exe) {
            Err(e) => report(e),
            Ok(run) => ended(run.meta.interrupted, run.failed(), "transport(s)", "ipc.md"),
        },
        Command::Hold => match harness::holder::run_child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lab hold: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match run::main(&args, lab_exe) {
            Err(e) => report(e),
            Ok(outcome) => ended(
                outcome.record.meta.interrupted,
                outcome.failed_cells(),
                "cell(s)",
                &outcome.dir.join("summary.md").display().to_string(),
            ),
        },
        Command::Compare(args) => match run::compare::main(&args) {
            Err(e) => report(e),
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
        },
        Command::Balance(args) => match balance::main(&args, lab_exe) {
            Err(e) => report(e),
            Ok(run) => ended(run.meta.interrupted, run.failed(), "cell(s)", "balance.md"),
        },
        Command::Block(args) => match block::main(&args, lab_exe) {
            Err(e) => report(e),
            Ok(run) => ended(run.meta.interrupted, run.failed(), "cell(s)", "block.md"),
        },
        Command::Split(args) => match split::main(&args, lab_exe) {
            Err(e) => report(e),
            Ok(run) => ended(run.meta.interrupted, run.failed(), "cell(s)", "split.md"),
        },
        Command::Conns(args) => match conns::main(&args, lab_exe) {
            Err(e) => report(e),
            Ok(run) => ended(run.meta.interrupted, run.failed(), "kind(s)", "conns.md"),
        },
        Command::Stream(args) => match stream::main(&args, lab_exe) {
            Err(e) => report(e),
            Ok(run) => ended(run.meta.interrupted, run.failed(), "cell(s)", "stream.md"),
        },
        Command::Crash(args) => match crash::main(&args, lab_exe) {
            Err(e) => report(e),
            Ok(run) => ended(
                run.meta.interrupted,
                run.failed(),
                "fault run(s)",
                "crash.md",
            ),
        },
    }
}

/// How a finished experiment exits: 130 when it was interrupted (its
/// finished cells kept), 1 when any of its `what` failed (saying where to
/// read why), else 0.
fn ended(interrupted: bool, failed: usize, what: &str, file: &str) -> ExitCode {
    if interrupted {
        return ExitCode::from(130);
    }
    if failed > 0 {
        eprintln!("{failed} {what} failed; see {file}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn report(error: Error) -> ExitCode {
    if let Error::BadInput(message) = &error {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    eprintln!("error: {}", harness::record::chain(&error));
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_rejected_by_the_parser() {
        for bad in [
            &["lab", "run", "--workloads", "disk"][..],
            &["lab", "run", "--workers", "0"],
            &["lab", "run", "--duration", "soon"],
            &["lab", "run", "--name", "../x"],
            &["lab", "run", "--server", "no-name-here"],
            &["lab", "run", "--server", "x=run {nope}"],
            &["lab", "crash", "--faults", "explode"],
            &["lab", "crash", "--load", "1.5"],
            &["lab", "crash", "--rate", "0"],
            &["lab", "crash", "--before", "soon"],
            &["lab", "ipc", "--sizes", "1G"],
            &["lab", "ipc", "--transports", "tcp"],
            &["lab", "ipc-peer", "shm", "pages", "not-a-pid"],
            &["lab", "ipc-peer", "thread-move", "some", "1"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} was accepted");
        }
        let good = Cli::try_parse_from(["lab", "run", "--workers", "1,2", "--models", "prefork"]);
        let Ok(Cli {
            command: Command::Run(args),
        }) = good
        else {
            panic!("a good command line was rejected: {good:?}");
        };
        assert_eq!(args.workers, [1, 2]);
        assert_eq!(args.models, ["prefork"]);
    }
}
