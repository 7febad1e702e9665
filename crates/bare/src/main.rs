//! `bare`: the reference point for prefork's no-op throughput.
//!
//! A master binds, forks N workers that each run a current-thread tokio
//! runtime and answer every request with `ok\n` through hyper, and nothing
//! else: no routing, no stats slots, no ticker, no supervision. Measured next
//! to `prefork` in the same run, the gap is what the lab's own machinery
//! costs. It prints the contract's ready line (once forked; the socket is
//! already listening, so early connections queue) and stops on SIGTERM or
//! SIGINT, so the harness can drive it like any model. It serves only
//! `GET /`-style no-op load and is not a contract server. Its one piece of
//! the lab's code on the accept path is running out of descriptors
//! (`service::accept`): a ceiling that spins at 100% CPU at the descriptor
//! limit would not be one.

use std::convert::Infallible;
use std::process::ExitCode;

use clap::Parser;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, getppid};
use service::accept::{Exhaustion, is_exhaustion};

/// The flags it shares with the lab's servers (the rest are ignored).
#[derive(Parser, Debug)]
#[command(
    name = "bare",
    about = "A bare forked hyper hello-world: the ceiling prefork is measured against."
)]
struct Args {
    #[command(flatten)]
    common: service::cli::CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    service::cli::init_logging();
    let workers = args.common.workers();
    let listener = match service::bind(args.common.listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("bare: cannot listen on {}: {error}", args.common.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound socket has an address");
    let master = nix::unistd::getpid();

    // Blocked before forking, so a SIGTERM cannot slip in before sigwait.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().expect("block signals");

    let mut children = Vec::new();
    for _ in 0..workers {
        // SAFETY: the master is single-threaded here (no runtime, no threads).
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => worker(listener, master, &stop),
            ForkResult::Parent { child } => children.push(child),
        }
    }
    if service::announce_ready("bare", addr, workers).is_err() {
        return ExitCode::FAILURE;
    }
    let _ = stop.wait();
    for &child in &children {
        let _ = kill(child, Signal::SIGTERM);
    }
    for child in children {
        let _ = waitpid(child, None);
    }
    ExitCode::SUCCESS
}

fn worker(listener: std::net::TcpListener, master: Pid, stop: &SigSet) -> ! {
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != master {
        std::process::exit(1);
    }
    let _ = stop.thread_unblock();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal");
        // Out of descriptors, the loop backs off and logs once per episode
        // like every lab server (`lab conns` takes bare to that limit).
        let mut exhaustion = Exhaustion::default();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) if is_exhaustion(&error) => {
                        let delay = exhaustion.failed(&error);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => continue,
                            _ = term.recv() => break,
                        }
                    }
                    // A connection reset before it was accepted: the next
                    // one is unrelated.
                    Err(_) => continue,
                },
                _ = term.recv() => break,
            };
            exhaustion.accepted();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    std::process::exit(0)
}
