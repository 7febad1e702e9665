//! The Node peers: Node's own ways of using cores, speaking the lab's
//! contract so that the harness and the contract suite drive them exactly
//! like the Rust models.
//!
//! - `node-cluster`: `cluster.fork()` per worker slot, `--balance rr`
//!   (Node's default, the primary accepts and hands connections out) or
//!   `none` (the workers accept on one shared socket).
//! - `node-threads`: one event loop and a pool of `worker_threads` behind a
//!   bounded queue, the Node twin of `threadpool`.
//! - `node-single`: one process, no workers: how Node is usually run.
//!
//! Each binary is a tiny `main` that replaces itself (`exec`, so the pid the
//! harness started is the pid in the ready line) with `node js/main.js KIND
//! ARGS...`. Everything else is JavaScript from Node's standard library, in
//! [`JS_DIR`]: `contract.js` (flags, routing, validation, limits, graceful
//! shutdown: the one module every kind shares), `dataset.js`, `work.js`
//! (`/cpu` and the crash modes), and one module per kind.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// The folder holding the scripts, in the source tree the binary was built
/// from.
pub const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/js");

/// The entry script every kind runs.
pub const MAIN_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/js/main.js");

/// The three kinds, by binary name.
pub const KINDS: [&str; 3] = ["node-cluster", "node-threads", "node-single"];

/// Replaces this process with `node js/main.js KIND ARGS...`. Returns only
/// if that fails: one line on stderr, exit status 1.
pub fn exec_node(kind: &str) -> ExitCode {
    let error = Command::new("node")
        // For `--version`.
        .env("NODE_PEERS_VERSION", env!("CARGO_PKG_VERSION"))
        .arg(MAIN_JS)
        .arg(kind)
        .args(std::env::args_os().skip(1))
        .exec();
    if error.kind() == std::io::ErrorKind::NotFound {
        eprintln!(
            "{kind}: `node` is not on PATH: this server is Node.js (18 or newer) running {MAIN_JS}"
        );
    } else {
        eprintln!("{kind}: cannot run `node {MAIN_JS}`: {error}");
    }
    ExitCode::FAILURE
}
