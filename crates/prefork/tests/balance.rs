//! How connections reach the workers: the `connections` counter every
//! policy reports, and what `--balance rr` promises beyond the other
//! policies: hand-offs in turn, and no connection lost to a worker that
//! dies before taking it.

use std::io::{Read, Write};
use std::time::Duration;

use service::contract::Balance;
use testkit::Server;

const BIN: &str = env!("CARGO_BIN_EXE_prefork");

/// `connections` counts connections, not requests: three requests on one
/// keep-alive connection count once, three fresh connections three times.
#[test]
fn each_worker_counts_the_connections_it_took() {
    for balance in [Balance::Shared, Balance::Reuseport, Balance::Rr] {
        let server = Server::start(BIN, &["--workers", "1", "--balance", balance.name()]);
        let mut kept = server.connect().unwrap();
        for _ in 0..3 {
            kept.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
                .unwrap();
            let mut reply = Vec::new();
            let mut chunk = [0u8; 512];
            while !reply.ends_with(b"ok\n") {
                let n = kept.read(&mut chunk).unwrap();
                assert!(n > 0, "{balance}: closed early");
                reply.extend_from_slice(&chunk[..n]);
            }
        }
        for _ in 0..3 {
            assert_eq!(server.get("/").status, 200, "{balance}");
        }
        // The `/stats` request comes on a fifth connection.
        let worker = &server.stats().workers[0];
        assert_eq!(worker.connections, 5, "{balance}: {worker:?}");
        assert_eq!(worker.requests, 7, "{balance}: {worker:?}");
    }
}

/// The master hands each connection to the next worker in turn: with every
/// worker idle, one-request connections made one after another alternate.
#[test]
fn rr_hands_connections_to_the_workers_in_turn() {
    let server = Server::start(BIN, &["--workers", "2", "--balance", "rr"]);
    let served: Vec<String> = (0..6)
        .map(|_| server.get("/").worker().to_owned())
        .collect();
    assert_eq!(served, ["0", "1", "0", "1", "0", "1"]);
    let stats = server.stats();
    assert_eq!(stats.balance, Some(Balance::Rr));
    let connections: Vec<u64> = stats.workers.iter().map(|w| w.connections).collect();
    // The `/stats` connection went to worker 0, the next in turn.
    assert_eq!(connections, [4, 3], "{stats:?}");
}

/// The key promise: a connection handed to a worker that dies before
/// acknowledging it is taken back and served by another worker.
///
/// `--die-on-handoff` makes slot 0's first worker exit on receiving its
/// first connection, before acknowledging it. The first connection goes to
/// slot 0 (the first in turn). Had the master closed its copy when it sent
/// it, or dropped it with the dead worker, the client would get a close or
/// a reset instead of an answer from worker 1.
#[test]
fn rr_a_connection_whose_worker_died_before_taking_it_goes_to_another() {
    let server = Server::start(
        BIN,
        &["--workers", "2", "--balance", "rr", "--die-on-handoff"],
    );
    // No `/stats` first: it would be the first connection handed out.
    let response = server.get("/");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.worker(), "1", "{response:?}");
    server.assert_logged("--die-on-handoff", "worker 0 died holding it");
    server.assert_logged(
        "died before acknowledging a connection; handing it to another",
        "the master took it back",
    );
    let stats = server.stats_when(Duration::from_secs(5), "slot 0 replaced", |stats| {
        stats.workers[0].restarts == 1
    });
    assert_eq!(stats.workers[1].restarts, 0, "{stats:?}");
    // Worker 1 counted the connection it was handed second-hand.
    assert!(stats.workers[1].connections >= 1, "{stats:?}");
}

/// With no other worker, the connection waits for the dead one's
/// replacement, which answers it.
#[test]
fn rr_a_connection_whose_only_worker_died_waits_for_the_replacement() {
    let server = Server::start(
        BIN,
        &["--workers", "1", "--balance", "rr", "--die-on-handoff"],
    );
    let response = server.get("/");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.worker(), "0", "{response:?}");
    server.assert_logged("--die-on-handoff", "the first worker died holding it");
    let worker = &server.stats().workers[0];
    assert_eq!(worker.restarts, 1, "{worker:?}");
    // The replacement took the connection and the `/stats` one; the dead
    // worker counted none, since it died before serving.
    assert_eq!(worker.connections, 2, "{worker:?}");
}
