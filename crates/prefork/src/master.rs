//! The master: binds, forks, supervises, shuts down.
//!
//! It is one single-threaded loop around `poll(2)` on a signalfd. Signals
//! (SIGCHLD, SIGTERM, SIGINT) are blocked and read as data from the signalfd,
//! so no code ever runs inside a signal handler. The poll timeout doubles as
//! the tick for the periodic duties: respawning when a backoff expires,
//! checking heartbeats, and noticing that every worker is ready. A dead
//! worker whose slot is not in a crash loop is replaced in the same pass
//! that reaps it ([`Backoff`]).

use std::net::SocketAddr;
use std::os::fd::AsFd;
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
use crate::region::Region;
use crate::worker::{self, WorkerContext};
use crate::{Args, Balance, DatasetLoad, Error};

/// How long the supervision loop sleeps between duties at most.
const TICK: Duration = Duration::from_millis(20);
/// Extra time after `--grace-ms` before stragglers are SIGKILLed, so a worker
/// that uses its whole grace period still gets to exit by itself.
const GRACE_SLACK: Duration = Duration::from_millis(500);

/// Runs the master until a graceful shutdown completes.
pub fn run(args: Args) -> Result<(), Error> {
    let workers = args.common.workers();
    let bind_error = |source| Error::Bind {
        addr: args.common.listen,
        source,
    };
    let listeners = match args.balance {
        Balance::Shared => vec![service::bind(args.common.listen).map_err(bind_error)?],
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
}

impl Master {
    fn supervise(&mut self) -> Result<(), Error> {
        for slot in 0..self.workers.len() {
            self.spawn(slot)?;
        }
        loop {
            self.wait_for_signals()?;
            self.reap()?;
            if let Some(deadline) = self.shutdown {
                if self.workers.iter().all(|w| w.pid.is_none()) {
                    tracing::info!("all workers exited; bye");
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    self.kill_stragglers();
                }
                continue;
            }
            self.respawn_due()?;
            self.kill_hung();
            self.announce_ready()?;
        }
    }

    /// Sleeps until a signal arrives or a tick passes, and acts on signals.
    fn wait_for_signals(&mut self) -> Result<(), Error> {
        let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(TICK).expect("tick fits in a poll timeout");
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => return Err(Error::Signals(error)),
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
        // SAFETY: the master is single-threaded (it never starts a thread or
        // a runtime), so the child's copy of memory holds no lock that
        // another thread owned at the moment of the fork.
        match unsafe { fork() }.map_err(Error::Fork)? {
            ForkResult::Child => worker::run(&self.context, slot, &self.signals),
            ForkResult::Parent { child } => {
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
}
