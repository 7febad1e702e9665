//! One transport at every size, into working data: each size's round
//! trips, in nanoseconds, as far as the transport got.

use harness::TrialError;
use harness::record::chain;
use harness::session::Session;
use ipc::{Check, Family, PeerCommand, Transport};

use super::Settings;
use crate::cells;

/// What every transport's measurement needs.
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub settings: &'a Settings,
    /// `lab ipc-peer`, for the process transports.
    pub peer: PeerCommand,
}

/// What one transport measured.
#[derive(Debug, Default)]
pub struct Observed {
    /// Each size done, ascending, with its round trips in nanoseconds.
    pub sizes: Vec<(usize, Vec<u64>)>,
    /// What stopped it, if anything did.
    pub error: Option<String>,
}

/// Measures `transport` at every size; `None` if interrupted meanwhile.
pub fn transport(setup: &Setup, transport: Transport) -> Option<Observed> {
    cells::observe(
        setup.session,
        |observed| fill(setup, transport, observed),
        |observed, why| observed.error = Some(why),
    )
}

fn fill(setup: &Setup, transport: Transport, observed: &mut Observed) -> Result<(), TrialError> {
    let failed = |e: ipc::IpcError| TrialError::Message(chain(&e));
    let settings = setup.settings;
    if transport.family() == Family::Node {
        // One node process runs every size, timing itself.
        let found =
            ipc::node::measure(transport, &settings.sizes, &settings.bounds).map_err(failed)?;
        observed.sizes = settings.sizes.iter().copied().zip(found).collect();
        return Ok(());
    }
    let max = settings
        .sizes
        .iter()
        .copied()
        .max()
        .unwrap_or(ipc::MIN_BYTES);
    // One peer for every size: starting it is not part of any message.
    let mut link = ipc::open(transport, max, Check::Pages, &setup.peer).map_err(failed)?;
    let mut seq = 0;
    for &bytes in &settings.sizes {
        if setup.session.is_interrupted() {
            return Ok(());
        }
        let ns = ipc::time(
            link.as_mut(),
            bytes,
            Check::Pages,
            &settings.bounds,
            &mut seq,
        )
        .map_err(failed)?;
        observed.sizes.push((bytes, ns));
    }
    link.close().map_err(failed)
}
