//! Helpers the Node peers' test files share.

#![allow(dead_code)]

pub const CLUSTER: &str = env!("CARGO_BIN_EXE_node-cluster");
pub const THREADS: &str = env!("CARGO_BIN_EXE_node-threads");
pub const SINGLE: &str = env!("CARGO_BIN_EXE_node-single");

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
