//! What all three Node kinds share: node itself, the binaries' exec, the
//! ready line, and a dataset identical to the Rust servers'.

mod common;

use std::process::Command;

use common::{CLUSTER, SINGLE, THREADS};
use service::dataset::Dataset;
use testkit::Server;

/// The Node peers need `node` 18 or newer on PATH; without it every test
/// here fails, and this one says why.
#[test]
fn node_18_or_newer_is_on_path() {
    let output = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("`node` is not on PATH ({e}): the Node peers' tests need Node.js 18 or newer")
        });
    let version = String::from_utf8_lossy(&output.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the version of node: {version:?}"));
    assert!(
        major >= 18,
        "node {version} is too old: the Node peers need 18 or newer"
    );
}

#[test]
fn without_node_on_path_a_binary_says_so_in_one_line_and_exits_1() {
    let empty = std::env::temp_dir().join(format!("no-node-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    for bin in [CLUSTER, THREADS, SINGLE] {
        let output = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .env("PATH", &empty)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{bin}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{bin}: {stderr}");
        assert!(stderr.contains("`node` is not on PATH"), "{bin}: {stderr}");
        assert!(output.stdout.is_empty(), "{bin}");
    }
    let _ = std::fs::remove_dir(&empty);
}

/// The binary execs node, so the process the test started is the server:
/// the ready line's pid, the model's name.
#[test]
fn each_kind_is_the_process_it_was_started_as() {
    for (bin, kind, workers) in [
        (CLUSTER, "node-cluster", "2"),
        (THREADS, "node-threads", "2"),
        (SINGLE, "node-single", "1"),
    ] {
        let server = Server::start(bin, &["--workers", workers]);
        // Server::start checked that the ready line's pid is the child's.
        assert_eq!(server.ready().model, kind);
        assert_eq!(server.stats().model, kind);
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.starts_with("node ") && cmdline.contains(&format!("main.js {kind} ")),
            "{cmdline}"
        );
    }
}

/// `/data` answers are the Rust servers', byte for byte: the same bytes,
/// the same checksum, every key wrapping the same way.
#[test]
fn the_dataset_is_the_rust_servers_byte_for_byte() {
    let rust = Dataset::generate(2);
    let keys = [0, 1, 7, 31, 32, 12345, u64::MAX];
    for (bin, workers) in [(CLUSTER, "2"), (THREADS, "2"), (SINGLE, "1")] {
        let server = Server::start(bin, &["--workers", workers, "--dataset-mb", "2"]);
        for key in keys {
            let response = server.get(&format!("/data?key={key}"));
            assert_eq!(response.status, 200, "{bin} key {key}: {response:?}");
            assert_eq!(
                response.body,
                format!("{}\n", rust.checksum(key).unwrap()),
                "{bin} key {key}"
            );
        }
    }
}

/// `--help` and `--version` print on stdout and exit 0, like the Rust
/// servers' clap; the version names the node running it.
#[test]
fn help_and_version() {
    for (bin, kind) in [
        (CLUSTER, "node-cluster"),
        (THREADS, "node-threads"),
        (SINGLE, "node-single"),
    ] {
        let help = Command::new(bin).arg("--help").output().unwrap();
        assert_eq!(help.status.code(), Some(0), "{bin}");
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            text.contains("--listen <ADDR>") && text.contains("--header-timeout-ms"),
            "{text}"
        );
        let version = Command::new(bin).arg("--version").output().unwrap();
        assert_eq!(version.status.code(), Some(0), "{bin}");
        let text = String::from_utf8_lossy(&version.stdout);
        assert!(
            text.starts_with(&format!("{kind} {} (node v", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
    }
}
