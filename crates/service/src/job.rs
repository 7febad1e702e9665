//! The work a handler can hand off: what a model decides where to run.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::crash::{self, CrashMode};
use crate::kernel;

/// A boxed, sendable future: what [`crate::Model::execute`] returns, so that
/// one model can compute inline and another can wait on a pool thread.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Handler work that a model may run somewhere other than the event loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// `GET /cpu`: PBKDF2 with this many iterations.
    Cpu { iters: u32 },
    /// `POST /crash`: fail in this way.
    Crash(CrashMode),
}

/// A job asked its worker to end itself ([`CrashMode::Exit`]): the model
/// decides what "itself" is, the process or the pool thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRequested;

impl Job {
    /// Runs the job on the calling thread and returns the response body.
    /// Crash jobs do not return, except [`CrashMode::Exit`].
    pub fn run(self) -> Result<String, ExitRequested> {
        match self {
            Job::Cpu { iters } => Ok(kernel::pbkdf2_hex(iters) + "\n"),
            Job::Crash(mode) => {
                crash::trigger(mode);
                Err(ExitRequested)
            }
        }
    }
}

/// Which worker ran a handler: the `x-worker` header's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerId {
    /// A worker slot: a process index in prefork, a pool thread in threadpool.
    Slot(usize),
    /// The event loop itself, in a model whose workers are pool threads.
    Main,
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerId::Slot(index) => write!(f, "{index}"),
            WorkerId::Main => f.write_str("main"),
        }
    }
}

/// A finished job: its response body and who computed it.
#[derive(Debug)]
pub struct Done {
    pub worker: WorkerId,
    pub body: String,
}

/// Why a job produced no body. Each maps to one HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Backpressure: answered 503 with `retry-after`.
    #[error("the job queue is full ({capacity} jobs); retry later")]
    QueueFull { capacity: usize },
    /// The job panicked on a pool thread that caught it.
    #[error("the job panicked on pool thread {worker}")]
    Panicked { worker: WorkerId },
    /// The job ended its pool thread before answering.
    #[error("pool thread {worker} exited before answering")]
    WorkerExited { worker: WorkerId },
    /// The job was dropped unanswered (the pool went away first).
    #[error("the job was dropped before it ran")]
    Abandoned,
}

impl JobError {
    /// The worker the failure belongs to, for `x-worker`.
    pub fn worker(&self) -> Option<WorkerId> {
        match self {
            JobError::QueueFull { .. } | JobError::Abandoned => None,
            JobError::Panicked { worker } | JobError::WorkerExited { worker } => Some(*worker),
        }
    }
}
