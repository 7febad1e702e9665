//! What a forked worker runs: one single-threaded event loop, like a Node
//! process, serving the socket it inherited from the master or (`--balance
//! rr`) the connections the master hands it over its channel.

use std::net::TcpListener;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Pid, getppid};
use service::dataset::Dataset;
use service::job::{BoxFuture, Done, ExitRequested, Job, JobError, WorkerId};
use service::slot::SlotState;
use service::{App, Connections, Model, SlotTable};
use tokio::signal::unix::{SignalKind, signal};

use crate::region::Region;
use crate::{Args, Balance, DatasetLoad, handoff};
use service::contract::{Stats, WorkerStats};

/// Everything a worker inherits from the master across `fork`.
#[derive(Debug)]
pub struct WorkerContext {
    pub args: Args,
    /// The listening sockets: one that every worker shares (`--balance
    /// shared`), one per slot (`--balance reuseport`), or the master's own
    /// (`--balance rr`, closed in the worker).
    pub listeners: Vec<TcpListener>,
    pub region: Arc<Region>,
    /// Built before the fork (`--dataset-load before-fork`), shared
    /// copy-on-write with every worker.
    pub dataset: Option<Arc<Dataset>>,
    pub master_pid: u32,
    pub started: Instant,
    /// The signal mask before the master blocked its supervised signals.
    pub original_mask: SigSet,
}

/// What a worker gets from the master beyond the [`WorkerContext`].
#[derive(Debug)]
pub struct Inherited {
    /// The master's descriptors this process must not keep (its signalfd;
    /// under rr also the listener, the hand-off channels' master ends and
    /// the connections the master holds): closed first thing.
    pub close: Vec<RawFd>,
    /// rr: this worker's end of its hand-off channel.
    pub channel: Option<OwnedFd>,
}

/// The worker's entry point, right after `fork` in the child. Never returns.
pub fn run(context: &WorkerContext, slot: usize, inherited: Inherited) -> ! {
    // If the master dies, even by SIGKILL, the kernel kills us: no orphans.
    // It could have died between `fork` and this line, in which case we were
    // already re-parented; check for that too.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
        || getppid() != Pid::from_raw(context.master_pid as i32)
    {
        std::process::exit(1);
    }
    // The master's plumbing is not ours: close its descriptors (the
    // structs owning them in our copy of its memory are never dropped here:
    // this function ends in `exit`), and unblock the signals it reads, so
    // tokio's handlers can see SIGTERM.
    for fd in inherited.close {
        let _ = nix::unistd::close(fd);
    }
    let _ = context.original_mask.thread_set_mask();

    // An uncaught panic ends a Node process; make it end this worker too
    // (tokio would otherwise catch it and kill only the connection task).
    // One log line, not the default hook: with RUST_BACKTRACE set, the
    // default hook symbolises a backtrace first, which holds the dying
    // worker (and the connections queued on it) for about 100 ms.
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(slot, "worker panicked, exiting: {info}");
        std::process::exit(101);
    }));

    if context.args.die_at_boot {
        tracing::error!(slot, "--die-at-boot: exiting");
        std::process::exit(3);
    }
    std::process::exit(match serve(context, slot, inherited.channel) {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(slot, %error, "worker failed");
            1
        }
    })
}

fn serve(context: &WorkerContext, slot: usize, channel: Option<OwnedFd>) -> std::io::Result<()> {
    let pid = std::process::id();
    context.region[slot]
        .pid
        .store(pid, std::sync::atomic::Ordering::Relaxed);
    let dataset = match context.args.dataset_load {
        DatasetLoad::PerWorker if context.args.common.dataset_mb > 0 => {
            Some(Arc::new(Dataset::generate(context.args.common.dataset_mb)))
        }
        _ => context.dataset.clone(),
    };
    // Built after the fork: a runtime's threads and epoll instance must
    // belong to this process alone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Where connections come from: the master's channel under rr, an
    // inherited listener otherwise (a duplicate, since `context` is
    // borrowed, and the original is never used here).
    let source = match channel {
        Some(channel) => Source::Handed(channel),
        None => Source::Listener(context.listeners[slot % context.listeners.len()].try_clone()?),
    };
    // The test-only fault: the slot's first worker only, so that its
    // replacement serves normally.
    let die_on_handoff = context.args.die_on_handoff
        && slot == 0
        && context.region[slot]
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0;
    let slots: SlotTable = context.region.clone();
    let app = Arc::new(App {
        model: Arc::new(WorkerModel {
            slot,
            balance: context.args.balance,
            slots: context.region.clone(),
            master_pid: context.master_pid,
            started: context.started,
        }),
        slots: slots.clone(),
        loop_slot: slot,
        loop_worker: WorkerId::Slot(slot),
        dataset,
        allow_crash: context.args.common.allow_crash,
    });
    let config = context.args.common.http_config();

    runtime.block_on(async move {
        let connections = match source {
            Source::Listener(listener) => {
                Connections::Listener(tokio::net::TcpListener::from_std(listener)?)
            }
            Source::Handed(channel) => {
                Connections::Handed(handoff::receive(channel, die_on_handoff)?)
            }
        };
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let ticker_slots = slots.clone();
        if !config.without.ticker {
            tokio::spawn(async move { service::ticker::run(&ticker_slots[slot]).await });
        }
        slots[slot].set_state(SlotState::Ready);
        tracing::debug!(slot, pid, "accepting");
        let shutdown = async {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        let drained = service::serve(connections, app, config, shutdown).await;
        tracing::info!(slot, pid, ?drained, "worker stopped serving");
        Ok(())
    })
}

/// Where a worker's connections come from, before its runtime exists.
enum Source {
    Listener(TcpListener),
    Handed(OwnedFd),
}

/// The prefork model: every job runs inline, on this worker's only thread.
struct WorkerModel {
    slot: usize,
    /// `--balance`, as `/stats` reports it.
    balance: Balance,
    slots: Arc<Region>,
    master_pid: u32,
    started: Instant,
}

impl Model for WorkerModel {
    fn execute(&self, job: Job) -> BoxFuture<Result<Done, JobError>> {
        let body = match job.run() {
            Ok(body) => body,
            Err(ExitRequested) => {
                tracing::warn!(slot = self.slot, "exiting on request");
                std::process::exit(1);
            }
        };
        Box::pin(std::future::ready(Ok(Done {
            worker: WorkerId::Slot(self.slot),
            body,
        })))
    }

    fn stats(&self) -> Stats {
        let workers = self
            .slots
            .as_ref()
            .as_ref()
            .iter()
            .enumerate()
            .map(|(id, slot)| WorkerStats {
                loop_lag_ms: Some(slot.loop_lag()),
                ..slot.stats(id)
            })
            .collect();
        Stats {
            balance: Some(self.balance.into()),
            ..service::stats_document("prefork", self.master_pid, self.started, workers)
        }
    }
}
