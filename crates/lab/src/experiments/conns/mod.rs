//! `lab conns`: what an idle connection costs each model.
//!
//! The C10K question, measured: for each server kind, open idle keep-alive
//! connections (each after one request) in steps up to N, and at each step
//! read the server tree's PSS, the kernel's TCP memory beside it (socket
//! buffers are not in any process's PSS), and the latency of a light
//! request stream on fresh connections while all of them are held. A
//! straight line through (connections, PSS) gives the memory per
//! connection and the base; the record extrapolates both to 100,000
//! connections and says how far the machine really went, and why it
//! stopped if it stopped early.
//!
//! The connections are held by `lab hold` children
//! ([`harness::holder`]), spread over as many processes as the descriptor
//! limit needs and over as many loopback source addresses as the
//! ephemeral port range needs. The lab first raises its descriptor limit,
//! hard limit included where it may (`CAP_SYS_RESOURCE`), to the largest
//! step plus [`SERVER_RESERVE`]; the servers and the holders inherit it,
//! so a server process stops at that limit, and the record says so.
//!
//! - [`args`]: the command line, converted into [`Settings`].
//! - [`measure`]: one kind, step by step, into working data.
//! - [`figures`]: working data into the record, the fit included (pure).
//! - [`report`]: `conns.json`, `conns.md`, `conns.svg`.

pub mod args;
pub mod figures;
pub mod measure;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use harness::holder::{self, Caps};
use harness::servers::ServerKind;

pub use args::ConnsArgs;

use crate::args::ServerSettings;
use crate::{Error, cells};
use report::{ConnsParams, ConnsRun};

/// The scenario the fit is extrapolated to.
pub const EXTRAPOLATE_TO: usize = 100_000;

/// Descriptors a server needs besides one per connection: listeners,
/// epoll, pipes, its runtime's own (Node opens a few dozen).
pub const SERVER_RESERVE: u64 = 1024;

/// `lab conns`'s plain settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub kinds: Vec<ServerKind>,
    /// Connections held at each step, rising.
    pub steps: Vec<usize>,
    pub workers: u16,
    /// The light stream: requests per second, for how long, at each step.
    pub light_rate: f64,
    pub light_duration: Duration,
    /// Caps below the machine's on connections per holder process and per
    /// source address (`usize::MAX`: none), so tests can make them spread.
    pub lower_caps: Caps,
    pub servers: ServerSettings,
}

/// Runs every kind, rewriting the files after each; prints the table at
/// the end.
pub fn main(args: &ConnsArgs, lab_exe: PathBuf) -> Result<ConnsRun, Error> {
    let settings = args.settings().map_err(Error::BadInput)?;
    // The servers and holders started from here inherit the raised limit:
    // a one-process server needs a descriptor per connection, and some
    // for itself.
    let wanted = settings.steps.last().map_or(0, |&n| n as u64) + SERVER_RESERVE;
    let descriptors = holder::limit::raise(wanted)
        .map_err(|e| Error::BadInput(format!("cannot raise the descriptor limit: {e}")))?;
    if descriptors.limit < wanted {
        let why = match descriptors.hard {
            holder::HardLimit::Refused => {
                "raising the hard limit was refused (no CAP_SYS_RESOURCE)"
            }
            _ => "fs.nr_open caps it",
        };
        tracing::warn!(
            "descriptor limit {}, short of the {wanted} the largest step wants ({why}): a server \
             process stops at its limit; several holders will share the connections",
            descriptors.limit,
        );
    }
    let (caps, port_range) = holder::machine_caps(descriptors.limit, settings.lower_caps)
        .map_err(|e| Error::BadInput(e.to_string()))?;
    let what = if settings.quick {
        "conns-quick"
    } else {
        "conns"
    };
    let session = args
        .output
        .session(what, lab_exe, settings.servers.pinning.clone())?;
    let (servers, kinds) = settings.servers.prepare(&settings.kinds)?;
    let mut run = ConnsRun {
        schema_version: report::SCHEMA_VERSION,
        meta: session.meta.clone(),
        params: ConnsParams {
            quick: settings.quick,
            models: kinds.iter().map(|k| k.name.clone()).collect(),
            steps: settings.steps.clone(),
            workers: settings.workers,
            light_rate: settings.light_rate,
            light_duration_s: settings.light_duration.as_secs_f64(),
            descriptor_limit: descriptors.limit,
            descriptors: Some(descriptors),
            port_range: Some(port_range),
            caps: Some(caps),
            extrapolate_to: EXTRAPOLATE_TO,
            servers: servers.params(&kinds),
            pinning: settings.servers.pinning.clone(),
        },
        cells: Vec::new(),
    };
    let setup = measure::Setup {
        session: &session,
        servers: &servers,
        settings: &settings,
        caps,
    };
    cells::each(
        &session,
        &mut run,
        &kinds,
        |kind| kind.name.clone(),
        report::write_all,
        |kind| {
            let observed = measure::kind(&setup, kind)?;
            Some(figures::cell_record(&kind.name, observed))
        },
    )?;
    println!("{}", report::table(&run));
    println!("results in {}", session.dir.display());
    Ok(run)
}
