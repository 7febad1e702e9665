//! `lab ipc`: what it costs to move data from one worker to another.
//!
//! The seed's table says cluster IPC is slow (serialization) and worker
//! threads' is fast (shared memory). This experiment puts numbers on it,
//! and on where it stops holding: each transport of the `ipc` crate
//! carries payloads from 64 B to 16 MiB, in one run, between two threads,
//! two processes (the receiving one started by exec, `lab ipc-peer`,
//! never forked from this multi-threaded harness) and, where `node` is on
//! PATH, two Node threads or processes.
//!
//! **A message** is one round trip, identical for every transport: the
//! sender stamps a sequence number into the payload, hands it over, the
//! receiver reads one byte of every 4 KiB page and the last, and answers
//! with 16 bytes; the clock runs from before the send to the answer (see
//! the `ipc` crate). The record gives each transport's median and p99 per
//! message, and the payload over the median as GB/s.
//!
//! - [`args`]: the command line, converted into [`Settings`]; and the
//!   hidden `lab ipc-peer`.
//! - [`measure`]: one transport at every size, into working data.
//! - [`figures`]: working data into the record (pure).
//! - [`report`]: `ipc.json`, `ipc.md`, `ipc.svg`.

pub mod args;
pub mod figures;
pub mod measure;
pub mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use ipc::{Bounds, Family, PeerCommand, Transport};

pub use args::{IpcArgs, IpcPeerArgs};

use crate::{Error, cells};
use report::{IpcParams, IpcRun};

/// What one message is, as the records say it.
pub const MESSAGE: &str = "is one round trip: the sender stamps a sequence number into the \
    payload's first 8 bytes and hands the payload over; the receiver reads the first byte of \
    every 4 KiB page and the last byte (every page reached, no full scan), and answers with 16 \
    bytes (the sequence number it read and the sum of those bytes), which the sender checks. \
    The time of a message runs from before the send to the answer's arrival.";

/// `lab ipc`'s plain settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub transports: Vec<Transport>,
    /// Ascending.
    pub sizes: Vec<usize>,
    pub bounds: Bounds,
}

/// Runs every transport, rewriting the files after each; prints the
/// tables at the end.
pub fn main(args: &IpcArgs, lab_exe: PathBuf) -> Result<IpcRun, Error> {
    let settings = args.settings().map_err(Error::BadInput)?;
    let wants_node = settings
        .transports
        .iter()
        .any(|t| t.family() == Family::Node);
    let node_version = wants_node.then(harness::kernel::node_version).flatten();
    let mut skipped = Vec::new();
    let mut transports = settings.transports.clone();
    if wants_node && node_version.is_none() {
        let names: Vec<&str> = transports
            .iter()
            .filter(|t| t.family() == Family::Node)
            .map(|t| t.name())
            .collect();
        let line = format!("{}: `node` is not on PATH", names.join(", "));
        tracing::warn!("skipping {line}");
        skipped.push(line);
        transports.retain(|t| t.family() != Family::Node);
    }
    if transports.is_empty() {
        return Err(Error::BadInput(
            "none of the transports asked for can run here (see the line above)".into(),
        ));
    }
    let what = if settings.quick { "ipc-quick" } else { "ipc" };
    let session = args.output.session(what, lab_exe.clone(), None)?;
    let mut run = IpcRun {
        schema_version: report::SCHEMA_VERSION,
        meta: session.meta.clone(),
        params: IpcParams {
            quick: settings.quick,
            transports: transports.clone(),
            sizes: settings.sizes.clone(),
            warmup: settings.bounds.warmup,
            messages: settings.bounds.messages,
            duration_s: settings.bounds.duration.as_secs_f64(),
            message: MESSAGE.into(),
            node_version,
            skipped,
        },
        cells: Vec::new(),
    };
    let setup = measure::Setup {
        session: &session,
        settings: &settings,
        peer: PeerCommand {
            program: lab_exe,
            args: vec!["ipc-peer".into()],
        },
    };
    cells::each(
        &session,
        &mut run,
        &transports,
        ToString::to_string,
        report::write_all,
        |&transport| {
            let observed = measure::transport(&setup, transport)?;
            Some(figures::transport_record(transport, observed))
        },
    )?;
    println!("{}", report::tables(&run));
    println!("results in {}", session.dir.display());
    Ok(run)
}

/// `lab ipc-peer`: serves one process transport's receiving end until the
/// sender is done. Exit 0, or 1 with one line.
pub fn peer(args: &IpcPeerArgs) -> ExitCode {
    match ipc::peer::serve(args.transport, args.check, args.parent) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "lab ipc-peer {}: {}",
                args.transport,
                harness::record::chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}
