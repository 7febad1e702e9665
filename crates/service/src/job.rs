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
    /// `GET /cpu`: parts `first..first + count` of a request, each PBKDF2
    /// with `iters` iterations ([`kernel::pbkdf2_hex`]). A request starts
    /// as one job of all its parts ([`Job::cpu`]); a model that can run
    /// parts at once splits it ([`Job::parts`]).
    Cpu { iters: u32, first: u32, count: u32 },
    /// `POST /crash`: fail in this way.
    Crash(CrashMode),
}

/// A job asked its worker to end itself ([`CrashMode::Exit`]): the model
/// decides what "itself" is, the process or the pool thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitRequested;

impl Job {
    /// A whole `/cpu` request: `parts` parts of `iters` iterations each.
    pub fn cpu(iters: u32, parts: u32) -> Job {
        Job::Cpu {
            iters,
            first: 0,
            count: parts,
        }
    }

    /// The job as jobs of one part each, in order: what a model that can
    /// run parts at once hands to its threads. A crash job is itself.
    pub fn parts(self) -> Vec<Job> {
        match self {
            Job::Cpu {
                iters,
                first,
                count,
            } => (first..first + count)
                .map(|part| Job::Cpu {
                    iters,
                    first: part,
                    count: 1,
                })
                .collect(),
            crash => vec![crash],
        }
    }

    /// Runs the job on the calling thread and returns the response body:
    /// for `/cpu`, one line per part, in order, computed one after another.
    /// Crash jobs do not return, except [`CrashMode::Exit`].
    pub fn run(self) -> Result<String, ExitRequested> {
        match self {
            Job::Cpu {
                iters,
                first,
                count,
            } => Ok((first..first + count)
                .map(|part| kernel::pbkdf2_hex(iters, part) + "\n")
                .collect()),
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

impl Done {
    /// A request's answer from the answers of its parts, in part order:
    /// their bodies one after another, and the first part's worker for
    /// `x-worker`. The first part that failed fails the request.
    pub fn joined(
        parts: impl IntoIterator<Item = Result<Done, JobError>>,
    ) -> Result<Done, JobError> {
        let mut parts = parts.into_iter();
        let mut done = parts.next().ok_or(JobError::Abandoned)??;
        for part in parts {
            done.body.push_str(&part?.body);
        }
        Ok(done)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_job_splits_into_its_parts_and_answers_a_line_each_in_order() {
        let whole = Job::cpu(1, 3);
        let parts = whole.parts();
        assert_eq!(parts.len(), 3);
        let joined: String = parts.iter().map(|part| part.run().unwrap()).collect();
        assert_eq!(joined, whole.run().unwrap());
        let lines: Vec<&str> = joined.lines().collect();
        assert_eq!(lines[0], kernel::pbkdf2_hex(1, 0));
        assert_eq!(lines[2], kernel::pbkdf2_hex(1, 2));
        assert_eq!(
            Job::Crash(CrashMode::Panic).parts(),
            [Job::Crash(CrashMode::Panic)]
        );
    }
}
