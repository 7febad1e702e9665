//! Idle connections, held: each opened, used for one request, then left
//! open, so that what a server spends per idle connection can be measured
//! (`lab conns`), as far as the machine allows and past what one process
//! or one source address can hold.
//!
//! The connections are held by `lab hold` children, never by the lab
//! itself: one mechanism whether one process is enough or not. The lab
//! tells each child its share (how many connections, from which loopback
//! source addresses) and the child answers how many it holds; the plan
//! fills one child before the next is started.
//!
//! - [`plan`]: which child and which source address each connection comes
//!   from (pure).
//! - [`limit`]: the descriptor limit, raised for the children and the
//!   servers, which inherit it.
//! - [`held`]: one child's connections.
//! - [`Holders`] (here): the children, from the lab's side; [`run_child`]:
//!   a child's side.
//!
//! The protocol is one JSON line per message: an [`Order`] on the child's
//! stdin, a [`Report`] on its stdout. A child closes everything and exits
//! when its stdin ends, which it does when the lab drops its [`Holders`]
//! or dies (a child busy opening connections notices once it is done, or
//! when its next report cannot be written: at worst one connection's
//! timeout later). The children also stay in the lab's process group, so
//! whatever kills the lab's group (a terminal's Ctrl-C, the tests' guard)
//! kills them at once.

pub mod held;
pub mod limit;
pub mod plan;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use limit::{DescriptorLimit, HardLimit};
pub use plan::{Caps, PlanError, Share};

/// Descriptors a child keeps for itself: stdio, and whatever the runtime
/// opens. The rest of its limit is for connections.
pub const CHILD_RESERVE: u64 = 64;

/// A child reports its count every this many connections, so a long step
/// shows progress.
pub const PROGRESS_EVERY: usize = 10_000;

/// What the lab tells a holder child.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "order", rename_all = "kebab-case")]
pub enum Order {
    /// Hold `share` of the connections to `server`, each answered once on
    /// `GET path` within `timeout_ms`; `share` extends what the child
    /// holds already.
    Grow {
        server: SocketAddr,
        share: Share,
        path: String,
        timeout_ms: u64,
    },
    /// Say whether every held connection is still open.
    Check,
}

/// What a holder child answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "report", rename_all = "kebab-case")]
pub enum Report {
    /// Still growing: `held` so far.
    Progress {
        held: usize,
    },
    /// Done growing: all of the share, or `held` and why no more.
    Grown {
        held: usize,
        error: Option<String>,
    },
    Checked {
        all_open: bool,
    },
}

/// Why the connections stopped growing, or the children failed.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("stopped at {held} connections: {reason}")]
    Stopped { held: usize, reason: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot read the machine's ephemeral port range: {0}")]
    PortRange(#[source] std::io::Error),
    #[error("cannot start a holder ({exe}): {source}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("holder {index} (pid {pid}) {what}")]
    Child {
        index: usize,
        pid: u32,
        what: String,
    },
}

/// The caps for holding connections to `server` on this machine: a child
/// holds what the descriptor limit `limit` (which it inherits) leaves it,
/// a source address what the ephemeral port range leaves it
/// ([`plan::usable_ports`]); either lowered by `lower` where given (for
/// tests that must see connections spread). Returns the port range too.
pub fn machine_caps(limit: u64, lower: Caps) -> Result<(Caps, (u16, u16)), HoldError> {
    let range = plan::port_range().map_err(HoldError::PortRange)?;
    let per_holder = usize::try_from(limit.saturating_sub(CHILD_RESERVE)).unwrap_or(usize::MAX);
    Ok((
        Caps {
            per_holder: per_holder.min(lower.per_holder),
            per_source: plan::usable_ports(range).min(lower.per_source),
        },
        range,
    ))
}

/// Connections to one server, held by `lab hold` children.
#[derive(Debug)]
pub struct Holders {
    exe: PathBuf,
    server: SocketAddr,
    path: String,
    timeout: Duration,
    caps: Caps,
    children: Vec<Holder>,
}

#[derive(Debug)]
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    share: Share,
    held: usize,
}

impl Holders {
    /// No connections yet; children of `lab_exe` are started as the
    /// connections need them.
    pub fn new(
        lab_exe: &Path,
        server: SocketAddr,
        path: &str,
        timeout: Duration,
        caps: Caps,
    ) -> Holders {
        Holders {
            exe: lab_exe.to_owned(),
            server,
            path: path.to_owned(),
            timeout,
            caps,
            children: Vec::new(),
        }
    }

    /// Connections held, by all children.
    pub fn held(&self) -> usize {
        self.children.iter().map(|h| h.held).sum()
    }

    /// Children holding at least one connection.
    pub fn processes(&self) -> usize {
        self.children.iter().filter(|h| h.held > 0).count()
    }

    /// Source addresses in use: of each child's share, what it holds.
    pub fn sources(&self) -> usize {
        let shares: Vec<Share> = self
            .children
            .iter()
            .map(|h| h.share.truncated(h.held))
            .collect();
        plan::sources_used(&shares)
    }

    /// Grows the connections held to `total`, starting children as the
    /// plan needs them; `progress` hears the count now and then. Stops at
    /// the first connection that fails, keeping those that worked.
    pub fn grow_to(
        &mut self,
        total: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<(), HoldError> {
        let shares = plan::shares(total, self.caps, self.server)?;
        for (index, share) in shares.into_iter().enumerate() {
            if index == self.children.len() {
                self.children.push(Holder::spawn(&self.exe)?);
            }
            if self.children[index].share == share {
                continue;
            }
            let others = self.held() - self.children[index].held;
            let order = Order::Grow {
                server: self.server,
                share: share.clone(),
                path: self.path.clone(),
                timeout_ms: self.timeout.as_millis() as u64,
            };
            let holder = &mut self.children[index];
            holder.send(index, &order)?;
            loop {
                match holder.receive(index)? {
                    Report::Progress { held } => progress(others + held),
                    Report::Grown { held, error } => {
                        holder.held = held;
                        holder.share = share;
                        match error {
                            None => break,
                            Some(reason) => {
                                return Err(HoldError::Stopped {
                                    held: others + held,
                                    reason,
                                });
                            }
                        }
                    }
                    other => return Err(holder.unexpected(index, &other)),
                }
            }
        }
        Ok(())
    }

    /// Whether every held connection is still open, in every child.
    pub fn all_open(&mut self) -> Result<bool, HoldError> {
        let mut all = true;
        for (index, holder) in self.children.iter_mut().enumerate() {
            holder.send(index, &Order::Check)?;
            match holder.receive(index)? {
                Report::Checked { all_open } => all &= all_open,
                other => return Err(holder.unexpected(index, &other)),
            }
        }
        Ok(all)
    }
}

impl Holder {
    fn spawn(exe: &Path) -> Result<Holder, HoldError> {
        let mut child = Command::new(exe)
            .arg("hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its few lines (why it failed) go where the lab's go.
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| HoldError::Spawn {
                exe: exe.to_owned(),
                source,
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both were piped");
        };
        Ok(Holder {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            share: Share::default(),
            held: 0,
        })
    }

    fn fail(&self, index: usize, what: String) -> HoldError {
        HoldError::Child {
            index,
            pid: self.child.id(),
            what,
        }
    }

    fn unexpected(&self, index: usize, report: &Report) -> HoldError {
        self.fail(index, format!("answered out of turn: {report:?}"))
    }

    fn send(&mut self, index: usize, order: &Order) -> Result<(), HoldError> {
        let line = serde_json::to_string(order).expect("an order serializes") + "\n";
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        written.map_err(|e| self.fail(index, format!("cannot be told: {e}")))
    }

    fn receive(&mut self, index: usize) -> Result<Report, HoldError> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(self.fail(index, format!("ended ({status})")))
            }
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| self.fail(index, format!("said {:?}: {e}", line.trim_end()))),
            Err(e) => Err(self.fail(index, format!("cannot be read: {e}"))),
        }
    }
}

impl Drop for Holders {
    /// Closes every child's stdin, which tells it to close its connections
    /// and exit; one that has not within a few seconds is killed.
    fn drop(&mut self) {
        for holder in &mut self.children {
            holder.stdin = None;
        }
        let until = Instant::now() + Duration::from_secs(5);
        for holder in &mut self.children {
            while matches!(holder.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(holder.child.try_wait(), Ok(None)) {
                let _ = holder.child.kill();
            }
            let _ = holder.child.wait();
        }
    }
}

/// A holder child (`lab hold`): obeys orders from stdin until it ends,
/// then exits, closing its connections. An error means the lab cannot be
/// talked to any more.
pub fn run_child() -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut held = held::Held::default();
    for line in std::io::stdin().lock().lines() {
        let order: Order = serde_json::from_str(&line?).map_err(std::io::Error::other)?;
        let report = match order {
            Order::Grow {
                server,
                share,
                path,
                timeout_ms,
            } => {
                let grown = held.grow_to(
                    server,
                    &share,
                    &path,
                    Duration::from_millis(timeout_ms),
                    PROGRESS_EVERY,
                    // Should the lab be gone, the next report fails.
                    |n| {
                        let _ = send(&mut out, &Report::Progress { held: n });
                    },
                );
                Report::Grown {
                    held: held.len(),
                    error: grown.err().map(|e| e.to_string()),
                }
            }
            Order::Check => Report::Checked {
                all_open: held.all_open(),
            },
        };
        send(&mut out, &report)?;
    }
    Ok(())
}

fn send(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let line = serde_json::to_string(report).map_err(std::io::Error::other)?;
    writeln!(out, "{line}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_reports_are_one_json_line_each() {
        let order = Order::Grow {
            server: "127.0.0.1:80".parse().unwrap(),
            share: Share {
                sources: vec![("127.0.0.2".parse().unwrap(), 3)],
            },
            path: "/".into(),
            timeout_ms: 5000,
        };
        let line = serde_json::to_string(&order).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Order>(&line).unwrap(), order);
        let report = Report::Grown {
            held: 2,
            error: Some("connect: refused".into()),
        };
        let line = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), report);
    }

    #[test]
    fn a_child_gets_what_its_descriptors_leave_and_a_source_what_its_ports_do() {
        let (caps, range) = machine_caps(
            20_000,
            Caps {
                per_holder: usize::MAX,
                per_source: usize::MAX,
            },
        )
        .unwrap();
        assert_eq!(caps.per_holder, 20_000 - CHILD_RESERVE as usize);
        assert_eq!(caps.per_source, plan::usable_ports(range));
        let lowered = Caps {
            per_holder: 7,
            per_source: 3,
        };
        assert_eq!(machine_caps(20_000, lowered).unwrap().0, lowered);
    }
}
