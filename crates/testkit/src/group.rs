//! A child process in a process group of its own, and everything it writes.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A child started as the leader of a new process group, so that it and
/// every process it forks can be killed with one signal. Its stdout and
/// stderr are collected by threads, so a chatty child never blocks on a
/// full pipe. Dropping the guard SIGKILLs the whole group.
#[derive(Debug)]
pub struct Group {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Set once the leader has been reaped.
    status: Option<ExitStatus>,
}

impl Group {
    /// Spawns `command` (stdin closed, stdout and stderr collected).
    pub fn spawn(command: &mut Command) -> Group {
        let mut child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Group {
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// The leader's pid, which is also the group's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the leader's stdout carried so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Everything the leader's stderr carried so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends `signal` to the leader only.
    pub fn signal(&self, signal: Signal) {
        // Once reaped, the pid is free for the kernel to hand to another
        // process, perhaps another test's: never signal it then.
        assert!(self.status.is_none(), "already exited: {:?}", self.status);
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal the leader");
    }

    /// Sends `signal` to every process in the group, as a terminal's Ctrl-C
    /// does to its foreground group.
    pub fn signal_group(&self, signal: Signal) {
        assert!(self.status.is_none(), "already exited: {:?}", self.status);
        killpg(Pid::from_raw(self.pid() as i32), signal).expect("signal the group");
    }

    /// Waits up to `timeout` for the leader to exit; `None` if it did not.
    /// It looks at least once, so `Duration::ZERO` asks "has it exited?".
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            if self.status.is_some() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.status
    }

    /// Waits up to `limit` for the leader to exit and returns its status;
    /// panics (with its stderr) if it runs longer.
    pub fn finish(&mut self, limit: Duration) -> ExitStatus {
        let status = self
            .wait_timeout(limit)
            .unwrap_or_else(|| panic!("still running after {limit:?}; stderr:\n{}", self.stderr()));
        // The collectors finish once every writer of the pipes is gone;
        // give them a moment so the output is complete.
        crate::wait_until(Duration::from_secs(2), || {
            Arc::strong_count(&self.stdout) == 1 && Arc::strong_count(&self.stderr) == 1
        });
        status
    }

    /// Live (non-zombie) processes in the group: the leader and whatever it
    /// started and has not reaped.
    pub fn members(&self) -> Vec<u32> {
        crate::processes_in_group(self.pid())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // While the leader is unreaped, or while any member of its group
        // lives, the kernel cannot reuse the group's id, so the signal
        // reaches only our processes. A reaped leader with an empty group
        // is the one case where the id may already be someone else's: then
        // there is nothing of ours left to kill.
        if self.status.is_none() || !self.members().is_empty() {
            let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        }
        if self.status.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// Reads a pipe to its end on a thread, appending to the returned buffer.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let sink = bytes.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    bytes
}
