//! The worker-thread pool: N plain threads taking jobs from one bounded
//! channel, with a watchdog that replaces threads that exited or hung.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use service::contract::{self, QueueStats, WorkerStats};
use service::job::{Done, ExitRequested, Job, JobError, WorkerId};
use service::slot::{InFlight, SlotState, WorkerSlot};
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
    /// Running a job right now.
    busy: AtomicBool,
    /// Replaced after being declared hung: if its job ever returns, the
    /// thread must leave the slot to its replacement and end.
    retired: AtomicBool,
}

/// A thread declared hung and replaced.
struct LostThread {
    slot: usize,
    tid: u32,
    since: Instant,
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
            threads: Mutex::new(Vec::with_capacity(threads)),
            lost: Mutex::new(Vec::new()),
        });
        for slot in 0..threads {
            let thread = pool.spawn(slot)?;
            pool.threads.lock().unwrap().push(thread);
        }
        Ok(pool)
    }

    /// Every slot, the event loop's last.
    pub fn slots(&self) -> &Arc<Vec<WorkerSlot>> {
        &self.slots
    }

    /// The event loop's slot index.
    pub fn main_slot(&self) -> usize {
        self.slots.len() - 1
    }

    /// Whether every pool thread has started taking jobs.
    pub fn all_ready(&self) -> bool {
        self.slots[..self.main_slot()]
            .iter()
            .all(|s| s.state() == SlotState::Ready)
    }

    /// Queues a job without ever blocking the caller: a full queue is an
    /// immediate [`JobError::QueueFull`], which the HTTP layer turns into 503.
    pub async fn submit(&self, job: Job) -> Result<Done, JobError> {
        let (reply, outcome) = oneshot::channel();
        let sent = match self.sender.lock().unwrap().as_ref() {
            Some(sender) => sender.try_send(Task { job, reply }),
            None => return Err(JobError::Abandoned),
        };
        match sent {
            Ok(()) => outcome.await.unwrap_or(Err(JobError::Abandoned)),
            Err(TrySendError::Full(_)) => {
                self.rejected.fetch_add(1, Relaxed);
                Err(JobError::QueueFull {
                    capacity: self.capacity,
                })
            }
            Err(TrySendError::Disconnected(_)) => Err(JobError::Abandoned),
        }
    }

    fn spawn(self: &Arc<Self>, slot: usize) -> std::io::Result<PoolThread> {
        let flags = Arc::new(ThreadFlags::default());
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let pool = self.clone();
        let thread_flags = flags.clone();
        let handle = std::thread::Builder::new()
            .name(format!("pool-{slot}"))
            .spawn(move || {
                let tid = nix::unistd::gettid().as_raw() as u32;
                let _ = tid_tx.send(tid);
                pool.serve_jobs(slot, tid, &thread_flags);
            })?;
        let tid = tid_rx.recv().unwrap_or(0);
        Ok(PoolThread { handle, tid, flags })
    }

    /// A pool thread's life: take a job, run it, answer, repeat, until the
    /// channel closes (shutdown), a job asks it to exit, or it was retired.
    fn serve_jobs(&self, slot: usize, tid: u32, flags: &ThreadFlags) {
        let me = &self.slots[slot];
        let worker = WorkerId::Slot(slot);
        me.pid.store(tid, Relaxed);
        me.set_state(SlotState::Ready);
        me.beat();
        while let Ok(Task { job, reply }) = self.receiver.recv() {
            // The heartbeat is "when this thread last started or finished a
            // job"; the watchdog only ages it while the thread is busy.
            me.beat();
            flags.busy.store(true, Release);
            let outcome = {
                let _in_flight = InFlight::enter(me);
                catch_unwind(AssertUnwindSafe(|| job.run()))
            };
            flags.busy.store(false, Release);
            me.beat();
            let answer = match outcome {
                Ok(Ok(body)) => Ok(Done { worker, body }),
                Ok(Err(ExitRequested)) => {
                    tracing::warn!(slot, "pool thread exiting on request");
                    let _ = reply.send(Err(JobError::WorkerExited { worker }));
                    me.errors.fetch_add(1, Relaxed);
                    return;
                }
                // The panic message went to stderr through the panic hook.
                Err(_panic) => {
                    me.errors.fetch_add(1, Relaxed);
                    Err(JobError::Panicked { worker })
                }
            };
            // The requester may have gone (client disconnected): nothing to do.
            let _ = reply.send(answer);
            if flags.retired.load(Acquire) {
                tracing::info!(
                    slot,
                    "a thread given up as hung finished its job; it ends now"
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
            let hung = hang_timeout.is_some_and(|timeout| {
                thread.flags.busy.load(Acquire)
                    && self.slots[slot].heartbeat_age_ms() > timeout.as_millis() as u64
            });
            let ended = thread.handle.is_finished();
            if !hung && !ended {
                continue;
            }
            let replacement = match self.spawn(slot) {
                Ok(thread) => thread,
                Err(error) => {
                    tracing::error!(slot, %error, "cannot start a replacement pool thread");
                    continue;
                }
            };
            let old = std::mem::replace(&mut threads[slot], replacement);
            self.slots[slot].restarts.fetch_add(1, Relaxed);
            if ended {
                tracing::warn!(slot, tid = old.tid, "pool thread ended; replaced");
            } else {
                // A thread cannot be killed from outside: all we can do is
                // stop counting on it. It keeps its core busy until its job
                // returns, which for `hang` is never.
                old.flags.retired.store(true, Release);
                tracing::warn!(
                    slot,
                    tid = old.tid,
                    heartbeat_age_ms = self.slots[slot].heartbeat_age_ms(),
                    "pool thread hung: it cannot be killed, so it is abandoned (still burning \
                     CPU) and a replacement takes its slot"
                );
                self.lost.lock().unwrap().push(LostThread {
                    slot,
                    tid: old.tid,
                    since: Instant::now(),
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
                in_flight: 0,
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
