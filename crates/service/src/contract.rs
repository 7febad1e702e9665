//! The contract's data, as types: what every server writes and the harness
//! reads. [`CONTRACT.md`](../CONTRACT.md) is the prose; this module is the
//! one definition of the names and shapes in it.
//!
//! - [`Ready`]: the one line a server prints on stdout.
//! - [`Stats`]: the `/stats` document, with the common part every server
//!   must give and the per-model extras as optional fields.
//! - [`CrashMode`], [`Balance`], [`DatasetLoad`], [`Offload`], [`PoolKind`]:
//!   the values
//!   of `/crash?how=` and of the model flags the harness sets.
//!
//! Servers serialize these; the harness deserializes them, also from
//! servers that are not ours (a Node peer, an external command), so every
//! field a server may leave out has a default. A field that is absent is
//! "not reported", never zero by guess: that is why the extras are
//! `Option`s.

use std::fmt;
use std::net::SocketAddr;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// The ready line: `{"event":"ready","model":..,"addr":..,"pid":..,"workers":..}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub event: ReadyEvent,
    /// The model's name, e.g. `prefork`.
    pub model: String,
    /// The address it listens on, with the real port when 0 was asked for.
    pub addr: SocketAddr,
    /// The pid of the process that was started (prefork's master).
    pub pid: u32,
    /// Workers (processes or pool threads) serving.
    pub workers: usize,
}

/// The ready line's `event`: always `ready`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadyEvent {
    Ready,
}

impl Ready {
    pub fn new(model: &str, addr: SocketAddr, pid: u32, workers: usize) -> Ready {
        Ready {
            event: ReadyEvent::Ready,
            model: model.to_owned(),
            addr,
            pid,
            workers,
        }
    }
}

/// The most workers a server takes (`--workers 1` to this).
pub const MAX_WORKERS: usize = 1024;

/// `GET /stats`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub model: String,
    /// The server's pid: the process that was started.
    pub pid: u32,
    pub uptime_ms: u64,
    pub workers: Vec<WorkerStats>,
    /// prefork, Node's cluster: how connections are spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
    /// threadpool: the event loop's own counters. Its `in_flight` counts
    /// every request the process holds, running, queued or on the loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main: Option<MainStats>,
    /// threadpool: the one event loop's lag (its pool threads run none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_lag_ms: Option<LoopLag>,
    /// threadpool: the bounded queue in front of the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStats>,
    /// threadpool: threads given up on as hung, which still run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<Vec<LostThread>>,
    /// threadpool: which jobs leave the event loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<Offload>,
    /// threadpool: what runs its jobs (`--pool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolKind>,
    /// Every live process of the server, as `/proc` shows it when `/stats`
    /// is answered: what a harness on another machine needs to measure the
    /// server's CPU and memory. Absent from servers that cannot read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<ProcessStats>>,
}

/// One process of a server, read from `/proc/PID` by the server itself.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub pid: u32,
    /// CPU time since the process started, every thread, in seconds.
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// Proportional set size: private pages, plus shared ones divided
    /// among the processes that share them. Absent where the kernel has no
    /// `smaps_rollup`.
    #[serde(default)]
    pub pss_bytes: Option<u64>,
    #[serde(default)]
    pub rss_bytes: Option<u64>,
}

/// One worker slot: a worker process (prefork) or a pool thread
/// (threadpool). Counters are per slot, across replacements.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WorkerStats {
    pub id: usize,
    /// The worker's process id (a pool thread's process).
    pub pid: u32,
    /// A pool thread's kernel thread id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(default)]
    pub state: SlotState,
    pub requests: u64,
    pub in_flight: u64,
    pub errors: u64,
    pub restarts: u64,
    /// Connections this slot's event loop took to serve, across restarts;
    /// 0 for a worker that serves no connections (a pool thread). Absent
    /// from older servers' documents, hence the default.
    #[serde(default)]
    pub connections: u64,
    /// How late the worker's event-loop timer fires; absent for a worker
    /// that runs no event loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_lag_ms: Option<LoopLag>,
    /// threadpool: whether the thread is running a job now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<bool>,
}

/// threadpool's `main`: the event loop's counters, without an id.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct MainStats {
    pub pid: u32,
    pub requests: u64,
    pub in_flight: u64,
    pub errors: u64,
    /// Connections the event loop accepted: all of the process's.
    #[serde(default)]
    pub connections: u64,
}

/// What a slot's worker is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    /// Forked or spawned, not yet serving.
    #[default]
    Starting,
    /// Serving requests.
    Ready,
    /// Died and waiting to be replaced, or stopped on shutdown.
    Dead,
}

/// Event-loop lag percentiles, milliseconds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct LoopLag {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub depth: u64,
    pub capacity: u64,
    /// Jobs refused with 503 because the queue was full.
    pub rejected: u64,
}

/// A pool thread given up on: it still runs, and cannot be killed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LostThread {
    /// The slot it ran in (a replacement serves there now).
    pub slot: usize,
    pub tid: u32,
    pub lost_for_ms: u64,
    /// The CPU time it has used, from `/proc`; absent if unreadable.
    #[serde(default)]
    pub cpu_ms: Option<u64>,
    /// Requests it was serving when it was given up on: never answered by
    /// it, and no longer counted on its slot.
    #[serde(default)]
    pub in_flight: u64,
}

impl Stats {
    /// Requests the server held when it answered, the `/stats` request
    /// itself not counted. With a `main` (threadpool): the loop's
    /// `in_flight`, which covers queued jobs too. Otherwise the sum over
    /// the workers, each of which counts every request its loop handles.
    pub fn in_flight(&self) -> u64 {
        let total = match &self.main {
            Some(main) => main.in_flight,
            None => self.workers.iter().map(|w| w.in_flight).sum(),
        };
        total.saturating_sub(1)
    }

    pub fn restarts(&self) -> u64 {
        self.workers.iter().map(|w| w.restarts).sum()
    }
}

/// How `/crash` fails (`POST /crash?how=`).
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum CrashMode {
    /// A panic (an uncaught exception) in the code that runs the handler.
    Panic,
    /// `abort()`: SIGABRT.
    Abort,
    /// The worker exits with status 1 (a pool thread ends, in threadpool).
    Exit,
    /// A real SIGSEGV from touching an inaccessible page.
    Segv,
    /// A busy loop that never returns.
    Hang,
}

impl CrashMode {
    pub const ALL: [CrashMode; 5] = [
        CrashMode::Panic,
        CrashMode::Abort,
        CrashMode::Exit,
        CrashMode::Segv,
        CrashMode::Hang,
    ];
    pub const NAMES: &'static str = "panic|abort|exit|segv|hang";

    pub fn name(self) -> &'static str {
        match self {
            CrashMode::Panic => "panic",
            CrashMode::Abort => "abort",
            CrashMode::Exit => "exit",
            CrashMode::Segv => "segv",
            CrashMode::Hang => "hang",
        }
    }
}

impl std::str::FromStr for CrashMode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        CrashMode::ALL
            .into_iter()
            .find(|mode| mode.name() == s)
            .ok_or(())
    }
}

/// How a multi-process server spreads connections over its workers
/// (`--balance`). A server takes the policies it has and refuses the rest.
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Every worker accepts on the one inherited socket. Node's cluster
    /// calls it `SCHED_NONE`, hence the alias `none`.
    #[value(alias = "none")]
    #[serde(alias = "none")]
    Shared,
    /// One `SO_REUSEPORT` socket per worker; the kernel hashes connections
    /// across them.
    Reuseport,
    /// The primary accepts every connection and hands it to the next
    /// worker: Node's cluster default, `SCHED_RR`.
    Rr,
}

impl Balance {
    pub fn name(self) -> &'static str {
        match self {
            Balance::Shared => "shared",
            Balance::Reuseport => "reuseport",
            Balance::Rr => "rr",
        }
    }
}

/// Where a multi-process server builds its `--dataset-mb` dataset
/// (`--dataset-load`).
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetLoad {
    /// Once, before forking: the workers share its pages copy-on-write.
    #[default]
    BeforeFork,
    /// A private copy in each worker.
    PerWorker,
}

impl DatasetLoad {
    pub fn name(self) -> &'static str {
        match self {
            DatasetLoad::BeforeFork => "before-fork",
            DatasetLoad::PerWorker => "per-worker",
        }
    }
}

/// Which jobs a threaded server moves off its event loop (`--offload`).
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Offload {
    /// `/cpu` and `/crash` run on the pool.
    #[default]
    Cpu,
    /// Everything runs on the event loop, blocking it.
    None,
}

/// What runs a threaded server's jobs (`--pool`).
#[derive(ValueEnum, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// N threads taking jobs from one bounded queue, one job at a time.
    #[default]
    Queue,
    /// A rayon pool of N threads: work stealing, a request's parts split
    /// with `par_iter`; admission bounded as the queue is.
    Rayon,
}

impl PoolKind {
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Queue => "queue",
            PoolKind::Rayon => "rayon",
        }
    }
}

macro_rules! display_by_name {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    )*};
}
display_by_name!(CrashMode, Balance, DatasetLoad);

impl Offload {
    pub fn name(self) -> &'static str {
        match self {
            Offload::Cpu => "cpu",
            Offload::None => "none",
        }
    }
}
display_by_name!(Offload, PoolKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_is_the_documented_json() {
        let ready = Ready::new("prefork", "127.0.0.1:41234".parse().unwrap(), 4242, 4);
        assert_eq!(
            serde_json::to_string(&ready).unwrap(),
            r#"{"event":"ready","model":"prefork","addr":"127.0.0.1:41234","pid":4242,"workers":4}"#
        );
        assert!(
            serde_json::from_str::<Ready>(
                r#"{"event":"started","model":"x","addr":"127.0.0.1:1","pid":1,"workers":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn a_minimal_stats_document_parses_and_extras_stay_absent() {
        let stats: Stats = serde_json::from_str(
            r#"{"model":"m","pid":1,"uptime_ms":5,"workers":[
                {"id":0,"pid":2,"requests":3,"in_flight":1,"errors":0,"restarts":0}]}"#,
        )
        .unwrap();
        assert_eq!(stats.workers[0].state, SlotState::Starting);
        // `connections` came later: an older server's document reads as 0.
        assert_eq!(stats.workers[0].connections, 0);
        assert_eq!(stats.main, None);
        assert_eq!(stats.lost, None);
        let text = serde_json::to_string(&stats).unwrap();
        assert!(
            !text.contains("queue") && !text.contains("loop_lag_ms"),
            "{text}"
        );
    }

    #[test]
    fn in_flight_leaves_out_the_stats_request_and_prefers_main() {
        let worker = |in_flight| WorkerStats {
            in_flight,
            ..WorkerStats::default()
        };
        let mut stats = Stats {
            workers: vec![worker(3), worker(2)],
            ..Stats::default()
        };
        assert_eq!(stats.in_flight(), 4);
        stats.main = Some(MainStats {
            in_flight: 7,
            ..MainStats::default()
        });
        assert_eq!(stats.in_flight(), 6);
    }

    #[test]
    fn value_names_match_the_flags_and_the_json() {
        for mode in CrashMode::ALL {
            assert_eq!(mode.name().parse::<CrashMode>(), Ok(mode));
            assert_eq!(
                serde_json::to_string(&mode).unwrap(),
                format!("\"{}\"", mode.name())
            );
        }
        assert_eq!(
            serde_json::to_string(&DatasetLoad::PerWorker).unwrap(),
            "\"per-worker\""
        );
        assert_eq!(
            Balance::from_str("reuseport", false),
            Ok(Balance::Reuseport)
        );
        // Node's name for a shared socket.
        assert_eq!(Balance::from_str("none", false), Ok(Balance::Shared));
        assert_eq!(
            serde_json::from_str::<Balance>("\"none\"").unwrap(),
            Balance::Shared
        );
    }
}
