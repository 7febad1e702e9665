//! A server's processes, their memory and their CPU time, read from `/proc`.
//!
//! A prefork server is a master and N workers; a threadpool server is one
//! process. Summing over all of them makes the two comparable. "All of
//! them" is the server's process group (the harness starts every server as
//! the leader of a new group): unlike the tree below the server's pid, the
//! group still holds a worker whose master died. The
//! reading (`/proc`) and the arithmetic (pure functions) are kept apart so
//! the arithmetic can be tested without processes.
//!
//! Why PSS: a page shared by N processes counts fully in each one's RSS, so
//! RSS summed over prefork's workers counts shared pages N times. PSS charges
//! each process 1/N of a shared page, so the sum over the tree is what the
//! tree really costs. USS (private pages only) is what killing one process
//! would free.

use std::collections::HashMap;
use std::ops::Add;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Memory of one process or, summed, of a tree. Bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub uss: u64,
}

impl Add for Memory {
    type Output = Memory;
    fn add(self, other: Memory) -> Memory {
        Memory {
            rss: self.rss + other.rss,
            pss: self.pss + other.pss,
            uss: self.uss + other.uss,
        }
    }
}

impl Memory {
    /// Each field's maximum: the peaks of RSS and PSS need not fall on the
    /// same sample, and each is reported as its own peak.
    pub fn max_each(self, other: Memory) -> Memory {
        Memory {
            rss: self.rss.max(other.rss),
            pss: self.pss.max(other.pss),
            uss: self.uss.max(other.uss),
        }
    }

    /// From the `Key: bytes` pairs of one `smaps_rollup`.
    pub fn from_rollup(fields: &HashMap<String, u64>) -> Memory {
        let get = |key: &str| fields.get(key).copied().unwrap_or(0);
        Memory {
            rss: get("Rss"),
            pss: get("Pss"),
            uss: get("Private_Clean") + get("Private_Dirty"),
        }
    }
}

/// One line of the process table: who is whose parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: i32,
    pub ppid: i32,
    /// The process group it belongs to.
    pub pgrp: i32,
    /// Clock ticks since boot at which the process started. With the pid it
    /// names a process uniquely, even after the pid is reused.
    pub start: u64,
}

/// Every process of group `pgid`, its leader first when it is alive.
pub fn group(pgid: i32, table: &[ProcEntry]) -> Vec<ProcEntry> {
    let mut members: Vec<ProcEntry> = table.iter().filter(|e| e.pgrp == pgid).copied().collect();
    members.sort_by_key(|e| e.pid != pgid);
    members
}

/// Sums memory over a tree. A process that vanished between listing and
/// reading (`None`) contributes nothing rather than failing the sample.
pub fn sum_memory(per_process: impl IntoIterator<Item = Option<Memory>>) -> Memory {
    per_process
        .into_iter()
        .flatten()
        .fold(Memory::default(), Add::add)
}

/// Every process on the machine. Processes that vanish while the table is
/// read are skipped; zombies are skipped too, since they hold no memory and
/// are not "left running".
pub fn process_table() -> Vec<ProcEntry> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok()?.stat().ok())
        .filter(|stat| stat.state != 'Z' && stat.state != 'X')
        .map(|stat| ProcEntry {
            pid: stat.pid,
            ppid: stat.ppid,
            pgrp: stat.pgrp,
            start: stat.starttime,
        })
        .collect()
}

/// One process's memory, from `/proc/PID/smaps_rollup`.
pub fn read_memory(pid: i32) -> Option<Memory> {
    let rollup = procfs::process::Process::new(pid)
        .ok()?
        .smaps_rollup()
        .ok()?;
    let map = rollup.memory_map_rollup.0.first()?;
    Some(Memory::from_rollup(&map.extension.map))
}

/// Counters that only grow, summed over a process group: CPU time, split
/// into user and system, and context switches over every thread of every
/// process. Only their differences mean something.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub user_s: f64,
    pub system_s: f64,
    /// Switches away because the thread waited (I/O, a lock, a channel).
    pub voluntary: u64,
    /// Switches away because the scheduler preempted the thread.
    pub involuntary: u64,
}

impl Counters {
    /// What grew from `before` to `self`. A process that ended in between
    /// took its counts with it, so a figure can shrink: never below zero.
    pub fn since(self, before: Counters) -> Counters {
        Counters {
            user_s: (self.user_s - before.user_s).max(0.0),
            system_s: (self.system_s - before.system_s).max(0.0),
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
        }
    }
}

/// CPU seconds (user + system, every thread) process `pid` has used so
/// far; `None` once it is gone.
pub fn process_cpu_s(pid: i32) -> Option<f64> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// The memory the kernel holds for every TCP socket's buffers, machine-wide
/// (`mem` of the `TCP:` line of `/proc/net/sockstat`, in pages): where the
/// bytes a slow client has not read wait when a server does not hold them.
pub fn kernel_tcp_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|&w| w == "mem")?;
    let pages: u64 = words.next()?.parse().ok()?;
    Some(pages * procfs::page_size())
}

/// How many sockets the processes of group `pgid` have open, listeners
/// included: what the server really holds, whatever it counts itself. A
/// socket two processes share (a descriptor passed on, not yet closed by
/// the one that passed it) counts in each.
pub fn group_sockets(pgid: i32) -> usize {
    group(pgid, &process_table())
        .iter()
        .filter_map(|entry| std::fs::read_dir(format!("/proc/{}/fd", entry.pid)).ok())
        .flat_map(|fds| fds.filter_map(Result::ok))
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"socket:")
            })
        })
        .count()
}

/// One process's descriptors: how many are open, and its soft limit
/// (`None`: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptors {
    pub pid: i32,
    pub open: usize,
    pub limit: Option<u64>,
}

/// The process of group `pgid` nearest its descriptor limit: what to look
/// at when a server stops taking connections.
pub fn fullest_descriptors(pgid: i32) -> Option<Descriptors> {
    group(pgid, &process_table())
        .iter()
        .filter_map(|entry| {
            let process = procfs::process::Process::new(entry.pid).ok()?;
            let limit = match process.limits().ok()?.max_open_files.soft_limit {
                procfs::process::LimitValue::Value(n) => Some(n),
                procfs::process::LimitValue::Unlimited => None,
            };
            // Counted entry by entry: `fd_count`'s fast path (the size of
            // the folder) is the kernel's count of descriptor numbers in
            // use, which may include one being opened.
            let open = std::fs::read_dir(format!("/proc/{}/fd", entry.pid))
                .ok()?
                .count();
            Some(Descriptors {
                pid: entry.pid,
                open,
                limit,
            })
        })
        .max_by(|a, b| {
            let share = |d: &Descriptors| d.limit.map_or(0.0, |l| d.open as f64 / l.max(1) as f64);
            share(a).total_cmp(&share(b))
        })
}

/// The [`Counters`] of group `pgid` now.
pub fn counters(pgid: i32) -> Counters {
    let ticks = procfs::ticks_per_second() as f64;
    let mut total = Counters::default();
    for entry in group(pgid, &process_table()) {
        let Ok(process) = procfs::process::Process::new(entry.pid) else {
            continue;
        };
        if let Ok(stat) = process.stat() {
            total.user_s += stat.utime as f64 / ticks;
            total.system_s += stat.stime as f64 / ticks;
        }
        // Per thread: a process's own status counts only its main thread.
        for task in process.tasks().into_iter().flatten().flatten() {
            if let Ok(status) = task.status() {
                total.voluntary += status.voluntary_ctxt_switches.unwrap_or(0);
                total.involuntary += status.nonvoluntary_ctxt_switches.unwrap_or(0);
            }
        }
    }
    total
}

/// A server's processes at one instant.
#[derive(Clone, Debug, Default)]
pub struct TreeSample {
    pub processes: Vec<ProcEntry>,
    pub memory: Memory,
}

/// Reads process group `pgid` now.
pub fn sample_group(pgid: i32) -> TreeSample {
    let processes = group(pgid, &process_table());
    let memory = sum_memory(processes.iter().map(|p| read_memory(p.pid)));
    TreeSample { processes, memory }
}

/// What the background sampler saw.
#[derive(Clone, Debug, Default)]
pub struct Sampled {
    pub samples: u32,
    pub peak: Memory,
    /// The most processes the group had at once.
    pub max_processes: usize,
}

/// Samples a process group on a thread every `interval` until stopped.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Sampled>>,
}

impl Sampler {
    pub fn start(pgid: i32, interval: Duration) -> Sampler {
        Sampler::with(interval, move || {
            let sample = sample_group(pgid);
            (!sample.processes.is_empty()).then_some((sample.memory, sample.processes.len()))
        })
    }

    /// Samples whatever `sample` reads (memory and a process count; `None`
    /// when there was nothing to read) every `interval`.
    pub fn with(
        interval: Duration,
        mut sample: impl FnMut() -> Option<(Memory, usize)> + Send + 'static,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut sampled = Sampled::default();
            while !flag.load(Ordering::Relaxed) {
                if let Some((memory, processes)) = sample() {
                    sampled.samples += 1;
                    sampled.peak = sampled.peak.max_each(memory);
                    sampled.max_processes = sampled.max_processes.max(processes);
                }
                std::thread::sleep(interval);
            }
            sampled
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        // The thread only reads /proc; if it panicked, report nothing seen.
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    /// A cell that fails half-way drops its sampler: stop the thread too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, ppid: i32, pgrp: i32) -> ProcEntry {
        ProcEntry {
            pid,
            ppid,
            pgrp,
            start: pid as u64,
        }
    }

    #[test]
    fn a_group_holds_re_parented_workers_and_nothing_else() {
        // 10 is the server (group 10) with worker 11; worker 12 was
        // re-parented to init (1) but is still in group 10; 20 is an
        // unrelated process with its own group, 21 a child of 10 that moved
        // to a group of its own.
        let table = [
            entry(1, 0, 1),
            entry(12, 1, 10),
            entry(10, 1, 10),
            entry(11, 10, 10),
            entry(20, 1, 20),
            entry(21, 10, 21),
        ];
        let pids: Vec<i32> = group(10, &table).iter().map(|e| e.pid).collect();
        assert_eq!(pids, [10, 12, 11]);
        assert!(group(99, &table).is_empty());
    }

    #[test]
    fn memory_sums_over_a_tree_and_skips_vanished_processes() {
        let master = Memory {
            rss: 10,
            pss: 4,
            uss: 2,
        };
        let worker = Memory {
            rss: 100,
            pss: 40,
            uss: 20,
        };
        let sum = sum_memory([Some(master), Some(worker), None, Some(worker)]);
        assert_eq!(
            sum,
            Memory {
                rss: 210,
                pss: 84,
                uss: 42
            }
        );
        assert_eq!(sum_memory([]), Memory::default());
    }

    #[test]
    fn peaks_are_kept_per_field() {
        let a = Memory {
            rss: 5,
            pss: 1,
            uss: 9,
        };
        let b = Memory {
            rss: 3,
            pss: 7,
            uss: 2,
        };
        assert_eq!(
            a.max_each(b),
            Memory {
                rss: 5,
                pss: 7,
                uss: 9
            }
        );
    }

    #[test]
    fn rollup_fields_map_to_rss_pss_uss() {
        let fields: HashMap<String, u64> = [
            ("Rss", 1000),
            ("Pss", 600),
            ("Private_Clean", 100),
            ("Private_Dirty", 200),
            ("Shared_Clean", 700),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(
            Memory::from_rollup(&fields),
            Memory {
                rss: 1000,
                pss: 600,
                uss: 300
            }
        );
    }

    #[test]
    fn counters_of_a_group_grow_with_its_work() {
        use std::os::unix::process::CommandExt;
        // A group of its own, so no other test's processes come and go in
        // it: a shell that sleeps (a voluntary switch), then computes.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 0.1; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let before = counters(pgid);
        // Polled, not read once after a fixed wait: on a loaded machine this
        // thread may first run again after the shell's first sleep, and
        // read the second one's switch only once the loop is done. The
        // deadline is a generous upper bound, not a speed claim.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let grown = loop {
            let grown = counters(pgid).since(before);
            let done = grown.user_s + grown.system_s > 0.0 && grown.voluntary >= 1;
            if done || std::time::Instant::now() > deadline {
                break grown;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(grown.user_s + grown.system_s > 0.0, "{grown:?}");
        assert!(grown.voluntary >= 1, "{grown:?}");
    }

    #[test]
    fn a_difference_never_goes_negative() {
        // A process that ended between two reads took its counts with it.
        let more = Counters {
            user_s: 2.0,
            system_s: 1.0,
            voluntary: 10,
            involuntary: 3,
        };
        let less = Counters {
            user_s: 1.5,
            system_s: 1.2,
            voluntary: 4,
            involuntary: 3,
        };
        let diff = less.since(more);
        assert_eq!(diff.user_s, 0.0);
        assert!((diff.system_s - 0.2).abs() < 1e-9);
        assert_eq!((diff.voluntary, diff.involuntary), (0, 0));
    }

    #[test]
    fn the_kernels_tcp_memory_is_readable_here() {
        assert!(kernel_tcp_bytes().is_some());
    }

    #[test]
    fn a_groups_sockets_are_counted() {
        let pgid = nix::unistd::getpgrp().as_raw();
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(group_sockets(pgid) >= 1);
        let fullest = fullest_descriptors(pgid).unwrap();
        assert!(fullest.open >= 1 && fullest.limit.is_some_and(|l| l >= fullest.open as u64));
    }

    #[test]
    fn this_process_group_has_memory() {
        let me = std::process::id() as i32;
        let memory = read_memory(me).expect("smaps_rollup of this process");
        assert!(memory.pss > 0 && memory.rss >= memory.pss);
        let pgid = nix::unistd::getpgrp().as_raw();
        let sample = sample_group(pgid);
        assert!(sample.processes.iter().any(|p| p.pid == me));
        assert!(sample.memory.pss > 0);
    }
}
