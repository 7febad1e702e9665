//! A server's view of its own processes, for `/stats`'s `processes`.
//!
//! A harness on the same machine reads `/proc` itself; one on another
//! machine cannot, so the server reports what `/proc` says about each of its
//! processes. The cost is paid only when `/stats` is asked for, never per
//! request.

use crate::contract::{ProcessStats, SlotState, Stats};

/// The pids of `stats`'s processes: the server's own, then each live
/// worker's (a pool thread's is its process's), once each. A dead worker's
/// pid may already belong to another process.
pub fn pids(stats: &Stats) -> Vec<u32> {
    let mut pids = vec![stats.pid];
    let live = stats.workers.iter().filter(|w| w.state != SlotState::Dead);
    for pid in live.map(|w| w.pid) {
        if pid != 0 && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

/// What `/proc/PID` says about process `pid`; `None` when it has gone (a
/// worker that just died) or cannot be read.
pub fn read(pid: u32) -> Option<ProcessStats> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    let stat = process.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let rollup = process.smaps_rollup().ok();
    let field = |name: &str| {
        let map = rollup.as_ref()?.memory_map_rollup.0.first()?;
        map.extension.map.get(name).copied()
    };
    Some(ProcessStats {
        pid,
        cpu_user_s: stat.utime as f64 / ticks,
        cpu_system_s: stat.stime as f64 / ticks,
        pss_bytes: field("Pss"),
        rss_bytes: field("Rss"),
    })
}

/// Fills `stats.processes` from `/proc`.
pub fn fill(stats: &mut Stats) {
    stats.processes = Some(pids(stats).into_iter().filter_map(read).collect());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::WorkerStats;

    #[test]
    fn pids_list_the_server_then_each_live_worker_process_once() {
        let worker = |pid| WorkerStats {
            pid,
            ..WorkerStats::default()
        };
        let dead = WorkerStats {
            state: SlotState::Dead,
            ..worker(13)
        };
        let stats = Stats {
            pid: 10,
            workers: vec![
                worker(11),
                worker(10),
                worker(11),
                worker(0),
                dead,
                worker(12),
            ],
            ..Stats::default()
        };
        assert_eq!(pids(&stats), [10, 11, 12]);
    }

    #[test]
    fn this_process_reads_itself() {
        let me = read(std::process::id()).expect("/proc/self is readable");
        assert_eq!(me.pid, std::process::id());
        assert!(me.pss_bytes.is_some_and(|pss| pss > 0), "{me:?}");
        assert!(me.rss_bytes >= me.pss_bytes, "{me:?}");
    }
}
