//! Running out of descriptors while accepting, handled the same way by
//! every Rust server: [`Exhaustion`].
//!
//! When a process has as many descriptors open as `RLIMIT_NOFILE` allows
//! (`EMFILE`), or the whole system has (`ENFILE`), `accept` fails, and the
//! connection stays in the backlog. The listener therefore stays readable:
//! an event loop that simply tries again spins at 100% CPU, and one that
//! logs every failure writes thousands of lines a second, while nothing
//! changes until the server closes a connection of its own.
//!
//! So an accept loop that meets `EMFILE`/`ENFILE` treats it as an
//! *episode*: it logs one warning when the episode starts, waits before each
//! new attempt ([`Exhaustion::failed`] says how long), keeps serving the
//! connections it holds meanwhile (they run in their own tasks, or in other
//! processes), and logs one line with how long it lasted and how many
//! attempts failed when an `accept` succeeds again ([`Exhaustion::accepted`]).
//!
//! The wait doubles from [`FIRST_DELAY`] (1 ms) up to [`MAX_DELAY`]
//! (100 ms). Short at first, because a descriptor is often freed within a
//! moment (a keep-alive connection closing) and a connection waiting in the
//! backlog should not wait long for it; capped at 100 ms, because an episode
//! can last as long as clients hold their connections, and the server must
//! take new ones soon after one is freed: a 100 ms poll costs nothing
//! measurable, and is no longer than the backlog's clients would wait for a
//! busy server anyway.

use std::time::{Duration, Instant};

/// The first wait after an `accept` failed for lack of descriptors.
pub const FIRST_DELAY: Duration = Duration::from_millis(1);
/// The longest wait between two attempts during an episode.
pub const MAX_DELAY: Duration = Duration::from_millis(100);

/// Whether `error` is `accept` failing for lack of descriptors: the
/// process's (`EMFILE`) or the system's (`ENFILE`). Other accept errors (a
/// connection reset before it was accepted, say) are not an episode.
pub fn is_exhaustion(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// One accept loop's state with respect to running out of descriptors:
/// outside an episode, or inside one since some instant.
#[derive(Debug, Default)]
pub struct Exhaustion {
    episode: Option<Episode>,
}

/// An episode under way.
#[derive(Debug, Clone, Copy)]
struct Episode {
    since: Instant,
    /// Failed attempts so far, the first included.
    failures: u64,
    /// The wait after the latest failure.
    delay: Duration,
}

/// What one failed attempt means: how long to wait, and whether it started
/// an episode (the moment to warn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    pub delay: Duration,
    pub started: bool,
}

/// An episode that ended: an `accept` succeeded after `failures` attempts
/// failed over `lasted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub lasted: Duration,
    pub failures: u64,
}

impl Exhaustion {
    /// An `accept` failed with `error`, for which [`is_exhaustion`] holds:
    /// logs a warning if this starts an episode, and returns how long to
    /// wait before the next attempt.
    pub fn failed(&mut self, error: &std::io::Error) -> Duration {
        let failed = self.fail_at(Instant::now());
        if failed.started {
            tracing::warn!(
                %error,
                "accept: out of descriptors; serving the connections held, \
                 retrying with backoff until one is freed"
            );
        }
        failed.delay
    }

    /// An `accept` succeeded: if an episode was under way, it is over, and
    /// this logs how long it lasted and how many attempts failed. Cheap
    /// otherwise: one branch per accepted connection.
    pub fn accepted(&mut self) {
        if let Some(ended) = self.succeed_at(Instant::now()) {
            tracing::info!(
                lasted_ms = ended.lasted.as_millis() as u64,
                failed_attempts = ended.failures,
                "accept: descriptors available again; accepting"
            );
        }
    }

    /// Whether an episode is under way.
    pub fn ongoing(&self) -> bool {
        self.episode.is_some()
    }

    /// [`Exhaustion::failed`] without the logging, at `now`.
    pub fn fail_at(&mut self, now: Instant) -> Failed {
        match &mut self.episode {
            None => {
                self.episode = Some(Episode {
                    since: now,
                    failures: 1,
                    delay: FIRST_DELAY,
                });
                Failed {
                    delay: FIRST_DELAY,
                    started: true,
                }
            }
            Some(episode) => {
                episode.failures += 1;
                episode.delay = (episode.delay * 2).min(MAX_DELAY);
                Failed {
                    delay: episode.delay,
                    started: false,
                }
            }
        }
    }

    /// [`Exhaustion::accepted`] without the logging, at `now`: the episode
    /// that this success ended, if any.
    pub fn succeed_at(&mut self, now: Instant) -> Option<Ended> {
        let episode = self.episode.take()?;
        Some(Ended {
            lasted: now.saturating_duration_since(episode.since),
            failures: episode.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptor_errors_are_exhaustion() {
        let os = std::io::Error::from_raw_os_error;
        assert!(is_exhaustion(&os(libc::EMFILE)));
        assert!(is_exhaustion(&os(libc::ENFILE)));
        assert!(!is_exhaustion(&os(libc::ECONNABORTED)));
        assert!(!is_exhaustion(&os(libc::EAGAIN)));
        assert!(!is_exhaustion(&std::io::Error::other("no errno")));
    }

    /// One start per episode however many attempts fail, and a wait that
    /// doubles from 1 ms and stays at 100 ms.
    #[test]
    fn an_episode_starts_once_and_backs_off_up_to_the_cap() {
        let start = Instant::now();
        let mut exhaustion = Exhaustion::default();
        let failures: Vec<Failed> = (0..12).map(|_| exhaustion.fail_at(start)).collect();
        let started = failures.iter().filter(|f| f.started).count();
        assert_eq!(started, 1, "{failures:?}");
        assert!(failures[0].started);
        let delays: Vec<u64> = failures
            .iter()
            .map(|f| f.delay.as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [1, 2, 4, 8, 16, 32, 64, 100, 100, 100, 100, 100],
            "exponential from FIRST_DELAY, capped at MAX_DELAY"
        );
        assert!(exhaustion.ongoing());
    }

    /// A success ends the episode with its length and failures; the next
    /// failure starts a new one at the first delay again.
    #[test]
    fn a_success_ends_the_episode_and_the_next_failure_starts_afresh() {
        let start = Instant::now();
        let mut exhaustion = Exhaustion::default();
        assert_eq!(exhaustion.succeed_at(start), None, "no episode, no end");
        for _ in 0..5 {
            exhaustion.fail_at(start);
        }
        let ended = exhaustion.succeed_at(start + Duration::from_millis(250));
        assert_eq!(
            ended,
            Some(Ended {
                lasted: Duration::from_millis(250),
                failures: 5
            })
        );
        assert!(!exhaustion.ongoing());
        assert_eq!(exhaustion.succeed_at(start), None, "ended once");
        let again = exhaustion.fail_at(start);
        assert_eq!(
            again,
            Failed {
                delay: FIRST_DELAY,
                started: true
            }
        );
    }
}
