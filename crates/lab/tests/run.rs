//! `lab run` end to end: a tiny real matrix, bad input, and failing servers.
//!
//! Every `lab` is started in its own process group, and the guard kills the
//! whole group when dropped, so a failing assertion never leaves a server or
//! a load generator behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use harness::record::CellStatus;
use lab::experiments::run::report::RunRecord;
use testkit::Group;

mod common;
use common::{Tagged, lab_ok, run_lab, scratch};
use nix::sys::signal::Signal;

fn read_run(dir: &Path) -> RunRecord {
    let text = std::fs::read_to_string(dir.join("run.json")).expect("run.json");
    serde_json::from_str(&text).expect("run.json parses")
}

#[test]
fn a_tiny_matrix_runs_end_to_end() {
    let out = scratch("tiny");
    let args = [
        "run",
        // Closed cells only (the default profile adds open-loop ones).
        "--quick",
        "--models",
        "bare,prefork,threadpool",
        "--workloads",
        "noop,cpu",
        "--workers",
        "1",
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--cpu-iters",
        "1000",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "tiny",
    ];
    // Generous: the first call may build both servers.
    let (status, stdout, stderr, left) = run_lab(&args, Duration::from_secs(600));
    assert!(status.success(), "lab failed: {status}\n{stderr}");
    assert!(left.is_empty(), "processes left: {left:?}");

    let dir = out.join("tiny");
    let run = read_run(&dir);
    assert_eq!(
        run.schema_version,
        lab::experiments::run::report::SCHEMA_VERSION
    );
    assert!(run.meta.complete && !run.meta.interrupted);
    let cells: Vec<(String, String)> = run
        .cells
        .iter()
        .map(|c| (c.model.to_string(), c.workload.to_string()))
        .collect();
    // bare serves only noop: its cpu cell is skipped.
    let expected: Vec<(String, String)> = [
        ("bare", "noop"),
        ("prefork", "noop"),
        ("prefork", "cpu"),
        ("threadpool", "noop"),
        ("threadpool", "cpu"),
    ]
    .iter()
    .map(|(m, w)| (m.to_string(), w.to_string()))
    .collect();
    assert_eq!(cells, expected);
    for cell in &run.cells {
        let what = format!("{} {}", cell.model, cell.workload);
        assert_eq!(cell.status, CellStatus::Ok, "{what}: {:?}", cell.error);
        assert_eq!(cell.workers, 1);
        assert_eq!(cell.concurrency, 4);
        let load = cell.load.as_ref().expect("load");
        assert!(load.rps > 0.0, "{what}: rps");
        assert!(load.ok > 0, "{what}: ok responses");
        let memory = cell.memory.as_ref().expect("memory");
        assert!(
            memory.idle.pss_bytes > 0 && memory.peak.pss_bytes > 0,
            "{what}: PSS"
        );
        assert!(
            memory.peak.rss_bytes >= memory.peak.pss_bytes,
            "{what}: RSS >= PSS"
        );
        assert!(cell.cpu.as_ref().expect("cpu").loadgen_s > 0.0, "{what}");
        let per = cell.per_request.expect("CPU per request");
        assert!(
            per.cpu_us > 0.0 && per.user_us + per.system_us > 0.0,
            "{what}"
        );
        assert!(per.voluntary_switches.is_some(), "{what}: context switches");
        assert!(cell.bound.is_some(), "{what}: bound");
        assert_eq!(cell.exit_code, Some(0), "{what}: exit code");
        assert!(cell.left_running.is_empty(), "{what}: left running");
    }
    // A prefork (and bare) tree is a master and its worker; threadpool is
    // one process.
    assert_eq!(run.cells[0].memory.as_ref().unwrap().processes, 2);
    assert_eq!(run.cells[1].memory.as_ref().unwrap().processes, 2);
    assert_eq!(run.cells[3].memory.as_ref().unwrap().processes, 1);
    let cpu = run.cells[2].efficiency.as_ref().expect("cpu efficiency");
    assert_eq!(cpu.kind, "cpu");
    assert!(cpu.value > 0.0);

    let csv = std::fs::read_to_string(dir.join("cells.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5);
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    // A chart per workload and one of memory, each embedded in summary.md.
    for chart in ["run-noop.svg", "run-cpu.svg", "memory.svg"] {
        let svg = std::fs::read_to_string(dir.join(chart)).expect(chart);
        assert!(svg.contains("<svg") && svg.contains("prefork"), "{chart}");
        assert!(
            summary.contains(&format!("]({chart})")),
            "{chart} not in summary.md"
        );
    }
    for table in [summary.as_str(), stdout.as_str()] {
        assert!(
            table.contains("bare") && table.contains("prefork") && table.contains("threadpool")
        );
        assert!(table.contains("PSS peak MiB"));
    }
}

#[test]
fn repeats_interleave_and_pinning_splits_the_cpus() {
    let out = scratch("repeat-pin");
    let args = [
        "run",
        "--quick",
        "--models",
        "prefork,threadpool",
        "--workloads",
        "noop",
        "--workers",
        "1",
        "--concurrency",
        "4",
        "--duration",
        "500ms",
        "--warmup",
        "0",
        "--repeat",
        "2",
        "--pin",
        "on",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "rp",
    ];
    let run: RunRecord = lab_ok(&args, &out, "rp", "run.json");
    // All cells once, then all again.
    let order: Vec<(&str, u32)> = run
        .cells
        .iter()
        .map(|c| (c.model.as_str(), c.repeat))
        .collect();
    assert_eq!(
        order,
        [
            ("prefork", 1),
            ("threadpool", 1),
            ("prefork", 2),
            ("threadpool", 2)
        ]
    );
    // The server and the load generator on disjoint CPUs, recorded.
    let pinning = run.params.pinning.as_ref().expect("pinning recorded");
    assert!(!pinning.server.is_empty() && !pinning.loadgen.is_empty());
    assert!(
        pinning
            .server
            .iter()
            .all(|cpu| !pinning.loadgen.contains(cpu))
    );
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        // Pinned apart, they cannot be bound by the cores they share.
        let bound = cell.bound.as_ref().expect("bound");
        assert_ne!(bound.by.name(), "shared cores", "{bound:?}");
    }
    let summary = std::fs::read_to_string(out.join("rp").join("summary.md")).unwrap();
    assert!(
        summary.contains("Each cell ran 2 times, interleaved"),
        "{summary}"
    );
    assert!(summary.contains("min / median / max"), "{summary}");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for args in [
        &["run", "--models", "forking"][..],
        &["run", "--workloads", "disk"],
        &["run", "--workers", "0"],
        &["run", "--duration", "soon"],
        &["run", "--models", "bare", "--workloads", "cpu,io"],
        &["run", "--server", "python3 app.py --port {port}"],
        &["run", "--server", "mine=python3 app.py --port {prot}"],
        &["run", "--server", "prefork=./mine"],
    ] {
        let (status, stdout, stderr, _) = run_lab(args, Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty());
    }
}

/// A fake server: a shell script under the model's name.
fn fake_server(dir: &Path, script: &str) {
    let path = dir.join("prefork");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run_fake(script: &str, extra: &[&str]) -> (ExitStatus, RunRecord, Vec<i32>) {
    let out = scratch("fake");
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    fake_server(&bin, script);
    let mut args = vec![
        "run",
        "--server-dir",
        bin.to_str().unwrap(),
        "--models",
        "prefork",
        "--workloads",
        "noop",
        "--duration",
        "200ms",
        "--warmup",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "fake",
    ];
    args.extend_from_slice(extra);
    let (status, _, _, left) = run_lab(&args, Duration::from_secs(60));
    (status, read_run(&out.join("fake")), left)
}

#[test]
fn a_server_that_dies_at_start_fails_its_cells_and_the_run_goes_on() {
    let (status, run, left) = run_fake(
        "echo 'boom: cannot bind' >&2; exit 1",
        &["--workers", "1,2"],
    );
    assert_eq!(status.code(), Some(1));
    assert!(left.is_empty(), "left: {left:?}");
    // Both cells were tried and recorded, each with the server's last words.
    assert_eq!(run.cells.len(), 2);
    assert!(run.meta.complete);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Failed);
        assert!(
            cell.error
                .as_deref()
                .unwrap()
                .contains("before it was ready"),
            "{:?}",
            cell.error
        );
        assert_eq!(cell.stderr_tail, ["boom: cannot bind"]);
    }
}

#[test]
fn a_server_that_never_gets_ready_times_out_and_is_killed() {
    let (status, run, left) = run_fake(
        "echo 'still loading' >&2; exec sleep 60",
        &["--ready-timeout", "500ms", "--workers", "1"],
    );
    assert_eq!(status.code(), Some(1));
    assert!(left.is_empty(), "the hung server was not killed: {left:?}");
    assert_eq!(run.cells.len(), 1);
    let cell = &run.cells[0];
    assert!(cell.error.as_deref().unwrap().contains("no ready line"));
    assert_eq!(cell.stderr_tail, ["still loading"]);
}

/// Starts a prefork noop run of several cells and waits until one cell is
/// written, so an interruption lands in the middle of the run.
fn start_long_run(tag: &Tagged, out: &Path) -> Group {
    let args = [
        "run",
        "--models",
        "prefork",
        "--workloads",
        "noop",
        "--workers",
        "1,2,3,4",
        "--duration",
        "2s",
        "--warmup",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "cut",
    ];
    let lab = Group::spawn(&mut tag.command(&args));
    let run_json = out.join("cut").join("run.json");
    let one_cell_done = || {
        std::fs::read_to_string(&run_json)
            .ok()
            .and_then(|text| serde_json::from_str::<RunRecord>(&text).ok())
            .is_some_and(|run| !run.cells.is_empty())
    };
    // Generous: the first call may build the server.
    assert!(
        testkit::wait_until(Duration::from_secs(600), one_cell_done),
        "no cell finished; stderr:\n{}",
        lab.stderr()
    );
    lab
}

/// What an interrupted run must leave: exit 130, the finished cells kept
/// and marked interrupted, nothing running.
fn assert_cut_cleanly(lab: &mut Group, tag: &Tagged, out: &Path) {
    let status = lab.finish(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{}", lab.stderr());
    assert!(
        testkit::wait_until(Duration::from_secs(3), || tag.alive().is_empty()),
        "left running: {:?}",
        tag.alive()
    );
    let run = read_run(&out.join("cut"));
    assert!(run.meta.interrupted);
    assert!(!run.meta.complete);
    assert!(
        (1..4).contains(&run.cells.len()),
        "{} cells",
        run.cells.len()
    );
    assert_eq!(run.cells[0].status, CellStatus::Ok);
}

/// Ctrl-C at a terminal (SIGINT to the whole foreground group: lab, its
/// load generator; its server has a group of its own) keeps the finished
/// cells, exits 130 and leaves nothing running.
#[test]
fn ctrl_c_keeps_finished_cells_and_cleans_up() {
    let out = scratch("ctrl-c");
    let tag = Tagged::new();
    let mut lab = start_long_run(&tag, &out);
    lab.signal_group(Signal::SIGINT);
    assert_cut_cleanly(&mut lab, &tag, &out);
}

/// A second Ctrl-C while the first is being handled must not skip the
/// cleanup: the server, in its own group, gets no signal from the terminal
/// and would be left running.
#[test]
fn a_second_ctrl_c_still_cleans_up() {
    let out = scratch("ctrl-c-twice");
    let tag = Tagged::new();
    let mut lab = start_long_run(&tag, &out);
    lab.signal(Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(20));
    lab.signal(Signal::SIGINT);
    assert_cut_cleanly(&mut lab, &tag, &out);
}

/// The memory lesson is real: a dataset built before the fork is shared by
/// the workers' page tables and counted once in PSS; built per worker, it is
/// counted once per worker.
#[test]
fn a_dataset_built_before_fork_is_shared_and_per_worker_is_not() {
    let idle_pss_mib = |load: &str| {
        let out = scratch(load);
        let args = [
            "run",
            "--models",
            "prefork",
            "--workloads",
            "noop",
            "--workers",
            "2",
            "--duration",
            "300ms",
            "--warmup",
            "0",
            "--dataset-mb",
            "16",
            "--dataset-load",
            load,
            "--out",
            out.to_str().unwrap(),
            "--name",
            "mem",
        ];
        let (status, _, stderr, _) = run_lab(&args, Duration::from_secs(600));
        assert!(status.success(), "{stderr}");
        let run = read_run(&out.join("mem"));
        assert_eq!(run.params.servers.dataset_mb, 16);
        let memory = run.cells[0].memory.as_ref().expect("memory");
        memory.idle.pss_bytes as f64 / (1024.0 * 1024.0)
    };
    let shared = idle_pss_mib("before-fork");
    let copied = idle_pss_mib("per-worker");
    // 16 MiB once (master and two workers share it) against 16 MiB in each
    // of two workers: about 16 MiB apart. Half of that is a safe margin.
    assert!(shared >= 16.0, "the dataset is resident: {shared:.1} MiB");
    assert!(
        copied - shared >= 8.0,
        "before-fork {shared:.1} MiB, per-worker {copied:.1} MiB"
    );
}

/// `--load 0.5`: after the closed-loop cell, the same cell open-loop at
/// half the throughput the closed one measured, in the same run.
#[test]
fn an_open_loop_cell_offers_its_share_of_the_closed_cells_throughput() {
    let out = scratch("open-loop");
    let args = [
        "run",
        "--models",
        "prefork",
        "--workloads",
        "cpu",
        "--workers",
        "1",
        "--concurrency",
        "4",
        "--cpu-iters",
        "1000",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--load",
        "0.5",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "open",
    ];
    let run: RunRecord = lab_ok(&args, &out, "open", "run.json");
    assert_eq!(run.cells.len(), 2);
    let (closed, open) = (&run.cells[0], &run.cells[1]);
    assert_eq!(closed.offered_rps, None);
    let capacity = closed.load.as_ref().unwrap().rps;
    // JSON's floats come back within an ulp or so, not bit for bit.
    let offered = open.offered_rps.expect("an open-loop rate");
    assert!(
        (offered / (capacity * 0.5) - 1.0).abs() < 1e-9,
        "{offered} for {capacity}"
    );
    assert_eq!(open.status, CellStatus::Ok, "{:?}", open.error);
    assert!(open.load.as_ref().unwrap().ok > 0);
    let csv = std::fs::read_to_string(out.join("open/cells.csv")).unwrap();
    assert!(csv.lines().nth(2).unwrap().contains(",50%,"), "{csv}");
}

// `lab compare`, on runs committed under `results/`: a run against itself
// changes nothing; the pinned run against the default one has cells whose
// throughput fell by more than 10%, which `--fail-over` turns into exit 1.

fn result(name: &str) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../results")
        .join(name);
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_run_against_itself_changes_nothing_and_passes_the_gate() {
    let run = result("20261129T163126-default");
    let (status, stdout, stderr, _) = run_lab(
        &["compare", &run, &run, "--fail-over", "0%"],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("+0.0%"), "{stdout}");
    assert!(!stdout.contains("differs:"), "{stdout}");
}

#[test]
fn a_figure_worse_beyond_the_threshold_fails_the_gate() {
    let (default, pinned) = (
        result("20261129T163126-default"),
        result("20261129T142501-pinned"),
    );
    let args = [
        "compare",
        &default,
        &pinned,
        "--figure",
        "rps",
        "--fail-over",
        "10%",
    ];
    let (status, stdout, stderr, _) = run_lab(&args, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{stderr}");
    // prefork's cpu cell with 2 workers, pinned to one CPU, lost about
    // half its throughput (a median of 1312 to 697 req/s in the committed
    // files).
    assert!(
        stderr.contains("worse: prefork cpu 2 16 closed rps"),
        "{stderr}"
    );
    assert!(stdout.contains("differs: pinning"), "{stdout}");
    let bad = run_lab(
        &["compare", &default, "/nonexistent"],
        Duration::from_secs(60),
    );
    assert_eq!(bad.0.code(), Some(2), "{}", bad.2);
}
