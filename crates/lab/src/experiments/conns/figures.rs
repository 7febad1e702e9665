//! From what a kind measured to what `conns.json` says about it, the line
//! through (connections, PSS) included: pure functions, tested without a
//! server.

use harness::cost;
use harness::record::CellStatus;

use super::EXTRAPOLATE_TO;
use super::measure::Observed;
use super::report::{CellRecord, Fit, StepRecord};

/// The record of `model`, from what it observed.
pub fn cell_record(model: &str, observed: Observed) -> CellRecord {
    let mut problems: Vec<String> = observed.error.iter().cloned().collect();
    if let Some(code) = observed.exit_code.filter(|&c| c != 0) {
        problems.push(format!(
            "the server exited with {code} after SIGTERM, not 0"
        ));
    }
    if let Some(step) = observed.steps.iter().find(|s| !s.all_open) {
        problems.push(format!(
            "some of the {} held connections were closed by the server",
            step.held
        ));
    }
    let failed = !problems.is_empty();
    let steps: Vec<StepRecord> = observed
        .steps
        .iter()
        .map(|s| StepRecord {
            target: s.target,
            held: s.held,
            holders: s.holders,
            source_addresses: s.source_addresses,
            server_sockets: s.server_sockets,
            pss_bytes: s.memory.map(|m| m.pss),
            rss_bytes: s.memory.map(|m| m.rss),
            kernel_tcp_bytes: s.kernel_tcp,
            light: s.light.clone(),
            per_request: s
                .light
                .as_ref()
                .zip(s.light_cpu.as_ref())
                .and_then(|(light, cpu)| cost::per_request(cpu, light.ok)),
            bound: match (&s.light, &s.light_cpu, observed.limits) {
                (Some(light), Some(cpu), Some(limits)) => Some(cost::bound(
                    light,
                    cpu,
                    &limits,
                    Some(observed.light_rate),
                    None,
                )),
                _ => None,
            },
        })
        .collect();
    let mut points: Vec<(f64, f64)> = observed
        .base
        .map(|m| (0.0, m.pss as f64))
        .into_iter()
        .collect();
    points.extend(
        steps
            .iter()
            .filter_map(|s| Some((s.held as f64, s.pss_bytes? as f64))),
    );
    let fit = fit(&points);
    let largest = steps.iter().map(|s| s.held).max().unwrap_or(0);
    let pss_from_largest = steps
        .iter()
        .max_by_key(|s| s.held)
        .and_then(|s| scaled(observed.base?.pss, s.pss_bytes?, s.held, EXTRAPOLATE_TO));
    let kernel_per_connection = steps.iter().max_by_key(|s| s.held).and_then(|s| {
        let grown = s.kernel_tcp_bytes?.checked_sub(observed.base_kernel_tcp?)?;
        (s.held > 0).then(|| grown as f64 / s.held as f64)
    });
    CellRecord {
        model: model.to_owned(),
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
        base_pss_bytes: observed.base.map(|m| m.pss),
        base_kernel_tcp_bytes: observed.base_kernel_tcp,
        steps,
        largest_held: largest,
        stopped: observed.stopped,
        fit,
        pss_extrapolated_bytes: fit
            .map(|f| f.base_bytes + f.per_connection_bytes * EXTRAPOLATE_TO as f64),
        pss_from_largest_bytes: pss_from_largest,
        kernel_tcp_per_connection_bytes: kernel_per_connection,
        exit_code: observed.exit_code,
    }
}

/// The memory at `to` connections by one step alone: `base`, plus what
/// the step grew over it per connection (`pss` with `held` held), times
/// `to`. The step's own PSS when `held` is `to`; `None` with none held.
pub fn scaled(base: u64, pss: u64, held: usize, to: usize) -> Option<f64> {
    (held > 0).then(|| base as f64 + (pss as f64 - base as f64) / held as f64 * to as f64)
}

/// The least-squares line through `points`; `None` with fewer than two
/// distinct x.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some(Fit {
        per_connection_bytes: slope,
        base_bytes: mean_y - slope * mean_x,
        points: points.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::conns::measure::Step;
    use harness::procs::Memory;

    #[test]
    fn the_fit_is_the_line_through_the_points() {
        let line = fit(&[(0.0, 100.0), (10.0, 150.0), (20.0, 200.0)]).unwrap();
        assert!((line.per_connection_bytes - 5.0).abs() < 1e-9);
        assert!((line.base_bytes - 100.0).abs() < 1e-9);
        assert!(fit(&[(5.0, 1.0)]).is_none());
        assert!(fit(&[(5.0, 1.0), (5.0, 2.0)]).is_none());
    }

    #[test]
    fn the_largest_step_alone_scales_its_growth_per_connection() {
        assert_eq!(scaled(1000, 3000, 100, 1000), Some(21_000.0));
        assert_eq!(scaled(1000, 3000, 1000, 1000), Some(3000.0), "measured");
        assert_eq!(
            scaled(1000, 900, 10, 20),
            Some(800.0),
            "shrinking stays honest"
        );
        assert_eq!(scaled(1000, 3000, 0, 1000), None);
    }

    #[test]
    fn a_kind_is_fitted_from_its_base_and_steps_and_extrapolated() {
        let memory = |pss| Memory {
            rss: pss,
            pss,
            uss: pss,
        };
        let step = |held: usize, pss| Step {
            target: held,
            held,
            holders: 1,
            source_addresses: 1,
            server_sockets: Some(held + 1),
            memory: Some(memory(pss)),
            kernel_tcp: Some(1000 + held as u64 * 10),
            light: None,
            light_cpu: None,
            all_open: true,
        };
        let observed = Observed {
            base: Some(memory(1_000_000)),
            base_kernel_tcp: Some(1000),
            steps: vec![step(1000, 3_000_000), step(2000, 5_000_000)],
            stopped: Some("stopped at 2000 connections: too many open files".into()),
            exit_code: Some(0),
            ..Observed::default()
        };
        let record = cell_record("prefork", observed);
        assert_eq!(record.status, CellStatus::Ok, "stopping early is a finding");
        let line = record.fit.unwrap();
        assert!((line.per_connection_bytes - 2000.0).abs() < 1e-6);
        assert!((record.pss_extrapolated_bytes.unwrap() - 201_000_000.0).abs() < 1.0);
        assert_eq!(record.largest_held, 2000);
        // 1 MB base, 2 KB per connection at the largest step: 201 MB.
        assert!((record.pss_from_largest_bytes.unwrap() - 201_000_000.0).abs() < 1.0);
        assert_eq!(record.kernel_tcp_per_connection_bytes, Some(10.0));
    }
}
