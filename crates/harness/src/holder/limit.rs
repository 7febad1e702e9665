//! The descriptor limit, raised for many connections: every held
//! connection is a descriptor in a holder and another in the server, and
//! the servers and holders the lab starts afterwards inherit its limit.
//!
//! The soft limit may be raised up to the hard limit by anyone; the hard
//! limit only with `CAP_SYS_RESOURCE`, and never past `fs.nr_open`. Root
//! usually has that capability, but not always: a container may drop it
//! (this lab's machine does, so its 20,000 stays). So: ask for what is
//! wanted, capped by `fs.nr_open`; if that is refused, settle for
//! soft = hard. The record keeps which it was.

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde::{Deserialize, Serialize};

/// What happened to the hard limit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HardLimit {
    /// It was already at least what was wanted.
    NotNeeded,
    /// It was raised (we may: `CAP_SYS_RESOURCE`).
    Raised,
    /// Raising it was refused (no `CAP_SYS_RESOURCE`): the limit is the
    /// old hard one.
    Refused,
}

/// The descriptor limit in force after [`raise`], and how it got there.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// Soft and hard limit now (the two are equal).
    pub limit: u64,
    /// What was asked for, and the hard limit before.
    pub wanted: u64,
    pub hard_before: u64,
    /// `fs.nr_open`, the ceiling of any hard limit.
    pub nr_open: u64,
    pub hard: HardLimit,
}

/// Raises this process's descriptor limit, soft and hard, towards
/// `wanted`; never lowers it.
pub fn raise(wanted: u64) -> nix::Result<DescriptorLimit> {
    let (_, hard_before) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        // The kernel's default, when it cannot be read.
        .unwrap_or(1 << 20);
    let (limit, hard) = match target(wanted, hard_before, nr_open) {
        None => (hard_before, HardLimit::NotNeeded),
        Some(target) => match setrlimit(Resource::RLIMIT_NOFILE, target, target) {
            Ok(()) => (target, HardLimit::Raised),
            Err(Errno::EPERM) => (hard_before, HardLimit::Refused),
            Err(e) => return Err(e),
        },
    };
    setrlimit(Resource::RLIMIT_NOFILE, limit, limit)?;
    Ok(DescriptorLimit {
        limit,
        wanted,
        hard_before,
        nr_open,
        hard,
    })
}

/// The hard limit to ask for, `None` when the current one is enough (or
/// cannot be raised at all, being at `nr_open` already).
fn target(wanted: u64, hard: u64, nr_open: u64) -> Option<u64> {
    let target = wanted.min(nr_open);
    (target > hard).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hard_limit_is_raised_only_as_far_as_wanted_and_nr_open() {
        assert_eq!(target(101_024, 20_000, 1 << 20), Some(101_024));
        assert_eq!(target(5_000_000, 20_000, 1 << 20), Some(1 << 20));
        assert_eq!(target(10_000, 20_000, 1 << 20), None);
        assert_eq!(target(50_000, 1 << 20, 1 << 20), None);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let raised = raise(16).unwrap();
        assert_eq!((raised.limit, raised.hard), (hard, HardLimit::NotNeeded));
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
