//! What makes threadpool threadpool: a bounded queue with backpressure, and
//! the truth about what a crash in a thread does.

use std::thread::JoinHandle;
use std::time::Duration;

use service::contract::{LostThread, SlotState, Stats};
use testkit::cases::CPU_ITERS_1;
use testkit::{Response, Server, describe, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_threadpool");

/// Sends a GET from a thread of its own, for requests that take a while.
fn get_in_background(server: &Server, path: &'static str) -> JoinHandle<Response> {
    let addr = server.addr;
    std::thread::spawn(move || testkit::get(addr, path))
}

/// Jobs the pool threads have taken, and are running now.
fn pool_requests(stats: &Stats) -> u64 {
    stats.workers.iter().map(|w| w.requests).sum()
}

fn pool_in_flight(stats: &Stats) -> u64 {
    stats.workers.iter().map(|w| w.in_flight).sum()
}

fn queue_depth(server: &Server) -> u64 {
    server
        .stats()
        .queue
        .expect("threadpool reports its queue")
        .depth
}

#[test]
fn stats_show_the_pool_the_queue_and_the_loop() {
    let server = Server::start(BIN, &["--workers", "3", "--queue", "7"]);
    assert_eq!(server.get("/cpu?iters=1").body, format!("{CPU_ITERS_1}\n"));
    let stats = server.stats();
    assert_eq!(stats.model, "threadpool");
    assert_eq!(stats.workers.len(), 3);
    let queue = stats.queue.expect("queue");
    assert_eq!((queue.capacity, queue.depth), (7, 0));
    assert!(stats.loop_lag_ms.is_some(), "{stats:?}");
    assert!(stats.main.as_ref().unwrap().requests >= 2, "{stats:?}");
    assert_eq!(
        pool_requests(&stats),
        1,
        "one job ran on the pool: {stats:?}"
    );
}

/// About a second of PBKDF2 on this kind of machine: long enough for a test
/// to observe the queue while it runs.
const SLOW_CPU: &str = "/cpu?iters=5000000";

#[test]
fn a_full_queue_answers_503_at_once_and_recovers() {
    let server = Server::start(BIN, &["--workers", "1", "--queue", "2"]);
    // One job running and two queued fill the pool.
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
    assert_eq!(
        server.get("/").status,
        200,
        "the event loop itself is not blocked"
    );
    assert_eq!(server.stats().queue.unwrap().rejected, 1);

    for request in queued.into_iter().chain([running]) {
        assert_eq!(request.join().unwrap().status, 200);
    }
    assert_eq!(server.get("/cpu?iters=1").status, 200);
}

#[test]
fn a_panic_fails_one_request_and_the_pool_keeps_its_size() {
    let server = Server::start(BIN, &["--workers", "2", "--allow-crash"]);
    let panicked = server.post("/crash?how=panic");
    assert_eq!(panicked.status, 500, "{panicked:?}");
    assert!(panicked.worker().parse::<usize>().is_ok(), "{panicked:?}");
    assert_eq!(server.get("/cpu?iters=1").body, format!("{CPU_ITERS_1}\n"));
    let stats = server.stats();
    assert_eq!(stats.workers.len(), 2);
    let errors: u64 = stats.workers.iter().map(|w| w.errors).sum();
    assert_eq!(errors, 1, "{stats:?}");
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
    assert_eq!(stats.workers.len(), 2, "capacity is back: {stats:?}");
    for _ in 0..4 {
        assert_eq!(server.get("/cpu?iters=1").status, 200);
    }
    assert!(
        wait_until(Duration::from_secs(3), || lost(&server)[0].cpu_ms
            >= Some(100)),
        "the lost thread keeps burning CPU: {:?}",
        server.stats()
    );
    assert!(
        server.stderr().contains("pool thread hung"),
        "{}",
        server.stderr()
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
        assert!(
            server.connect().is_err(),
            "{mode}: nobody is listening any more"
        );
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

#[test]
fn offload_none_runs_cpu_on_the_event_loop() {
    let server = Server::start(BIN, &["--workers", "2", "--offload", "none"]);
    let response = server.get("/cpu?iters=1");
    assert_eq!(response.body, format!("{CPU_ITERS_1}\n"));
    assert_eq!(response.worker(), "main");
    assert_eq!(pool_requests(&server.stats()), 0, "the pool did nothing");
}
