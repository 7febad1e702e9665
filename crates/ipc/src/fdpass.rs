//! One descriptor and one number over a `SOCK_SEQPACKET` UNIX socket
//! (`SCM_RIGHTS`), and plain 16-byte acks back. A packet socket keeps each
//! descriptor with its own packet, so there is no framing to get wrong.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv,
    recvmsg, send, sendmsg, socketpair,
};

use crate::{Ack, IpcError};

/// A fresh `(mine, theirs)` pair, both close-on-exec (the child's end
/// becomes its standard input, which exec keeps open).
pub fn pair() -> Result<(OwnedFd, OwnedFd), IpcError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| sys("socketpair", e))
}

fn sys(what: &str, errno: nix::errno::Errno) -> IpcError {
    IpcError::Io {
        what: what.to_owned(),
        source: errno.into(),
    }
}

/// Sends `fd` and `word` in one packet. The receiver gets its own
/// descriptor of the same file; the caller may close `fd` at once.
pub fn send_fd(socket: &OwnedFd, fd: &OwnedFd, word: u64) -> Result<(), IpcError> {
    let bytes = word.to_le_bytes();
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| sys("sending a descriptor", e))?;
    Ok(())
}

/// Receives a packet of [`send_fd`]; `None` when the other end closed.
pub fn recv_fd(socket: &OwnedFd) -> Result<Option<(OwnedFd, u64)>, IpcError> {
    let mut bytes = [0u8; 8];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut bytes)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| sys("receiving a descriptor", e))?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    let mut fd = None;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| sys("reading control messages", e))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed `raw` in this process
                // for us; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let fd = fd.ok_or(IpcError::Bad("a packet without a descriptor".into()))?;
    Ok(Some((fd, u64::from_le_bytes(bytes))))
}

pub fn send_ack(socket: &OwnedFd, ack: Ack) -> Result<(), IpcError> {
    send(socket.as_raw_fd(), &ack.to_bytes(), MsgFlags::MSG_NOSIGNAL)
        .map_err(|e| sys("sending an ack", e))?;
    Ok(())
}

pub fn recv_ack(socket: &OwnedFd) -> Result<Ack, IpcError> {
    let mut bytes = [0u8; 16];
    match recv(socket.as_raw_fd(), &mut bytes, MsgFlags::empty()) {
        Ok(16) => Ok(Ack::from_bytes(bytes)),
        Ok(0) => Err(IpcError::HungUp),
        Ok(n) => Err(IpcError::Bad(format!("an ack of {n} bytes"))),
        Err(e) => Err(sys("receiving an ack", e)),
    }
}
