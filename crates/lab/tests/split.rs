//! `lab split` end to end, tiny: prefork and threadpool's two pools, a
//! request in one and in two parts, lone and saturated.

use harness::record::CellStatus;
use lab::experiments::split::Load;
use lab::experiments::split::report::SplitRun;
use service::contract::PoolKind;

mod common;
use common::{lab_ok, scratch};

#[test]
fn prefork_and_both_threadpool_pools_run_every_part_count_lone_and_saturated() {
    let out = scratch("split");
    let args = [
        "split",
        "--models",
        "prefork,threadpool",
        "--workers",
        "2",
        "--parts",
        "1,2",
        "--saturate",
        "4",
        "--duration",
        "500ms",
        "--iters",
        "20000",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "k",
    ];
    let run: SplitRun = lab_ok(&args, &out, "k", "split.json");
    assert_eq!(
        run.params.variants,
        [
            "prefork",
            "threadpool --pool queue",
            "threadpool --pool rayon"
        ]
    );
    assert_eq!(run.params.iters, 20_000);
    assert_eq!(run.cells.len(), 3 * 2 * 2);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        assert_eq!(cell.iters_per_part, 20_000 / cell.parts, "{cell:?}");
        let expected_connections = match cell.load {
            Load::Lone => 1,
            Load::Saturated => 4,
        };
        assert_eq!(cell.connections, expected_connections);
        let summary = cell.summary.as_ref().unwrap();
        assert!(summary.ok > 0 && summary.non_2xx == 0, "{summary:?}");
        // Every request computed: CPU time and switches were counted.
        let per = cell.per_request.unwrap();
        assert!(per.voluntary_switches.is_some_and(|n| n > 0.0), "{per:?}");
        assert!(cell.bound.is_some(), "{cell:?}");
        match cell.model.as_str() {
            "threadpool" => assert!(matches!(cell.pool, Some(PoolKind::Queue | PoolKind::Rayon))),
            _ => assert_eq!(cell.pool, None),
        }
    }
    let text = std::fs::read_to_string(out.join("k").join("split.md")).unwrap();
    assert!(text.contains("p50 speedup"), "{text}");
    assert!(out.join("k").join("split.svg").exists());
}
