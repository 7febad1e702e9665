//! The master: binds, forks, supervises, shuts down.
//!
//! It is one single-threaded loop around `poll(2)` on a signalfd. Signals
//! (SIGCHLD, SIGTERM, SIGINT) are blocked and read as data from the signalfd,
//! so no code ever runs inside a signal handler. The poll timeout doubles as
//! the tick for the periodic duties: respawning when a backoff expires,
//! checking heartbeats, and noticing that every worker is ready. A dead
//! worker whose slot is not in a crash loop is replaced in the same pass
//! that reaps it ([`Backoff`]).
//!
//! Under `--balance rr` the same loop also polls the listening socket (while
//! some worker has room) and each worker's hand-off channel (for
//! acknowledgements), and hands connections out ([`handoff`]):
//!
//! - A worker has room when it is ready, its channel is open and not full,
//!   and it has acknowledged its last hand-off: one hand-off in flight per
//!   worker, Node's rule. A worker whose loop is busy acknowledges nothing,
//!   so it is passed over until it catches up.
//! - The master accepts only while some worker has room; otherwise new
//!   connections wait in the kernel's backlog, as under the other policies.
//! - Each goes to the next worker in turn, from the one after the last
//!   chosen, that has room (round robin over the workers with room).
//! - The master keeps its copy of each connection until the worker
//!   acknowledges it. A worker that dies first has it taken back, in the
//!   pass that reaps it, and given to another worker ahead of any new
//!   connection. With no worker ready it waits for one, the respawned
//!   worker included, for up to [`WAIT_FOR_WORKER`], and is then closed.
//! - The master counts the connections it handed out, and logs the count
//!   when it exits.
//!
//! [`handoff`]: crate::handoff

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use service::dataset::Dataset;
use service::slot::SlotState;

use crate::backoff::Backoff;
use crate::handoff::{self, SendError};
use crate::region::Region;
use crate::worker::{self, Inherited, WorkerContext};
use crate::{Args, Balance, DatasetLoad, Error};

/// How long the supervision loop sleeps between duties at most.
const TICK: Duration = Duration::from_millis(20);
/// Extra time after `--grace-ms` before stragglers are SIGKILLed, so a worker
/// that uses its whole grace period still gets to exit by itself.
const GRACE_SLACK: Duration = Duration::from_millis(500);
/// `--balance rr`: how long a connection taken back from a dead worker
/// waits for a worker with room before the master closes it. As long as the
/// longest respawn backoff, so even a slot in a crash loop gets its next try.
pub const WAIT_FOR_WORKER: Duration = crate::backoff::BACKOFF_MAX;
/// `--balance rr`: how long the master stops accepting after `accept` fails
/// for a reason other than running out of descriptors, instead of spinning
/// on a listener that stays readable. Out of descriptors (EMFILE), the wait
/// is `service::accept`'s backoff, and the episode is logged once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Runs the master until a graceful shutdown completes.
pub fn run(args: Args) -> Result<(), Error> {
    let workers = args.common.workers();
    let bind_error = |source| Error::Bind {
        addr: args.common.listen,
        source,
    };
    let listeners = match args.balance {
        // rr: one socket, which only the master accepts on.
        Balance::Shared | Balance::Rr => {
            vec![service::bind(args.common.listen).map_err(bind_error)?]
        }
        Balance::Reuseport => {
            service::bind_reuseport(args.common.listen, workers).map_err(bind_error)?
        }
    };
    let addr = listeners[0].local_addr().map_err(bind_error)?;
    let region = Arc::new(Region::new(workers).map_err(Error::Region)?);
    let dataset = match args.dataset_load {
        DatasetLoad::BeforeFork if args.common.dataset_mb > 0 => {
            tracing::info!(
                mb = args.common.dataset_mb,
                "building the dataset before fork"
            );
            Some(Arc::new(Dataset::generate(args.common.dataset_mb)))
        }
        _ => None,
    };

    // Block the signals we supervise by, and read them from a signalfd
    // instead. Workers restore the original mask after fork.
    let mut supervised = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        supervised.add(signal);
    }
    let original_mask = supervised
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(Error::Signals)?;
    let signals = SignalFd::with_flags(&supervised, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(Error::Signals)?;

    let mut master = Master {
        context: WorkerContext {
            args,
            listeners,
            region,
            dataset,
            master_pid: std::process::id(),
            started: Instant::now(),
            original_mask,
        },
        signals,
        addr,
        workers: (0..workers).map(|_| Worker::default()).collect(),
        ready_announced: false,
        shutdown: None,
        waiting: VecDeque::new(),
        next: 0,
        accept_after: None,
        exhaustion: service::accept::Exhaustion::default(),
        handed_out: 0,
    };
    master.supervise()
}

/// The master's view of one slot.
#[derive(Debug, Default)]
struct Worker {
    /// The live process in this slot, if any.
    pid: Option<Pid>,
    /// When it was forked, to tell a quick death from a stable life.
    forked_at: Option<Instant>,
    /// When to replace it if it dies.
    backoff: Backoff,
    /// When to fork a replacement, if one is due.
    respawn_at: Option<Instant>,
    /// We already sent SIGKILL for a missed heartbeat; wait for the reap.
    killed_as_hung: bool,
    /// rr: the master's end of the hand-off channel to the live worker;
    /// `None` once the worker closed its end.
    channel: Option<OwnedFd>,
    /// rr: the master's copy of the connection handed to the worker and not
    /// yet acknowledged. Dropping it closes only the master's descriptor.
    handed: Option<TcpStream>,
    /// rr: the last send found the channel full (EAGAIN); no room until
    /// `poll` says it is writable again.
    send_blocked: bool,
}

/// rr: a connection taken back from a worker that died before
/// acknowledging it, waiting for another.
#[derive(Debug)]
struct Waiting {
    stream: TcpStream,
    since: Instant,
}

#[derive(Debug)]
struct Master {
    /// What a forked worker needs; owned here so the child inherits it.
    context: WorkerContext,
    signals: SignalFd,
    addr: SocketAddr,
    workers: Vec<Worker>,
    ready_announced: bool,
    /// Set once SIGTERM or SIGINT arrives: the moment stragglers get SIGKILL.
    shutdown: Option<Instant>,
    /// rr: connections taken back from dead workers, oldest first.
    waiting: VecDeque<Waiting>,
    /// rr: the slot to try first for the next hand-off.
    next: usize,
    /// rr: no `accept` before this, after one failed.
    accept_after: Option<Instant>,
    /// rr: whether the master's `accept` is out of descriptors.
    exhaustion: service::accept::Exhaustion,
    /// rr: connections handed to workers (taken back and handed again: twice).
    handed_out: u64,
}

impl Master {
    fn supervise(&mut self) -> Result<(), Error> {
        for slot in 0..self.workers.len() {
            self.spawn(slot)?;
        }
        loop {
            self.wait()?;
            self.reap()?;
            if let Some(deadline) = self.shutdown {
                if self.workers.iter().all(|w| w.pid.is_none()) {
                    if self.rr() {
                        tracing::info!(handed_out = self.handed_out, "all workers exited; bye");
                    } else {
                        tracing::info!("all workers exited; bye");
                    }
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    self.kill_stragglers();
                }
                continue;
            }
            self.respawn_due()?;
            self.kill_hung();
            if self.rr() {
                self.hand_out();
            }
            self.announce_ready()?;
        }
    }

    fn rr(&self) -> bool {
        self.context.args.balance == Balance::Rr
    }

    /// Sleeps until a signal arrives, a tick passes or (rr) a connection or
    /// an acknowledgement comes in, and acts on signals and
    /// acknowledgements.
    fn wait(&mut self) -> Result<(), Error> {
        // rr: wake for the end of an accept backoff too, which can be
        // shorter than a tick (1 ms at the start of an episode). Rounded up
        // to poll's milliseconds, so a wait of 0.4 ms is not a busy 0. A
        // backoff already over does not count: the listener is polled
        // then, or accepting waits for something else (a connection taken
        // back, a worker with room) that a tick or an event brings.
        let now = Instant::now();
        let wake = match self.accept_after {
            Some(at) if at > now => {
                let left = (at - now).as_micros().div_ceil(1000) as u64;
                Duration::from_millis(left).min(TICK)
            }
            _ => TICK,
        };
        let timeout = PollTimeout::try_from(wake).expect("tick fits in a poll timeout");
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        // The listener only while a connection could be handed out at once:
        // otherwise it would stay readable and make this loop spin.
        let accepting = self.rr()
            && self.shutdown.is_none()
            && self.waiting.is_empty()
            && self.accept_after.is_none_or(|at| Instant::now() >= at)
            && (0..self.workers.len()).any(|slot| self.has_room(slot));
        if accepting {
            fds.push(PollFd::new(
                self.context.listeners[0].as_fd(),
                PollFlags::POLLIN,
            ));
        }
        let mut channels = Vec::new();
        for (slot, worker) in self.workers.iter().enumerate() {
            if let Some(channel) = &worker.channel {
                let mut events = PollFlags::POLLIN;
                if worker.send_blocked {
                    events |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(channel.as_fd(), events));
                channels.push(slot);
            }
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => return Err(Error::Signals(error)),
        }
        let events: Vec<PollFlags> = fds
            .iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let channel_events = &events[1 + usize::from(accepting)..];
        for (&slot, &events) in channels.iter().zip(channel_events) {
            if events.contains(PollFlags::POLLOUT) {
                self.workers[slot].send_blocked = false;
            }
            // POLLHUP and POLLERR come whether asked for or not; reading
            // finds the end of stream and closes our end, so they do not
            // come again.
            if events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.take_acks(slot);
            }
        }
        while let Some(info) = self.signals.read_signal().map_err(Error::Signals)? {
            match Signal::try_from(info.ssi_signo as i32) {
                // Reaping happens every tick anyway; SIGCHLD only wakes us.
                Ok(Signal::SIGCHLD) => {}
                Ok(signal) => self.begin_shutdown(signal),
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn begin_shutdown(&mut self, signal: Signal) {
        if self.shutdown.is_some() {
            return;
        }
        let grace = self.context.args.common.http_config().grace;
        tracing::info!(%signal, ?grace, "shutting down: workers finish in-flight requests");
        self.shutdown = Some(Instant::now() + grace + GRACE_SLACK);
        // rr: hand nothing more out. Connections waiting for a worker are
        // closed unanswered, like those left in a listener's backlog;
        // handed ones stay with the master until their worker exits.
        if !self.waiting.is_empty() {
            tracing::info!(
                closed = self.waiting.len(),
                "closing connections that were waiting for a worker"
            );
            self.waiting.clear();
        }
        for worker in &mut self.workers {
            worker.respawn_at = None;
            if let Some(pid) = worker.pid {
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
    }

    fn kill_stragglers(&mut self) {
        for (slot, worker) in self.workers.iter().enumerate() {
            if let Some(pid) = worker.pid {
                tracing::warn!(slot, %pid, "grace period over; killing worker");
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    /// Collects every exited child and schedules its replacement.
    fn reap(&mut self) -> Result<(), Error> {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(error) => return Err(Error::Wait(error)),
            };
            let (pid, how) = match status {
                WaitStatus::Exited(pid, code) => (pid, format!("exited with status {code}")),
                WaitStatus::Signaled(pid, signal, _core) => (pid, format!("killed by {signal}")),
                _ => continue,
            };
            let Some(slot) = self.workers.iter().position(|w| w.pid == Some(pid)) else {
                continue;
            };
            self.context.region[slot].set_state(SlotState::Dead);
            self.take_back(slot);
            let worker = &mut self.workers[slot];
            worker.pid = None;
            worker.killed_as_hung = false;
            if self.shutdown.is_some() {
                tracing::info!(slot, %pid, how, "worker stopped");
                continue;
            }
            let lived = worker.forked_at.map_or(Duration::ZERO, |at| at.elapsed());
            let delay = worker.backoff.next_delay(lived);
            // Due now when there is no delay: `respawn_due` runs right after.
            worker.respawn_at = Some(Instant::now() + delay);
            tracing::warn!(slot, %pid, how, ?lived, respawn_in = ?delay, "worker died");
        }
    }

    fn respawn_due(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        for slot in 0..self.workers.len() {
            if self.workers[slot].respawn_at.is_some_and(|at| at <= now) {
                self.context.region[slot].restarts.fetch_add(1, Relaxed);
                self.spawn(slot)?;
            }
        }
        Ok(())
    }

    /// SIGKILLs workers whose event loop stopped ticking. The reap that
    /// follows replaces them like any other death.
    fn kill_hung(&mut self) {
        let timeout = self.context.args.worker_timeout_ms;
        if timeout == 0 {
            return;
        }
        for (slot, worker) in self.workers.iter_mut().enumerate() {
            let Some(pid) = worker.pid else { continue };
            let age = self.context.region[slot].heartbeat_age_ms();
            if age > timeout && !worker.killed_as_hung {
                tracing::warn!(
                    slot, %pid, heartbeat_age_ms = age, timeout_ms = timeout,
                    "worker hung: its event loop stopped ticking; killing it"
                );
                let _ = kill(pid, Signal::SIGKILL);
                worker.killed_as_hung = true;
            }
        }
    }

    /// Prints the ready line once, when every worker is accepting.
    fn announce_ready(&mut self) -> Result<(), Error> {
        let slots = &self.context.region;
        if self.ready_announced || slots.iter().any(|s| s.state() != SlotState::Ready) {
            return Ok(());
        }
        self.ready_announced = true;
        service::announce_ready("prefork", self.addr, self.workers.len()).map_err(Error::Stdout)?;
        tracing::info!(addr = %self.addr, workers = self.workers.len(), "ready");
        Ok(())
    }

    fn spawn(&mut self, slot: usize) -> Result<(), Error> {
        // Fresh heartbeat before the fork, so a worker that hangs while
        // booting is caught by the same timeout.
        self.context.region[slot].reset_for_new_worker(0);
        // rr: a fresh channel per worker, so nothing a dead worker left
        // unread reaches its replacement.
        let channel = if self.rr() {
            Some(handoff::pair().map_err(Error::Channel)?)
        } else {
            None
        };
        let inherited = self.inherited(channel.as_ref().map(|(ours, _)| ours.as_raw_fd()));
        // SAFETY: the master is single-threaded (it never starts a thread or
        // a runtime), so the child's copy of memory holds no lock that
        // another thread owned at the moment of the fork.
        match unsafe { fork() }.map_err(Error::Fork)? {
            ForkResult::Child => worker::run(
                &self.context,
                slot,
                Inherited {
                    close: inherited,
                    channel: channel.map(|(_, theirs)| theirs),
                },
            ),
            ForkResult::Parent { child } => {
                if let Some((ours, theirs)) = channel {
                    // Close the worker's end here: while the master held a
                    // copy, the worker's death would not close the channel,
                    // and hand-offs would pile up in a dead worker's buffer.
                    drop(theirs);
                    let worker = &mut self.workers[slot];
                    worker.channel = Some(ours);
                    worker.send_blocked = false;
                }
                self.context.region[slot]
                    .pid
                    .store(child.as_raw() as u32, Relaxed);
                let worker = &mut self.workers[slot];
                worker.pid = Some(child);
                worker.forked_at = Some(Instant::now());
                worker.respawn_at = None;
                tracing::info!(slot, pid = %child, "worker started");
                Ok(())
            }
        }
    }

    /// The master's descriptors a new worker must close right after the
    /// fork (it inherits every one; close-on-exec is not close-on-fork):
    /// the signalfd, and under rr the listener (the master alone accepts),
    /// every hand-off channel's master end (`own` is the new worker's) and
    /// every connection the master holds. A worker holding a copy of a
    /// connection it does not serve would keep it open when the worker that
    /// serves it dies (or drops it without a `shutdown`): the client would
    /// wait for a close that never comes.
    fn inherited(&self, own: Option<RawFd>) -> Vec<RawFd> {
        let mut close = vec![self.signals.as_raw_fd()];
        if self.rr() {
            close.extend(self.context.listeners.iter().map(|l| l.as_raw_fd()));
            close.extend(own);
            for worker in &self.workers {
                close.extend(worker.channel.as_ref().map(|c| c.as_raw_fd()));
                close.extend(worker.handed.as_ref().map(|s| s.as_raw_fd()));
            }
            close.extend(self.waiting.iter().map(|w| w.stream.as_raw_fd()));
        }
        close
    }

    /// rr: whether `slot` can be handed a connection now.
    fn has_room(&self, slot: usize) -> bool {
        let worker = &self.workers[slot];
        worker.pid.is_some()
            && !worker.killed_as_hung
            && worker.channel.is_some()
            && worker.handed.is_none()
            && !worker.send_blocked
            && self.context.region[slot].state() == SlotState::Ready
    }

    /// rr: reads `slot`'s acknowledgements, closing the master's copy of
    /// the connection each one is for.
    fn take_acks(&mut self, slot: usize) {
        let worker = &mut self.workers[slot];
        let Some(channel) = &worker.channel else {
            return;
        };
        let acks = handoff::read_acks(channel);
        if acks.count > 0 && (worker.handed.take().is_none() || acks.count > 1) {
            tracing::warn!(
                slot,
                acks = acks.count,
                "more acknowledgements than hand-offs"
            );
        }
        if acks.hung_up {
            // Every acknowledgement it sent came before the end of stream,
            // so whatever is still in `handed` was never taken.
            worker.channel = None;
            worker.send_blocked = false;
        }
        if acks.refused > 0 {
            // The worker is out of descriptors (it logs the episode and
            // backs off before reading its channel again): the connection
            // goes first in line again, as one taken back from a dead
            // worker does, waiting with a fresh start like one in the
            // backlog would. No new connection is accepted meanwhile.
            if let Some(stream) = worker.handed.take() {
                self.waiting.push_front(Waiting {
                    stream,
                    since: Instant::now(),
                });
            }
        }
    }

    /// rr: on a worker's death, takes back the connection it had not
    /// acknowledged and puts it first in line for another worker.
    fn take_back(&mut self, slot: usize) {
        // Read the acknowledgements it sent before it died first: a
        // connection it acknowledged is its own (it may have read the
        // request, even crashed on it), and handing that one out again would
        // leave the next worker waiting for a request already consumed.
        self.take_acks(slot);
        let worker = &mut self.workers[slot];
        worker.channel = None;
        worker.send_blocked = false;
        let Some(stream) = worker.handed.take() else {
            return;
        };
        if self.shutdown.is_some() {
            return;
        }
        tracing::warn!(
            slot,
            "the worker died before acknowledging a connection; handing it to another"
        );
        self.waiting.push_front(Waiting {
            stream,
            since: Instant::now(),
        });
    }

    /// rr: hands out the connections taken back from dead workers, then new
    /// ones from the listener, while some worker has room.
    fn hand_out(&mut self) {
        while let Some(waiting) = self.waiting.pop_front() {
            if let Err(stream) = self.hand(waiting.stream) {
                self.waiting.push_front(Waiting { stream, ..waiting });
                break;
            }
        }
        while self
            .waiting
            .front()
            .is_some_and(|w| w.since.elapsed() >= WAIT_FOR_WORKER)
        {
            tracing::warn!(
                waited = ?WAIT_FOR_WORKER,
                "no worker took a connection taken back from a dead one; closing it"
            );
            self.waiting.pop_front();
        }
        // New connections stay behind the ones taken back, in the backlog.
        if !self.waiting.is_empty() || self.accept_after.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.accept_after = None;
        // The listener is non-blocking: WouldBlock ends the round.
        while (0..self.workers.len()).any(|slot| self.has_room(slot)) {
            let stream = match self.context.listeners[0].accept() {
                Ok((stream, _peer)) => stream,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return,
                // The client gave up before we accepted: nothing to hand.
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                // Out of descriptors: workers keep serving what they hold;
                // the master backs off and logs the episode once.
                Err(error) if service::accept::is_exhaustion(&error) => {
                    let delay = self.exhaustion.failed(&error);
                    self.accept_after = Some(Instant::now() + delay);
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    self.accept_after = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            };
            self.exhaustion.accepted();
            if let Err(stream) = self.hand(stream) {
                // Every worker with room turned out full or gone.
                self.waiting.push_back(Waiting {
                    stream,
                    since: Instant::now(),
                });
                return;
            }
        }
    }

    /// rr: hands `stream` to the next worker in turn that has room, or
    /// gives it back if none takes it.
    fn hand(&mut self, stream: TcpStream) -> Result<(), TcpStream> {
        let count = self.workers.len();
        for slot in (0..count).map(|i| (self.next + i) % count) {
            if !self.has_room(slot) {
                continue;
            }
            let worker = &mut self.workers[slot];
            let channel = worker
                .channel
                .as_ref()
                .expect("a worker with room has a channel");
            match handoff::send_connection(channel, &stream) {
                Ok(()) => {
                    worker.handed = Some(stream);
                    self.next = (slot + 1) % count;
                    self.handed_out += 1;
                    return Ok(());
                }
                Err(SendError::Full) => {
                    tracing::debug!(slot, "hand-off channel full; trying the next worker");
                    worker.send_blocked = true;
                }
                Err(error @ SendError::Closed(_)) => {
                    tracing::debug!(slot, %error, "hand-off channel closed; trying the next worker");
                    worker.channel = None;
                }
            }
        }
        Err(stream)
    }
}
