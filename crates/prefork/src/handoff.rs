//! `--balance rr`: how the master passes an accepted connection to a worker,
//! and how the worker takes it and says so. Both ends of the protocol live
//! here; the policy (which worker, when) is the master's.
//!
//! Each worker gets a fresh `socketpair(AF_UNIX, SOCK_SEQPACKET)` per fork.
//! Sequenced packets keep message boundaries, so one packet is one thing:
//!
//! - master → worker: one byte carrying one file descriptor (`SCM_RIGHTS`).
//!   The kernel installs a *new* descriptor for the same open socket in the
//!   receiving process; the master's own descriptor stays open.
//! - worker → master: one byte, the acknowledgement: "this process now holds
//!   the connection". Only then does the master close its copy. Or the
//!   refusal, another byte: "this process is out of descriptors, the
//!   kernel could not give it this one" (`MSG_CTRUNC`); the master takes the
//!   connection back and hands it out again, and the worker backs off
//!   before it reads the next packet (`service::accept`), so the two do not
//!   spin passing it back and forth.
//!
//! Until the acknowledgement the connection lives on in the master, so a
//! worker that dies before acknowledging loses nothing: its unread packet is
//! discarded with its socket, or its received descriptor closes with it, and
//! the master still has the connection to give to another worker. The
//! worker acknowledges *before* it reads a byte from the connection, so a
//! connection handed over again never lacks the start of its request.

use std::io::{IoSlice, IoSliceMut};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv,
    recvmsg, send, sendmsg, socketpair,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// The byte an acknowledgement is, and the byte a hand-off carries.
const BYTE: [u8; 1] = [1];
/// The byte a refusal is: the worker had no descriptor for the connection.
const REFUSED: [u8; 1] = [0];

/// A fresh channel for one worker: `(master's end, worker's end)`.
///
/// Both ends are non-blocking: the master is a `poll(2)` loop that must
/// never wait on one slow worker, and the worker's end goes to tokio.
/// Both are close-on-exec, as every descriptor should be (no one execs here,
/// but nothing leaks if someone does). The worker's end crosses `fork`
/// anyway: close-on-exec is not close-on-fork.
pub fn pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
}

/// Why the master could not hand a connection to a worker.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The worker's socket buffer is full (`EAGAIN`): it is slow, not gone.
    /// The master polls for `POLLOUT` and tries again later.
    #[error("the worker's channel is full")]
    Full,
    /// The worker's end is closed (`EPIPE`, `ECONNRESET`...): it is dying
    /// or dead, and its reaping will follow.
    #[error("the worker's channel is closed")]
    Closed(#[source] Errno),
}

/// Master side: passes `stream`'s descriptor to the worker at the other end
/// of `channel`. The caller keeps `stream` open until [`read_acks`] counts
/// this hand-off acknowledged.
pub fn send_connection(channel: &OwnedFd, stream: &TcpStream) -> Result<(), SendError> {
    let fds = [stream.as_raw_fd()];
    let result = sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(&BYTE)],
        &[ControlMessage::ScmRights(&fds)],
        // MSG_NOSIGNAL: a write to a dead worker's socket must be an EPIPE
        // to handle, not a SIGPIPE that kills the master.
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    );
    match result {
        Ok(_) => Ok(()),
        Err(Errno::EAGAIN) => Err(SendError::Full),
        Err(errno) => Err(SendError::Closed(errno)),
    }
}

/// What [`read_acks`] found on a worker's channel.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acks {
    /// Acknowledgements read.
    pub count: usize,
    /// Refusals read: hand-offs the worker had no descriptor for, which
    /// the master still holds and should hand out again.
    pub refused: usize,
    /// The worker closed its end (it stopped taking connections, or died),
    /// after every acknowledgement counted here.
    pub hung_up: bool,
}

/// Master side: reads every acknowledgement waiting on `channel`, without
/// blocking.
pub fn read_acks(channel: &OwnedFd) -> Acks {
    let mut acks = Acks::default();
    let mut buf = [0u8; 16];
    loop {
        match recv(channel.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => {
                acks.hung_up = true;
                return acks;
            }
            // One packet per recv: each is one acknowledgement or refusal.
            Ok(_) if buf[0] == REFUSED[0] => acks.refused += 1,
            Ok(_) => acks.count += 1,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return acks,
            Err(error) => {
                tracing::debug!(%error, "reading acknowledgements: treating as hung up");
                acks.hung_up = true;
                return acks;
            }
        }
    }
}

/// Worker side: receives connections on `channel`, acknowledges each, and
/// forwards it to the event loop through the returned receiver, until the
/// master closes its end or the receiver is dropped (the loop stopped
/// accepting: the shutdown). Must be called inside the worker's runtime.
///
/// `die_before_first_ack` is the test-only fault `--die-on-handoff`: exit
/// holding the first connection received, unacknowledged.
pub fn receive(
    channel: OwnedFd,
    die_before_first_ack: bool,
) -> std::io::Result<mpsc::Receiver<TcpStream>> {
    // SAFETY: an `OwnedFd` owns its descriptor: it stays open, and the same
    // one, until the `AsyncFd` holding it drops it.
    let channel = unsafe { AsyncFd::register(channel) }?;
    // A connection waits here only between its acknowledgement and the
    // loop's next turn; the master hands one at a time to each worker.
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        // Whether this worker is out of descriptors for hand-offs.
        let mut exhaustion = service::accept::Exhaustion::default();
        loop {
            let stream = tokio::select! {
                received = next_connection(&channel) => received,
                // The loop stopped accepting: close our end now, so the
                // master hands nothing more to a draining worker.
                () = tx.closed() => return,
            };
            let stream = match stream {
                Ok(Some(Packet::Connection(stream))) => {
                    exhaustion.accepted();
                    stream
                }
                Ok(Some(Packet::NoRoom)) => {
                    // Give it back, then wait before reading the next
                    // packet: the master will hand it (or another) again,
                    // and only a closed connection of ours makes room.
                    if let Err(error) = send(
                        channel.as_raw_fd(),
                        &REFUSED,
                        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                    ) {
                        tracing::error!(%error, "cannot refuse a connection: the master is gone");
                        return;
                    }
                    let delay = exhaustion.failed(&Errno::EMFILE.into());
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = tx.closed() => return,
                    }
                }
                Ok(None) => {
                    tracing::info!("the master closed the hand-off channel");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "receiving a connection failed");
                    return;
                }
            };
            if die_before_first_ack {
                tracing::error!("--die-on-handoff: exiting before acknowledging a connection");
                std::process::exit(3);
            }
            // Acknowledge before anything reads from the connection (see
            // the module's docs). One small packet per hand-off, and the
            // master reads them as they come: EAGAIN cannot happen unless
            // the master stopped reading, i.e. it is gone, and then this
            // worker is about to die of PR_SET_PDEATHSIG anyway.
            if let Err(error) = send(
                channel.as_raw_fd(),
                &BYTE,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                tracing::error!(%error, "cannot acknowledge a connection: the master is gone");
                return;
            }
            if tx.send(stream).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Waits for the next packet; `Ok(None)` when the master closed its end.
async fn next_connection(channel: &AsyncFd<OwnedFd>) -> std::io::Result<Option<Packet>> {
    loop {
        let mut ready = channel.readable().await?;
        match ready.try_io(|fd| receive_one(fd.get_ref().as_raw_fd())) {
            // A packet without a descriptor is a protocol error; skip it.
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
                tracing::warn!(%error, "skipping a bad hand-off packet");
            }
            Ok(result) => return result,
            // EAGAIN: tokio cleared the readiness; wait for the next packet.
            Err(_would_block) => {}
        }
    }
}

/// One hand-off as the worker receives it.
#[derive(Debug)]
enum Packet {
    /// A connection, now this process's.
    Connection(TcpStream),
    /// A connection this process had no free descriptor for: the kernel
    /// dropped its copy and set `MSG_CTRUNC`. The master still holds it.
    NoRoom,
}

/// One `recvmsg`: a hand-off, `None` at end of stream, or an error
/// (`WouldBlock` when nothing is there, which `try_io` turns into waiting).
fn receive_one(fd: RawFd) -> std::io::Result<Option<Packet>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    // MSG_CMSG_CLOEXEC: the received descriptor is close-on-exec from the
    // moment it exists, atomically, like every descriptor std creates.
    let message = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    if message.bytes == 0 {
        return Ok(None);
    }
    // The buffer has room for the one descriptor the master sends, so a
    // truncated control message means the kernel could not install it here:
    // this process is at its descriptor limit (EMFILE).
    if message.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Ok(Some(Packet::NoRoom));
    }
    // Take ownership of every descriptor received before anything can fail,
    // so that none leaks. `cmsgs` refuses a truncated control message
    // (ENOBUFS): the master sends one descriptor, which fits.
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: SCM_RIGHTS just installed these descriptors in this
            // process; nothing else refers to them yet.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    match received.into_iter().next() {
        Some(fd) => Ok(Some(Packet::Connection(TcpStream::from(fd)))),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a hand-off packet without a descriptor",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A descriptor crosses the pair, the master's copy stays usable until
    /// dropped, and the acknowledgement is read back as one.
    #[test]
    fn a_connection_crosses_and_is_acknowledged() {
        let (master, worker) = pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        send_connection(&master, &accepted).unwrap();
        assert_eq!(
            read_acks(&master),
            Acks::default(),
            "nothing acknowledged yet"
        );

        let Some(Packet::Connection(received)) = receive_one(worker.as_raw_fd()).unwrap() else {
            panic!("a connection");
        };
        assert_eq!(
            received.peer_addr().unwrap(),
            client.local_addr().unwrap(),
            "the same connection"
        );
        let flags = nix::fcntl::fcntl(received.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received close-on-exec");
        send(worker.as_raw_fd(), &BYTE, MsgFlags::MSG_DONTWAIT).unwrap();
        assert_eq!(
            read_acks(&master),
            Acks {
                count: 1,
                refused: 0,
                hung_up: false
            }
        );

        drop(worker);
        // Another test of this binary may fork at any moment, and its child
        // holds a copy of every descriptor until it exits: wait, within a
        // generous bound, for the last copy of the worker's end to close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !read_acks(&master).hung_up {
            assert!(
                std::time::Instant::now() < deadline,
                "never saw the hang-up"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(matches!(
            send_connection(&master, &accepted),
            Err(SendError::Closed(_))
        ));
    }
}
