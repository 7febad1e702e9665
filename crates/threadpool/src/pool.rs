//! The worker-thread pool: N plain threads taking jobs from one bounded
//! channel, with a watchdog that replaces threads that exited or hung.
//!
//! A thread cannot be killed, so a hung one is given up on and keeps
//! running. Its slot must still belong to exactly one thread: each slot has
//! an owner (a generation number, under a lock), a thread writes its slot's
//! counters only while it owns the slot, and the watchdog hands a slot to a
//! replacement under that lock. The requests the lost thread held are then
//! reported as its own (`lost[].in_flight`), its replacement starts at zero,
//! and if the lost thread's job ever returns it answers its request and ends
//! without touching the slot.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use service::contract::{self, QueueStats, WorkerStats};
use service::job::{Done, ExitRequested, Job, JobError, WorkerId};
use service::slot::{SlotState, WorkerSlot};
use tokio::sync::oneshot;

/// A job and where to send its outcome.
struct Task {
    job: Job,
    reply: oneshot::Sender<Result<Done, JobError>>,
}

/// The pool. Shared (`Arc`) by the event loop, which submits jobs and runs
/// the watchdog, and by every pool thread.
pub struct Pool {
    /// The sending half, behind a lock only so that shutdown can drop it:
    /// once it is gone the channel disconnects and idle threads exit.
    sender: Mutex<Option<Sender<Task>>>,
    receiver: Receiver<Task>,
    capacity: usize,
    /// Jobs refused because the queue was full.
    rejected: AtomicU64,
    /// Slots `0..threads` are the pool threads'; the last is the event
    /// loop's own. One allocation shared by all: the `SharedArrayBuffer` of
    /// this model.
    slots: Arc<Vec<WorkerSlot>>,
    /// Per pool slot, the generation of the thread that owns it: the only
    /// one allowed to write the slot. Bumped, under this lock, when the
    /// watchdog replaces the thread.
    owners: Vec<Mutex<u64>>,
    /// The live thread in each pool slot.
    threads: Mutex<Vec<PoolThread>>,
    /// Threads given up as hung: they cannot be killed, only abandoned.
    lost: Mutex<Vec<LostThread>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// One pool thread, as the watchdog sees it.
struct PoolThread {
    handle: JoinHandle<()>,
    /// Its kernel thread id, for `/stats` and `/proc`.
    tid: u32,
    /// Shared with the thread itself.
    flags: Arc<ThreadFlags>,
}

#[derive(Default)]
struct ThreadFlags {
    /// Running a job right now. Written under the slot's owner lock, with
    /// the heartbeat, so the watchdog sees the two together.
    busy: AtomicBool,
}

/// A thread declared hung and replaced.
struct LostThread {
    slot: usize,
    tid: u32,
    since: Instant,
    /// Requests it held when it was given up on (its slot's `in_flight`
    /// then), taken off the slot that its replacement now counts on.
    in_flight: u64,
    handle: JoinHandle<()>,
}

impl Pool {
    /// Starts `threads` pool threads behind a queue of `capacity` jobs.
    pub fn start(threads: usize, capacity: usize) -> std::io::Result<Arc<Pool>> {
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        let pool = Arc::new(Pool {
            sender: Mutex::new(Some(sender)),
            receiver,
            capacity,
            rejected: AtomicU64::new(0),
            slots: Arc::new((0..=threads).map(|_| WorkerSlot::default()).collect()),
            owners: (0..threads).map(|_| Mutex::new(0)).collect(),
            threads: Mutex::new(Vec::with_capacity(threads)),
            lost: Mutex::new(Vec::new()),
        });
        for slot in 0..threads {
            let thread = pool.spawn(slot, 0)?;
            pool.threads.lock().unwrap().push(thread);
        }
        Ok(pool)
    }

    /// Every slot, the event loop's last.
    pub fn slots(&self) -> &Arc<Vec<WorkerSlot>> {
        &self.slots
    }

    /// Queues a request's jobs (its parts, [`Job::parts`]) without ever
    /// blocking the caller, and answers when all have run. A request is
    /// admitted whole or not at all: when the queue has fewer free places
    /// than it has parts, it gets an immediate [`JobError::QueueFull`],
    /// which the HTTP layer turns into 503.
    ///
    /// Checking the free places and then sending cannot race: the event
    /// loop is the only thread that submits, and the pool threads only ever
    /// make room.
    pub async fn submit(&self, jobs: Vec<Job>) -> Result<Done, JobError> {
        let full = JobError::QueueFull {
            capacity: self.capacity,
        };
        let mut outcomes = Vec::with_capacity(jobs.len());
        {
            let sender = self.sender.lock().unwrap();
            let Some(sender) = sender.as_ref() else {
                return Err(JobError::Abandoned);
            };
            if self.capacity - sender.len().min(self.capacity) < jobs.len() {
                self.rejected.fetch_add(1, Relaxed);
                return Err(full);
            }
            for job in jobs {
                let (reply, outcome) = oneshot::channel();
                match sender.try_send(Task { job, reply }) {
                    Ok(()) => outcomes.push(outcome),
                    Err(TrySendError::Full(_)) => {
                        self.rejected.fetch_add(1, Relaxed);
                        return Err(full);
                    }
                    Err(TrySendError::Disconnected(_)) => return Err(JobError::Abandoned),
                }
            }
        }
        let mut answers = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            answers.push(outcome.await.unwrap_or(Err(JobError::Abandoned)));
        }
        Done::joined(answers)
    }

    /// Starts a thread for `slot` as owner `generation`. It takes jobs only
    /// once it owns the slot: at once for the first threads, and for a
    /// replacement when the watchdog lets go of the slot's owner lock.
    fn spawn(self: &Arc<Self>, slot: usize, generation: u64) -> std::io::Result<PoolThread> {
        let flags = Arc::new(ThreadFlags::default());
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let pool = self.clone();
        let thread_flags = flags.clone();
        let handle = std::thread::Builder::new()
            .name(format!("pool-{slot}"))
            .spawn(move || {
                let tid = nix::unistd::gettid().as_raw() as u32;
                let _ = tid_tx.send(tid);
                pool.serve_jobs(slot, generation, tid, &thread_flags);
            })?;
        let tid = tid_rx.recv().unwrap_or(0);
        Ok(PoolThread { handle, tid, flags })
    }

    /// Runs `update` on the slot if the thread of `generation` still owns
    /// it, under the owner lock; `false` if the slot has passed to a
    /// replacement. Every write a pool thread makes to its slot goes
    /// through here, so none lands after the watchdog has reset the slot
    /// for the next owner.
    fn update_slot(&self, slot: usize, generation: u64, update: impl FnOnce(&WorkerSlot)) -> bool {
        let owner = self.owners[slot].lock().unwrap();
        if *owner != generation {
            return false;
        }
        update(&self.slots[slot]);
        true
    }

    /// A pool thread's life: take a job, run it, answer, repeat, until the
    /// channel closes (shutdown), a job asks it to exit, or the thread was
    /// given up on as hung while its job ran.
    fn serve_jobs(&self, slot: usize, generation: u64, tid: u32, flags: &ThreadFlags) {
        let worker = WorkerId::Slot(slot);
        let owned = self.update_slot(slot, generation, |me| {
            me.pid.store(tid, Relaxed);
            me.set_state(SlotState::Ready);
            me.beat();
        });
        if !owned {
            // Replaced before it started: cannot happen while the watchdog
            // replaces only busy or ended threads, but never serve unowned.
            return;
        }
        while let Ok(Task { job, reply }) = self.receiver.recv() {
            // The heartbeat is "when this thread last started or finished a
            // job"; the watchdog only ages it while the thread is busy. This
            // thread owns the slot here: only a busy thread is given up on.
            self.update_slot(slot, generation, |me| {
                me.beat();
                me.requests.fetch_add(1, Relaxed);
                me.in_flight.fetch_add(1, Relaxed);
                flags.busy.store(true, Release);
            });
            let outcome = catch_unwind(AssertUnwindSafe(|| job.run()));
            let failed = !matches!(outcome, Ok(Ok(_)));
            let still_owned = self.update_slot(slot, generation, |me| {
                me.in_flight.fetch_sub(1, Relaxed);
                if failed {
                    me.errors.fetch_add(1, Relaxed);
                }
                me.beat();
                flags.busy.store(false, Release);
            });
            let answer = match outcome {
                Ok(Ok(body)) => Ok(Done { worker, body }),
                Ok(Err(ExitRequested)) => {
                    tracing::warn!(slot, "pool thread exiting on request");
                    let _ = reply.send(Err(JobError::WorkerExited { worker }));
                    return;
                }
                // The panic message went to stderr through the panic hook.
                Err(_panic) => Err(JobError::Panicked { worker }),
            };
            // The requester may have gone (client disconnected): nothing to do.
            let _ = reply.send(answer);
            if !still_owned {
                tracing::info!(
                    slot,
                    "a thread given up as hung finished its job; it answered and ends now"
                );
                return;
            }
        }
    }

    /// Replaces threads that ended, and threads whose job has run longer
    /// than `hang_timeout` (if set). Called periodically by the event loop.
    pub fn watch(self: &Arc<Self>, hang_timeout: Option<Duration>) {
        let mut threads = self.threads.lock().unwrap();
        for slot in 0..threads.len() {
            let thread = &threads[slot];
            let ended = thread.handle.is_finished();
            // Decided under the owner lock, where the thread writes `busy`
            // and its heartbeat together; held until the slot is handed over.
            let mut owner = self.owners[slot].lock().unwrap();
            let hung = hang_timeout.is_some_and(|timeout| {
                thread.flags.busy.load(Acquire)
                    && self.slots[slot].heartbeat_age_ms() > timeout.as_millis() as u64
            });
            if !hung && !ended {
                continue;
            }
            let heartbeat_age_ms = self.slots[slot].heartbeat_age_ms();
            // The replacement waits for this lock before it touches the slot.
            let replacement = match self.spawn(slot, *owner + 1) {
                Ok(thread) => thread,
                Err(error) => {
                    tracing::error!(slot, %error, "cannot start a replacement pool thread");
                    continue;
                }
            };
            // From here on the old thread writes nothing to the slot. What
            // it held is its own now; its replacement starts from zero.
            *owner += 1;
            let held = self.slots[slot].in_flight.load(Relaxed);
            self.slots[slot].reset_for_new_worker(replacement.tid);
            self.slots[slot].restarts.fetch_add(1, Relaxed);
            drop(owner);
            let old = std::mem::replace(&mut threads[slot], replacement);
            if ended {
                tracing::warn!(slot, tid = old.tid, "pool thread ended; replaced");
            } else {
                // A thread cannot be killed from outside: all we can do is
                // stop counting on it. It keeps its core busy until its job
                // returns, which for `hang` is never.
                tracing::warn!(
                    slot,
                    tid = old.tid,
                    heartbeat_age_ms,
                    in_flight = held,
                    "pool thread hung: it cannot be killed, so it is abandoned (still burning \
                     CPU) and a replacement takes its slot"
                );
                self.lost.lock().unwrap().push(LostThread {
                    slot,
                    tid: old.tid,
                    since: Instant::now(),
                    in_flight: held,
                    handle: old.handle,
                });
            }
        }
        // A lost thread whose job finished after all has ended by itself.
        self.lost
            .lock()
            .unwrap()
            .retain(|lost| !lost.handle.is_finished());
    }

    /// `/stats` entries for the pool threads, the queue and the lost threads.
    pub fn stats(&self) -> (Vec<WorkerStats>, QueueStats, Vec<contract::LostThread>) {
        let threads = self.threads.lock().unwrap();
        let workers = threads
            .iter()
            .enumerate()
            .map(|(id, thread)| WorkerStats {
                pid: std::process::id(),
                tid: Some(thread.tid),
                busy: Some(thread.flags.busy.load(Relaxed)),
                ..self.slots[id].stats(id)
            })
            .collect();
        let queue = QueueStats {
            depth: self.receiver.len() as u64,
            capacity: self.capacity as u64,
            rejected: self.rejected.load(Relaxed),
        };
        let lost = self
            .lost
            .lock()
            .unwrap()
            .iter()
            .map(|lost| contract::LostThread {
                slot: lost.slot,
                tid: lost.tid,
                lost_for_ms: lost.since.elapsed().as_millis() as u64,
                cpu_ms: thread_cpu_ms(lost.tid),
                in_flight: lost.in_flight,
            })
            .collect();
        (workers, queue, lost)
    }

    /// Closes the queue and waits until `deadline` for the pool threads to
    /// finish what is queued and end. Returns how many were still running.
    pub fn shutdown(&self, deadline: Instant) -> usize {
        self.sender.lock().unwrap().take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap());
        let mut running = 0;
        for thread in threads {
            while !thread.handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.handle.is_finished() {
                let _ = thread.handle.join();
            } else {
                running += 1;
            }
        }
        running
    }
}

/// CPU time a thread of this process has used, in milliseconds, from
/// `/proc/self/task/TID/stat` (utime + stime, in clock ticks).
fn thread_cpu_ms(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the parenthesised name start at field 3; utime and stime
    // are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(ticks * 1000 / per_second as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_cpu_time_is_readable() {
        let tid = nix::unistd::gettid().as_raw() as u32;
        let spin_until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < spin_until {}
        assert!(thread_cpu_ms(tid).is_some_and(|ms| ms >= 10));
    }
}
