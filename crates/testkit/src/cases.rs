//! Contract checks every server model must pass. Each takes the binary to
//! start (a test gets it from `env!("CARGO_BIN_EXE_...")`), the flags that
//! model needs on top of the contract's, which every server the case starts
//! gets, and the kind's [`Profile`]: the worker count the cases use and the
//! kind's documented deviations, which the cases assert instead of the
//! contract's answer. [`contract_tests!`] turns them into one `#[test]` each
//! for a model's suite.

/// Expands to one `#[test]` per contract case, run against `$bin`.
///
/// - `contract_tests!(BIN)`: every case, with the model's default flags.
/// - `contract_tests!(mod NAME, BIN, flags: ["--flag", "value"])`: every
///   case in a module `NAME`, each server started with those flags too; a
///   model with several policies (prefork's `--balance`) runs the whole
///   suite once per policy this way.
/// - `contract_tests!(mod NAME, BIN, flags: [...], profile: PROFILE)`: the
///   same for a kind that departs from the contract where its HTTP library
///   cannot follow it: each case asserts what [`Profile`] says the kind
///   does. `PROFILE` is resolved inside the module, which sees the items of
///   the one around it.
#[macro_export]
macro_rules! contract_tests {
    ($bin:expr) => {
        $crate::contract_tests!(@cases $bin, [], $crate::cases::Profile::CONTRACT);
    };
    (mod $module:ident, $bin:expr, flags: [$($flag:expr),* $(,)?]) => {
        $crate::contract_tests!(mod $module, $bin, flags: [$($flag),*],
            profile: $crate::cases::Profile::CONTRACT);
    };
    (mod $module:ident, $bin:expr, flags: [$($flag:expr),* $(,)?], profile: $profile:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::contract_tests!(@cases $bin, [$($flag),*], $profile);
        }
    };
    (@cases $bin:expr, $flags:tt, $profile:expr) => {
        $crate::contract_tests!(@each $bin, $flags, $profile, endpoints, bad_input,
            slow_headers_are_cut_off, graceful_shutdown, bad_flags_exit_2_naming_the_flag,
            a_taken_port_exits_1_with_the_cause, descriptor_exhaustion);
    };
    (@each $bin:expr, $flags:tt, $profile:expr, $($case:ident),+) => {
        $(
            #[test]
            fn $case() {
                $crate::cases::$case($bin, &$flags, $profile);
            }
        )+
    };
}

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use service::contract::Offload;

use crate::{Response, Server};

pub use crate::descriptors::descriptor_exhaustion;
pub use crate::profile::{ExhaustionLog, Profile};

/// The contract's published `/cpu` vectors.
pub const CPU_ITERS_1: &str = "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b";
pub const CPU_ITERS_1000: &str = "632c2812e46d4604102ba7618e9d6d7d2f8128f6266b4a03264d2a0460b7dcb3";
/// `/cpu?iters=1000&parts=P`'s lines after the first: parts 1, 2 and 63
/// (salts `salt1`, `salt2`, `salt63`).
pub const CPU_ITERS_1000_PART_1: &str =
    "43a5fbdf861506858816102f630c3ba726394b622118993c5c53cf9ee1570049";
pub const CPU_ITERS_1000_PART_2: &str =
    "e388b7cf7ab7dceb5e7a02dd8b8b5b5848f289f182ed45f03a36ec7244322b8a";
pub const CPU_ITERS_1000_PART_63: &str =
    "67d055e4ef4ee374b107b766a4e4cb1b77ce449bee4ea011da9e9f76ad6abfd0";

/// Every endpoint answers as the contract says, with `x-worker` on every
/// response.
pub fn endpoints(bin: &str, extra: &[&str], profile: Profile) {
    let workers = profile.workers_flag();
    let server = Server::start(
        bin,
        &[&["--workers", &workers, "--dataset-mb", "1"], extra].concat(),
    );
    assert_eq!(server.ready().workers, profile.workers);

    // Requests sent, and how many `/cpu` jobs they asked for (a job a model
    // may hand to its workers; a request of P parts is P jobs).
    let sent = std::cell::Cell::new(0u64);
    let cpu_sent = std::cell::Cell::new(0u64);
    let ok = |path: &str| -> Response {
        sent.set(sent.get() + 1);
        if path.starts_with("/cpu") {
            let parts = path
                .split_once("parts=")
                .map_or(1, |(_, p)| p.parse::<u64>().expect("a test's parts"));
            cpu_sent.set(cpu_sent.get() + parts);
        }
        let response = server.get(path);
        assert_eq!(response.status, 200, "GET {path}: {response:?}");
        assert!(!response.worker().is_empty(), "GET {path}: {response:?}");
        response
    };
    assert_eq!(ok("/").body, "ok\n");
    assert_eq!(ok("/health").body, "ok\n");
    assert_eq!(ok("/cpu?iters=1").body, format!("{CPU_ITERS_1}\n"));
    assert_eq!(ok("/cpu?iters=1000").body, format!("{CPU_ITERS_1000}\n"));
    let default_cpu = ok("/cpu").body;
    assert_eq!(default_cpu.trim_end().len(), 64, "{default_cpu:?}");
    // Parts: one line each, in order, part 0 with the original salt.
    assert_eq!(
        ok("/cpu?iters=1000&parts=1").body,
        format!("{CPU_ITERS_1000}\n")
    );
    assert_eq!(
        ok("/cpu?iters=1000&parts=3").body,
        format!("{CPU_ITERS_1000}\n{CPU_ITERS_1000_PART_1}\n{CPU_ITERS_1000_PART_2}\n")
    );
    let most = ok("/cpu?iters=1000&parts=64").body;
    let lines: Vec<&str> = most.lines().collect();
    assert_eq!(lines.len(), 64, "{most:?}");
    assert_eq!(
        (lines[0], lines[1], lines[63]),
        (
            CPU_ITERS_1000,
            CPU_ITERS_1000_PART_1,
            CPU_ITERS_1000_PART_63
        )
    );
    assert_eq!(ok("/io?ms=5").body, "io\n");
    assert_eq!(ok("/io").body, "io\n");

    // The same bytes streamed and buffered: 64 KiB chunks, a letter each.
    for path in ["/stream?mb=2", "/buffer?mb=2", "/stream"] {
        let response = ok(path);
        let body = response.body.as_bytes();
        let mib = if path.ends_with("mb=2") { 2 } else { 1 };
        assert_eq!(body.len(), mib << 20, "GET {path}");
        assert_eq!(
            response.header("content-type"),
            Some("application/octet-stream")
        );
        let offsets = [0, (64 << 10) - 1, 64 << 10, 26 << 16, body.len() - 1];
        for offset in offsets.into_iter().filter(|&offset| offset < body.len()) {
            let expected = service::download::byte_at(offset);
            assert_eq!(body[offset], expected, "GET {path} at {offset}");
        }
    }

    let sum = ok("/data?key=3").body;
    assert_eq!(sum.trim_end().len(), 16, "{sum:?}");
    assert!(
        sum.trim_end().chars().all(|c| c.is_ascii_hexdigit()),
        "{sum:?}"
    );
    assert_eq!(ok("/data?key=3").body, sum, "same key, same window");
    assert_eq!(
        ok("/data?key=19").body,
        sum,
        "1 MiB holds 16 windows: keys wrap"
    );
    assert_ne!(ok("/data?key=4").body, sum);

    // `stats()` parses the contract's type: every required field is there.
    let stats = server.stats();
    assert_eq!(stats.pid, server.pid());
    assert_eq!(stats.workers.len(), profile.workers, "{stats:?}");
    for (index, worker) in stats.workers.iter().enumerate() {
        assert_eq!(worker.id, index, "{stats:?}");
    }
    // Each request, this `/stats` one included, is counted once: on the
    // worker that served it or, in a model with a separate event loop
    // (`main`), on the loop, whose workers count the jobs it handed them.
    let (sent, cpu_sent) = (sent.get() + 1, cpu_sent.get());
    let served: u64 = stats.workers.iter().map(|w| w.requests).sum();
    match &stats.main {
        None => assert_eq!(served, sent, "{stats:?}"),
        Some(main) => {
            assert_eq!(main.requests, sent, "{stats:?}");
            let jobs = match stats.offload {
                Some(Offload::None) => 0,
                _ => cpu_sent,
            };
            assert_eq!(served, jobs, "the /cpu jobs: {stats:?}");
        }
    }

    // `processes`: every process of the server, each read from /proc, so
    // the very ones the group holds, each with memory.
    let processes = stats.processes.as_ref().expect("/stats has processes");
    let mut reported: Vec<u32> = processes.iter().map(|p| p.pid).collect();
    reported.sort_unstable();
    let mut members = server.group_members();
    members.sort_unstable();
    assert_eq!(reported, members, "{processes:?}");
    for process in processes {
        assert!(
            process.cpu_user_s >= 0.0 && process.cpu_system_s >= 0.0,
            "{process:?}"
        );
        assert!(process.pss_bytes.is_some_and(|pss| pss > 0), "{process:?}");
        assert!(process.rss_bytes >= process.pss_bytes, "{process:?}");
    }

    drop(server);
    let server = Server::start(bin, &[&["--workers", "1"], extra].concat());
    let response = server.get("/data?key=1");
    assert_eq!(response.status, 404, "no dataset: {response:?}");
    assert!(response.body.contains("--dataset-mb"), "{response:?}");
}

/// Every kind of bad input gets its status, and the server keeps serving.
pub fn bad_input(bin: &str, extra: &[&str], profile: Profile) {
    let workers = profile.workers_flag();
    let server = Server::start(bin, &[&["--workers", &workers], extra].concat());
    // A connection opened before the abuse and used after it: bad requests
    // on other connections must not disturb it.
    let mut bystander = server.connect().expect("connect");

    let cases: &[(&str, u16, &str)] = &[
        ("GET /cpu?iters=x HTTP/1.1\r\n", 400, "iters"),
        ("GET /cpu?iters=0 HTTP/1.1\r\n", 400, "1..=10000000"),
        ("GET /cpu?iters=10000001 HTTP/1.1\r\n", 400, "iters"),
        ("GET /cpu?iters=-5 HTTP/1.1\r\n", 400, "iters"),
        ("GET /cpu?parts=0 HTTP/1.1\r\n", 400, "1..=64"),
        ("GET /cpu?parts=65 HTTP/1.1\r\n", 400, "parts"),
        ("GET /cpu?iters=1&parts=two HTTP/1.1\r\n", 400, "parts"),
        (
            "GET /cpu?iters=1000000&parts=11 HTTP/1.1\r\n",
            400,
            "`iters` × `parts` must be at most 10000000",
        ),
        ("GET /io?ms=60001 HTTP/1.1\r\n", 400, "0..=60000"),
        ("GET /io?ms=soon HTTP/1.1\r\n", 400, "ms"),
        ("GET /stream?mb=0 HTTP/1.1\r\n", 400, "1..=64"),
        ("GET /buffer?mb=65 HTTP/1.1\r\n", 400, "1..=64"),
        ("GET /stream?mb=x HTTP/1.1\r\n", 400, "mb"),
        ("POST /stream HTTP/1.1\r\ncontent-length: 0\r\n", 405, "GET"),
        ("GET /data?key=1 HTTP/1.1\r\n", 404, "dataset"),
        ("GET /nowhere HTTP/1.1\r\n", 404, ""),
        ("POST / HTTP/1.1\r\ncontent-length: 0\r\n", 405, "GET"),
        ("POST /cpu HTTP/1.1\r\ncontent-length: 0\r\n", 405, "GET"),
        ("GET /crash?how=panic HTTP/1.1\r\n", 405, "POST"),
        (
            "POST /crash?how=panic HTTP/1.1\r\ncontent-length: 0\r\n",
            403,
            "--allow-crash",
        ),
    ];
    for (head, status, mention) in cases {
        let response = server.send(&format!("{head}host: t\r\nconnection: close\r\n\r\n"));
        assert_eq!(response.status, *status, "{head:?}: {response:?}");
        assert!(
            response.body.contains(mention),
            "{head:?} should mention {mention:?}: {response:?}"
        );
        assert!(
            response.body.lines().count() <= 1,
            "one-line message: {response:?}"
        );
        assert!(
            response.header("x-worker").is_some(),
            "{head:?}: {response:?}"
        );
    }

    // A body over 64 KiB, declared up front and sent chunked.
    let big = "x".repeat(70 * 1024);
    let declared = format!(
        "POST /crash?how=panic HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{big}",
        big.len()
    );
    assert_eq!(send_lenient(&server, &declared).status, 413);
    let chunked = format!(
        "POST /crash?how=panic HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    assert_eq!(send_lenient(&server, &chunked).status, 413);

    // Malformed HTTP and oversized headers: the HTTP library's answers.
    assert_eq!(send_lenient(&server, "NOT A REQUEST\r\n\r\n").status, 400);
    // `connection: close` comes first, so that a server which serves the
    // request after all (a deviation) closes too.
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let response = send_lenient(
        &server,
        &format!("GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{many_headers}\r\n"),
    );
    assert_eq!(response.status, profile.too_many_headers, "{response:?}");
    let long_target = format!(
        "GET /?{} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let response = send_lenient(&server, &long_target);
    assert_eq!(response.status, profile.long_uri, "{response:?}");
    let long_uri = format!(
        "GET /?{} HTTP/1.1\r\nhost: t\r\n\r\n",
        "a".repeat(600 * 1024)
    );
    assert!(
        matches!(send_lenient(&server, &long_uri).status, 414 | 431),
        "an oversized request line is refused"
    );

    // The bystander connection and fresh ones still work.
    bystander
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    bystander.read_to_end(&mut reply).unwrap();
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "{reply:?}"
    );
    assert_eq!(server.get("/").status, 200);
}

/// Sends a request whose body the server may refuse before reading it: a
/// write error after the server answered and closed is expected.
fn send_lenient(server: &Server, raw: &str) -> Response {
    let mut stream = server.connect().expect("connect");
    let _ = stream.write_all(raw.as_bytes());
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    Response::parse(&bytes).unwrap_or_else(|e| panic!("{e}; raw {:?}", &raw[..raw.len().min(80)]))
}

/// A client that sends its headers too slowly is cut off, while others are
/// served meanwhile.
pub fn slow_headers_are_cut_off(bin: &str, extra: &[&str], profile: Profile) {
    let server = Server::start(
        bin,
        &[&["--workers", "1", "--header-timeout-ms", "300"], extra].concat(),
    );
    let mut slow = server.connect().expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n").unwrap();
    let started = Instant::now();
    // Meanwhile the one worker serves someone else.
    assert_eq!(server.get("/").status, 200);
    // The slow client never finishes its headers: the server must hang up.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let outcome = slow.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        outcome.is_ok()
            || outcome
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server should close the connection, got {outcome:?} after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "cut off after {waited:?}");
    assert!(
        waited >= Duration::from_millis(250),
        "cut off too early: {waited:?}"
    );
    match profile.slow_headers_answer {
        None => assert!(
            buf.is_empty(),
            "closed without an answer, got {:?}",
            String::from_utf8_lossy(&buf)
        ),
        Some(status) => {
            let answer = Response::parse(&buf).expect("an answer before the close");
            assert_eq!(answer.status, status, "{answer:?}");
        }
    }
    assert_eq!(server.get("/").status, 200);
}

/// SIGTERM lets an in-flight request finish, then the server exits 0 with
/// nothing left behind and nothing but the ready line on stdout.
pub fn graceful_shutdown(bin: &str, extra: &[&str], profile: Profile) {
    let workers = profile.workers_flag();
    let mut server = Server::start(bin, &[&["--workers", &workers], extra].concat());
    let addr = server.addr;
    let in_flight = std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /io?ms=1500 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).map(|_| bytes)
    });
    // Idle keep-alive connections, one that has served a request and one
    // that never sent anything: shutdown closes them rather than waiting
    // out the grace period (10 s by default) for requests that may never come.
    let mut served = server.connect().expect("connect");
    served
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 512];
    while !reply.ends_with(b"ok\n") {
        let n = served.read(&mut chunk).expect("a keep-alive answer");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&chunk[..n]);
    }
    let _silent = server.connect().expect("connect");
    // Let the request reach a worker before the signal: in flight is then
    // the slow request (`in_flight` leaves out the `/stats` request asking).
    assert!(crate::wait_until(Duration::from_secs(5), || {
        server.stats().in_flight() == 1
    }));
    let signalled = Instant::now();
    let status = server.terminate();
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "idle connections held the shutdown for {:?}",
        signalled.elapsed()
    );
    let bytes = in_flight
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("io\n"), "{text}");
    assert_eq!(
        status.code(),
        Some(0),
        "{}; stderr:\n{}",
        crate::describe(status),
        server.stderr()
    );
    assert!(
        crate::wait_until(Duration::from_secs(2), || server.group_members().is_empty()),
        "left behind: {:?}",
        server.group_members()
    );
    assert_eq!(server.stdout_after_ready(), "");
}

/// Bad flags exit 2 with a message naming the flag, and print nothing on
/// stdout.
pub fn bad_flags_exit_2_naming_the_flag(bin: &str, extra: &[&str], _profile: Profile) {
    for flags in [
        &["--workers", "0"][..],
        &["--workers", "x"],
        &["--listen", "nowhere"],
        &["--bogus"],
    ] {
        let output = std::process::Command::new(bin)
            .args(flags)
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(flags[0]), "{flags:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{flags:?}");
    }
}

/// A failure after the flags parsed exits 1 with its cause chain on stderr.
pub fn a_taken_port_exits_1_with_the_cause(bin: &str, extra: &[&str], _profile: Profile) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = std::process::Command::new(bin)
        .args(["--listen", &addr])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "the cause is included: {stderr}");
    assert!(output.stdout.is_empty());
}
