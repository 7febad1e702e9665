use std::process::ExitCode;

use clap::Parser;
use lab::cli::{Cli, Command};

fn main() -> ExitCode {
    // Bad flags: one line and exit 2. Help and version print as usual.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("bad arguments"));
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command {
        Command::Loadgen(args) => match lab::loadgen(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(e.into()),
        },
        Command::Crash(args) => match lab::crash(&args) {
            Err(lab::Error::BadInput(message)) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
            Err(e) => report(e.into()),
            Ok(run) if run.interrupted => ExitCode::from(130),
            Ok(run) => {
                let failed = run
                    .results
                    .iter()
                    .filter(|r| r.status == lab::report::CellStatus::Failed)
                    .count();
                if failed > 0 {
                    eprintln!("{failed} fault run(s) failed; see crash.md");
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
        },
        Command::Run(args) => match lab::run(&args) {
            Err(lab::Error::BadInput(message)) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
            Err(e) => report(e.into()),
            Ok(outcome) if outcome.record.interrupted => ExitCode::from(130),
            Ok(outcome) if outcome.failed_cells() > 0 => {
                eprintln!(
                    "{} cell(s) failed; see {}",
                    outcome.failed_cells(),
                    outcome.dir.display()
                );
                ExitCode::FAILURE
            }
            Ok(_) => ExitCode::SUCCESS,
        },
    }
}

fn report(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::FAILURE
}
