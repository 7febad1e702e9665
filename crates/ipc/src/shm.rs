//! `shm`: one region both processes map, the payload produced in place,
//! and an atomic word saying whose turn it is. Nothing is copied: as with
//! an `Arc`, only the right to touch the bytes changes hands.
//!
//! The parent creates a memfd sized for the largest payload, maps it,
//! passes the descriptor to the peer once (`SCM_RIGHTS` over the peer's
//! stdin, a packet socket), and from then on the socket is idle. The
//! region starts with a [`Header`] of plain atomics at fixed offsets (no
//! pointers: each process maps it at its own address), the payload at the
//! next page.
//!
//! **The hand-off.** The sender stamps the payload, stores its length,
//! and sets `turn` to [`PEER`]; the peer touches the payload, stores its
//! ack, and sets `turn` back to [`SENDER`]. A side waiting for its turn
//! spins briefly (a couple of hundred checks, a few microseconds at
//! most: a reply that quick is not worth a system call) and then sleeps
//! in `futex(2)` on the
//! `turn` word, a shared (not private) futex since two processes wait on
//! it. A side only calls `FUTEX_WAKE` when the other has said it sleeps,
//! so a busy ping-pong makes no system calls at all. That is what
//! crossbeam's channels do too (spin, then park on a futex), so `shm` and
//! `thread-arc` are measured with the same kind of hand-off. Pure spinning
//! on both sides would be faster still with a core each, and on a 2-core
//! machine shared with anything else it would be measuring the scheduler.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::map::Mapping;
use crate::process::Peer;
use crate::{Ack, Check, IpcError, Link, PeerCommand, Transport, fdpass, io, payload, stamp};

/// `turn`: the sender may write the payload (and read the ack).
const SENDER: u32 = 0;
/// `turn`: a message waits for the peer.
const PEER: u32 = 1;
/// `turn`: the sender is done; the peer exits.
const STOP: u32 = 2;

/// Where the payload starts: a page after the header.
const PAYLOAD_AT: usize = 4096;

/// Checks of the turn word before sleeping.
const SPINS: u32 = 200;

/// How long one futex sleep lasts before the waiter checks that the other
/// side is still alive.
const NAP: Duration = Duration::from_millis(100);

/// The start of the region: plain atomics, the same layout in both
/// processes.
#[repr(C)]
struct Header {
    turn: AtomicU32,
    /// Set by a side before it sleeps on `turn`, so the other wakes it.
    sender_sleeps: AtomicU32,
    peer_sleeps: AtomicU32,
    _pad: u32,
    len: AtomicU64,
    ack_seq: AtomicU64,
    ack_check: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= PAYLOAD_AT);

/// The region, mapped.
struct Region {
    map: Mapping,
}

impl Region {
    fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and at least a page long
        // (checked when opened), `Header` is plain atomics, and every byte
        // pattern is a valid atomic integer; other processes touch the
        // header only through atomics too.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    fn capacity(&self) -> usize {
        self.map.len() - PAYLOAD_AT
    }

    /// The payload area.
    ///
    /// # Safety
    ///
    /// Only while it is this side's turn: the other process does not
    /// write it then (the turn word orders every access, `SeqCst`).
    unsafe fn payload(&self) -> &[u8] {
        // SAFETY: in bounds of the mapping; see the function's contract.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(PAYLOAD_AT), self.capacity()) }
    }

    /// # Safety
    ///
    /// As [`Region::payload`], and no other reference into the payload
    /// lives meanwhile (`&mut self`).
    unsafe fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above.
        unsafe {
            std::slice::from_raw_parts_mut(self.map.as_ptr().add(PAYLOAD_AT), self.capacity())
        }
    }

    /// Sets the turn to `to` and wakes the other side if it sleeps.
    fn pass(&self, to: u32, other_sleeps: &AtomicU32) {
        let header = self.header();
        header.turn.store(to, Ordering::SeqCst);
        if other_sleeps.load(Ordering::SeqCst) != 0 {
            futex_wake(&header.turn);
        }
    }

    /// Waits until the turn is one of `want`, spinning first, then
    /// sleeping (`my_sleeps` set meanwhile); every [`NAP`], `alive` says
    /// whether to go on waiting. Returns the turn found.
    fn wait(
        &self,
        want: &[u32],
        my_sleeps: &AtomicU32,
        mut alive: impl FnMut() -> Result<(), IpcError>,
    ) -> Result<u32, IpcError> {
        let turn = &self.header().turn;
        for _ in 0..SPINS {
            let now = turn.load(Ordering::SeqCst);
            if want.contains(&now) {
                return Ok(now);
            }
            std::hint::spin_loop();
        }
        loop {
            my_sleeps.store(1, Ordering::SeqCst);
            let now = turn.load(Ordering::SeqCst);
            if want.contains(&now) {
                my_sleeps.store(0, Ordering::SeqCst);
                return Ok(now);
            }
            // Sleeps only if `turn` still holds `now`: a pass between the
            // load and the sleep is not missed. The pass's store and its
            // load of `my_sleeps`, and our store and load here, are all
            // `SeqCst`: either it sees us asleep or we see its turn.
            futex_wait(turn, now, NAP);
            my_sleeps.store(0, Ordering::SeqCst);
            alive()?;
        }
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live, aligned u32 for the whole call; the kernel
    // only reads it and the timespec. EINTR, EAGAIN (the word changed) and
    // ETIMEDOUT are all "look again", which the caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &timeout as *const libc::timespec,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; waking touches no memory of ours.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

/// The sender's end of `shm`.
pub struct Sender {
    region: Region,
    /// Kept open so the peer's stdin does not end; idle after setup.
    _socket: OwnedFd,
    peer: Option<Peer>,
}

impl Sender {
    pub fn open(max_len: usize, check: Check, command: &PeerCommand) -> Result<Sender, IpcError> {
        let size = PAYLOAD_AT + max_len;
        let fd = nix::sys::memfd::memfd_create(
            c"lab-ipc-shm",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(|e| IpcError::Io {
            what: "memfd_create".into(),
            source: e.into(),
        })?;
        std::fs::File::from(fd.try_clone().map_err(io("dup"))?)
            .set_len(size as u64)
            .map_err(io("sizing the shared region"))?;
        let mut region = Region {
            map: Mapping::new(fd.as_fd(), size, true)?,
        };
        // SAFETY: no peer yet: the region is ours alone.
        unsafe { region.payload_mut() }.copy_from_slice(&payload(max_len));
        let (mine, theirs) = fdpass::pair()?;
        let peer = Peer::spawn(
            command,
            Transport::Shm,
            check,
            Stdio::from(theirs),
            Stdio::null(),
        )?;
        fdpass::send_fd(&mine, &fd, size as u64)?;
        Ok(Sender {
            region,
            _socket: mine,
            peer: Some(peer),
        })
    }
}

impl Link for Sender {
    fn exchange(&mut self, seq: u64, len: usize) -> Result<Ack, IpcError> {
        // SAFETY: it is our turn (the last exchange waited for it).
        stamp(unsafe { self.region.payload_mut() }, seq);
        let header = self.region.header();
        header.len.store(len as u64, Ordering::Relaxed);
        self.region.pass(PEER, &header.peer_sleeps);
        let peer = &mut self.peer;
        self.region.wait(&[SENDER], &header.sender_sleeps, || {
            peer.as_mut().map_or(Err(IpcError::HungUp), Peer::alive)
        })?;
        Ok(Ack {
            seq: header.ack_seq.load(Ordering::Relaxed),
            check: header.ack_check.load(Ordering::Relaxed),
        })
    }

    fn sent(&self, len: usize) -> &[u8] {
        // SAFETY: called between exchanges, on our turn.
        let payload = unsafe { self.region.payload() };
        &payload[..len]
    }

    fn close(mut self: Box<Self>) -> Result<(), IpcError> {
        let header = self.region.header();
        self.region.pass(STOP, &header.peer_sleeps);
        self.peer.take().map_or(Ok(()), Peer::finish)
    }
}

/// The peer's side: receives the region on `socket`, then answers every
/// message until told to stop. `parent_alive` is checked every [`NAP`].
pub fn serve(
    socket: OwnedFd,
    check: Check,
    mut parent_alive: impl FnMut() -> bool,
) -> Result<(), IpcError> {
    let (fd, size) = fdpass::recv_fd(&socket)?.ok_or(IpcError::HungUp)?;
    let size = usize::try_from(size).map_err(|_| IpcError::Bad("a huge region".into()))?;
    if size <= PAYLOAD_AT {
        return Err(IpcError::Bad(format!("a region of {size} bytes")));
    }
    let region = Region {
        map: Mapping::new(&fd, size, true)?,
    };
    let header = region.header();
    loop {
        let turn = region.wait(&[PEER, STOP], &header.peer_sleeps, || {
            if parent_alive() {
                Ok(())
            } else {
                Err(IpcError::HungUp)
            }
        })?;
        if turn == STOP {
            return Ok(());
        }
        let len = usize::try_from(header.len.load(Ordering::Relaxed))
            .ok()
            .filter(|&n| n <= region.capacity())
            .ok_or(IpcError::Bad("a length past the region".into()))?;
        // SAFETY: it is our turn: the sender waits until we pass it back.
        let ack = Ack::of(&unsafe { region.payload() }[..len], check);
        header.ack_seq.store(ack.seq, Ordering::Relaxed);
        header.ack_check.store(ack.check, Ordering::Relaxed);
        region.pass(SENDER, &header.sender_sleeps);
    }
}
