//! From what a cell measured to what `balance.json` says about it: a pure
//! function, so the per-worker arithmetic and the fairness figures are
//! tested without a server.

use harness::cost::{self, CpuRecord};
use harness::probe::StatsRead;
use harness::record::CellStatus;

use super::Cell;
use super::measure::Observed;
use super::report::{CellRecord, Fairness};

/// The record of `cell`, from what it observed.
pub fn cell_record(cell: &Cell, observed: Observed) -> CellRecord {
    let mut problems: Vec<String> = observed.error.iter().cloned().collect();
    if let Some(code) = observed.exit_code.filter(|&c| c != 0) {
        problems.push(format!(
            "the server exited with {code} after SIGTERM, not 0"
        ));
    }
    if !observed.left_running.is_empty() {
        problems.push(format!(
            "server processes left running after it exited: {:?}",
            observed.left_running
        ));
    }
    let (connections, requests) = match (&observed.before, &observed.after) {
        (Some(before), Some(after)) => per_worker(before, after),
        _ => (Vec::new(), Vec::new()),
    };
    let total_connections: u64 = connections.iter().sum();
    let load = observed.load.map(|l| (l.cpu_seconds, l.summary));
    let cpu = match (&load, observed.server) {
        (Some((loadgen_s, _)), Some(server)) => Some(CpuRecord::new(
            server,
            false,
            *loadgen_s,
            observed.load_wall_s,
        )),
        _ => None,
    };
    let failed = !problems.is_empty();
    CellRecord {
        scenario: cell.scenario,
        workers: cell.workers,
        model: cell.policy.kind.name.clone(),
        balance: cell.policy.balance,
        concurrency: cell.scenario.concurrency(cell.workers),
        status: if failed {
            CellStatus::Failed
        } else {
            CellStatus::Ok
        },
        error: failed.then(|| problems.join("; ")),
        stderr_tail: if failed {
            observed.stderr_tail
        } else {
            Vec::new()
        },
        offered_rps: observed.offered_rps,
        fairness: fairness(&connections, &requests),
        connections,
        requests,
        per_request: cpu
            .as_ref()
            .zip(load.as_ref())
            .and_then(|(cpu, (_, summary))| cost::per_request(cpu, summary.ok)),
        bound: match (&cpu, &load, observed.limits) {
            (Some(cpu), Some((_, summary)), Some(limits)) => Some(cost::bound(
                summary,
                cpu,
                &limits,
                observed.offered_rps,
                None,
            )),
            _ => None,
        },
        cpu,
        load: load.map(|(_, summary)| summary),
        primary_cpu_s: observed.primary_cpu_s,
        primary_cpu_us_per_connection: per_connection_us(observed.primary_cpu_s, total_connections),
        exit_code: observed.exit_code,
        left_running: observed.left_running,
    }
}

/// Connections and requests each worker slot took between two `/stats`
/// reads, in slot order, less the second read's own connection and request
/// on the slot that answered it. The counters belong to the slot, so a
/// replaced worker's count carries on.
pub fn per_worker(before: &StatsRead, after: &StatsRead) -> (Vec<u64>, Vec<u64>) {
    let mut slots: Vec<_> = after.stats.workers.iter().collect();
    slots.sort_by_key(|w| w.id);
    slots
        .iter()
        .map(|now| {
            let then = before.stats.workers.iter().find(|w| w.id == now.id);
            let own = u64::from(after.answered_by == Some(now.id));
            let grew = |now: u64, then: Option<u64>| {
                now.saturating_sub(then.unwrap_or(0)).saturating_sub(own)
            };
            (
                grew(now.connections, then.map(|w| w.connections)),
                grew(now.requests, then.map(|w| w.requests)),
            )
        })
        .unzip()
}

/// The fewest connections a per-connection CPU figure is given for: the
/// kernel counts CPU time in ticks (10 ms here), so a few connections would
/// get a figure that is mostly the rounding of one tick.
pub const MIN_CONNECTIONS_FOR_COST: u64 = 1000;

/// The primary's CPU microseconds per connection, over enough connections
/// for the figure to mean something.
pub fn per_connection_us(cpu_s: Option<f64>, connections: u64) -> Option<f64> {
    cpu_s
        .filter(|_| connections >= MIN_CONNECTIONS_FOR_COST)
        .map(|s| s * 1e6 / connections as f64)
}

/// Jain's index of `shares`: 1 when equal, 1/n when one has everything.
/// `None` when there is nothing to share.
pub fn jain(shares: &[u64]) -> Option<f64> {
    let sum: f64 = shares.iter().map(|&x| x as f64).sum();
    let squares: f64 = shares.iter().map(|&x| (x as f64).powi(2)).sum();
    (sum > 0.0).then(|| sum * sum / (shares.len() as f64 * squares))
}

fn fairness(connections: &[u64], requests: &[u64]) -> Option<Fairness> {
    let max = *requests.iter().max()?;
    let min = *requests.iter().min()?;
    let total: u64 = connections.iter().sum();
    let mut sorted = connections.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    Some(Fairness {
        requests_jain: jain(requests)?,
        connections_jain: jain(connections),
        requests_max_over_min: (min > 0).then(|| max as f64 / min as f64),
        connections_top2_share: (total > 0)
            .then(|| sorted.iter().take(2).sum::<u64>() as f64 / total as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use service::contract::{Stats, WorkerStats};

    fn read(counts: &[(u64, u64)], answered_by: Option<usize>) -> StatsRead {
        StatsRead {
            stats: Stats {
                workers: counts
                    .iter()
                    .enumerate()
                    .map(|(id, &(connections, requests))| WorkerStats {
                        id,
                        connections,
                        requests,
                        ..WorkerStats::default()
                    })
                    .collect(),
                ..Stats::default()
            },
            answered_by,
        }
    }

    #[test]
    fn each_worker_gets_what_grew_less_the_second_reads_own_request() {
        let before = read(&[(1, 1), (0, 0), (0, 0)], Some(0));
        let after = read(&[(4, 21), (3, 30), (0, 0)], Some(1));
        let (connections, requests) = per_worker(&before, &after);
        assert_eq!(connections, [3, 2, 0]);
        assert_eq!(requests, [20, 29, 0]);
    }

    #[test]
    fn the_primary_cost_per_connection_needs_many_connections() {
        assert_eq!(per_connection_us(Some(0.01), 4), None);
        assert_eq!(per_connection_us(Some(0.05), 5000), Some(10.0));
        assert_eq!(per_connection_us(None, 5000), None);
    }

    #[test]
    fn jain_is_one_when_equal_and_one_over_n_when_one_takes_all() {
        assert_eq!(jain(&[5, 5, 5, 5]), Some(1.0));
        assert_eq!(jain(&[8, 0, 0, 0]), Some(0.25));
        assert_eq!(jain(&[0, 0]), None);
        // (1+3)^2 / (2 * (1+9)) = 0.8
        assert!((jain(&[1, 3]).unwrap() - 0.8).abs() < 1e-12);
    }

    #[test]
    fn fairness_names_the_spread_and_a_worker_left_out() {
        let fair = fairness(&[6, 2, 1, 1], &[40, 20, 20, 20]).unwrap();
        assert_eq!(fair.requests_max_over_min, Some(2.0));
        assert_eq!(fair.connections_top2_share, Some(0.8));
        let starved = fairness(&[1, 0], &[10, 0]).unwrap();
        assert_eq!(starved.requests_max_over_min, None, "a worker with nothing");
        assert_eq!(starved.requests_jain, 0.5);
        assert!(fairness(&[], &[]).is_none());
    }
}
