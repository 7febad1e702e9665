//! A running server: started in a process group of its own, ready when it
//! says so (or when it answers, for a server that does not speak the
//! contract), stopped with SIGTERM, and killed as a whole group if dropped.
//!
//! Why a process group: a server's workers are its children, but a worker
//! whose master died is re-parented and no longer under it; the group keeps
//! them together, so the guard kills and measures all of them.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use service::contract::Ready;

use crate::probe;
use crate::procs::{self, ProcEntry};

/// How many of a server's last stderr lines are kept for error reports.
const STDERR_LINES: usize = 40;
/// How often a server without a ready line is asked whether it answers.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "no `{binary}` binary in {dir}: build it with `cargo build {profile}-p {binary}`, \
         or point --server-dir at a folder that has it"
    )]
    Missing {
        binary: String,
        dir: PathBuf,
        profile: &'static str,
    },
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server was not ready within {0:?} (no ready line, and nothing answered)")]
    ReadyTimeout(Duration),
    #[error("the server exited ({status}) before it was ready")]
    ExitedEarly { status: String },
    #[error("the server's ready line is not the contract's: {line}")]
    BadReadyLine { line: String },
    #[error("cannot find a free port")]
    Port(#[source] std::io::Error),
    #[error("the server died during the cell ({status})")]
    Died { status: String },
    #[error("the server did not exit within {0:?} of SIGTERM; killed")]
    StopTimeout(Duration),
    #[error("cannot signal or wait for the server")]
    Os(#[source] std::io::Error),
    #[error("the server at {0} runs elsewhere: the lab measures it but never starts it")]
    Remote(std::net::SocketAddr),
}

/// What to run and how to know it is ready.
#[derive(Debug)]
pub struct Spawn {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where it was told to listen, if the harness chose: then answering
    /// HTTP there counts as ready too. `None`: only the ready line does.
    pub told_addr: Option<SocketAddr>,
    pub ready_timeout: Duration,
    /// Run on these CPUs only, every process and thread of it; empty:
    /// anywhere.
    pub cpus: Vec<usize>,
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

/// A server's process group, by id and by when its leader started.
#[derive(Clone, Copy, Debug)]
pub struct Group {
    pgid: i32,
    leader_start: Option<u64>,
}

impl Group {
    /// Every process in the group now. A group id is not reused while any
    /// member lives, so a group that has members is ours, unless its leader
    /// is a stranger who got the id after our group emptied.
    pub fn members(&self) -> Vec<ProcEntry> {
        let members = procs::group(self.pgid, &procs::process_table());
        let stranger_leads = members
            .iter()
            .any(|e| e.pid == self.pgid && Some(e.start) != self.leader_start);
        if stranger_leads { Vec::new() } else { members }
    }
}

/// A failure to start, with what the server said on stderr.
#[derive(Debug)]
pub struct StartFailure {
    pub error: ServerError,
    pub stderr: Vec<String>,
}

/// A running server. Dropping it kills its whole process group.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its ready line, if it printed one (every contract server does).
    pub ready: Option<Ready>,
    pub stderr: StderrTail,
    reaped: bool,
    /// How it exited, once reaped.
    exit: Option<ExitStatus>,
    /// When the leader started (clock ticks since boot): with the pid it
    /// tells our group from a stranger's that reuses the id later.
    leader_start: Option<u64>,
}

impl Server {
    /// Starts `spawn` in a new process group and waits until it is ready.
    pub fn start(spawn: Spawn) -> Result<Server, StartFailure> {
        let stderr = StderrTail::default();
        let fail = |error, stderr: &StderrTail| StartFailure {
            error,
            stderr: stderr.lines(),
        };
        let mut command = Command::new(&spawn.program);
        command
            .args(&spawn.args)
            .envs(spawn.env.iter().map(|(k, v)| (k, v)));
        let cannot_start = |source| {
            fail(
                ServerError::Spawn {
                    program: spawn.program.display().to_string(),
                    source,
                },
                &stderr,
            )
        };
        start_hook(&mut command, &spawn.cpus).map_err(cannot_start)?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(cannot_start)?;
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
            addr: spawn
                .told_addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            ready: None,
            stderr,
            reaped: false,
            exit: None,
            leader_start: None,
        };
        // Not reaped yet, so the pid is still our child's.
        server.leader_start = procs::process_table()
            .iter()
            .find(|e| e.pid == server.pid())
            .map(|e| e.start);
        let deadline = Instant::now() + spawn.ready_timeout;
        let mut stdout_open = true;
        loop {
            if stdout_open {
                match lines_rx.try_recv() {
                    Ok(line) => match serde_json::from_str::<Ready>(&line) {
                        Ok(ready) => {
                            server.addr = ready.addr;
                            server.ready = Some(ready);
                            return Ok(server);
                        }
                        Err(_) if spawn.told_addr.is_none() => {
                            return Err(fail(ServerError::BadReadyLine { line }, &server.stderr));
                        }
                        // A foreign server may print anything.
                        Err(_) => continue,
                    },
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => stdout_open = false,
                }
            }
            if let Some(status) = server.exited() {
                // Give the stderr reader a moment to catch the last words.
                std::thread::sleep(Duration::from_millis(50));
                return Err(fail(
                    ServerError::ExitedEarly {
                        status: status.to_string(),
                    },
                    &server.stderr,
                ));
            }
            if let Some(addr) = spawn.told_addr
                && answers(addr)
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(fail(
                    ServerError::ReadyTimeout(spawn.ready_timeout),
                    &server.stderr,
                ));
            }
            std::thread::sleep(if spawn.told_addr.is_some() {
                POLL
            } else {
                Duration::from_millis(5)
            });
        }
    }

    /// The pid of the process started: the group's leader and id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `Err` if the server has exited.
    pub fn check_alive(&mut self) -> Result<(), ServerError> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(ServerError::Died {
                status: status.to_string(),
            }),
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.reaped = true;
                self.exit = Some(status);
                Some(status)
            }
            _ => self.exit,
        }
    }

    fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's process group, to look at after the guard is gone.
    pub fn group(&self) -> Group {
        Group {
            pgid: self.pid(),
            leader_start: self.leader_start,
        }
    }

    /// Every process in the server's group now.
    pub fn processes(&self) -> Vec<ProcEntry> {
        self.group().members()
    }

    /// SIGTERM to the server (the contract has it stop its workers), then
    /// wait up to `timeout` for it to exit. Returns the exit code (`None`:
    /// killed by a signal) and the processes of its group still running a
    /// moment after it exited.
    pub fn stop(mut self, timeout: Duration) -> Result<(Option<i32>, Vec<ProcEntry>), ServerError> {
        // A reaped pid may already belong to another process: only signal
        // a server whose exit we have not collected.
        if self.reaped {
            return Err(ServerError::Died {
                status: self
                    .exit
                    .map_or("exited before it was stopped".into(), |status| {
                        format!("{status}, before it was stopped")
                    }),
            });
        }
        kill(Pid::from_raw(self.pid()), Signal::SIGTERM).map_err(|e| ServerError::Os(e.into()))?;
        let status = self
            .wait_for_exit(timeout)
            .ok_or(ServerError::StopTimeout(timeout))?;
        // Workers notice their parent's death on their own; allow them a
        // moment before counting them as left behind.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut left = self.processes();
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            left = self.processes();
        }
        Ok((status.code(), left))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
        // The group id stays reserved while any member lives, so signalling
        // it while it has members cannot reach a stranger (`processes` also
        // refuses a group a stranger now leads); with none left there is
        // nothing to do.
        if !self.processes().is_empty() {
            let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        }
    }
}

/// What every server process gets before it runs, in one place: a process
/// group of its own (see the module docs), and its CPUs when pinned, which
/// its workers and threads inherit. Descriptor limits belong here too when
/// an experiment needs them.
fn start_hook(command: &mut Command, cpus: &[usize]) -> std::io::Result<()> {
    command.process_group(0);
    if !cpus.is_empty() {
        let mut set = nix::sched::CpuSet::new();
        for &cpu in cpus {
            set.set(cpu).map_err(std::io::Error::from)?;
        }
        // SAFETY: the closure runs in the child between fork and exec, and
        // makes one system call on a set built before the fork: nothing
        // that allocates or takes a lock.
        unsafe {
            command.pre_exec(move || {
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .map_err(std::io::Error::from)
            });
        }
    }
    Ok(())
}

/// Whether something answers HTTP at `addr`: `/health`, else `/`.
fn answers(addr: SocketAddr) -> bool {
    let timeout = Duration::from_millis(500);
    ["/health", "/"].iter().any(|path| {
        probe::request(addr, "GET", path, timeout).is_ok_and(|a| (200..300).contains(&a.status))
    })
}

/// A port that was free a moment ago, for a server that must be told one.
pub fn free_port(host: std::net::IpAddr) -> Result<u16, ServerError> {
    let listener = std::net::TcpListener::bind((host, 0)).map_err(ServerError::Port)?;
    Ok(listener.local_addr().map_err(ServerError::Port)?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Cpus_allowed_list` a command sees when started through the hook.
    fn allowed_cpus_of_child(cpus: &[usize]) -> String {
        let mut command = Command::new("grep");
        command.args(["Cpus_allowed_list", "/proc/self/status"]);
        start_hook(&mut command, cpus).unwrap();
        let output = command.output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .split(':')
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_owned()
    }

    /// A worker whose parent died is re-parented away from the server's
    /// tree, but stays in its process group: the guard must kill it too.
    #[test]
    fn dropping_the_guard_kills_a_re_parented_worker() {
        let dir = std::env::temp_dir().join(format!("harness-orphan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("orphan.pid");
        let ready = r#"{"event":"ready","model":"fake","addr":"127.0.0.1:9","pid":1,"workers":1}"#;
        // The subshell starts the worker and exits at once, so the worker's
        // parent is gone before the ready line.
        let script = format!(
            "(sleep 300 & echo $! > {}); echo '{ready}'; exec sleep 300",
            pid_file.display()
        );
        let server = Server::start(Spawn {
            program: "sh".into(),
            args: vec!["-c".into(), script],
            env: Vec::new(),
            told_addr: None,
            ready_timeout: Duration::from_secs(10),
            cpus: Vec::new(),
        })
        .unwrap();
        let orphan: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let table = procs::process_table();
        let entry = table
            .iter()
            .find(|e| e.pid == orphan)
            .expect("the worker runs");
        assert_ne!(
            entry.ppid,
            server.pid(),
            "the worker is not the server's child"
        );
        assert_eq!(
            entry.pgrp,
            server.pid(),
            "the worker is in the server's group"
        );
        drop(server);
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !procs::process_table().iter().any(|e| e.pid == orphan)
        });
        let _ = std::fs::remove_dir_all(&dir);
        assert!(gone, "the re-parented worker {orphan} outlived the guard");
    }

    #[test]
    fn the_start_hook_pins_the_server_to_its_cpus() {
        let allowed = crate::cpus::allowed();
        let first = allowed[0];
        assert_eq!(allowed_cpus_of_child(&[first]), first.to_string());
        // Not pinned: whatever this process may use.
        if allowed.len() > 1 {
            assert_ne!(allowed_cpus_of_child(&[]), first.to_string());
        }
    }
}
