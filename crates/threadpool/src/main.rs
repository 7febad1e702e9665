use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Bad flags exit 2 from here, with clap's one-line message.
    let args = threadpool::Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match threadpool::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The whole cause chain on one line, e.g. "cannot listen on
            // 127.0.0.1:80: Permission denied (os error 13)".
            eprintln!("threadpool: {:#}", anyhow::Error::from(error));
            ExitCode::FAILURE
        }
    }
}
