//! `lab conns` end to end, tiny: idle connections held on real servers,
//! memory read at each step, a line fitted through it.

use harness::record::CellStatus;
use lab::experiments::conns::report::ConnsRun;

mod common;
use common::{lab_ok, scratch};

#[test]
fn idle_connections_are_held_at_each_step_and_fitted() {
    let out = scratch("conns");
    let args = [
        "conns",
        "--models",
        "bare,threadpool",
        "--steps",
        "50,20",
        "--workers",
        "1",
        "--quick",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "c",
    ];
    let run: ConnsRun = lab_ok(&args, &out, "c", "conns.json");
    assert_eq!(run.params.steps, [20, 50]);
    assert_eq!(run.cells.len(), 2);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        let held: Vec<usize> = cell.steps.iter().map(|s| s.held).collect();
        assert_eq!(held, [20, 50], "{}", cell.model);
        assert_eq!((cell.largest_held, cell.stopped.as_deref()), (50, None));
        assert!(cell.base_pss_bytes.unwrap() > 0);
        for step in &cell.steps {
            assert!(step.pss_bytes.unwrap() > 0);
            let light = step.light.as_ref().unwrap();
            assert!(light.ok > 0 && light.non_2xx == 0, "{light:?}");
            // A light stream this short may not reach one 10 ms tick of
            // CPU time; its switches are counted one by one.
            let per = step.per_request.expect("CPU per light request");
            assert!(per.voluntary_switches.is_some_and(|n| n > 0.0), "{per:?}");
            assert!(step.bound.is_some());
        }
        assert!(cell.fit.is_some() && cell.pss_extrapolated_bytes.is_some());
    }
    for file in ["conns.md", "conns.svg"] {
        assert!(out.join("c").join(file).exists(), "{file}");
    }
}
