//! What makes node-threads the Node twin of threadpool: a bounded queue with
//! backpressure, pool threads that are replaced when they end, a hung
//! thread that Node, unlike Rust, can terminate, and the crashes no thread
//! survives.

mod common;

use std::time::Duration;

use common::{SLOW_CPU, THREADS as BIN, get_in_background, pool_in_flight, pool_requests};
use service::contract::{SlotState, Stats};
use testkit::cases::CPU_ITERS_1;
use testkit::{Server, describe, wait_until};

fn tids(stats: &Stats) -> Vec<Option<u32>> {
    stats.workers.iter().map(|w| w.tid).collect()
}

fn queue_depth(server: &Server) -> u64 {
    server
        .stats()
        .queue
        .expect("node-threads reports its queue")
        .depth
}

/// Waits until every slot has a ready thread and `restarts` replacements
/// were made in all; returns that `/stats`.
fn replaced(server: &Server, restarts: u64) -> Stats {
    let mut last = None;
    let done = wait_until(Duration::from_secs(10), || {
        let stats = server.stats();
        let ok = stats.restarts() == restarts
            && stats.workers.iter().all(|w| w.state == SlotState::Ready);
        last = Some(stats);
        ok
    });
    assert!(done, "{last:?}; stderr:\n{}", server.stderr());
    last.unwrap()
}

#[test]
fn stats_show_the_pool_the_queue_and_the_loop() {
    let server = Server::start(BIN, &["--workers", "3", "--queue", "7"]);
    let answer = server.get("/cpu?iters=1");
    assert_eq!(answer.body, format!("{CPU_ITERS_1}\n"));
    assert!(answer.worker().parse::<usize>().is_ok(), "{answer:?}");
    let stats = server.stats();
    assert_eq!(stats.model, "node-threads");
    assert_eq!(stats.workers.len(), 3);
    for worker in &stats.workers {
        assert_eq!(worker.pid, server.pid(), "threads of the one process");
        assert_eq!(worker.state, SlotState::Ready);
        assert_eq!(worker.busy, Some(false));
        // The kernel's thread id, a task of the server process.
        let tid = worker.tid.expect("a tid");
        assert!(
            std::path::Path::new(&format!("/proc/{}/task/{tid}", server.pid())).exists(),
            "{stats:?}"
        );
    }
    let queue = stats.queue.expect("queue");
    assert_eq!((queue.capacity, queue.depth, queue.rejected), (7, 0, 0));
    assert!(stats.loop_lag_ms.is_some(), "{stats:?}");
    assert_eq!(stats.lost, Some(vec![]), "{stats:?}");
    let main = stats.main.as_ref().expect("main");
    assert_eq!(main.pid, server.pid());
    assert_eq!(main.requests, 2, "the /cpu and this /stats: {stats:?}");
    assert_eq!(
        pool_requests(&stats),
        1,
        "one job ran on the pool: {stats:?}"
    );
}

#[test]
fn a_full_queue_answers_503_at_once_and_recovers() {
    let server = Server::start(BIN, &["--workers", "1", "--queue", "2"]);
    let running = get_in_background(&server, SLOW_CPU);
    assert!(wait_until(Duration::from_secs(10), || pool_in_flight(
        &server.stats()
    ) == 1));
    let queued: Vec<_> = (0..2)
        .map(|_| get_in_background(&server, SLOW_CPU))
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || queue_depth(&server) == 2),
        "{:?}",
        server.stats()
    );
    let refused = server.get("/cpu?iters=1");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.worker(), "main");
    assert_eq!(server.get("/").status, 200, "the event loop is not blocked");
    let stats = server.stats();
    assert_eq!(stats.queue.unwrap().rejected, 1);
    assert_eq!(stats.main.unwrap().errors, 1, "the 503 is the loop's");

    for request in queued.into_iter().chain([running]) {
        assert_eq!(request.join().unwrap().status, 200);
    }
    assert_eq!(server.get("/cpu?iters=1").status, 200);
}

/// An uncaught exception ends a worker thread (its Worker's 'error' event
/// fires in the main thread): the job's request gets a 500 from its slot,
/// and a new thread takes the slot.
#[test]
fn a_panic_fails_one_request_and_the_thread_is_replaced() {
    let server = Server::start(BIN, &["--workers", "2", "--allow-crash"]);
    let before = tids(&server.stats());
    let panicked = server.post("/crash?how=panic");
    assert_eq!(panicked.status, 500, "{panicked:?}");
    let slot: usize = panicked.worker().parse().expect("a slot answers");
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
    assert!(server.stderr().contains("threw"), "{}", server.stderr());
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
    let server = Server::start(
        BIN,
        &[
            "--workers",
            "2",
            "--allow-crash",
            "--worker-timeout-ms",
            "300",
        ],
    );
    let hung = server.crash_in_background("hang");
    let answer = hung.join().unwrap().expect("the hung request is answered");
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(answer.body.contains("hung"), "{answer:?}");
    let stats = replaced(&server, 1);
    assert!(
        wait_until(Duration::from_secs(5), || server.stats().lost
            == Some(vec![])),
        "the terminated thread ended: {:?}",
        server.stats()
    );
    assert_eq!(pool_in_flight(&stats), 0, "{stats:?}");
    assert_eq!(server.get("/cpu?iters=1").status, 200);
    assert!(server.stderr().contains("hung"), "{}", server.stderr());
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
    assert!(
        wait_until(Duration::from_secs(5), || server.stats().workers[0].state
            == SlotState::Ready),
        "the replacement takes jobs beside it: {:?}",
        server.stats()
    );
    assert_eq!(server.get("/cpu?iters=1").status, 200);
    assert!(
        wait_until(Duration::from_secs(20), || server.stats().lost
            == Some(vec![])),
        "the thread ends once pbkdf2Sync returns: {:?}",
        server.stats()
    );
}

#[test]
fn abort_and_segv_in_a_thread_take_the_whole_process() {
    for (mode, signal) in [("abort", "signal 6"), ("segv", "signal 11")] {
        let mut server = Server::start(BIN, &["--workers", "2", "--allow-crash"]);
        let result = server.crash(mode);
        assert!(result.is_err(), "{mode}: {result:?}");
        let status = server
            .wait_timeout(Duration::from_secs(5))
            .expect("the process is dead");
        assert_eq!(describe(status), signal, "{mode}");
        assert!(server.connect().is_err(), "{mode}: nobody listens any more");
    }
}

#[test]
fn sigterm_lets_queued_jobs_finish() {
    let mut server = Server::start(BIN, &["--workers", "1"]);
    let running = get_in_background(&server, SLOW_CPU);
    assert!(wait_until(Duration::from_secs(10), || pool_in_flight(
        &server.stats()
    ) == 1));
    let queued = get_in_background(&server, SLOW_CPU);
    assert!(wait_until(Duration::from_secs(10), || queue_depth(&server) == 1));
    let status = server.terminate();
    assert_eq!(running.join().unwrap().status, 200);
    assert_eq!(queued.join().unwrap().status, 200);
    assert_eq!(
        status.code(),
        Some(0),
        "{}; stderr:\n{}",
        describe(status),
        server.stderr()
    );
}
