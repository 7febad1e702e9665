//! `--pool rayon`: the jobs run on a rayon pool instead of [`crate::pool`]'s
//! queue, and a request's parts are split across its threads with
//! `par_iter`, rayon's way of using every core for one piece of work.
//!
//! What is the same as the queue: N threads, a bound on the jobs waiting
//! for a thread (rayon's own queues have none, so the pool counts them and
//! refuses a request whole with 503 when its parts do not fit), per-thread
//! slots in
//! `/stats`, a panic caught per part (a `500`, the thread kept), and
//! `abort` and `segv` ending the whole process.
//!
//! What rayon does differently, because its threads are its own:
//!
//! - **Work stealing.** A request is one task; its parts are split by
//!   `par_iter`, and an idle thread steals what a busy one has not started.
//!   No part waits behind another request's while a thread is free, but
//!   nothing is first-come first-served either.
//! - **`exit` cannot end a thread.** rayon starts its threads once and
//!   never replaces one, so a job that asks its thread to end is answered
//!   `500` like the queue's, and the thread goes on serving.
//! - **A hung thread is never replaced.** The queue's watchdog gives up on
//!   a hung thread and starts another; rayon has no way to add one, so the
//!   pool serves with one thread fewer for as long as the job runs. The
//!   watchdog can only say so, once per hung job.
//! - **A panic that escaped would abort.** rayon aborts the process when a
//!   task panics and no `panic_handler` is set; every part runs under
//!   `catch_unwind`, so none escapes, and the handler is set anyway.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::time::Duration;

use rayon::prelude::*;
use service::contract::{QueueStats, WorkerStats};
use service::job::{Done, ExitRequested, Job, JobError, WorkerId};
use service::slot::{SlotState, WorkerSlot};
use tokio::sync::oneshot;

/// The rayon pool and the bookkeeping rayon does not do: admission and
/// per-thread counters.
pub struct RayonPool {
    pool: rayon::ThreadPool,
    capacity: usize,
    /// Parts admitted that no thread has started yet: the queue depth, and
    /// what the capacity bounds, as the queue's does.
    waiting: AtomicUsize,
    rejected: AtomicU64,
    threads: Arc<Vec<ThreadState>>,
    /// Slots `0..threads` are rayon's threads', by rayon's thread index; the
    /// last is the event loop's.
    slots: Arc<Vec<WorkerSlot>>,
}

impl std::fmt::Debug for RayonPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RayonPool")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// One rayon thread, as `/stats` and the watchdog see it.
#[derive(Default)]
struct ThreadState {
    tid: AtomicU32,
    busy: AtomicBool,
    /// The watchdog has reported this thread's current job as hung.
    reported: AtomicBool,
}

impl RayonPool {
    /// Starts a rayon pool of `threads` threads admitting at most `capacity`
    /// parts at a time.
    pub fn start(threads: usize, capacity: usize) -> std::io::Result<Arc<RayonPool>> {
        let slots: Arc<Vec<WorkerSlot>> =
            Arc::new((0..=threads).map(|_| WorkerSlot::default()).collect());
        let states: Arc<Vec<ThreadState>> =
            Arc::new((0..threads).map(|_| ThreadState::default()).collect());
        let (start_slots, start_states) = (slots.clone(), states.clone());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("rayon-{index}"))
            .start_handler(move |index| {
                let tid = nix::unistd::gettid().as_raw() as u32;
                start_states[index].tid.store(tid, Relaxed);
                let slot = &start_slots[index];
                slot.pid.store(tid, Relaxed);
                slot.beat();
                slot.set_state(SlotState::Ready);
            })
            .panic_handler(|_| tracing::error!("a rayon task panicked outside catch_unwind"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Arc::new(RayonPool {
            pool,
            capacity,
            waiting: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            threads: states,
            slots,
        }))
    }

    pub fn slots(&self) -> &Arc<Vec<WorkerSlot>> {
        &self.slots
    }

    /// Runs a request's jobs (its parts) on the pool, the parts in
    /// parallel, and answers when all have run; refused whole with
    /// [`JobError::QueueFull`] when they do not fit in the places left.
    /// Only the event loop submits, so the check and the count cannot race
    /// with another submitter; started parts only make room.
    pub async fn submit(self: &Arc<Self>, jobs: Vec<Job>) -> Result<Done, JobError> {
        let parts = jobs.len();
        if self.waiting.load(Relaxed) + parts > self.capacity {
            self.rejected.fetch_add(1, Relaxed);
            return Err(JobError::QueueFull {
                capacity: self.capacity,
            });
        }
        self.waiting.fetch_add(parts, Relaxed);
        let (reply, outcome) = oneshot::channel();
        let pool = self.clone();
        self.pool.spawn(move || {
            let answers: Vec<_> = jobs.into_par_iter().map(|job| pool.run(job)).collect();
            let _ = reply.send(Done::joined(answers));
        });
        outcome.await.unwrap_or(Err(JobError::Abandoned))
    }

    /// One part, on whichever rayon thread took it, counted on its slot.
    fn run(&self, job: Job) -> Result<Done, JobError> {
        let index = rayon::current_thread_index().expect("parts run on the pool's threads");
        let (me, thread) = (&self.slots[index], &self.threads[index]);
        self.waiting.fetch_sub(1, Relaxed);
        me.beat();
        me.requests.fetch_add(1, Relaxed);
        me.in_flight.fetch_add(1, Relaxed);
        thread.busy.store(true, Release);
        let outcome = catch_unwind(AssertUnwindSafe(|| job.run()));
        thread.busy.store(false, Release);
        thread.reported.store(false, Relaxed);
        me.in_flight.fetch_sub(1, Relaxed);
        me.beat();
        let worker = WorkerId::Slot(index);
        match outcome {
            Ok(Ok(body)) => Ok(Done { worker, body }),
            Ok(Err(ExitRequested)) => {
                me.errors.fetch_add(1, Relaxed);
                tracing::warn!(
                    slot = index,
                    "exit asked of a rayon thread, which cannot end"
                );
                Err(JobError::WorkerExited { worker })
            }
            Err(_panic) => {
                me.errors.fetch_add(1, Relaxed);
                Err(JobError::Panicked { worker })
            }
        }
    }

    /// Says, once per job, that a thread's job has run past `hang_timeout`:
    /// rayon cannot replace the thread, so that is all there is to do.
    pub fn watch(&self, hang_timeout: Option<Duration>) {
        let Some(timeout) = hang_timeout else { return };
        for (slot, thread) in self.threads.iter().enumerate() {
            let age = self.slots[slot].heartbeat_age_ms();
            if thread.busy.load(Acquire)
                && age > timeout.as_millis() as u64
                && !thread.reported.swap(true, Relaxed)
            {
                tracing::warn!(
                    slot,
                    tid = thread.tid.load(Relaxed),
                    heartbeat_age_ms = age,
                    "rayon thread hung: rayon cannot replace it, so the pool serves with one \
                     thread fewer until its job returns"
                );
            }
        }
    }

    /// `/stats` entries for the threads and the admission queue.
    pub fn stats(&self) -> (Vec<WorkerStats>, QueueStats) {
        let workers = self
            .threads
            .iter()
            .enumerate()
            .map(|(id, thread)| WorkerStats {
                pid: std::process::id(),
                tid: Some(thread.tid.load(Relaxed)),
                busy: Some(thread.busy.load(Relaxed)),
                ..self.slots[id].stats(id)
            })
            .collect();
        let queue = QueueStats {
            depth: self.waiting.load(Relaxed) as u64,
            capacity: self.capacity as u64,
            rejected: self.rejected.load(Relaxed),
        };
        (workers, queue)
    }
}
