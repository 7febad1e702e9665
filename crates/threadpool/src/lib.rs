//! `threadpool`: one process, one event loop, a pool of worker threads; the
//! way Node's `worker_threads` are used.
//!
//! The main thread runs a current-thread tokio runtime that accepts and
//! serves HTTP through the shared `service` crate, like Node's main thread.
//! `/cpu` (and `/crash`) jobs go to [`pool::Pool`]: N plain threads taking
//! jobs from one bounded crossbeam channel and answering over one-shot
//! channels. `/io` stays on the loop, as a timer, like Node's I/O.
//!
//! `--pool rayon` puts a rayon pool in the queue's place ([`rayon_pool`]):
//! the same bound on admitted jobs, work stealing instead of one queue, and
//! a request's parts (`/cpu?parts=P`) split with `par_iter`.
//!
//! Everything is shared by address: the dataset is one `Arc`, and the stats
//! slots (the same type prefork keeps in shared memory) are one allocation.
//! That is what threads buy, and also what they cost: an `abort` or a
//! segfault in any thread takes the whole process, and a hung thread cannot
//! be killed, only abandoned. The tests and `lab crash` show both.

pub mod pool;
pub mod rayon_pool;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use service::cli::CommonArgs;
use service::contract::{LostThread, MainStats, QueueStats, Stats, WorkerStats};
pub use service::contract::{Offload, PoolKind};
use service::dataset::Dataset;
use service::job::{BoxFuture, Done, Job, JobError, WorkerId};
use service::slot::{SlotState, WorkerSlot};
use service::{App, Model, SlotTable};
use tokio::signal::unix::{SignalKind, signal};

use crate::pool::Pool;
use crate::rayon_pool::RayonPool;

/// How often the watchdog looks for ended or hung pool threads.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// After the HTTP drain, how long idle pool threads get to notice the closed
/// queue and end.
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// Command-line flags: the contract's, plus this model's own.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "threadpool",
    version,
    about = "The lab's thread-pool server (Node's worker_threads): one event loop \
             and a pool of worker threads fed by a bounded queue."
)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Capacity of the job queue in front of the pool, in jobs (a request
    /// of P parts takes P). When a request's jobs do not fit, `/cpu`
    /// answers 503 with `retry-after: 1` at once.
    #[arg(long, value_name = "JOBS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub queue: u32,

    /// Where `/cpu` runs. `cpu`: on the pool. `none`: on the event loop
    /// itself, which is Node without workers, the baseline that shows what
    /// offloading buys.
    #[arg(long, value_enum, default_value_t = Offload::Cpu)]
    pub offload: Offload,

    /// What runs the jobs. `queue`: N threads taking jobs from one bounded
    /// queue in order. `rayon`: a rayon pool of N threads, work stealing,
    /// a request's parts split with `par_iter`; the same bound on admitted
    /// jobs. rayon cannot end or replace its threads: `exit` leaves the
    /// thread serving, and a hung thread is only reported.
    #[arg(long, value_enum, default_value_t = PoolKind::Queue)]
    pub pool: PoolKind,

    /// Give up on a pool thread whose job has run this long (0: never) and
    /// start a replacement. The stuck thread cannot be killed; it is reported
    /// under `lost` in `/stats`.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub worker_timeout_ms: u64,
}

/// What can stop the server. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the pool threads")]
    Pool(#[source] std::io::Error),
    #[error("cannot start the event loop")]
    Runtime(#[source] std::io::Error),
    #[error("cannot write the ready line")]
    Stdout(#[source] std::io::Error),
}

/// Runs the server until a graceful shutdown completes.
pub fn run(args: Args) -> Result<(), Error> {
    let started = Instant::now();
    let threads = args.common.workers();
    let bind_error = |source| Error::Bind {
        addr: args.common.listen,
        source,
    };
    let listener = service::bind(args.common.listen).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let dataset =
        (args.common.dataset_mb > 0).then(|| Arc::new(Dataset::generate(args.common.dataset_mb)));
    let pool = Jobs::start(args.pool, threads, args.queue as usize).map_err(Error::Pool)?;
    let slots: SlotTable = pool.slots().clone();
    let main_slot = pool.main_slot();
    // The event loop's slot: `/stats` reports it as `main`, with this pid.
    slots[main_slot]
        .pid
        .store(std::process::id(), std::sync::atomic::Ordering::Relaxed);
    let app = Arc::new(App {
        model: Arc::new(PoolModel {
            pool: pool.clone(),
            offload: args.offload,
            started,
        }),
        slots: slots.clone(),
        loop_slot: main_slot,
        loop_worker: WorkerId::Main,
        dataset,
        allow_crash: args.common.allow_crash,
    });
    let config = args.common.http_config();
    let hang_timeout =
        (args.worker_timeout_ms > 0).then(|| Duration::from_millis(args.worker_timeout_ms));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let drained = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(Error::Runtime)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Runtime)?;
        let ticker_slots = slots.clone();
        if !config.without.ticker {
            tokio::spawn(async move { service::ticker::run(&ticker_slots[main_slot]).await });
        }
        let watched = pool.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_EVERY);
            loop {
                every.tick().await;
                watched.watch(hang_timeout);
            }
        });
        while !pool.all_ready() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        service::announce_ready("threadpool", addr, threads).map_err(Error::Stdout)?;
        tracing::info!(%addr, threads, queue = args.queue, offload = ?args.offload,
            pool = ?args.pool, "ready");
        let shutdown = async {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        Ok::<_, Error>(service::serve(listener, app, config, shutdown).await)
    })?;
    // Requests waiting on queued jobs kept their connections open, so the
    // drain above already let queued jobs finish. What is left is to close
    // the queue and let the threads go.
    let still_running = pool.shutdown(Instant::now() + JOIN_GRACE);
    tracing::info!(?drained, still_running, "stopped");
    Ok(())
}

/// What runs the jobs (`--pool`): the two share what the event loop asks
/// of them, and differ in how they run a job and what they can do about a
/// thread that ends or hangs.
#[derive(Clone, Debug)]
enum Jobs {
    Queue(Arc<Pool>),
    Rayon(Arc<RayonPool>),
}

impl Jobs {
    fn start(kind: PoolKind, threads: usize, capacity: usize) -> std::io::Result<Jobs> {
        Ok(match kind {
            PoolKind::Queue => Jobs::Queue(Pool::start(threads, capacity)?),
            PoolKind::Rayon => Jobs::Rayon(RayonPool::start(threads, capacity)?),
        })
    }

    fn kind(&self) -> PoolKind {
        match self {
            Jobs::Queue(_) => PoolKind::Queue,
            Jobs::Rayon(_) => PoolKind::Rayon,
        }
    }

    /// Every slot: the pool threads' first, the event loop's last.
    fn slots(&self) -> &Arc<Vec<WorkerSlot>> {
        match self {
            Jobs::Queue(pool) => pool.slots(),
            Jobs::Rayon(pool) => pool.slots(),
        }
    }

    fn main_slot(&self) -> usize {
        self.slots().len() - 1
    }

    /// Whether every pool thread has started taking jobs.
    fn all_ready(&self) -> bool {
        self.slots()[..self.main_slot()]
            .iter()
            .all(|s| s.state() == SlotState::Ready)
    }

    fn watch(&self, hang_timeout: Option<Duration>) {
        match self {
            Jobs::Queue(pool) => pool.watch(hang_timeout),
            Jobs::Rayon(pool) => pool.watch(hang_timeout),
        }
    }

    /// A request's jobs: its parts, run at once where threads are free.
    async fn submit(self, jobs: Vec<Job>) -> Result<Done, JobError> {
        match self {
            Jobs::Queue(pool) => pool.submit(jobs).await,
            Jobs::Rayon(pool) => pool.submit(jobs).await,
        }
    }

    /// The queue's threads can end and be given up on; rayon's cannot.
    fn stats(&self) -> (Vec<WorkerStats>, QueueStats, Vec<LostThread>) {
        match self {
            Jobs::Queue(pool) => pool.stats(),
            Jobs::Rayon(pool) => {
                let (workers, queue) = pool.stats();
                (workers, queue, Vec::new())
            }
        }
    }

    /// Closes the queue and waits for its threads; returns how many still
    /// ran at `deadline`. rayon's threads end by themselves once the pool
    /// is dropped and their work is done, so none is waited for.
    fn shutdown(&self, deadline: Instant) -> usize {
        match self {
            Jobs::Queue(pool) => pool.shutdown(deadline),
            Jobs::Rayon(_) => 0,
        }
    }
}

/// The threadpool model: jobs go to the pool, or stay on the loop with
/// `--offload none`.
struct PoolModel {
    pool: Jobs,
    offload: Offload,
    started: Instant,
}

impl Model for PoolModel {
    fn execute(&self, job: Job) -> BoxFuture<Result<Done, JobError>> {
        if let (Job::Cpu { .. }, Offload::None) = (job, self.offload) {
            // Blocks the event loop for the whole computation, every part
            // one after another, exactly as a CPU-bound handler does in Node
            // without workers.
            let body = job.run().expect("a cpu job never asks to exit");
            return Box::pin(std::future::ready(Ok(Done {
                worker: WorkerId::Main,
                body,
            })));
        }
        Box::pin(self.pool.clone().submit(job.parts()))
    }

    fn stats(&self) -> Stats {
        let (workers, queue, lost) = self.pool.stats();
        let main_slot = self.pool.main_slot();
        let main = &self.pool.slots()[main_slot];
        let main_entry = main.stats(main_slot);
        Stats {
            main: Some(MainStats {
                pid: main_entry.pid,
                requests: main_entry.requests,
                in_flight: main_entry.in_flight,
                errors: main_entry.errors,
                connections: main_entry.connections,
            }),
            loop_lag_ms: Some(main.loop_lag()),
            queue: Some(queue),
            lost: Some(lost),
            offload: Some(self.offload),
            pool: Some(self.pool.kind()),
            ..service::stats_document("threadpool", std::process::id(), self.started, workers)
        }
    }
}
