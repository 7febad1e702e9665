//! What makes node-cluster Node's cluster: a primary that respawns dead
//! workers and kills hung ones, `/stats` gathered over IPC, the scheduling
//! policies Node has (and the one it lacks), and what happens to the
//! workers when the primary is killed. The checks it shares with prefork's
//! master are `testkit::supervision`'s.

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use common::{CLUSTER as BIN, proc_stat};
use service::contract::{Balance, SlotState};
use testkit::supervision::{
    self, Supervisor, kill_supervisor, kill_worker, one_slot_replaced, pids,
};
use testkit::{Server, alive, crash_flags, wait_until};

/// Node's cluster primary, as the shared supervision cases see it.
const PRIMARY: Supervisor = Supervisor {
    // An uncaught exception: Node prints it and exits with status 1.
    panic_exit: "exited with status 1",
    hang_logged: "hung: no heartbeat",
    // A replacement is a fresh Node process, which takes a while to start.
    replace_within: Duration::from_secs(10),
};

#[test]
fn a_killed_worker_is_respawned_in_its_slot() {
    for balance in ["rr", "none"] {
        supervision::a_killed_worker_is_replaced_in_its_slot(BIN, &["--balance", balance], PRIMARY);
    }
}

/// With every worker of the socket gone, cluster closes the socket; the
/// replacement listens again, on the same port (the primary resolved port
/// 0 to a fixed port before forking).
#[test]
fn the_only_workers_replacement_serves_on_the_same_port() {
    for balance in ["rr", "none"] {
        let server = Server::start(BIN, &["--workers", "1", "--balance", balance]);
        let before = pids(&server);
        kill_worker(before[0]);
        one_slot_replaced(&server, &before, PRIMARY.replace_within);
        assert_eq!(server.get("/").status, 200, "{balance}");
    }
}

/// Waits until `pid` has burnt `ms` more CPU than `from` (clock ticks).
fn spins(pid: u32, from: u64, ms: u64) -> bool {
    wait_until(Duration::from_secs(10), || {
        proc_stat(pid).is_some_and(|(_, ticks)| ticks >= from + ms / 10)
    })
}

/// Node's round robin hands a connection to a worker and waits for the
/// worker to acknowledge it before closing its own copy. A hung worker
/// never does, so the connection handed to it is never answered, and when
/// the primary kills the worker nothing closes it either: the primary keeps
/// it open, waiting for an answer from a dead process. The client waits
/// for its own timeout.
#[test]
fn rr_never_answers_nor_closes_a_connection_handed_to_a_hung_worker() {
    let server = Server::start(
        BIN,
        &[&crash_flags("1", "300")[..], &["--balance", "rr"]].concat(),
    );
    let before = pids(&server);
    let ticks = proc_stat(before[0]).unwrap().1;
    let _hung = server.crash_in_background("hang");
    assert!(spins(before[0], ticks, 100), "the worker never hung");
    // The one worker is free again (it acknowledged the hang's connection
    // before it read the request), so the primary hands it this one.
    let mut handed = server.connect().unwrap();
    handed
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    one_slot_replaced(&server, &before, PRIMARY.replace_within);
    assert_eq!(server.get("/").status, 200, "the replacement serves");

    handed
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut bytes = Vec::new();
    let outcome = handed.read_to_end(&mut bytes);
    assert!(
        matches!(&outcome, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "still open and unanswered, got {outcome:?} {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(bytes.is_empty());
}

#[test]
fn each_crash_ends_only_the_worker_that_served_it() {
    supervision::each_crash_ends_only_the_worker_that_served_it(BIN, &[], PRIMARY);
}

/// `/stats` is answered by one worker for all: the primary asks every
/// worker for its counters over IPC. Each worker is a child of the primary
/// with its own loop lag.
#[test]
fn stats_are_gathered_from_every_worker_over_ipc() {
    for (flag, balance) in [("rr", Balance::Rr), ("none", Balance::Shared)] {
        let server = Server::start(BIN, &["--workers", "3", "--balance", flag]);
        let sent = 30;
        for _ in 0..sent {
            assert_eq!(server.get("/cpu?iters=1").status, 200);
        }
        let stats = server.stats();
        assert_eq!(stats.model, "node-cluster");
        assert_eq!(stats.balance, Some(balance), "{stats:?}");
        assert_eq!(stats.workers.len(), 3, "{stats:?}");
        let served: u64 = stats.workers.iter().map(|w| w.requests).sum();
        assert_eq!(
            served,
            sent + 1,
            "every request once, this one too: {stats:?}"
        );
        assert_eq!(stats.in_flight(), 0, "{stats:?}");
        let distinct: HashSet<u32> = stats.workers.iter().map(|w| w.pid).collect();
        assert_eq!(distinct.len(), 3, "{stats:?}");
        for worker in &stats.workers {
            assert_eq!(worker.state, SlotState::Ready, "{stats:?}");
            assert!(worker.loop_lag_ms.is_some(), "{stats:?}");
            assert_eq!(worker.tid, None, "{stats:?}");
            let (ppid, _) = proc_stat(worker.pid).expect("the worker runs");
            assert_eq!(ppid, server.pid(), "a child of the primary: {stats:?}");
        }
        assert!(stats.main.is_none() && stats.queue.is_none(), "{stats:?}");
    }
}

/// Round robin hands connections out in turn, so every worker serves.
#[test]
fn rr_hands_connections_to_every_worker() {
    let server = Server::start(BIN, &["--workers", "2", "--balance", "rr"]);
    let served: HashSet<String> = (0..20)
        .map(|_| server.get("/").worker().to_owned())
        .collect();
    assert_eq!(served, HashSet::from(["0".to_owned(), "1".to_owned()]));
}

#[test]
fn policies_node_lacks_are_refused_with_one_line() {
    for (flags, mentions) in [
        (&["--balance", "reuseport"][..], "reuseport"),
        (&["--dataset-load", "before-fork"], "before-fork"),
        (&["--balance", "bogus"], "--balance"),
    ] {
        let output = std::process::Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: {stderr}");
        assert!(stderr.contains(mentions), "{flags:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{flags:?}");
    }
}

/// The orphan lesson. A worker whose event loop is free notices that its
/// IPC channel to the primary closed and exits (the cluster module does
/// that). A worker stuck in a busy loop never runs that code, and Node has
/// no parent-death signal: it outlives the primary, still burning its core,
/// until something kills it (here, the test's process-group guard).
#[test]
fn a_killed_primary_takes_its_idle_workers_but_not_a_hung_one() {
    let mut server = Server::start(BIN, &crash_flags("2", "0"));
    let workers = pids(&server);
    let _hung = server.crash_in_background("hang");
    // Wait until one worker spins (its CPU time climbs by 300 ms or more).
    let start: Vec<u64> = workers
        .iter()
        .map(|&pid| proc_stat(pid).unwrap().1)
        .collect();
    let mut spinning = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            spinning = (0..2)
                .find(|&i| proc_stat(workers[i]).is_some_and(|(_, ticks)| ticks >= start[i] + 30));
            spinning.is_some()
        }),
        "no worker took the hang; stderr:\n{}",
        server.stderr()
    );
    let (hung, idle) = match spinning.unwrap() {
        0 => (workers[0], workers[1]),
        _ => (workers[1], workers[0]),
    };

    kill_supervisor(&mut server, Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(5), || !alive(idle)),
        "the idle worker outlived its primary"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(hung), "the hung worker is still running");
    let (ppid, _) = proc_stat(hung).unwrap();
    assert_ne!(ppid, server.pid(), "reparented: its primary is gone");
    assert_eq!(
        server.group_members(),
        vec![hung],
        "only the hung worker is left in the group"
    );
}

/// Each worker reports the connections its server took (its `connection`
/// events), not its requests, under both policies.
#[test]
fn each_worker_counts_the_connections_it_took() {
    for balance in ["rr", "none"] {
        let server = Server::start(BIN, &["--workers", "1", "--balance", balance]);
        for _ in 0..3 {
            assert_eq!(server.get("/").status, 200, "{balance}");
        }
        // The `/stats` request is a fourth connection; a keep-alive one is
        // counted once whatever it carries.
        let mut kept = server.connect().unwrap();
        for _ in 0..2 {
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
        let worker = &server.stats().workers[0];
        assert_eq!(worker.connections, 5, "{balance}: {worker:?}");
        assert_eq!(worker.requests, 6, "{balance}: {worker:?}");
    }
}
