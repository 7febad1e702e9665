//! What makes prefork prefork: a master that replaces dead and hung workers,
//! never spins on a crash loop, and leaves no orphans. The checks it shares
//! with node-cluster's primary are `testkit::supervision`'s.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::Signal;
use service::contract::Balance;
use testkit::supervision::{self, Supervisor, kill_worker, pids};
use testkit::{Server, alive, describe, read_response, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_prefork");

/// prefork's master, as the shared supervision cases see it.
const MASTER: Supervisor = Supervisor {
    // The worker's panic hook exits with status 101, Rust's panic status.
    panic_exit: "exited with status 101",
    hang_logged: "worker hung: its event loop stopped ticking",
    replace_within: Duration::from_secs(5),
};

/// The cases shared with node-cluster, once per `--balance`: each policy
/// reaches workers its own way (an inherited socket, a socket per slot, the
/// master's hand-offs), and a worker's death and replacement must not
/// disturb any of them.
macro_rules! supervision_under {
    ($($module:ident: $balance:literal),+) => {$(
        mod $module {
            use super::*;

            #[test]
            fn a_killed_worker_is_replaced_in_its_slot() {
                supervision::a_killed_worker_is_replaced_in_its_slot(
                    BIN,
                    &["--balance", $balance],
                    Supervisor {
                        replace_within: Duration::from_secs(2),
                        ..MASTER
                    },
                );
            }

            #[test]
            fn each_crash_ends_only_the_worker_that_served_it() {
                supervision::each_crash_ends_only_the_worker_that_served_it(
                    BIN,
                    &["--balance", $balance],
                    MASTER,
                );
            }
        }
    )+};
}
supervision_under!(shared: "shared", reuseport: "reuseport", rr: "rr");

#[test]
fn crash_is_forbidden_without_the_flag() {
    let server = Server::start(BIN, &["--workers", "1"]);
    assert_eq!(server.post("/crash?how=abort").status, 403);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn killing_the_master_leaves_no_worker() {
    let mut server = Server::start(BIN, &["--workers", "3"]);
    let workers = pids(&server);
    supervision::kill_supervisor(&mut server, Duration::from_secs(2));
    assert!(
        wait_until(Duration::from_secs(2), || workers
            .iter()
            .all(|&pid| !alive(pid))),
        "orphaned workers: {:?}",
        workers
            .iter()
            .filter(|&&pid| alive(pid))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_crash_loop_backs_off_and_shutdown_still_works() {
    let mut server = Server::spawn(BIN, &["--workers", "1", "--die-at-boot"]);
    std::thread::sleep(Duration::from_secs(5));
    let forks = server.stderr().matches("worker started").count();
    assert!(
        (3..=10).contains(&forks),
        "{forks} forks in 5 s; stderr:\n{}",
        server.stderr()
    );

    server.signal(Signal::SIGTERM);
    let status = server
        .wait_timeout(Duration::from_secs(2))
        .expect("prompt exit on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", describe(status));
    assert!(server.group_members().is_empty());
}

/// Concurrent clients with CPU-bound requests on fresh connections: more
/// than one worker must serve them.
fn spread(balance: Balance) -> HashSet<String> {
    let server = Server::start(BIN, &["--workers", "2", "--balance", balance.name()]);
    assert_eq!(server.stats().balance, Some(balance));
    let addr = server.addr;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..40)
                    .map(|_| testkit::get(addr, "/cpu?iters=20000").worker().to_string())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect()
}

#[test]
fn connections_are_spread_over_workers() {
    for balance in [Balance::Shared, Balance::Reuseport, Balance::Rr] {
        let served = spread(balance);
        assert!(
            served.len() >= 2,
            "{balance}: only {served:?} served 320 requests"
        );
    }
}

/// With one socket per worker, a dead worker's socket stays open in the
/// master, so connections the kernel hashes to it while no worker accepts
/// there wait in its queue, and its replacement answers them.
///
/// The master is stopped (SIGSTOP) while worker 1 is dead, so no
/// replacement exists while the connections are made. Had the master closed
/// the dead worker's socket and bound a fresh one for the replacement, the
/// connections queued on the old socket would be reset; had it never held
/// the socket, it would have closed with the worker and every connection
/// would have gone to worker 0.
#[test]
fn reuseport_keeps_a_dead_workers_socket_for_its_replacement() {
    let server = Server::start(BIN, &["--workers", "2", "--balance", "reuseport"]);
    let before = pids(&server);
    server.signal(Signal::SIGSTOP);
    kill_worker(before[1]);
    // The stopped master cannot reap it: it stays a zombie, its slot empty.
    assert!(
        wait_until(Duration::from_secs(5), || !alive(before[1])),
        "worker 1 did not die"
    );
    // The kernel hashes each connection to one of the two sockets: about
    // half of these land on the dead worker's.
    let mut pending: Vec<TcpStream> = (0..32)
        .map(|i| {
            let mut stream = server
                .connect()
                .unwrap_or_else(|e| panic!("connection {i} refused while worker 1 is dead: {e}"));
            stream
                .write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    server.signal(Signal::SIGCONT);
    let answered_by: Vec<String> = pending
        .iter_mut()
        .enumerate()
        .map(|(i, stream)| {
            let response = read_response(stream).unwrap_or_else(|e| {
                panic!(
                    "connection {i}, made while worker 1 was dead, got no answer: {e}; stderr:\n{}",
                    server.stderr()
                )
            });
            assert_eq!(response.status, 200, "connection {i}: {response:?}");
            response.worker().to_owned()
        })
        .collect();
    assert!(
        answered_by.iter().any(|worker| worker == "1"),
        "no connection made while worker 1 was dead was answered by its replacement: \
         {answered_by:?}"
    );
    let after = server.stats().workers;
    assert_ne!(after[1].pid, before[1], "slot 1 has a new worker");
    assert_eq!(after[1].restarts, 1);
}

#[test]
fn dataset_can_be_loaded_per_worker() {
    let before_fork = Server::start(BIN, &["--workers", "2", "--dataset-mb", "2"]);
    let per_worker = Server::start(
        BIN,
        &[
            "--workers",
            "2",
            "--dataset-mb",
            "2",
            "--dataset-load",
            "per-worker",
        ],
    );
    for key in [0, 7, 31] {
        let path = format!("/data?key={key}");
        assert_eq!(
            before_fork.get(&path).body,
            per_worker.get(&path).body,
            "{path}"
        );
    }
}
