//! A process peer: started by exec (`std::process::Command`, never a bare
//! `fork` of the harness, which has threads: a forked child of a
//! multi-threaded parent may inherit a lock some other thread held), its
//! end of the transport given to it as its standard input (and output),
//! and killed if its guard is dropped before it exited.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Check, IpcError, PeerCommand, Transport};

/// How long a peer has to exit once told to stop.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// A running peer process.
#[derive(Debug)]
pub struct Peer {
    child: Option<Child>,
}

impl Peer {
    /// Starts `command` as the peer of `transport`, with `stdin` and
    /// `stdout` as its ends. The `Stdio`s are consumed here, so the
    /// parent's copies of the child's ends are closed once it has started
    /// (else the parent would never see the peer hang up).
    pub fn spawn(
        command: &PeerCommand,
        transport: Transport,
        check: Check,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Peer, IpcError> {
        let child = Command::new(&command.program)
            .args(&command.args)
            .arg(transport.name())
            .arg(check.name())
            .arg(std::process::id().to_string())
            .stdin(stdin)
            .stdout(stdout)
            .spawn()
            .map_err(|source| IpcError::Spawn {
                program: command.program.clone(),
                source,
            })?;
        Ok(Peer { child: Some(child) })
    }

    /// `Ok` while the peer runs; its exit as an error once it has ended.
    pub fn alive(&mut self) -> Result<(), IpcError> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => Err(IpcError::PeerExit(status)),
            Some(Err(e)) => Err(IpcError::Io {
                what: "waiting for the peer".into(),
                source: e,
            }),
            None => Err(IpcError::HungUp),
        }
    }

    /// Waits for the peer, told to stop, to exit 0.
    pub fn finish(mut self) -> Result<(), IpcError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + EXIT_WITHIN;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(IpcError::PeerExit(status)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(IpcError::PeerStuck(EXIT_WITHIN));
                }
                Err(e) => {
                    return Err(IpcError::Io {
                        what: "waiting for the peer".into(),
                        source: e,
                    });
                }
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
