//! `lab stream`: streams vs buffers, under backpressure from slow clients.
//!
//! K clients at once download N MiB each from `/stream` (each chunk made
//! when the connection takes the last) or from `/buffer` (the whole body
//! built first), each reading no faster than a fixed rate through a small
//! receive buffer. The server tree's peak PSS against K shows where the
//! unread bytes wait: in the server's memory, for as long as the client is
//! slow, or only in the socket's buffers (kernel memory, outside PSS).
//!
//! - [`args`]: the command line, converted into [`Settings`].
//! - [`measure`]: one cell, into working data ([`measure::Observed`]).
//! - [`figures`]: working data into the record (pure).
//! - [`report`]: `stream.json`, `stream.md`, `stream.svg`.

pub mod args;
pub mod figures;
pub mod measure;
pub mod report;

use std::fmt;
use std::path::PathBuf;

use clap::ValueEnum;
use harness::servers::ServerKind;
use serde::{Deserialize, Serialize};

pub use args::StreamArgs;

use crate::args::ServerSettings;
use crate::{Error, cells};
use report::{StreamParams, StreamRun};

/// How the body is sent.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/stream`: chunk by chunk, as the connection takes them.
    Stream,
    /// `/buffer`: built whole, then sent.
    Buffer,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Stream => "stream",
            Endpoint::Buffer => "buffer",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Cell {
    pub kind: ServerKind,
    pub endpoint: Endpoint,
    pub clients: usize,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} /{} x{}", self.kind.name, self.endpoint, self.clients)
    }
}

/// `lab stream`'s plain settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub kinds: Vec<ServerKind>,
    pub endpoints: Vec<Endpoint>,
    pub clients: Vec<usize>,
    pub workers: u16,
    /// MiB per download.
    pub mb: u32,
    /// Bytes per second each client reads at most.
    pub rate: u64,
    /// Each client's receive buffer, bytes.
    pub recv_buffer: usize,
    pub servers: ServerSettings,
}

impl Settings {
    /// Kind, then endpoint, then clients: a kind's rows side by side.
    pub fn cells(&self, kinds: &[ServerKind]) -> Vec<Cell> {
        let mut cells = Vec::new();
        for kind in kinds {
            for &endpoint in &self.endpoints {
                for &clients in &self.clients {
                    cells.push(Cell {
                        kind: kind.clone(),
                        endpoint,
                        clients,
                    });
                }
            }
        }
        cells
    }
}

/// Runs every cell, rewriting the files after each; prints the table at
/// the end.
pub fn main(args: &StreamArgs, lab_exe: PathBuf) -> Result<StreamRun, Error> {
    let settings = args.settings().map_err(Error::BadInput)?;
    let what = if settings.quick {
        "stream-quick"
    } else {
        "stream"
    };
    let session = args
        .output
        .session(what, lab_exe, settings.servers.pinning.clone())?;
    let (servers, kinds) = settings.servers.prepare(&settings.kinds)?;
    let cells = settings.cells(&kinds);
    let mut run = StreamRun {
        schema_version: report::SCHEMA_VERSION,
        meta: session.meta.clone(),
        params: StreamParams {
            quick: settings.quick,
            models: kinds.iter().map(|k| k.name.clone()).collect(),
            endpoints: settings.endpoints.clone(),
            clients: settings.clients.clone(),
            workers: settings.workers,
            mb: settings.mb,
            rate_bytes_per_s: settings.rate,
            recv_buffer_bytes: settings.recv_buffer,
            servers: servers.params(&kinds),
            pinning: settings.servers.pinning.clone(),
        },
        cells: Vec::new(),
    };
    let setup = measure::Setup {
        session: &session,
        servers: &servers,
        settings: &settings,
    };
    cells::each(
        &session,
        &mut run,
        &cells,
        ToString::to_string,
        report::write_all,
        |cell| {
            let observed = measure::cell(&setup, cell)?;
            Some(figures::cell_record(cell, settings.mb, observed))
        },
    )?;
    println!("{}", report::table(&run));
    println!("results in {}", session.dir.display());
    Ok(run)
}
