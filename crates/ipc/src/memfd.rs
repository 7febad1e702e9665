//! `memfd`: a fresh memfd per message, its descriptor passed with
//! `SCM_RIGHTS`. The sender writes the payload into a new memfd (one copy,
//! into pages the kernel allocates and zeroes for it), sends the
//! descriptor and the length in one packet and closes its own descriptor;
//! the receiver maps the file, touches it, unmaps and closes it, and acks.
//! No memfd is reused: this is the hand-a-file-over pattern (Wayland's
//! buffers, Android's), paid in full each time; reusing one mapping is
//! what `shm` measures.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use nix::sys::memfd::{MemFdCreateFlag, memfd_create};

use crate::map::Mapping;
use crate::process::Peer;
use crate::{Ack, Check, IpcError, Link, PeerCommand, Transport, fdpass, io, payload, stamp};

/// The sender's end of `memfd`.
pub struct Sender {
    socket: OwnedFd,
    buf: Vec<u8>,
    peer: Option<Peer>,
}

impl Sender {
    pub fn open(max_len: usize, check: Check, command: &PeerCommand) -> Result<Sender, IpcError> {
        let (mine, theirs) = fdpass::pair()?;
        let peer = Peer::spawn(
            command,
            Transport::Memfd,
            check,
            Stdio::from(theirs),
            Stdio::null(),
        )?;
        Ok(Sender {
            socket: mine,
            buf: payload(max_len),
            peer: Some(peer),
        })
    }
}

impl Link for Sender {
    fn exchange(&mut self, seq: u64, len: usize) -> Result<Ack, IpcError> {
        stamp(&mut self.buf, seq);
        let fd = memfd_create(c"lab-ipc-message", MemFdCreateFlag::MFD_CLOEXEC).map_err(|e| {
            IpcError::Io {
                what: "memfd_create".into(),
                source: e.into(),
            }
        })?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&self.buf[..len])
            .map_err(io("writing the memfd"))?;
        fdpass::send_fd(&self.socket, &OwnedFd::from(file), len as u64)?;
        fdpass::recv_ack(&self.socket)
    }

    fn sent(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    fn close(mut self: Box<Self>) -> Result<(), IpcError> {
        let peer = self.peer.take();
        drop(self);
        peer.map_or(Ok(()), Peer::finish)
    }
}

/// The peer's side: maps, touches and acks every memfd received on
/// `socket` until the sender closes it.
pub fn serve(socket: OwnedFd, check: Check) -> Result<(), IpcError> {
    while let Some((fd, len)) = fdpass::recv_fd(&socket)? {
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| (1..=crate::MAX_BYTES * 2).contains(&n))
            .ok_or_else(|| IpcError::Bad(format!("a memfd of {len} bytes")))?;
        let map = Mapping::new(&fd, len, false)?;
        // SAFETY: the sender wrote the file before sending it and never
        // touches it again; the mapping lives until the end of this block.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), len) };
        let ack = Ack::of(bytes, check);
        drop(map);
        drop(fd);
        fdpass::send_ack(&socket, ack)?;
    }
    Ok(())
}
