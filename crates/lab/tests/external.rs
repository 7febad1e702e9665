//! Servers that are not ours, from `--server NAME=COMMAND` templates,
//! through `lab run` and `lab crash`: a tiny Python server
//! (`fixtures/tiny_server.py`, standard library only) that prints no ready
//! line and has no `/stats`.

use std::path::Path;
use std::time::Duration;

use harness::record::CellStatus;
use lab::experiments::crash::report::CrashRun;
use lab::experiments::run::report::RunRecord;

mod common;
use common::{lab_ok, run_lab, scratch};

fn tiny_template() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_server.py");
    format!(
        "tiny=python3 {} --port {{port}} --workers {{workers}}",
        script.display()
    )
}

#[test]
fn a_template_server_runs_through_lab_run() {
    let out = scratch("external-run");
    let template = tiny_template();
    let args = [
        "run",
        "--server",
        &template,
        "--models",
        "tiny",
        "--workloads",
        "noop,cpu",
        // Closed cells only (the default profile adds open-loop ones).
        "--quick",
        "--workers",
        "1",
        "--concurrency",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--cpu-iters",
        "1000",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "t",
    ];
    let run: RunRecord = lab_ok(&args, &out, "t", "run.json");
    assert_eq!(run.params.models, ["tiny"]);
    assert!(run.params.servers.templates.contains_key("tiny"));
    assert_eq!(run.cells.len(), 2);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        let load = cell.load.as_ref().unwrap();
        assert!(load.ok > 0 && load.non_2xx == 0, "{:?}", load.status_codes);
        // Measured from outside like any server: its one process.
        let memory = cell.memory.as_ref().unwrap();
        assert_eq!(memory.processes, 1);
        assert!(memory.idle.pss_bytes > 0);
        assert_eq!(cell.exit_code, Some(0));
    }
}

#[test]
fn a_template_server_runs_through_lab_crash_with_stats_figures_not_measured() {
    let out = scratch("external-crash");
    let template = tiny_template();
    let args = [
        "crash",
        "--server",
        &template,
        "--models",
        "tiny",
        "--faults",
        "exit",
        "--workers",
        "1",
        "--concurrency",
        "2",
        "--load",
        "0.3",
        "--probe",
        "500ms",
        "--before",
        "1200ms",
        "--after",
        "1s",
        "--cpu-iters",
        "1000",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "t",
    ];
    let run: CrashRun = lab_ok(&args, &out, "t", "crash.json");
    let r = &run.results[0];
    assert_eq!(r.status, CellStatus::Ok, "{:?}", r.error);
    // `exit` ends the one process: nothing answers after it.
    assert!(!r.survived);
    assert!(!r.recovered);
    assert!(r.crash_request_failed, "{}", r.crash_request);
    assert!(r.load_errors > 0);
    // What needs /stats is not measured, not guessed.
    assert_eq!(r.in_flight_at_fault, None);
    assert_eq!(r.replaced_at_s, None);
    assert!(r.capacity_after.is_none());
    let md = std::fs::read_to_string(out.join("t/crash.md")).unwrap();
    assert!(md.contains("not measured"), "{md}");
}

#[test]
fn a_template_whose_program_is_missing_is_skipped_and_the_run_goes_on() {
    let out = scratch("external-missing");
    let args = [
        "run",
        "--server",
        "ghost=no-such-server-program --port {port}",
        "--models",
        "ghost,bare",
        "--workloads",
        "noop",
        "--workers",
        "1",
        "--duration",
        "300ms",
        "--warmup",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "t",
    ];
    let (status, _, stderr, left) = run_lab(&args, Duration::from_secs(600));
    assert!(status.success(), "{status}\n{stderr}");
    assert!(left.is_empty(), "left running: {left:?}");
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.contains("ghost")).collect();
    assert_eq!(skipped.len(), 1, "{stderr}");
    assert!(skipped[0].contains("skipping `ghost`"), "{stderr}");
    let text = std::fs::read_to_string(out.join("t/run.json")).unwrap();
    let run: RunRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(run.params.models, ["bare"]);
    assert_eq!(run.cells.len(), 1);
    assert_eq!(run.cells[0].status, CellStatus::Ok);
}

/// The prefork binary next to `lab`, built there first if this test runs
/// alone (`cargo test --workspace` builds it anyway).
fn prefork_binary() -> String {
    let dir = Path::new(env!("CARGO_BIN_EXE_lab")).parent().unwrap();
    let binary = dir.join("prefork");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "prefork"])
            .status()
            .expect("run cargo");
        assert!(built.success(), "cargo build -p prefork failed");
    }
    binary.to_str().unwrap().to_owned()
}

#[test]
fn a_server_at_a_url_is_loaded_but_never_stopped_and_measured_from_its_stats() {
    let server = testkit::Server::start(&prefork_binary(), &["--workers", "2"]);
    let out = scratch("external-url");
    let url = format!("http://{}/", server.addr);
    let args = [
        "run",
        "--url",
        &url,
        // Closed cells only (the default profile adds open-loop ones).
        "--quick",
        "--workloads",
        "noop,cpu",
        "--concurrency",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--cpu-iters",
        "1000",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "u",
    ];
    let run: RunRecord = lab_ok(&args, &out, "u", "run.json");
    assert_eq!(run.params.url.as_deref(), url.strip_suffix('/'));
    assert_eq!(run.cells.len(), 2);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        // Named and sized by its /stats.
        assert_eq!((cell.model.as_str(), cell.workers), ("prefork", 2));
        // CPU and memory as the server reported them: no USS, no switches.
        let per = cell.per_request.unwrap();
        assert!(per.cpu_us > 0.0, "{per:?}");
        assert_eq!(per.voluntary_switches, None);
        let memory = cell.memory.as_ref().unwrap();
        assert_eq!(memory.processes, 3, "master and 2 workers");
        assert!(memory.idle.pss_bytes > 0 && memory.peak.pss_bytes > 0);
        assert_eq!(memory.idle.uss_bytes, None);
        assert_eq!(cell.exit_code, None, "never stopped by the lab");
    }
    // Still the same server, still serving, with the load counted.
    assert_eq!(server.get("/health").status, 200);
    let served: u64 = server.stats().workers.iter().map(|w| w.requests).sum();
    let answered: u64 = run.cells.iter().map(|c| c.load.as_ref().unwrap().ok).sum();
    assert!(served >= answered, "{served} < {answered}");
}

#[test]
fn a_url_where_nothing_listens_exits_2_naming_the_flag() {
    // Bind, learn the port, close: nothing listens there now.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (status, _, stderr, _) = run_lab(
        &["run", "--url", &format!("http://{free}"), "--quick"],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--url"), "{stderr}");
}
