//! A process peer's `main`: what `lab ipc-peer TRANSPORT CHECK PARENT`
//! runs. Its end of the transport is its standard input (and, for pipes,
//! its standard output: a peer prints nothing else there). It answers
//! messages until the sender closes its end or says stop, then exits 0.
//!
//! A peer must not outlive the harness: it asks for `SIGKILL` when its
//! parent dies (`PR_SET_PDEATHSIG`), checks at once that the parent is
//! still the one that started it, and the `shm` peer, which may sleep on a
//! futex rather than on its input, looks again every 100 ms.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::Signal;
use nix::unistd::getppid;

use crate::{Check, IpcError, Transport, io, memfd, shm, stream};

/// Serves `transport`'s receiving end, `check`ing each payload, as the
/// child of `parent`.
pub fn serve(transport: Transport, check: Check, parent: u32) -> Result<(), IpcError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| IpcError::Io {
        what: "PR_SET_PDEATHSIG".into(),
        source: e.into(),
    })?;
    let parent_alive = move || u32::try_from(getppid().as_raw()) == Ok(parent);
    if !parent_alive() {
        return Err(IpcError::HungUp);
    }
    let stdin = || -> Result<OwnedFd, IpcError> {
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(io("taking stdin"))
    };
    match transport {
        Transport::PipeRaw | Transport::PipeSerde => {
            let stdout = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(io("taking stdout"))?;
            stream::serve(
                std::fs::File::from(stdin()?),
                std::fs::File::from(stdout),
                transport == Transport::PipeSerde,
                check,
            )
        }
        Transport::UnixRaw | Transport::UnixSerde => {
            let socket = UnixStream::from(stdin()?);
            let output = socket.try_clone().map_err(io("cloning the socket"))?;
            stream::serve(socket, output, transport == Transport::UnixSerde, check)
        }
        Transport::Shm => shm::serve(stdin()?, check, parent_alive),
        Transport::Memfd => memfd::serve(stdin()?, check),
        other => Err(IpcError::Bad(format!("{other} has no process peer"))),
    }
}

/// The peer's three arguments, `TRANSPORT CHECK PARENT`, parsed.
pub fn parse_args(args: &[String]) -> Result<(Transport, Check, u32), String> {
    match args {
        [transport, check, parent] => Ok((
            Transport::parse(transport).ok_or_else(|| format!("unknown transport {transport}"))?,
            Check::parse(check).ok_or_else(|| format!("unknown check {check}"))?,
            parent
                .parse()
                .map_err(|_| format!("`{parent}` is not a pid"))?,
        )),
        _ => Err("usage: TRANSPORT CHECK PARENT_PID".into()),
    }
}
