//! Which CPUs the server and the load generator run on.
//!
//! On a small machine the load generator competes with the server for the
//! same cores, and the server's throughput then says as much about the load
//! generator as about the server. Pinning them to disjoint sets of CPUs
//! makes each cell's resources explicit: the server's ceiling is its own
//! set, and the load generator cannot take CPU time from it (nor the other
//! way round). Whether it is on is the experiment's choice (`--pin`).

use serde::{Deserialize, Serialize};

/// Disjoint CPU sets for the server and the load generator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pinning {
    pub server: Vec<usize>,
    pub loadgen: Vec<usize>,
}

impl Pinning {
    /// Splits `allowed` in two: the first half (rounded up) for the
    /// server, the rest for the load generator. `None` with fewer than two
    /// CPUs: there is nothing to split.
    pub fn split(allowed: &[usize]) -> Option<Pinning> {
        if allowed.len() < 2 {
            return None;
        }
        let (server, loadgen) = allowed.split_at(allowed.len().div_ceil(2));
        Some(Pinning {
            server: server.to_vec(),
            loadgen: loadgen.to_vec(),
        })
    }

    /// `server on 0, load generator on 1`, for reports.
    pub fn describe(&self) -> String {
        let list = |cpus: &[usize]| {
            cpus.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "server pinned to CPU {}, load generator to CPU {}",
            list(&self.server),
            list(&self.loadgen)
        )
    }
}

/// The CPUs this process may run on.
pub fn allowed() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    };
    (0..nix::sched::CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_gets_the_first_half_rounded_up() {
        assert_eq!(
            Pinning::split(&[0, 1]),
            Some(Pinning {
                server: vec![0],
                loadgen: vec![1]
            })
        );
        let five = Pinning::split(&[0, 2, 4, 6, 8]).unwrap();
        assert_eq!((five.server, five.loadgen), (vec![0, 2, 4], vec![6, 8]));
        assert_eq!(Pinning::split(&[3]), None);
    }

    #[test]
    fn this_process_may_run_somewhere() {
        assert!(!allowed().is_empty());
    }
}
