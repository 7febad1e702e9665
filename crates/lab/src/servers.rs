//! Finding, building, starting and stopping the server binaries.
//!
//! Where the binaries come from: `lab` looks for `bare`, `prefork` and
//! `threadpool` next to its own executable, i.e. in the same target folder
//! and profile. When it runs under cargo (`cargo run`, `cargo test`: cargo
//! sets `CARGO`), it first runs `$CARGO build -p prefork ...` (the plan's
//! models) in the same profile,
//! so the servers are always built from the same tree as the harness and a
//! fresh clone needs nothing but `cargo run --release -p lab -- run`.
//! `--server-dir` points elsewhere and skips the build.
//!
//! Every server is held by a [`Server`] guard: dropping it kills the whole
//! process tree, so no server outlives a failed cell, a panic or a test.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;

use crate::matrix::Model;
use crate::procs::{self, ProcEntry};

/// How many of a server's last stderr lines are kept for error reports.
const STDERR_LINES: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "no `{model}` binary in {dir}: build it with `cargo build {profile}-p {model}`, \
         or point --server-dir at a folder that has it"
    )]
    Missing {
        model: Model,
        dir: PathBuf,
        profile: &'static str,
    },
    #[error("cannot start {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the server printed no ready line within {0:?}")]
    ReadyTimeout(Duration),
    #[error("the server exited ({status}) before it was ready")]
    ExitedEarly { status: String },
    #[error("the server's ready line is not the contract's: {line}")]
    BadReadyLine { line: String },
    #[error("the server died during the cell ({status})")]
    Died { status: String },
    #[error("the server did not exit within {0:?} of SIGTERM; killed")]
    StopTimeout(Duration),
    #[error("cannot signal or wait for the server")]
    Os(#[source] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed ({status}):\n{stderr}")]
pub struct BuildError {
    command: String,
    status: String,
    stderr: String,
}

/// `"--release "` when this `lab` is a release build, else `""`.
pub fn profile_flag() -> &'static str {
    if cfg!(debug_assertions) {
        ""
    } else {
        "--release "
    }
}

/// The folder `lab`'s own executable is in.
pub fn own_dir() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Builds the servers with the cargo that runs us, in our profile. Returns
/// `Ok(false)` when not run by cargo (nothing to do).
pub fn build_with_cargo(models: &[Model]) -> Result<bool, BuildError> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(false);
    };
    let mut command = Command::new(&cargo);
    command.arg("build").arg("--quiet");
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    // The workspace this `lab` was compiled from, whatever the current
    // folder is.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    if manifest.exists() {
        command.arg("--manifest-path").arg(&manifest);
    }
    for model in models {
        command.arg("-p").arg(model.name());
    }
    let shown = format!("{command:?}");
    tracing::info!(command = %shown, "building the servers");
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| BuildError {
            command: shown.clone(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if output.status.success() {
        Ok(true)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        Err(BuildError {
            command: shown,
            status: output.status.to_string(),
            stderr: lines[lines.len().saturating_sub(30)..].join("\n"),
        })
    }
}

/// Where `model`'s binary is in `dir`, if it is there.
pub fn locate(dir: &Path, model: Model) -> Result<PathBuf, ServerError> {
    let path = dir.join(model.name());
    if path.is_file() {
        Ok(path)
    } else {
        Err(ServerError::Missing {
            model,
            dir: dir.to_owned(),
            profile: profile_flag(),
        })
    }
}

/// The contract's ready line.
#[derive(Deserialize, Debug, Clone)]
pub struct Ready {
    pub event: String,
    pub model: String,
    pub addr: SocketAddr,
    pub pid: u32,
    pub workers: usize,
}

/// The last lines a process wrote to stderr, filled by a reader thread.
#[derive(Clone, Debug, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == STDERR_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }
}

/// A running server. Dropping it kills its whole tree.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub ready: Ready,
    pub stderr: StderrTail,
    reaped: bool,
}

/// A failure to start, with what the server said on stderr.
#[derive(Debug)]
pub struct StartFailure {
    pub error: ServerError,
    pub stderr: Vec<String>,
}

impl Server {
    /// Starts `exe` on a free port of 127.0.0.1 with `workers` and waits for
    /// its ready line.
    pub fn start(
        exe: &Path,
        workers: u16,
        grace_ms: u64,
        ready_timeout: Duration,
    ) -> Result<Server, StartFailure> {
        Server::start_with(exe, workers, grace_ms, ready_timeout, &[], &[])
    }

    /// [`Server::start`] with model flags added (`--allow-crash`, ...) and
    /// environment variables set.
    pub fn start_with(
        exe: &Path,
        workers: u16,
        grace_ms: u64,
        ready_timeout: Duration,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> Result<Server, StartFailure> {
        let fail = |error, stderr: &StderrTail| StartFailure {
            error,
            stderr: stderr.lines(),
        };
        let stderr = StderrTail::default();
        let mut child = Command::new(exe)
            .args(["--listen", "127.0.0.1:0", "--workers"])
            .arg(workers.to_string())
            .arg("--grace-ms")
            .arg(grace_ms.to_string())
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| {
                fail(
                    ServerError::Spawn {
                        exe: exe.to_owned(),
                        source,
                    },
                    &stderr,
                )
            })?;
        if let Some(pipe) = child.stderr.take() {
            let tail = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    tail.push(line);
                }
            });
        }
        // stdout carries the ready line and nothing else; keep reading it to
        // the end anyway, so a misbehaving server cannot block on a full pipe.
        let (lines_tx, lines_rx) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line);
                }
            });
        }
        // From here on the guard owns the child: any early return kills it.
        let mut server = Server {
            child,
            ready: Ready {
                event: String::new(),
                model: String::new(),
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                pid: 0,
                workers: 0,
            },
            stderr,
            reaped: false,
        };
        let line = match lines_rx.recv_timeout(ready_timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(fail(
                    ServerError::ReadyTimeout(ready_timeout),
                    &server.stderr,
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                // stdout closed: the process is gone or going. Give its
                // stderr reader a moment to catch the last words.
                let status = server.wait_for_exit(Duration::from_secs(2));
                std::thread::sleep(Duration::from_millis(50));
                return Err(fail(
                    ServerError::ExitedEarly {
                        status: status.map_or("still running".into(), |s| s.to_string()),
                    },
                    &server.stderr,
                ));
            }
        };
        match serde_json::from_str::<Ready>(&line) {
            Ok(ready) if ready.event == "ready" => server.ready = ready,
            _ => return Err(fail(ServerError::BadReadyLine { line }, &server.stderr)),
        }
        Ok(server)
    }

    /// The pid of the process we started (the tree's root).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `Err` if the server has exited.
    pub fn check_alive(&mut self) -> Result<(), ServerError> {
        match self.child.try_wait().map_err(ServerError::Os)? {
            None => Ok(()),
            Some(status) => {
                self.reaped = true;
                Err(ServerError::Died {
                    status: status.to_string(),
                })
            }
        }
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Some(status);
                }
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// SIGTERM, then wait up to `timeout` for the exit. Returns the exit
    /// code (`None`: killed by a signal) and the processes of `tree` still
    /// running a moment after the server exited.
    pub fn stop(
        mut self,
        tree: &[ProcEntry],
        timeout: Duration,
    ) -> Result<(Option<i32>, Vec<ProcEntry>), ServerError> {
        // A reaped pid may already belong to another process: only signal
        // a server whose exit we have not collected.
        if self.reaped {
            return Err(ServerError::Died {
                status: "exited before it was stopped".into(),
            });
        }
        kill(Pid::from_raw(self.pid()), Signal::SIGTERM).map_err(|e| ServerError::Os(e.into()))?;
        let status = self
            .wait_for_exit(timeout)
            .ok_or(ServerError::StopTimeout(timeout))?;
        // Workers notice their parent's death on their own; allow them a
        // moment before counting them as left behind.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut left = procs::still_running(tree);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            left = procs::still_running(tree);
        }
        Ok((status.code(), left))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Once reaped, our pid may belong to a stranger, and the server's
        // orphans (if any) are no longer its descendants: nothing to do.
        if self.reaped {
            return;
        }
        // Kill the tree leaves too: the contract says workers die with the
        // master, but a guard must not rely on the code it guards.
        let tree = procs::descendants(self.pid(), &procs::process_table());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for process in tree.iter().skip(1) {
            if !procs::still_running(&[*process]).is_empty() {
                let _ = kill(Pid::from_raw(process.pid), Signal::SIGKILL);
            }
        }
    }
}
