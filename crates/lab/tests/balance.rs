//! `lab balance` end to end, tiny: real prefork servers under each policy,
//! real loads, and the per-worker figures checked against what the
//! scenarios must produce.

use harness::record::CellStatus;
use lab::experiments::balance::Scenario;
use lab::experiments::balance::report::BalanceRun;
use service::contract::Balance;

mod common;
use common::{lab_ok, scratch};

#[test]
fn every_prefork_policy_runs_each_scenario_and_accounts_for_every_connection_and_its_cost() {
    let out = scratch("balance");
    let args = [
        "balance",
        "--models",
        "prefork",
        "--scenarios",
        "long,short",
        "--workers",
        "2",
        "--duration",
        "500ms",
        "--cpu-iters",
        "1000",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "b",
    ];
    let run: BalanceRun = lab_ok(&args, &out, "b", "balance.json");
    assert_eq!(
        run.params.policies,
        ["prefork reuseport", "prefork shared", "prefork rr"]
    );
    assert_eq!(run.cells.len(), 3 * 2);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        assert_eq!((cell.connections.len(), cell.requests.len()), (2, 2));
        let connections: u64 = cell.connections.iter().sum();
        let requests: u64 = cell.requests.iter().sum();
        let answered = cell.load.as_ref().unwrap().ok;
        assert!(requests >= answered && answered > 0, "{cell:?}");
        match cell.scenario {
            // Keep-alive: exactly the load generator's connections.
            Scenario::Long => assert_eq!(connections, u64::from(cell.concurrency), "{cell:?}"),
            // A connection per request (some cut off by the deadline).
            Scenario::Short => assert!(connections >= answered, "{cell:?}"),
            _ => unreachable!(),
        }
        assert!(cell.fairness.is_some(), "{cell:?}");
        // What the server spent per request, and what bound the load.
        let per = cell.per_request.unwrap();
        assert!(
            per.cpu_us > 0.0 && per.voluntary_switches.is_some(),
            "{per:?}"
        );
        assert!(cell.bound.is_some(), "{cell:?}");
    }
    // Round-robin hands the two long connections to the two workers.
    let rr_long = run
        .cells
        .iter()
        .find(|c| c.balance == Balance::Rr && c.scenario == Scenario::Long)
        .unwrap();
    assert_eq!(rr_long.connections, [1, 1]);
    for file in ["balance.md", "balance-long.svg", "balance-short.svg"] {
        assert!(out.join("b").join(file).exists(), "{file}");
    }
}
