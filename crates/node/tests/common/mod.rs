//! Helpers the Node peers' test files share.

#![allow(dead_code)]

use std::io::Write;
use std::thread::JoinHandle;
use std::time::Duration;

use service::contract::{SlotState, Stats};
use testkit::{Response, Server, read_response, wait_until};

pub const CLUSTER: &str = env!("CARGO_BIN_EXE_node-cluster");
pub const THREADS: &str = env!("CARGO_BIN_EXE_node-threads");
pub const SINGLE: &str = env!("CARGO_BIN_EXE_node-single");

/// About a second of PBKDF2 here, in Node as in Rust: long enough for a
/// test to observe a job while it runs.
pub const SLOW_CPU: &str = "/cpu?iters=5000000";

/// Sends a GET from a thread of its own, for requests that take a while.
pub fn get_in_background(server: &Server, path: &'static str) -> JoinHandle<Response> {
    let addr = server.addr;
    std::thread::spawn(move || testkit::get(addr, path))
}

/// Worker pids by slot, from `/stats`.
pub fn pids(server: &Server) -> Vec<u32> {
    server.stats().workers.iter().map(|w| w.pid).collect()
}

/// `GET /stats`, or `None` if it failed or took over 2 s: for polling while
/// a worker crashes or hangs. With `--balance rr` the primary may hand the
/// poll's connection to a worker that is hung, and then that connection is
/// never answered (see the rr test in cluster.rs): the poll gives up on it
/// and tries again.
pub fn quick_stats(server: &Server) -> Option<Stats> {
    let mut stream = server.connect().ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /stats HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .ok()?;
    let response = read_response(&mut stream).ok()?;
    serde_json::from_str(&response.body).ok()
}

/// Waits until exactly one slot has a new, ready worker, and returns that
/// slot. Panics (with the server's log) if that takes over `within`.
pub fn one_slot_replaced(server: &Server, before: &[u32], within: Duration) -> usize {
    let mut replaced = None;
    let mut last = None;
    let done = wait_until(within, || {
        let Some(stats) = quick_stats(server) else {
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

/// A process's parent pid and CPU time (user + system, in clock ticks),
/// from `/proc/PID/stat`; `None` once it is gone.
pub fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which is in parentheses and may hold spaces:
    // state ppid ... utime (14th field overall) stime (15th).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ppid = fields[1].parse().ok()?;
    let ticks = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// Pool requests (jobs taken) and jobs running now, over every slot.
pub fn pool_requests(stats: &Stats) -> u64 {
    stats.workers.iter().map(|w| w.requests).sum()
}

pub fn pool_in_flight(stats: &Stats) -> u64 {
    stats.workers.iter().map(|w| w.in_flight).sum()
}
