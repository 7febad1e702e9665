//! What makes threadpool threadpool: a bounded queue with backpressure, and
//! the truth about what a crash in a thread does. The checks it passes alike
//! with node-threads are `testkit::pool`'s; the rest are its own.

use std::time::Duration;

use service::contract::{LostThread, SlotState};
use testkit::cases::CPU_ITERS_1;
use testkit::pool::{get_in_background, panic_a_job, pool_in_flight, pool_requests, tids};
use testkit::{Server, crash_flags, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_threadpool");

testkit::pool_tests!(BIN, "threadpool");
testkit::pool_tests!(mod rayon, BIN, "threadpool", flags: ["--pool", "rayon"]);

#[test]
fn a_panic_fails_one_request_and_the_thread_survives() {
    let server = Server::start(BIN, &["--workers", "2", "--allow-crash"]);
    let before = tids(&server.stats());
    let slot = panic_a_job(&server);
    assert_eq!(server.get("/cpu?iters=1").body, format!("{CPU_ITERS_1}\n"));
    let stats = server.stats();
    assert_eq!(tids(&stats), before, "the same threads: {stats:?}");
    let errors: u64 = stats.workers.iter().map(|w| w.errors).sum();
    assert_eq!(errors, 1, "{stats:?}");
    assert_eq!(
        stats.workers[slot].errors, 1,
        "on the slot that answered: {stats:?}"
    );
    assert_eq!(
        stats.restarts(),
        0,
        "the thread survived its panic: {stats:?}"
    );
}

#[test]
fn an_exited_thread_is_replaced() {
    let server = Server::start(BIN, &["--workers", "2", "--allow-crash"]);
    let exited = server.post("/crash?how=exit");
    assert_eq!(exited.status, 500, "{exited:?}");
    assert!(
        wait_until(Duration::from_secs(2), || server.stats().restarts() == 1),
        "{:?}",
        server.stats()
    );
    let stats = server.stats();
    assert!(
        stats.workers.iter().all(|w| w.state == SlotState::Ready),
        "{stats:?}"
    );
    assert_eq!(server.get("/cpu?iters=1").status, 200);
}

/// The threads given up on as hung, from `/stats`.
fn lost(server: &Server) -> Vec<LostThread> {
    server
        .stats()
        .lost
        .expect("threadpool reports lost threads")
}

#[test]
fn a_hung_thread_is_reported_lost_and_replaced() {
    let server = Server::start(BIN, &crash_flags("2", "300"));
    // Never answered: the request's thread ends when the test drops the
    // server and its connection closes.
    let _hung = server.crash_in_background("hang");
    assert!(
        wait_until(Duration::from_secs(5), || lost(&server).len() == 1),
        "{:?}; stderr:\n{}",
        server.stats(),
        server.stderr()
    );
    let stats = server.stats();
    assert_eq!(stats.restarts(), 1, "{stats:?}");
    let lost_thread = &stats.lost.as_ref().unwrap()[0];
    let slot = &stats.workers[lost_thread.slot];
    assert_ne!(slot.tid, Some(lost_thread.tid), "a new thread: {stats:?}");
    assert!(
        wait_until(Duration::from_secs(5), || server.stats().workers
            [lost_thread.slot]
            .state
            == SlotState::Ready),
        "the replacement takes jobs: {:?}",
        server.stats()
    );
    for _ in 0..4 {
        assert_eq!(server.get("/cpu?iters=1").status, 200);
    }
    assert!(
        wait_until(Duration::from_secs(3), || lost(&server)[0].cpu_ms
            >= Some(100)),
        "the lost thread keeps burning CPU: {:?}",
        server.stats()
    );
    server.assert_logged("pool thread hung", "hang");
}

/// The watchdog hands a hung thread's slot to a replacement: the slot counts
/// from zero again, and the request the lost thread still holds is reported
/// as the lost thread's.
#[test]
fn a_hung_threads_request_is_counted_on_it_not_on_its_replacement() {
    let server = Server::start(BIN, &crash_flags("2", "300"));
    let _hung = server.crash_in_background("hang");
    let stats = server.stats_when(
        Duration::from_secs(5),
        "one thread lost and every slot ready",
        |stats| {
            stats.lost.as_ref().is_some_and(|lost| lost.len() == 1)
                && stats.workers.iter().all(|w| w.state == SlotState::Ready)
        },
    );
    let lost = &stats.lost.as_ref().unwrap()[0];
    assert_eq!(
        lost.in_flight, 1,
        "the hung request is the lost thread's: {stats:?}"
    );
    let slot = &stats.workers[lost.slot];
    assert_eq!(slot.restarts, 1, "{stats:?}");
    // `/stats` runs on the event loop and counts on `main`, never on a pool
    // slot, so nothing is in flight on either pool slot.
    assert_eq!(slot.in_flight, 0, "the replacement starts at 0: {stats:?}");
    assert_eq!(pool_in_flight(&stats), 0, "{stats:?}");
    // The loop still holds the hung request (its answer never comes) and
    // this `/stats` request.
    assert_eq!(stats.main.as_ref().unwrap().in_flight, 2, "{stats:?}");
}

/// The contract's largest `/cpu`: about 2 s here, far beyond the 200 ms
/// worker timeout of the test that uses it.
const LONGEST_CPU: &str = "/cpu?iters=10000000";

/// A job that outlives the worker timeout gets its thread given up on. When
/// the job returns after all, the thread answers its request and ends,
/// leaving the slot, now its replacement's, as it was.
#[test]
fn a_lost_thread_that_finishes_answers_and_leaves_its_slot_alone() {
    let server = Server::start(BIN, &["--workers", "1", "--worker-timeout-ms", "200"]);
    let slow = get_in_background(&server, LONGEST_CPU);
    let stats = server.stats_when(Duration::from_secs(10), "one thread lost", |stats| {
        stats.lost.as_ref().is_some_and(|lost| lost.len() == 1)
    });
    let held = (
        stats.workers[0].in_flight,
        stats.lost.as_ref().unwrap()[0].in_flight,
    );
    assert_eq!(held, (0, 1), "slot 0, lost thread: {stats:?}");

    let answer = slow.join().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.worker(), "0");
    assert!(
        wait_until(Duration::from_secs(5), || lost(&server).is_empty()),
        "the thread ended after answering: {:?}",
        server.stats()
    );
    let stats = server.stats();
    let slot = &stats.workers[0];
    assert_eq!(
        (slot.in_flight, slot.requests, slot.errors, slot.restarts),
        (0, 1, 0, 1),
        "the finished job was counted once, when it started: {stats:?}"
    );
    assert_eq!(server.get("/cpu?iters=1").status, 200);
    assert_eq!(server.stats().workers[0].requests, 2);
}

#[test]
fn offload_none_runs_cpu_on_the_event_loop() {
    let server = Server::start(BIN, &["--workers", "2", "--offload", "none"]);
    let response = server.get("/cpu?iters=1");
    assert_eq!(response.body, format!("{CPU_ITERS_1}\n"));
    assert_eq!(response.worker(), "main");
    assert_eq!(pool_requests(&server.stats()), 0, "the pool did nothing");
}

/// A request's parts go to the pool as jobs of their own: with `--pool
/// queue` as with `--pool rayon`, each part is counted once on the thread
/// that ran it, and the answer is every part's line in order.
#[test]
fn a_requests_parts_are_jobs_on_the_pool() {
    for pool in ["queue", "rayon"] {
        let server = Server::start(BIN, &["--workers", "2", "--pool", pool]);
        let answer = server.get("/cpu?iters=1&parts=5");
        assert_eq!(answer.status, 200, "{pool}: {answer:?}");
        assert_eq!(answer.body.lines().count(), 5, "{pool}: {answer:?}");
        assert_eq!(answer.body.lines().next(), Some(CPU_ITERS_1), "{pool}");
        let stats = server.stats();
        assert_eq!(pool_requests(&stats), 5, "{pool}: {stats:?}");
        assert_eq!(stats.pool.map(|kind| kind.name()), Some(pool), "{stats:?}");
    }
}

/// rayon's threads are its own: a job that asks its thread to end is
/// answered 500, and the same thread goes on serving, never replaced.
#[test]
fn under_rayon_exit_answers_500_and_the_thread_serves_on() {
    let server = Server::start(BIN, &["--workers", "2", "--allow-crash", "--pool", "rayon"]);
    let before = tids(&server.stats());
    let exited = server.post("/crash?how=exit");
    assert_eq!(exited.status, 500, "{exited:?}");
    assert_eq!(server.get("/cpu?iters=1").status, 200);
    let stats = server.stats();
    assert_eq!(tids(&stats), before, "the same threads: {stats:?}");
    assert_eq!(stats.restarts(), 0, "{stats:?}");
    let errors: u64 = stats.workers.iter().map(|w| w.errors).sum();
    assert_eq!(errors, 1, "{stats:?}");
}

/// rayon cannot replace a thread: a hung job is reported once and the pool
/// serves on with the threads it has left.
#[test]
fn under_rayon_a_hung_thread_is_reported_not_replaced() {
    let server = Server::start(
        BIN,
        &[&crash_flags("2", "300")[..], &["--pool", "rayon"]].concat(),
    );
    let _hung = server.crash_in_background("hang");
    assert!(
        wait_until(Duration::from_secs(5), || server
            .stderr()
            .contains("rayon thread hung")),
        "{:?}; stderr:\n{}",
        server.stats(),
        server.stderr()
    );
    for _ in 0..4 {
        assert_eq!(server.get("/cpu?iters=1").status, 200);
    }
    let stats = server.stats();
    assert_eq!(stats.restarts(), 0, "nothing was replaced: {stats:?}");
    assert_eq!(stats.lost, Some(vec![]), "{stats:?}");
    let busy = stats
        .workers
        .iter()
        .filter(|w| w.busy == Some(true))
        .count();
    assert_eq!(busy, 1, "the hung thread still runs its job: {stats:?}");
    assert_eq!(server.stderr().matches("rayon thread hung").count(), 1);
}
