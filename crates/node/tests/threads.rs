//! What makes node-threads the Node twin of threadpool: a bounded queue with
//! backpressure, pool threads that are replaced when they end, a hung
//! thread that Node, unlike Rust, can terminate, and the crashes no thread
//! survives. The checks it passes alike with threadpool are
//! `testkit::pool`'s; the rest are its own.

mod common;

use std::time::Duration;

use common::THREADS as BIN;
use service::contract::{SlotState, Stats};
use testkit::cases::CPU_ITERS_1;
use testkit::pool::{get_in_background, panic_a_job, pool_in_flight, tids};
use testkit::{Server, crash_flags};

testkit::pool_tests!(BIN, "node-threads");

/// Waits until every slot has a ready thread and `restarts` replacements
/// were made in all; returns that `/stats`.
fn replaced(server: &Server, restarts: u64) -> Stats {
    server.stats_when(
        Duration::from_secs(10),
        &format!("{restarts} replacements, every slot ready"),
        |stats| {
            stats.restarts() == restarts
                && stats.workers.iter().all(|w| w.state == SlotState::Ready)
        },
    )
}

/// An uncaught exception ends a worker thread (its Worker's 'error' event
/// fires in the main thread): the job's request gets a 500 from its slot,
/// and a new thread takes the slot.
#[test]
fn a_panic_fails_one_request_and_the_thread_is_replaced() {
    let server = Server::start(BIN, &["--workers", "2", "--allow-crash"]);
    let before = tids(&server.stats());
    let slot = panic_a_job(&server);
    let stats = replaced(&server, 1);
    assert_ne!(
        stats.workers[slot].tid, before[slot],
        "a new thread: {stats:?}"
    );
    assert_eq!(stats.workers[1 - slot].tid, before[1 - slot], "{stats:?}");
    assert_eq!(stats.workers[slot].errors, 1, "{stats:?}");
    assert_eq!(stats.workers[slot].restarts, 1, "{stats:?}");
    assert_eq!(stats.main.as_ref().unwrap().errors, 0, "{stats:?}");
    assert_eq!(server.get("/cpu?iters=1").body, format!("{CPU_ITERS_1}\n"));
    server.assert_logged("threw", "panic");
}

/// process.exit() in a worker thread ends that thread only.
#[test]
fn exit_ends_only_its_thread() {
    let mut server = Server::start(BIN, &["--workers", "2", "--allow-crash"]);
    let exited = server.post("/crash?how=exit");
    assert_eq!(exited.status, 500, "{exited:?}");
    assert!(exited.body.contains("exited"), "{exited:?}");
    replaced(&server, 1);
    assert_eq!(server.get("/cpu?iters=1").status, 200);
    assert_eq!(
        server.wait_timeout(Duration::ZERO),
        None,
        "the process lives"
    );
}

/// Node can stop a thread stuck in JavaScript: worker.terminate() makes V8
/// throw an uncatchable termination at its next interrupt check. So a hung
/// thread's request is answered (500), and the thread is really gone.
#[test]
fn a_hung_thread_is_terminated_and_replaced() {
    let server = Server::start(BIN, &crash_flags("2", "300"));
    let hung = server.crash_in_background("hang");
    let answer = hung.join().unwrap().expect("the hung request is answered");
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(answer.body.contains("hung"), "{answer:?}");
    let stats = replaced(&server, 1);
    server.stats_when(
        Duration::from_secs(5),
        "the terminated thread ended",
        |stats| stats.lost == Some(vec![]),
    );
    assert_eq!(pool_in_flight(&stats), 0, "{stats:?}");
    assert_eq!(server.get("/cpu?iters=1").status, 200);
    server.assert_logged("hung", "hang");
}

/// terminate() cannot stop native code: a thread inside a long
/// pbkdf2Sync runs it to the end before it ends. Until then it is listed
/// under `lost`, burning CPU beside its replacement; its request was
/// already answered with a 500.
#[test]
fn a_thread_in_native_code_is_lost_until_the_call_returns() {
    let server = Server::start(BIN, &["--workers", "1", "--worker-timeout-ms", "200"]);
    let slow = get_in_background(&server, "/cpu?iters=10000000");
    let answer = slow.join().unwrap();
    assert_eq!(answer.status, 500, "{answer:?}");
    let stats = server.stats();
    let lost = stats.lost.as_ref().expect("lost");
    assert_eq!(lost.len(), 1, "still running pbkdf2: {stats:?}");
    assert_eq!(lost[0].slot, 0);
    assert_eq!(lost[0].in_flight, 0, "its request was answered: {stats:?}");
    assert!(lost[0].cpu_ms.is_some(), "read from /proc: {stats:?}");
    server.stats_when(
        Duration::from_secs(5),
        "the replacement takes jobs beside it",
        |stats| stats.workers[0].state == SlotState::Ready,
    );
    assert_eq!(server.get("/cpu?iters=1").status, 200);
    server.stats_when(
        Duration::from_secs(20),
        "the thread ends once pbkdf2Sync returns",
        |stats| stats.lost == Some(vec![]),
    );
}
