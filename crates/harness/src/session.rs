//! One invocation of an experiment: its folder, when it started, the commit
//! and machine it ran on, its scratch space, and Ctrl-C.
//!
//! Every experiment opens a [`Session`] first and stamps the [`RunMeta`] it
//! returns into each file it writes, so no result exists without the commit
//! and the machine that produced it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::now_rfc3339;
use crate::cpus::Pinning;
use crate::record::{Machine, RunMeta};

/// Why a session could not open.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0} already exists; choose another --name")]
    Exists(PathBuf),
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find lab's own executable")]
    OwnExe(#[source] std::io::Error),
}

/// Where and how an experiment runs.
#[derive(Debug)]
pub struct Session {
    pub meta: RunMeta,
    /// `results/<name>/`: created at once, so a crash leaves a trace.
    pub dir: PathBuf,
    /// Scratch files (the load generator's reports); removed on drop.
    pub work_dir: PathBuf,
    /// The executable to start again as `lab loadgen`.
    pub lab_exe: PathBuf,
    /// Set by the first Ctrl-C: experiments stop before the next step.
    pub interrupted: Arc<AtomicBool>,
    /// Where the servers and the load generator run, if pinned.
    pub pinning: Option<Pinning>,
}

impl Session {
    /// Opens `out/name`, refusing to overwrite an earlier run. Warns loudly
    /// when the tree is dirty: such results are not to be quoted.
    pub fn open(
        out: &Path,
        name: &str,
        lab_exe: PathBuf,
        pinning: Option<Pinning>,
    ) -> Result<Session, SessionError> {
        let dir = out.join(name);
        if dir.exists() {
            return Err(SessionError::Exists(dir));
        }
        let create = |path: &Path| {
            std::fs::create_dir_all(path).map_err(|source| SessionError::Create {
                path: path.to_owned(),
                source,
            })
        };
        create(&dir)?;
        let work_dir = std::env::temp_dir().join(format!("lab-{}-{name}", std::process::id()));
        create(&work_dir)?;
        let meta = RunMeta::new(name, git_commit(), machine());
        if meta.dirty {
            tracing::warn!(
                "the working tree has uncommitted changes: this run is marked +dirty, \
                 and its numbers must not be quoted"
            );
        }
        Ok(Session {
            meta,
            dir,
            work_dir,
            lab_exe,
            interrupted: interrupt_flag(),
            pinning,
        })
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// The run loop every experiment shares: `trial` on each item in order,
    /// under a progress bar, until all are done or Ctrl-C. `trial` returns
    /// `Ok(false)` when it was interrupted half-way (its numbers would be cut
    /// short, so it recorded nothing); it logs through the bar it is given
    /// ([`ProgressBar::suspend`]) so lines and bar do not mix.
    pub fn each<T, E>(
        &self,
        items: &[T],
        label: impl Fn(&T) -> String,
        mut trial: impl FnMut(&T, &ProgressBar) -> Result<bool, E>,
    ) -> Result<(), E> {
        let progress = ProgressBar::new(items.len() as u64);
        progress.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        for item in items {
            if self.is_interrupted() {
                break;
            }
            progress.set_message(label(item));
            if !trial(item, &progress)? {
                break;
            }
            progress.inc(1);
        }
        progress.finish_and_clear();
        Ok(())
    }

    /// Stamps how the run ended into `meta`, and warns again if the tree
    /// was dirty, now that the results are on screen.
    pub fn finish(&self, meta: &mut RunMeta) {
        meta.interrupted = self.is_interrupted();
        meta.complete = !meta.interrupted;
        if meta.dirty {
            tracing::warn!("the tree was dirty (uncommitted changes): do not quote these numbers");
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Scratch only; losing it loses nothing measured.
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// The default run name: the UTC time and what ran, `20250101T093000-quick`.
pub fn default_name(what: &str) -> String {
    let stamp: String = now_rfc3339()
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{stamp}-{what}")
}

/// Set on the first Ctrl-C; the experiment stops after cleaning up the step
/// it is in. The second Ctrl-C does not exit on the spot either (that would
/// skip the guards that kill the servers): it only says that cleanup is
/// under way. Every wait in the harness is bounded, so cleanup ends.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    // A tiny runtime of its own: the only portable, safe way to catch SIGINT
    // with the crates at hand, and it keeps signal code out of experiments.
    let spawned = std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    tracing::warn!("interrupted: stopping after cleaning up this step");
                    set.store(true, Ordering::Relaxed);
                }
                while tokio::signal::ctrl_c().await.is_ok() {
                    tracing::warn!("still cleaning up: the servers are being stopped");
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for Ctrl-C: {e}");
    }
    flag
}

/// Machine facts, from sysinfo.
pub fn machine() -> Machine {
    let mut system = sysinfo::System::new();
    system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    system.refresh_memory();
    Machine {
        cpu_model: system
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_owned())
            .unwrap_or_default(),
        logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        physical_cores: system.physical_core_count(),
        memory_bytes: system.total_memory(),
        kernel: sysinfo::System::kernel_version(),
        os: sysinfo::System::long_os_version(),
    }
}

/// The commit of the checkout the harness was built from, with `+dirty`
/// if anything differs from it: changed tracked files, or new files git
/// does not ignore (a new source file changes what runs as much as an edit).
fn git_commit() -> Option<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = if repo.exists() {
        repo
    } else {
        PathBuf::from(".")
    };
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let status = git(&["status", "--porcelain", "--untracked-files=normal"])?;
    Some(with_dirty_mark(head, &status))
}

/// `head`, marked `+dirty` when `git status --porcelain` lists anything
/// outside the results folder (a run writes its own results while it runs,
/// and must not call itself dirty for that).
fn with_dirty_mark(head: String, porcelain: &str) -> String {
    let dirty = porcelain.lines().any(|line| {
        let path = line.get(3..).unwrap_or("");
        !path.starts_with("results/")
    });
    if dirty { head + "+dirty" } else { head }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untracked_files_mark_a_run_dirty_but_its_own_results_do_not() {
        let head = || "abc".to_owned();
        assert_eq!(with_dirty_mark(head(), ""), "abc");
        assert_eq!(
            with_dirty_mark(head(), "?? crates/lab/src/new.rs\n"),
            "abc+dirty"
        );
        assert_eq!(
            with_dirty_mark(head(), " M crates/service/src/http.rs\n"),
            "abc+dirty"
        );
        assert_eq!(
            with_dirty_mark(head(), "?? results/20250101T000000-quick/\n"),
            "abc"
        );
    }
}
