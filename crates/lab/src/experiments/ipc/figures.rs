//! From the round trips a transport measured to what `ipc.json` says
//! about it, and each transport against a baseline: pure functions,
//! tested without a transport.

use harness::record::CellStatus;
use ipc::Transport;

use super::measure::Observed;
use super::report::{Point, TransportRecord};

/// The record of `transport`, from what it observed.
pub fn transport_record(transport: Transport, observed: Observed) -> TransportRecord {
    TransportRecord {
        transport,
        family: transport.family(),
        how: transport.describe().to_owned(),
        points: observed
            .sizes
            .iter()
            .filter_map(|(bytes, ns)| point(*bytes, ns))
            .collect(),
        status: if observed.error.is_some() {
            CellStatus::Failed
        } else {
            CellStatus::Ok
        },
        error: observed.error,
    }
}

/// One size's figures from its round trips in nanoseconds; `None`
/// without any.
pub fn point(bytes: usize, ns: &[u64]) -> Option<Point> {
    let mut sorted = ns.to_vec();
    sorted.sort_unstable();
    let median = median(&sorted)?;
    let us = |ns: f64| ns / 1000.0;
    Some(Point {
        bytes,
        messages: sorted.len(),
        median_us: us(median),
        p99_us: us(nearest_rank(&sorted, 0.99)? as f64),
        min_us: us(sorted[0] as f64),
        // bytes per nanosecond are 10^9 bytes per second.
        gb_per_s: bytes as f64 / median,
    })
}

/// The middle of `sorted` (the mean of the two middles of an even count).
fn median(sorted: &[u64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2] as f64),
        _ => Some((sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0),
    }
}

/// The smallest value with at least `q` of the values at or below it.
fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// Each transport's median at each size as a multiple of `base`'s at the
/// same size, for every transport with a point there (`None` where either
/// lacks one); `None` when `base` did not run.
pub fn relative(
    cells: &[TransportRecord],
    base: Transport,
) -> Option<Vec<(Transport, Vec<Option<f64>>)>> {
    let base = cells.iter().find(|c| c.transport == base)?;
    let sizes: Vec<usize> = {
        let mut sizes: Vec<usize> = cells
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.bytes))
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    };
    let at = |cell: &TransportRecord, bytes: usize| {
        cell.points
            .iter()
            .find(|p| p.bytes == bytes)
            .map(|p| p.median_us)
    };
    Some(
        cells
            .iter()
            .map(|cell| {
                let ratios = sizes
                    .iter()
                    .map(|&bytes| Some(at(cell, bytes)? / at(base, bytes)?))
                    .collect();
                (cell.transport, ratios)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_the_median_the_nearest_rank_p99_and_bytes_over_the_median() {
        // 1..=200 µs: median 100.5 µs, p99 the 198th value.
        let ns: Vec<u64> = (1..=200).rev().map(|us| us * 1000).collect();
        let p = point(1_000_000, &ns).unwrap();
        assert_eq!(p.messages, 200);
        assert_eq!(p.median_us, 100.5);
        assert_eq!(p.p99_us, 198.0);
        assert_eq!(p.min_us, 1.0);
        // A million bytes in 100.5 µs: 9.95 GB/s.
        assert!((p.gb_per_s - 1e6 / 100_500.0).abs() < 1e-9, "{p:?}");
        // Few messages: the p99 is the slowest.
        let few = point(64, &[3000, 1000, 2000]).unwrap();
        assert_eq!((few.median_us, few.p99_us), (2.0, 3.0));
        assert_eq!(point(64, &[]), None);
    }

    #[test]
    fn a_failed_transport_keeps_the_sizes_it_finished() {
        let observed = Observed {
            sizes: vec![(64, vec![1000]), (4096, vec![])],
            error: Some("the peer hung up".into()),
        };
        let record = transport_record(Transport::Shm, observed);
        assert_eq!(record.status, CellStatus::Failed);
        assert_eq!(record.points.len(), 1);
        assert_eq!(record.error.as_deref(), Some("the peer hung up"));
    }

    #[test]
    fn each_median_is_a_multiple_of_the_baselines_at_its_size() {
        let record = |transport, points: &[(usize, u64)]| {
            transport_record(
                transport,
                Observed {
                    sizes: points.iter().map(|&(b, ns)| (b, vec![ns])).collect(),
                    error: None,
                },
            )
        };
        let cells = [
            record(Transport::ThreadArc, &[(64, 2000), (4096, 4000)]),
            record(Transport::PipeRaw, &[(64, 10_000), (4096, 40_000)]),
            record(Transport::Shm, &[(64, 3000)]),
        ];
        let ratios = relative(&cells, Transport::ThreadArc).unwrap();
        assert_eq!(
            ratios[0],
            (Transport::ThreadArc, vec![Some(1.0), Some(1.0)])
        );
        assert_eq!(ratios[1], (Transport::PipeRaw, vec![Some(5.0), Some(10.0)]));
        assert_eq!(ratios[2], (Transport::Shm, vec![Some(1.5), None]));
        assert!(relative(&cells[1..], Transport::ThreadArc).is_none());
    }
}
