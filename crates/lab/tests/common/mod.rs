//! Helpers both of `lab`'s end-to-end suites use.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, SystemTime};

use testkit::Group;

/// Runs `lab ARGS` in its own process group (killed whole on drop, so a
/// failing assertion leaves no load generator behind) and waits up to
/// `limit`. Returns its status, stdout, stderr, and every process it
/// started that is still alive (see [`Tagged`]).
pub fn run_lab(args: &[&str], limit: Duration) -> (ExitStatus, String, String, Vec<i32>) {
    let tag = Tagged::new();
    let mut lab = Group::spawn(&mut tag.command(args));
    let status = lab.finish(limit);
    (status, lab.stdout(), lab.stderr(), tag.alive())
}

/// Runs `lab ARGS`, which must succeed and leave nothing running, and
/// parses the JSON file `file` of its run folder `out/name`.
pub fn lab_ok<T: serde::de::DeserializeOwned>(
    args: &[&str],
    out: &Path,
    name: &str,
    file: &str,
) -> T {
    let (status, _, stderr, left) = run_lab(args, Duration::from_secs(600));
    assert!(status.success(), "lab failed: {status}\n{stderr}");
    assert!(left.is_empty(), "left running: {left:?}");
    let text = std::fs::read_to_string(out.join(name).join(file)).expect(file);
    serde_json::from_str(&text).expect(file)
}

/// Every process a `lab` started, found by an environment variable they
/// all inherit. `lab` starts each server in a process group of its own
/// (so the servers' guard can kill all of a server's processes), so the
/// test's own group does not hold them; the tag does. Whatever is tagged
/// and alive when the test ends is killed.
pub struct Tagged(String);

const TAG: &str = "LAB_TEST_TAG";

impl Tagged {
    pub fn new() -> Tagged {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Tagged(format!("{}-{nanos}", std::process::id()))
    }

    /// `lab ARGS`, tagged.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
        command.args(args).env(TAG, &self.0);
        command
    }

    /// The tagged processes still alive (zombies are not alive).
    pub fn alive(&self) -> Vec<i32> {
        let Ok(all) = procfs::process::all_processes() else {
            return Vec::new();
        };
        all.filter_map(|p| p.ok())
            .filter(|p| p.stat().is_ok_and(|s| s.state != 'Z' && s.state != 'X'))
            .filter(|p| {
                p.environ().is_ok_and(|env| {
                    env.get(std::ffi::OsStr::new(TAG))
                        .is_some_and(|v| v.as_encoded_bytes() == self.0.as_bytes())
                })
            })
            .map(|p| p.pid)
            .collect()
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        for pid in self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A fresh, empty folder for one test's output.
pub fn scratch(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lab-{name}-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
