//! The arithmetic of a crash timeline, kept free of processes so it can be
//! tested on made-up records: 100 ms windows, the pre-fault baseline, the
//! time to recover, and the one-line terminal rendering.

use loadgen::RequestRecord;

/// What one window of the load saw. Requests are placed in the window in
/// which they *ended* (their answer arrived), which is when the client
/// learnt how they went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// 2xx answers.
    pub ok: u64,
    /// Answers other than 2xx.
    pub non_2xx: u64,
    /// p99 of the (latency-corrected) durations of the 2xx answers, ms.
    pub p99_ms: Option<f64>,
}

/// Splits `records` into whole windows of `width_s` over `[0, span_s)`. A
/// last partial window is dropped: it would read as a dip that is only the
/// end of the load.
pub fn windows(records: &[RequestRecord], width_s: f64, span_s: f64) -> Vec<Window> {
    let count = (span_s / width_s + 1e-9).floor().max(0.0) as usize;
    let mut durations: Vec<Vec<f64>> = vec![Vec::new(); count];
    let mut out = vec![Window::default(); count];
    for record in records {
        if record.end_s < 0.0 {
            continue;
        }
        let index = (record.end_s / width_s).floor() as usize;
        let Some(window) = out.get_mut(index) else {
            continue;
        };
        if (200..300).contains(&record.status) {
            window.ok += 1;
            durations[index].push(record.duration_s * 1000.0);
        } else {
            window.non_2xx += 1;
        }
    }
    for (window, mut ms) in out.iter_mut().zip(durations) {
        window.p99_ms = percentile(&mut ms, 0.99);
    }
    out
}

/// The nearest-rank percentile (`q` in 0..=1) of `values`; sorts them.
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil().max(1.0) as usize;
    values.get(rank - 1).copied()
}

/// Mean successes per window over the whole windows that lie in
/// `[from_s, until_s)`: the pre-fault throughput. `None` if there are none.
pub fn baseline(windows: &[Window], width_s: f64, from_s: f64, until_s: f64) -> Option<f64> {
    let picked: Vec<u64> = windows
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let start = *i as f64 * width_s;
            start >= from_s - 1e-9 && start + width_s <= until_s + 1e-9
        })
        .map(|(_, w)| w.ok)
        .collect();
    if picked.is_empty() {
        return None;
    }
    Some(picked.iter().sum::<u64>() as f64 / picked.len() as f64)
}

/// How recovery is judged.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryRule {
    /// A window is "back" at this share of the baseline (0.9).
    pub threshold: f64,
    /// ... and only if this many windows in a row are back (fewer where the
    /// load ends first), so that one lucky window inside a dip, or the
    /// window right after the fault before the fault bites, does not count.
    pub sustain: usize,
}

/// Seconds from the fault at `fault_s` to the start of the first window
/// after the fault's own window that begins a run of `rule.sustain` windows
/// at ≥ `rule.threshold` × `baseline`; `None`: never within the load. A
/// fault that dents nothing recovers at the next window boundary, so the
/// resolution is one window.
pub fn recovery_s(
    windows: &[Window],
    width_s: f64,
    fault_s: f64,
    baseline: f64,
    rule: RecoveryRule,
) -> Option<f64> {
    let good = |w: &Window| w.ok as f64 >= rule.threshold * baseline;
    let first = (fault_s / width_s).floor() as usize + 1;
    (first..windows.len())
        .find(|&i| {
            let end = (i + rule.sustain.max(1)).min(windows.len());
            windows[i..end].iter().all(good)
        })
        .map(|i| (i as f64 * width_s - fault_s).max(0.0))
}

/// One character per window, for the terminal:
/// `#` ≥ 90% of the baseline, `+` ≥ 50%, `-` above 0, `_` no success at all,
/// `x` any non-2xx answer in the window, and `|` the window of the fault.
pub fn render(windows: &[Window], width_s: f64, fault_s: f64, baseline: f64) -> String {
    let fault = (fault_s / width_s).floor() as usize;
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let share = if baseline > 0.0 {
                w.ok as f64 / baseline
            } else {
                0.0
            };
            if i == fault {
                '|'
            } else if w.non_2xx > 0 {
                'x'
            } else if share >= 0.9 {
                '#'
            } else if share >= 0.5 {
                '+'
            } else if w.ok > 0 {
                '-'
            } else {
                '_'
            }
        })
        .collect()
}

/// The legend for [`render`].
pub const LEGEND: &str = "one char per 100 ms: # >=90% of pre-fault successes, + >=50%, \
                          - >0, _ none, x non-2xx answers, | the fault";

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(end_s: f64, ms: f64) -> RequestRecord {
        RequestRecord {
            start_s: end_s - ms / 1000.0,
            end_s,
            duration_s: ms / 1000.0,
            status: 200,
        }
    }

    /// `per` 2xx answers in each window, given as a list of counts.
    fn steady(counts: &[u64]) -> Vec<Window> {
        counts
            .iter()
            .map(|&ok| Window {
                ok,
                ..Window::default()
            })
            .collect()
    }

    #[test]
    fn requests_land_in_the_window_they_ended_in() {
        let mut records = vec![ok(0.05, 1.0), ok(0.15, 2.0), ok(0.19, 4.0), ok(0.35, 1.0)];
        records.push(RequestRecord {
            status: 503,
            ..ok(0.12, 1.0)
        });
        // 0.35 falls in the last, partial window of a 0.35 s span: dropped.
        let w = windows(&records, 0.1, 0.35);
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].ok, w[1].ok, w[2].ok), (1, 2, 0));
        assert_eq!(w[1].non_2xx, 1);
        assert_eq!(w[1].p99_ms, Some(4.0));
        assert_eq!(w[2].p99_ms, None);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.99), Some(99.0));
        assert_eq!(percentile(&mut [5.0], 0.99), Some(5.0));
        assert_eq!(percentile(&mut [], 0.5), None);
    }

    #[test]
    fn baseline_uses_whole_windows_before_the_fault() {
        let w = steady(&[0, 10, 20, 30, 99]);
        // Windows starting at 0.1 and 0.2 end by 0.3; the fault's window is out.
        assert_eq!(baseline(&w, 0.1, 0.1, 0.35), Some(15.0));
        assert_eq!(baseline(&w, 0.1, 0.5, 0.6), None);
    }

    const RULE: RecoveryRule = RecoveryRule {
        threshold: 0.9,
        sustain: 3,
    };

    #[test]
    fn recovery_is_the_first_sustained_window_back() {
        // Fault at 0.32 s; windows 4 and 5 dip; 6 is a lone good window, 7 dips
        // again; back for good from window 8 (0.8 s).
        let w = steady(&[10, 10, 10, 10, 0, 2, 10, 5, 9, 10, 10, 10]);
        let r = recovery_s(&w, 0.1, 0.32, 10.0, RULE).unwrap();
        assert!((r - 0.48).abs() < 1e-9, "{r}");
    }

    #[test]
    fn an_undented_load_recovers_at_the_next_boundary() {
        let w = steady(&[10; 10]);
        let r = recovery_s(&w, 0.1, 0.25, 10.0, RULE).unwrap();
        assert!((r - 0.05).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_dead_server_never_recovers() {
        let w = steady(&[10, 10, 10, 0, 0, 0, 0]);
        assert_eq!(recovery_s(&w, 0.1, 0.3, 10.0, RULE), None);
        // Back only in the very last windows still counts: the run is shorter
        // than `sustain` there.
        let w = steady(&[10, 10, 10, 0, 0, 9, 10]);
        let r = recovery_s(&w, 0.1, 0.3, 10.0, RULE).unwrap();
        assert!((r - 0.2).abs() < 1e-9, "{r}");
    }

    #[test]
    fn the_line_marks_levels_and_the_fault() {
        let mut w = steady(&[10, 10, 6, 1, 0, 10]);
        w[5].non_2xx = 1;
        assert_eq!(render(&w, 0.1, 0.15, 10.0), "#|+-_x");
    }
}
