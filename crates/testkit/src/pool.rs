//! Checks and helpers for an event loop that hands jobs to a pool of
//! threads through a bounded queue: threadpool and its Node twin,
//! node-threads. [`pool_tests!`](crate::pool_tests) turns the checks both
//! pass alike into one `#[test]` each; what a crash in a thread does differs
//! between them, and stays in each kind's own tests.

/// Expands to one `#[test]` per shared pool case, run against `$bin`, whose
/// `/stats` must name `$model`.
///
/// - `pool_tests!(BIN, MODEL)`: every case, with the kind's default flags.
/// - `pool_tests!(mod NAME, BIN, MODEL, flags: ["--flag", "value"])`: every
///   case in a module `NAME`, each server started with those flags too
///   (threadpool's `--pool rayon`).
#[macro_export]
macro_rules! pool_tests {
    (mod $module:ident, $bin:expr, $model:expr, flags: [$($flag:expr),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::pool_tests!(@each $bin, $model, [$($flag),*],
                stats_show_the_pool_the_queue_and_the_loop,
                a_full_queue_answers_503_at_once_and_recovers,
                a_request_is_admitted_whole_or_refused_whole,
                abort_and_segv_in_a_thread_take_the_whole_process,
                sigterm_lets_queued_jobs_finish);
        }
    };
    ($bin:expr, $model:expr) => {
        $crate::pool_tests!(@each $bin, $model, [],
            stats_show_the_pool_the_queue_and_the_loop,
            a_full_queue_answers_503_at_once_and_recovers,
            a_request_is_admitted_whole_or_refused_whole,
            abort_and_segv_in_a_thread_take_the_whole_process,
            sigterm_lets_queued_jobs_finish);
    };
    (@each $bin:expr, $model:expr, $flags:tt, $($case:ident),+) => {
        $(
            #[test]
            fn $case() {
                $crate::pool::$case($bin, &$flags, $model);
            }
        )+
    };
}

use std::thread::JoinHandle;
use std::time::Duration;

use service::contract::{SlotState, Stats};

use crate::cases::CPU_ITERS_1;
use crate::{Response, Server, describe, wait_until};

/// About a second of PBKDF2 here, in Node as in Rust: long enough for a
/// test to observe a job, and the queue, while it runs.
pub const SLOW_CPU: &str = "/cpu?iters=5000000";

/// Sends a GET from a thread of its own, for requests that take a while.
pub fn get_in_background(server: &Server, path: &'static str) -> JoinHandle<Response> {
    let addr = server.addr;
    std::thread::spawn(move || crate::get(addr, path))
}

/// Jobs the pool threads have taken, over every slot.
pub fn pool_requests(stats: &Stats) -> u64 {
    stats.workers.iter().map(|w| w.requests).sum()
}

/// Jobs the pool threads are running now, over every slot.
pub fn pool_in_flight(stats: &Stats) -> u64 {
    stats.workers.iter().map(|w| w.in_flight).sum()
}

/// The pool threads' kernel thread ids, by slot.
pub fn tids(stats: &Stats) -> Vec<Option<u32>> {
    stats.workers.iter().map(|w| w.tid).collect()
}

/// `POST /crash?how=panic`, which a pool kind answers with a 500 from the
/// slot whose thread ran the job; returns that slot.
pub fn panic_a_job(server: &Server) -> usize {
    let panicked = server.post("/crash?how=panic");
    assert_eq!(panicked.status, 500, "{panicked:?}");
    panicked
        .worker()
        .parse()
        .unwrap_or_else(|_| panic!("a pool slot answers: {panicked:?}"))
}

/// Jobs waiting in the queue now.
pub fn queue_depth(server: &Server) -> u64 {
    let stats = server.stats();
    stats
        .queue
        .unwrap_or_else(|| panic!("a pool kind reports its queue: {stats:?}"))
        .depth
}

/// `/stats` shows every pool thread as a ready, idle thread of the one
/// process, the queue, the event loop (`main`) and its lag, no lost thread,
/// and counts a `/cpu` once on the loop and once on the pool.
pub fn stats_show_the_pool_the_queue_and_the_loop(bin: &str, extra: &[&str], model: &str) {
    let server = Server::start(bin, &[&["--workers", "3", "--queue", "7"], extra].concat());
    let answer = server.get("/cpu?iters=1");
    assert_eq!(answer.body, format!("{CPU_ITERS_1}\n"));
    assert!(
        answer.worker().parse::<usize>().is_ok(),
        "a pool slot answers: {answer:?}"
    );
    let stats = server.stats();
    assert_eq!(stats.model, model);
    assert_eq!(stats.workers.len(), 3, "{stats:?}");
    for worker in &stats.workers {
        assert_eq!(worker.pid, server.pid(), "threads of the one process");
        assert_eq!(worker.state, SlotState::Ready, "{stats:?}");
        assert_eq!(worker.busy, Some(false), "{stats:?}");
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
    assert_eq!(
        main.pid,
        server.pid(),
        "the event loop runs in the server process"
    );
    assert_eq!(main.requests, 2, "the /cpu and this /stats: {stats:?}");
    assert_eq!(
        pool_requests(&stats),
        1,
        "one job ran on the pool: {stats:?}"
    );
}

/// With the pool busy and the queue full, a job is refused at once with a
/// 503 from the event loop, which counts it as its error and still serves;
/// the running and queued jobs complete, and the pool takes jobs again.
pub fn a_full_queue_answers_503_at_once_and_recovers(bin: &str, extra: &[&str], _model: &str) {
    let server = Server::start(bin, &[&["--workers", "1", "--queue", "2"], extra].concat());
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
    let stats = server.stats();
    assert_eq!(stats.queue.as_ref().unwrap().rejected, 1, "{stats:?}");
    assert_eq!(
        stats.main.as_ref().unwrap().errors,
        1,
        "the 503 is the loop's: {stats:?}"
    );

    for request in queued.into_iter().chain([running]) {
        assert_eq!(request.join().unwrap().status, 200);
    }
    assert_eq!(server.get("/cpu?iters=1").status, 200);
}

/// A request of P parts takes P places: with one thread busy and room for
/// two jobs, a request of three parts is refused at once, whole (the queue
/// stays empty), and one of two parts is admitted and answered in full.
pub fn a_request_is_admitted_whole_or_refused_whole(bin: &str, extra: &[&str], _model: &str) {
    let server = Server::start(bin, &[&["--workers", "1", "--queue", "2"], extra].concat());
    let running = get_in_background(&server, SLOW_CPU);
    assert!(wait_until(Duration::from_secs(10), || pool_in_flight(
        &server.stats()
    ) == 1));
    let refused = server.get("/cpu?iters=1&parts=3");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(queue_depth(&server), 0, "no part of it was queued");
    let admitted = server.get("/cpu?iters=1&parts=2");
    assert_eq!(admitted.status, 200, "{admitted:?}");
    assert_eq!(admitted.body.lines().count(), 2, "{admitted:?}");
    assert_eq!(running.join().unwrap().status, 200);
    let stats = server.stats();
    assert_eq!(stats.queue.as_ref().unwrap().rejected, 1, "{stats:?}");
    assert_eq!(
        pool_requests(&stats),
        3,
        "the slow job and two parts: {stats:?}"
    );
}

/// No thread survives an abort or a segfault: it takes the whole process,
/// which dies of the signal, and nobody listens any more.
pub fn abort_and_segv_in_a_thread_take_the_whole_process(bin: &str, extra: &[&str], _model: &str) {
    for (mode, signal) in [("abort", "signal 6"), ("segv", "signal 11")] {
        let mut server =
            Server::start(bin, &[&["--workers", "2", "--allow-crash"], extra].concat());
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

/// SIGTERM lets the running job and the queued one finish and answer, then
/// the server exits 0.
pub fn sigterm_lets_queued_jobs_finish(bin: &str, extra: &[&str], _model: &str) {
    let mut server = Server::start(bin, &[&["--workers", "1"], extra].concat());
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
