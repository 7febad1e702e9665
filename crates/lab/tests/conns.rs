//! `lab conns` end to end, tiny: idle connections held on real servers by
//! several holder processes from several source addresses (the caps
//! lowered so that they must spread), memory read at each step, a line
//! fitted through it, and no holder left behind.

use harness::record::CellStatus;
use lab::experiments::conns::report::ConnsRun;

mod common;
use common::{Tagged, lab_ok, scratch};

use std::time::{Duration, Instant};

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

#[test]
fn a_server_out_of_descriptors_stops_its_kind_and_says_why() {
    let out = scratch("conns-limit");
    // threadpool under a descriptor limit of 64: it runs out well before
    // the second step.
    let template = format!(
        "low=sh -c 'ulimit -n 64 && exec {} --listen {{addr}} --workers {{workers}} \
         --header-timeout-ms 3600000'",
        server_binary("threadpool")
    );
    let args = [
        "conns",
        "--server",
        &template,
        "--models",
        "low",
        "--steps",
        "20,200",
        "--workers",
        "1",
        "--quick",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "c",
    ];
    let run: ConnsRun = lab_ok(&args, &out, "c", "conns.json");
    let cell = &run.cells[0];
    assert_eq!(
        cell.status,
        CellStatus::Ok,
        "a limit is a finding: {:?}",
        cell.error
    );
    assert!(
        (20..200).contains(&cell.largest_held),
        "held {}",
        cell.largest_held
    );
    let stopped = cell.stopped.as_deref().expect("why it stopped");
    // Descriptors inherited above the limit (a jobserver's pipe, under
    // cargo) count too, so it can read "65 of its 64".
    let open: usize = stopped
        .split(" had ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" of its 64 descriptors open)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stopped}"));
    assert!(open >= 64, "{stopped}");
    assert_eq!(cell.steps.len(), 2, "the step it stopped in is measured");
    assert!(cell.pss_from_largest_bytes.is_some());
}

/// A server binary next to `lab`, built there first if this test runs
/// alone (`cargo test --workspace` builds it anyway).
fn server_binary(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_lab"))
        .parent()
        .unwrap();
    let binary = dir.join(name);
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", name])
            .status()
            .expect("run cargo");
        assert!(built.success(), "cargo build -p {name} failed");
    }
    binary.to_str().unwrap().to_owned()
}

#[test]
fn holders_do_not_outlive_a_killed_lab() {
    let out = scratch("conns-orphans");
    // The out-of-descriptors server again: a holder waits on an unanswered
    // connection for seconds, so it is surely there when the lab dies.
    let template = format!(
        "low=sh -c 'ulimit -n 64 && exec {} --listen {{addr}} --workers {{workers}} \
         --header-timeout-ms 3600000'",
        server_binary("threadpool")
    );
    let args = [
        "conns",
        "--server",
        &template,
        "--models",
        "low",
        "--steps",
        "200",
        "--quick",
        "--out",
        out.to_str().unwrap(),
    ];
    let tag = Tagged::new();
    // The lab leads a group of its own, its holders in it, and the whole
    // group is killed when the guard drops, whatever this test finds.
    let lab = testkit::Group::spawn(&mut tag.command(&args));
    let holders = || -> Vec<i32> {
        tag.alive()
            .into_iter()
            .filter(|&pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|line| line.split(|&b| b == 0).nth(1) == Some(b"hold"))
            })
            .collect()
    };
    // Busy holding: past the first 40 connections (the server runs out
    // near 53), not waiting on its stdin.
    let busy = || {
        holders().into_iter().any(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| fds.count() > 40)
        })
    };
    let until = Instant::now() + Duration::from_secs(60);
    while !busy() {
        assert!(
            Instant::now() < until,
            "no holder got busy:\n{}",
            lab.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The lab alone, not its group: nothing tells the holders to stop
    // but their stdin ending.
    lab.signal(nix::sys::signal::Signal::SIGKILL);
    let until = Instant::now() + Duration::from_secs(20);
    while !holders().is_empty() {
        assert!(
            Instant::now() < until,
            "holders outlived the lab: {:?}",
            holders()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
