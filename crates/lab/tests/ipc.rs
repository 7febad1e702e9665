//! `lab ipc` end to end, tiny: every transport at two sizes, a few
//! messages each, its process peers started by exec and all gone after.

use std::time::Duration;

use harness::record::CellStatus;
use ipc::{Family, Transport};
use lab::experiments::ipc::report::IpcRun;

mod common;
use common::{Tagged, lab_ok, run_lab, scratch};
use testkit::Group;

#[test]
fn every_transport_moves_both_sizes_and_the_files_say_so() {
    let out = scratch("ipc");
    let args = [
        "ipc",
        "--sizes",
        "64,4K",
        "--messages",
        "5",
        "--warmup",
        "1",
        "--duration",
        "2s",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "i",
    ];
    let run: IpcRun = lab_ok(&args, &out, "i", "ipc.json");
    assert!(run.meta.complete);
    assert_eq!(run.params.sizes, [64, 4096]);
    let node = run.params.node_version.is_some();
    let expected: Vec<Transport> = Transport::ALL
        .into_iter()
        .filter(|t| node || t.family() != Family::Node)
        .collect();
    let ran: Vec<Transport> = run.cells.iter().map(|c| c.transport).collect();
    assert_eq!(ran, expected);
    assert_eq!(run.params.skipped.len(), usize::from(!node));
    for cell in &run.cells {
        assert_eq!(
            cell.status,
            CellStatus::Ok,
            "{}: {:?}",
            cell.transport,
            cell.error
        );
        let sizes: Vec<usize> = cell.points.iter().map(|p| p.bytes).collect();
        assert_eq!(sizes, [64, 4096], "{}", cell.transport);
        for p in &cell.points {
            // Bounded by count well within the time allowed.
            assert_eq!(p.messages, 5, "{}: {p:?}", cell.transport);
            assert!(p.min_us > 0.0 && p.min_us <= p.median_us && p.median_us <= p.p99_us);
            let gb = p.bytes as f64 / (p.median_us * 1000.0);
            assert!((p.gb_per_s - gb).abs() <= gb * 1e-9, "{p:?}");
        }
    }
    let md = std::fs::read_to_string(out.join("i/ipc.md")).unwrap();
    for transport in &ran {
        assert!(
            md.contains(&format!("| {transport} ")),
            "{transport} not in ipc.md"
        );
    }
    assert!(md.contains("as a multiple of `thread-arc`"), "{md}");
    let svg = std::fs::read_to_string(out.join("i/ipc.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("shm"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let out = scratch("ipc-bad");
    for bad in [
        &["ipc", "--sizes", "32M"][..],
        &["ipc", "--sizes", "4"],
        &["ipc", "--transports", "carrier-pigeon"],
        &["ipc", "--messages", "0"],
    ] {
        let mut args = bad.to_vec();
        args.extend(["--out", out.to_str().unwrap()]);
        let (status, _, stderr, left) = run_lab(&args, Duration::from_secs(60));
        assert_eq!(status.code(), Some(2), "{bad:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{bad:?}: {stderr}");
        assert!(left.is_empty());
    }
    // Nothing was measured, so no run folder was made.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn without_node_its_transports_are_skipped_with_one_line() {
    let out = scratch("ipc-no-node");
    let tag = Tagged::new();
    // No PATH: no `node` (lab finds its peers by its own path, not PATH).
    let run = |transports: &str, name: &str| {
        let args = [
            "ipc",
            "--transports",
            transports,
            "--sizes",
            "64",
            "--messages",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--name",
            name,
        ];
        let mut command = tag.command(&args);
        command.env("PATH", "/nonexistent");
        let mut lab = Group::spawn(&mut command);
        let status = lab.finish(Duration::from_secs(120));
        (status, lab.stderr())
    };
    let (status, stderr) = run("shm,node-sab,node-send", "n");
    assert!(status.success(), "{stderr}");
    let skips: Vec<&str> = stderr.lines().filter(|l| l.contains("skipping")).collect();
    assert_eq!(skips.len(), 1, "{stderr}");
    assert!(
        skips[0].contains("node-sab, node-send: `node` is not on PATH"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(out.join("n/ipc.json")).unwrap();
    let record: IpcRun = serde_json::from_str(&text).unwrap();
    assert_eq!(record.params.transports, [Transport::Shm]);
    assert_eq!(record.params.skipped.len(), 1);
    assert_eq!(record.cells.len(), 1);
    assert_eq!(record.params.node_version, None);
    // Only Node transports, and no node: nothing can run, bad input.
    let (status, stderr) = run("node-sab", "m");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(!out.join("m").exists());
    assert!(tag.alive().is_empty());
}
