//! A server kind's [`Profile`]: the worker count the shared cases use, and
//! where the kind departs from the contract (documented deviations the
//! cases assert instead). The contract cases and the descriptor case use
//! it; `cases` re-exports it.

/// What a server kind does where it does not do what the contract says,
/// for the cases to assert instead. [`Profile::CONTRACT`] is the contract
/// itself, what the Rust servers do; a kind that departs from it (Node's
/// HTTP server decides some answers itself) sets the answer it really
/// gives. Each departure is a deviation its documentation states and
/// explains; none is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The `--workers` the cases start the server with and expect in its
    /// ready line and `/stats`: 2, or 1 for a kind that has only one.
    pub workers: usize,
    /// The answer to a request with 200 headers, over the contract's 64:
    /// the contract's `431`.
    pub too_many_headers: u16,
    /// The answer to a `GET` whose request target is 100 KiB long: within
    /// the size a request head may have, over the length hyper allows a
    /// URI (65,534 bytes), so the contract's `414`.
    pub long_uri: u16,
    /// What a client whose headers arrive too slowly gets before the
    /// connection closes: `None` (the contract), nothing; `Some(status)`,
    /// an answer with that status.
    pub slow_headers_answer: Option<u16>,
    /// The descriptors per process `descriptor_exhaustion` starts the server
    /// with: what the kind opens by itself, with room for a few dozen
    /// connections.
    pub nofile: u64,
    /// How often running out of descriptors is logged per episode.
    pub exhaustion_log: ExhaustionLog,
    /// Whether new connections are answered again once the connections
    /// that used up the descriptors close: the contract's `true`.
    pub recovers_from_exhaustion: bool,
}

/// How often a kind logs running out of descriptors per episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExhaustionLog {
    /// Exactly once when it starts, and once when it ends (the Rust
    /// servers, through `service::accept`).
    Once,
    /// At most once: Node handles `EMFILE` inside libuv and usually tells
    /// the script nothing (CONTRACT.md, "The Node kinds").
    AtMostOnce,
}

impl Profile {
    /// The contract as written.
    pub const CONTRACT: Profile = Profile {
        workers: 2,
        too_many_headers: 431,
        long_uri: 414,
        slow_headers_answer: None,
        // The Rust servers open about a dozen descriptors per process.
        nofile: 64,
        exhaustion_log: ExhaustionLog::Once,
        recovers_from_exhaustion: true,
    };

    /// `--workers` as the cases pass it.
    pub(crate) fn workers_flag(&self) -> String {
        self.workers.to_string()
    }
}
