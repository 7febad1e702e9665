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

/// rr: the master's own `accept` out of descriptors. Only the master's limit
/// is lowered (`prlimit(2)` on a running process; the worker keeps its own),
/// to the lowest descriptor number it has free, so its next `accept` fails
/// with EMFILE while the worker has room. The connection it holds is still
/// served, the master does not spin on the readable listener, logs the
/// episode once, and hands out the waiting connection once its limit is
/// raised again.
#[test]
fn rr_master_out_of_descriptors_backs_off_logs_once_and_recovers() {
    let server = Server::start(BIN, &["--workers", "1", "--balance", "rr"]);
    let master = server.pid();
    let mut kept = server.connect().unwrap();
    let health = |stream: &mut std::net::TcpStream| {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
            .and_then(|()| {
                let mut chunk = [0u8; 512];
                stream.read(&mut chunk).map(|n| chunk[..n].to_vec())
            })
    };
    assert!(health(&mut kept).unwrap().starts_with(b"HTTP/1.1 200"));

    let open_fds = || -> std::collections::HashSet<u64> {
        std::fs::read_dir(format!("/proc/{master}/fd"))
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    };
    // The master closes its copy of `kept` when the worker's acknowledgement
    // reaches its poll loop, which can be just after the answer arrived
    // here: a hole that opens after the limit is set would let the next
    // accept through (seen once). Read until two reads 100 ms apart agree
    // (5 s at most, a generous bound).
    let mut in_use = open_fds();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let again = open_fds();
        if again == in_use {
            break;
        }
        in_use = again;
    }
    let lowest_free = (0..).find(|fd| !in_use.contains(fd)).unwrap();
    // The soft limit only: a lowered hard limit could not be raised again.
    let prlimit = |new: Option<u64>| {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: both pointers are valid for the call; `old` is written.
        let rc = unsafe {
            libc::prlimit(
                master as libc::pid_t,
                libc::RLIMIT_NOFILE,
                std::ptr::null(),
                &mut old,
            )
        };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
        if let Some(soft) = new {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: old.rlim_max,
            };
            // SAFETY: `limit` is valid; nothing is written back.
            let rc = unsafe {
                libc::prlimit(
                    master as libc::pid_t,
                    libc::RLIMIT_NOFILE,
                    &limit,
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
        }
        old.rlim_cur
    };
    let original = prlimit(None);
    prlimit(Some(lowest_free));

    // A new connection waits in the backlog: the master cannot accept it.
    let mut waiting = server.connect().unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        health(&mut waiting).is_err(),
        "answered with the master out of descriptors; stderr:\n{}",
        server.stderr()
    );
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    assert!(health(&mut kept).unwrap().starts_with(b"HTTP/1.1 200"));
    let before = server.group_cpu();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.group_cpu().saturating_sub(before);
    assert!(
        used < Duration::from_millis(500),
        "the master used {used:?} of CPU in 1 s out of descriptors; stderr:\n{}",
        server.stderr()
    );
    let lines = |needle: &str| {
        server
            .stderr()
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    };
    assert_eq!(
        lines("Too many open files"),
        1,
        "one line per episode; stderr:\n{}",
        server.stderr()
    );

    prlimit(Some(original));
    let mut reply = Vec::new();
    let mut chunk = [0u8; 512];
    // The request was sent while it waited: its answer comes now.
    let n = waiting.read(&mut chunk).unwrap_or(0);
    reply.extend_from_slice(&chunk[..n]);
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "the waiting connection, once the master has descriptors again: {:?}; stderr:\n{}",
        String::from_utf8_lossy(&reply),
        server.stderr()
    );
    assert!(
        testkit::wait_until(Duration::from_secs(2), || lines(
            "descriptors available again"
        ) == 1),
        "the episode's end is logged; stderr:\n{}",
        server.stderr()
    );
}
