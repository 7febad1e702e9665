//! Checks and helpers for a supervisor that runs each worker as a process
//! of its own and replaces the ones that die or hang: prefork's master and
//! node-cluster's primary. What differs between the two, the kind passes in
//! as a [`Supervisor`].

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use service::contract::SlotState;

use crate::{Server, alive, crash_flags, describe, wait_until};

/// What a supervising kind does where the two differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supervisor {
    /// What the supervisor logs when a worker's `panic` crash ends it:
    /// Rust's panic exits with status 101, Node's uncaught exception with 1.
    pub panic_exit: &'static str,
    /// What the supervisor logs when it kills a worker whose heartbeat
    /// stopped.
    pub hang_logged: &'static str,
    /// The most a replacement may take to be ready: an upper bound, which a
    /// kind whose workers start slowly (a Node process) sets higher.
    pub replace_within: Duration,
}

/// Worker pids by slot, from `/stats`.
pub fn pids(server: &Server) -> Vec<u32> {
    server.stats().workers.iter().map(|w| w.pid).collect()
}

/// SIGKILLs one worker process.
pub fn kill_worker(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .unwrap_or_else(|e| panic!("SIGKILL worker {pid}: {e}"));
}

/// SIGKILLs the supervisor itself, and asserts that it dies of it within
/// `within`. What becomes of its workers is the caller's to check.
pub fn kill_supervisor(server: &mut Server, within: Duration) {
    server.signal(Signal::SIGKILL);
    let status = server
        .wait_timeout(within)
        .unwrap_or_else(|| panic!("the supervisor still runs {within:?} after SIGKILL"));
    assert_eq!(describe(status), "signal 9");
}

/// Waits until exactly one slot has a new worker, and every slot a ready
/// one, and returns that slot. Panics (with the last `/stats` and the
/// server's log) if that takes over `within`.
pub fn one_slot_replaced(server: &Server, before: &[u32], within: Duration) -> usize {
    let mut replaced = None;
    let mut last = None;
    let done = wait_until(within, || {
        let Some(stats) = server.try_stats() else {
            return false;
        };
        let changed: Vec<usize> = (0..before.len())
            .filter(|&i| stats.workers[i].pid != before[i])
            .collect();
        replaced = changed.first().copied();
        let ok = changed.len() == 1 && stats.workers.iter().all(|w| w.state == SlotState::Ready);
        last = Some(stats);
        ok
    });
    assert!(
        done,
        "no single replacement within {within:?}: {last:?}; stderr:\n{}",
        server.stderr()
    );
    replaced.unwrap()
}

/// A worker killed from outside is replaced in its own slot, which counts
/// the restart; the other worker is untouched, and the server serves on.
/// `extra` are flags on top of `--workers 2`.
pub fn a_killed_worker_is_replaced_in_its_slot(bin: &str, extra: &[&str], kind: Supervisor) {
    let server = Server::start(bin, &[&["--workers", "2"], extra].concat());
    let before = pids(&server);
    kill_worker(before[0]);

    assert_eq!(
        one_slot_replaced(&server, &before, kind.replace_within),
        0,
        "{extra:?}"
    );
    let after = server.stats().workers;
    assert_eq!(after[0].restarts, 1, "{extra:?}: {after:?}");
    assert_eq!(after[1].restarts, 0, "{extra:?}: {after:?}");
    assert_eq!(
        after[1].pid, before[1],
        "{extra:?}: the other worker is untouched"
    );
    for _ in 0..20 {
        assert_eq!(server.get("/").status, 200, "{extra:?}");
    }
    server.assert_logged("killed by SIGKILL", &format!("{extra:?}"));
}

/// Every crash mode ends the one worker that ran the request, which gets no
/// answer; the supervisor logs how it died, replaces it in its slot, and the
/// server serves on. A hung worker is killed and replaced the same way.
/// `extra` are flags on top of the crash flags (a `--balance`).
pub fn each_crash_ends_only_the_worker_that_served_it(bin: &str, extra: &[&str], kind: Supervisor) {
    let server = Server::start(bin, &[&crash_flags("2", "600")[..], extra].concat());
    for (mode, how_it_died) in [
        ("panic", kind.panic_exit),
        ("abort", "killed by SIGABRT"),
        ("segv", "killed by SIGSEGV"),
        ("exit", "exited with status 1"),
    ] {
        let before = pids(&server);
        let result = server.crash(mode);
        assert!(
            result.is_err(),
            "{mode}: the crashing request gets no answer: {result:?}"
        );
        let slot = one_slot_replaced(&server, &before, kind.replace_within);
        assert!(!alive(before[slot]), "{mode}: the old worker is gone");
        server.assert_logged(how_it_died, mode);
        assert_eq!(
            server.get("/cpu?iters=1").status,
            200,
            "{mode}: still serving"
        );
    }
    assert_eq!(server.stats().restarts(), 4);

    // A hung worker's loop sends no heartbeat; the supervisor kills it.
    let before = pids(&server);
    let hung = server.crash_in_background("hang");
    one_slot_replaced(&server, &before, kind.replace_within);
    assert!(
        hung.join().unwrap().is_err(),
        "the hung request gets no answer"
    );
    server.assert_logged(kind.hang_logged, "hang");
    assert_eq!(server.get("/").status, 200);
}
