//! `lab block` end to end, tiny: threadpool with its CPU work on the pool
//! and on the loop, with and without CPU load beside the `/io` traffic.

use harness::record::CellStatus;
use lab::experiments::block::report::BlockRun;
use service::contract::Offload;

mod common;
use common::{lab_ok, scratch};

#[test]
fn threadpool_runs_both_offloads_with_and_without_cpu_load_and_reports_lag_and_cost() {
    let out = scratch("block");
    let args = [
        "block",
        "--models",
        "threadpool",
        "--workers",
        "1",
        "--shares",
        // A quarter of 2 cores is half of one: `--offload none` puts it
        // all on the one loop, which keeps up. Half of 2 cores is that
        // loop's whole core, and where the HTTP work on top tips it over,
        // every `/io` request waits past the load's end (seen once).
        "0,0.25",
        "--duration",
        "1s",
        "--io-rate",
        "50",
        "--cpu-iters",
        "2000",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "k",
    ];
    let run: BlockRun = lab_ok(&args, &out, "k", "block.json");
    assert_eq!(
        run.params.variants,
        ["threadpool --offload cpu", "threadpool --offload none"]
    );
    assert_eq!(run.cells.len(), 2 * 2);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        assert!(matches!(cell.offload, Some(Offload::Cpu | Offload::None)));
        // The watched traffic ran at its rate, and answered.
        let io = cell.io.as_ref().unwrap();
        assert!(io.ok > 0 && io.non_2xx == 0, "{io:?}");
        // The CPU load ran only where a share was offered.
        match cell.share {
            0.0 => assert!(cell.cpu.is_none() && cell.cpu_offered_rps.is_none()),
            _ => assert!(cell.cpu.as_ref().unwrap().ok > 0, "{cell:?}"),
        }
        assert!(
            cell.loop_lag_ms.is_some(),
            "threadpool's loop reports its lag"
        );
        // What the server spent per request, and what bound the cell.
        // CPU time comes in 10 ms ticks: the /io stream alone may not
        // reach one, the CPU load always does; switches count one by one.
        let per = cell.per_request.unwrap();
        assert!(per.voluntary_switches.is_some_and(|n| n > 0.0), "{per:?}");
        assert!(cell.share == 0.0 || per.cpu_us > 0.0, "{per:?}");
        assert!(cell.bound.is_some(), "{cell:?}");
    }
    for file in ["block.md", "block.svg"] {
        assert!(out.join("k").join(file).exists(), "{file}");
    }
}
