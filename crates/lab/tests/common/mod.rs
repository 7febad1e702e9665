//! Helpers both of `lab`'s end-to-end suites use.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, SystemTime};

use testkit::Group;

/// Runs `lab ARGS` in its own process group (killed whole on drop, so a
/// failing assertion leaves no server or load generator behind) and waits up
/// to `limit`. Returns its status, stdout, stderr, and whatever is still
/// alive in its group.
pub fn run_lab(args: &[&str], limit: Duration) -> (ExitStatus, String, String, Vec<u32>) {
    let mut lab = Group::spawn(Command::new(env!("CARGO_BIN_EXE_lab")).args(args));
    let status = lab.finish(limit);
    (status, lab.stdout(), lab.stderr(), lab.members())
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
