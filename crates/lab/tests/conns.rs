//! `lab conns` end to end, tiny: idle connections held on real servers by
//! several holder processes from several source addresses (the caps
//! lowered so that they must spread), memory read at each step, a line
//! fitted through it, and no holder left behind.

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
        // 50 connections: holders of 30 + 20, addresses of 20 + 20 + 10.
        "--max-per-holder",
        "30",
        "--max-per-source",
        "20",
        "--quick",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "c",
    ];
    let run: ConnsRun = lab_ok(&args, &out, "c", "conns.json");
    assert_eq!(run.params.steps, [20, 50]);
    let caps = run.params.caps.unwrap();
    assert_eq!((caps.per_holder, caps.per_source), (30, 20));
    assert!(run.params.descriptors.unwrap().limit >= 50);
    assert_eq!(run.cells.len(), 2);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        let held: Vec<usize> = cell.steps.iter().map(|s| s.held).collect();
        assert_eq!(held, [20, 50], "{}", cell.model);
        let spread: Vec<(usize, usize)> = cell
            .steps
            .iter()
            .map(|s| (s.holders, s.source_addresses))
            .collect();
        assert_eq!(spread, [(1, 1), (2, 3)], "{}", cell.model);
        assert_eq!((cell.largest_held, cell.stopped.as_deref()), (50, None));
        assert!(cell.base_pss_bytes.unwrap() > 0);
        for step in &cell.steps {
            // The sockets the server's processes have open (from /proc):
            // it really holds them all.
            let sockets = step.server_sockets.unwrap();
            assert!(sockets >= step.held, "{}: {sockets} sockets", cell.model);
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
        assert!(cell.pss_from_largest_bytes.is_some());
    }
    for file in ["conns.md", "conns.svg"] {
        assert!(out.join("c").join(file).exists(), "{file}");
    }
}
