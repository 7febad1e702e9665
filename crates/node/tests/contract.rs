//! The contract cases every server kind shares, run against each Node kind:
//! node-cluster under both of its `--balance` policies, node-threads, and
//! node-single (one worker: it has no others).
//!
//! Where Node's HTTP server answers differently from the contract and Node
//! offers no setting to change it, the cases assert what Node does: the
//! deviations in [`NODE`], each listed with its reason in CONTRACT.md's
//! "The Node kinds" section.

use testkit::cases::{ExhaustionLog, Profile};

/// Node's `http` module, set to the contract's limits where it has a knob.
const NODE: Profile = Profile {
    // `maxHeadersCount` (64) keeps the first 64 headers and silently drops
    // the rest: Node never refuses a request for its number of headers.
    too_many_headers: 200,
    // Node has no limit on the request target of its own, only
    // `maxHeaderSize` over the whole head (431 beyond it), which is the
    // Rust servers' head limit, far above hyper's 64 KiB URI limit.
    long_uri: 200,
    // `headersTimeout` answers `408 Request Timeout` before it closes.
    slow_headers_answer: Some(408),
    // Node opens a few dozen descriptors of its own at start (its libuv
    // loop, the inspector's and V8's threads, a worker's or the primary's
    // IPC), a worker thread more: this leaves room for some dozens of
    // connections in every kind.
    nofile: 128,
    // libuv takes EMFILE by itself and usually tells the script nothing
    // (CONTRACT.md, "The Node kinds"): at most one line, not exactly one.
    exhaustion_log: ExhaustionLog::AtMostOnce,
    ..Profile::CONTRACT
};

/// node-cluster under rr: a worker at its descriptor limit cannot receive
/// the connection the primary passes it (the kernel drops the descriptor in
/// transit), and the primary then waits for that worker's reply for good:
/// it keeps serving what it holds, but gets no new connection until it is
/// replaced.
const NODE_CLUSTER_RR: Profile = Profile {
    recovers_from_exhaustion: false,
    ..NODE
};

/// node-single is one process: its one worker is itself.
const NODE_SINGLE: Profile = Profile { workers: 1, ..NODE };

testkit::contract_tests!(
    mod cluster_rr,
    env!("CARGO_BIN_EXE_node-cluster"),
    flags: ["--balance", "rr"],
    profile: NODE_CLUSTER_RR
);
testkit::contract_tests!(
    mod cluster_none,
    env!("CARGO_BIN_EXE_node-cluster"),
    flags: ["--balance", "none"],
    profile: NODE
);
testkit::contract_tests!(
    mod threads,
    env!("CARGO_BIN_EXE_node-threads"),
    flags: [],
    profile: NODE
);
testkit::contract_tests!(
    mod single,
    env!("CARGO_BIN_EXE_node-single"),
    flags: [],
    profile: NODE_SINGLE
);
