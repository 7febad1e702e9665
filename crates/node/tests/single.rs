//! node-single: one process, no workers. Everything it does, its event loop
//! does; a crash ends the server, as nothing supervises it.

mod common;

use std::time::Duration;

use common::SINGLE as BIN;
use testkit::{Server, describe};

#[test]
fn the_one_worker_is_the_process_itself() {
    let server = Server::start(BIN, &[]);
    assert_eq!(server.ready().workers, 1);
    for path in ["/", "/cpu?iters=1", "/io?ms=1", "/nowhere"] {
        assert_eq!(server.get(path).worker(), "main", "{path}");
    }
    let stats = server.stats();
    assert_eq!(stats.workers.len(), 1, "{stats:?}");
    let worker = &stats.workers[0];
    assert_eq!((worker.id, worker.pid), (0, server.pid()), "{stats:?}");
    assert_eq!(worker.requests, 5, "{stats:?}");
    assert!(worker.loop_lag_ms.is_some(), "{stats:?}");
    assert!(stats.main.is_none() && stats.balance.is_none(), "{stats:?}");
}

#[test]
fn more_than_one_worker_is_refused() {
    let output = std::process::Command::new(BIN)
        .args(["--workers", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--workers"), "{stderr}");
}

#[test]
fn a_crash_ends_the_server() {
    for (mode, how) in [
        ("panic", "exit code 1"),
        ("exit", "exit code 1"),
        ("abort", "signal 6"),
        ("segv", "signal 11"),
    ] {
        let mut server = Server::start(BIN, &["--allow-crash"]);
        assert!(server.crash(mode).is_err(), "{mode}");
        let status = server
            .wait_timeout(Duration::from_secs(5))
            .expect("the server is gone");
        assert_eq!(describe(status), how, "{mode}");
    }
}
