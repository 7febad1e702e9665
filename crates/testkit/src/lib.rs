//! Test helpers for every server model, and the contract cases they share.
//!
//! - [`Server`] starts a real server binary on `127.0.0.1:0` in a process
//!   group of its own ([`Group`]), waits for the ready line, and on drop
//!   SIGKILLs the whole group and reaps it: no test leaves a worker behind,
//!   even when an assertion fails halfway. [`Group`] alone serves tests
//!   that start other programs, such as the harness.
//! - [`Response`] and the request helpers speak HTTP/1.1 over a plain
//!   `TcpStream`, so tests can also send what no HTTP client would
//!   (malformed request lines, headers dribbled in slowly).
//! - [`cases`] holds the contract checks every model must pass; each model's
//!   test suite calls them with its own binary, and the kind's [`profile`]
//!   says where it departs from the contract. [`descriptors`] is one of
//!   them: a server taken to its descriptor limit.
//! - [`supervision`] and [`pool`] hold what two kinds of one architecture
//!   share beyond the contract: the checks and helpers for a supervisor that
//!   replaces worker processes (prefork, node-cluster), and for an event loop
//!   that feeds a pool of threads (threadpool, node-threads).

pub mod cases;
pub mod descriptors;
mod group;
pub mod pool;
pub mod profile;
pub mod supervision;

pub use group::Group;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use service::contract::{Ready, Stats};

/// How long a server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long any one test request may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server under test.
#[derive(Debug)]
pub struct Server {
    /// The server's process group: its master and every worker.
    group: Group,
    /// The address from the ready line.
    pub addr: SocketAddr,
    /// The ready line, once [`Server::start`] has read it.
    ready: Option<Ready>,
}

impl Server {
    /// Starts `bin --listen 127.0.0.1:0 ARGS...` and waits for its ready line.
    pub fn start(bin: &str, args: &[&str]) -> Server {
        Self::wait_ready(Self::spawn(bin, args), bin)
    }

    /// Waits for a spawned server's ready line and reads it.
    fn wait_ready(mut server: Server, bin: &str) -> Server {
        // A server that exits before its ready line (bad flags, a missing
        // interpreter) fails the test at once, with its stderr.
        let deadline = Instant::now() + READY_TIMEOUT;
        while !server.group.stdout().contains('\n') {
            if server.group.wait_timeout(Duration::ZERO).is_some() {
                let status = server.group.finish(Duration::ZERO);
                if !server.group.stdout().contains('\n') {
                    panic!(
                        "{bin} exited ({}) before its ready line; stderr:\n{}",
                        describe(status),
                        server.stderr()
                    );
                }
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no ready line within {READY_TIMEOUT:?}; stderr:\n{}",
                    server.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stdout = server.group.stdout();
        let line = stdout.lines().next().unwrap_or_default();
        // The contract's own type: a line that is not the documented JSON
        // (another `event`, a missing field) does not parse.
        let ready: Ready = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("ready line {line:?} is not the contract's: {e}"));
        assert_eq!(ready.pid, server.pid(), "{line}");
        server.addr = ready.addr;
        server.ready = Some(ready);
        server
    }

    /// Starts the server without waiting for it to become ready (for servers
    /// that are expected never to be ready).
    pub fn spawn(bin: &str, args: &[&str]) -> Server {
        Self::spawn_command(Self::command(bin, args))
    }

    /// Like [`Server::start`], with at most `nofile` descriptors open per
    /// process (`RLIMIT_NOFILE`, soft and hard, inherited by every process
    /// the server forks), for tests that take a server to that limit.
    pub fn start_with_nofile(bin: &str, args: &[&str], nofile: u64) -> Server {
        use std::os::unix::process::CommandExt;
        let mut command = Self::command(bin, args);
        // SAFETY: the hook runs in the forked child before exec and calls
        // only setrlimit, which is async-signal-safe; it touches no memory
        // the parent's other threads could hold locked.
        unsafe {
            command.pre_exec(move || {
                let limit = nix::libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self::wait_ready(Self::spawn_command(command), bin)
    }

    fn command(bin: &str, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info");
        command
    }

    fn spawn_command(mut command: Command) -> Server {
        Server {
            group: Group::spawn(&mut command),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready: None,
        }
    }

    /// The ready line. Panics for a server from [`Server::spawn`], which
    /// never read one.
    pub fn ready(&self) -> &Ready {
        self.ready
            .as_ref()
            .expect("a server from Server::spawn has no ready line")
    }

    /// The server's (master's) pid.
    pub fn pid(&self) -> u32 {
        self.group.pid()
    }

    /// Everything the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.group.stderr()
    }

    /// What the server printed on stdout after the ready line, which the
    /// contract says is nothing.
    pub fn stdout_after_ready(&self) -> String {
        let stdout = self.group.stdout();
        stdout
            .split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default()
    }

    /// Sends `signal` to the server process (not its workers).
    pub fn signal(&self, signal: Signal) {
        self.group.signal(signal);
    }

    /// Waits up to `timeout` for the server to exit; `None` if it did not.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.group.wait_timeout(timeout)
    }

    /// SIGTERM, then waits up to 15 s for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_timeout(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("no exit within 15 s of SIGTERM; stderr:\n{}", self.stderr()))
    }

    /// Pids still alive in the server's process group (the master's and its
    /// workers'), zombies excluded.
    pub fn group_members(&self) -> Vec<u32> {
        self.group.members()
    }

    /// The CPU time (user and system) the server's live processes have used
    /// so far, all of them together.
    pub fn group_cpu(&self) -> Duration {
        let ticks_per_second = procfs::ticks_per_second().max(1);
        let ticks: u64 = self
            .group_members()
            .into_iter()
            .filter_map(|pid| procfs::process::Process::new(pid as i32).ok()?.stat().ok())
            .map(|stat| stat.utime + stat.stime)
            .sum();
        Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64)
    }

    /// Sends a GET with `Connection: close` and reads the whole response.
    pub fn get(&self, path_and_query: &str) -> Response {
        self.send(&request("GET", path_and_query))
    }

    /// Sends a POST with an empty body.
    pub fn post(&self, path_and_query: &str) -> Response {
        self.send(&request("POST", path_and_query))
    }

    /// Sends raw bytes and parses whatever comes back before the server
    /// closes the connection.
    pub fn send(&self, raw: &str) -> Response {
        self.try_send(raw.as_bytes())
            .unwrap_or_else(|e| panic!("request {raw:?} failed: {e}; stderr:\n{}", self.stderr()))
    }

    /// Like [`Server::send`], but a failure (reset, no response) is returned.
    pub fn try_send(&self, raw: &[u8]) -> std::io::Result<Response> {
        exchange(self.addr, raw)
    }

    /// `POST /crash?how=MODE`. `Err` is the usual outcome: the crash takes
    /// the connection down unanswered.
    pub fn crash(&self, mode: &str) -> std::io::Result<Response> {
        exchange(
            self.addr,
            request("POST", &format!("/crash?how={mode}")).as_bytes(),
        )
    }

    /// [`Server::crash`] from a thread of its own, for `hang`, whose request
    /// returns only when the server closes the connection.
    pub fn crash_in_background(
        &self,
        mode: &'static str,
    ) -> std::thread::JoinHandle<std::io::Result<Response>> {
        let raw = request("POST", &format!("/crash?how={mode}"));
        let addr = self.addr;
        std::thread::spawn(move || exchange(addr, raw.as_bytes()))
    }

    /// A connection with the test's I/O timeouts set.
    pub fn connect(&self) -> std::io::Result<TcpStream> {
        connect(self.addr)
    }

    /// `GET /stats`, parsed as the contract's [`Stats`]: a document that
    /// lacks a field every server must give fails the test here.
    pub fn stats(&self) -> Stats {
        let response = self.get("/stats");
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("/stats is not the contract's: {e}: {}", response.body))
    }

    /// Polls `/stats` until `condition` holds and returns that document;
    /// panics, naming `what` and showing the last `/stats` and the stderr,
    /// if it does not hold within `within`.
    #[track_caller]
    pub fn stats_when(
        &self,
        within: Duration,
        what: &str,
        mut condition: impl FnMut(&Stats) -> bool,
    ) -> Stats {
        let mut last = None;
        let done = wait_until(within, || {
            let stats = self.stats();
            let holds = condition(&stats);
            last = Some(stats);
            holds
        });
        let last = last.expect("wait_until looks at least once");
        assert!(
            done,
            "{what}: not within {within:?}: {last:?}; stderr:\n{}",
            self.stderr()
        );
        last
    }

    /// `GET /stats`, or `None` if the request failed or took over 2 s: for
    /// polling while a worker is crashing or hung, since a worker can accept
    /// a connection just before it dies or stops running its loop, and takes
    /// it along. Node's round robin may even hand the poll's connection to a
    /// hung worker and then never answer nor close it (see node-cluster's
    /// tests): the poll gives up on it and the caller tries again.
    pub fn try_stats(&self) -> Option<Stats> {
        let mut stream = self.connect().ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /stats HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .ok()?;
        let response = read_response(&mut stream).ok()?;
        serde_json::from_str(&response.body).ok()
    }

    /// Asserts that the server's stderr so far contains `needle`; the
    /// failure names `context` and shows the whole stderr.
    #[track_caller]
    pub fn assert_logged(&self, needle: &str, context: &str) {
        let stderr = self.stderr();
        assert!(
            stderr.contains(needle),
            "{context}: no {needle:?} in stderr:\n{stderr}"
        );
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    fn parse(bytes: &[u8]) -> std::io::Result<Response> {
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| invalid(&format!("no complete response in {text:?}")))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        Ok(Response {
            status,
            headers,
            body: body.to_string(),
        })
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The `x-worker` header, which every response must carry.
    pub fn worker(&self) -> &str {
        self.header("x-worker")
            .unwrap_or_else(|| panic!("no x-worker header in {self:?}"))
    }
}

/// A GET on a fresh connection, for client threads that hold no [`Server`].
pub fn get(addr: SocketAddr, path_and_query: &str) -> Response {
    exchange(addr, request("GET", path_and_query).as_bytes())
        .unwrap_or_else(|e| panic!("GET {path_and_query} failed: {e}"))
}

/// A request with no body that asks the server to close after answering.
fn request(method: &str, path_and_query: &str) -> String {
    format!(
        "{method} {path_and_query} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
}

/// A connection with the test's I/O timeouts set.
fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends raw bytes on a fresh connection and parses whatever comes back
/// before the server closes it.
fn exchange(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut stream = connect(addr)?;
    stream.write_all(raw)?;
    read_response(&mut stream)
}

/// Reads until the server closes the connection and parses what came back,
/// for a test that sent its request itself.
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes)?;
    Response::parse(&bytes)
}

/// The flags for a server under crash tests: `workers` workers, `/crash`
/// allowed, and a worker given up on as hung once it has been stuck for
/// `worker_timeout_ms` (`"0"`: never).
pub fn crash_flags<'a>(workers: &'a str, worker_timeout_ms: &'a str) -> [&'a str; 5] {
    [
        "--workers",
        workers,
        "--allow-crash",
        "--worker-timeout-ms",
        worker_timeout_ms,
    ]
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|process| process.ok()?.stat().ok())
        .filter(|stat| stat.state != 'Z' && stat.pgrp == pgid as i32)
        .map(|stat| stat.pid as u32)
        .collect()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|process| process.stat())
        .is_ok_and(|stat| stat.state != 'Z')
}

/// How an exit status reads in an assertion message.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => format!("{status:?}"),
    }
}
