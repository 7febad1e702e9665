//! The peer is a thread of this process; the hand-off is a crossbeam
//! channel each way (capacity 1: one message in flight, as everywhere).
//! What differs is what crosses the channel:
//!
//! - [`Move`]: the `Vec<u8>` itself, moved there and back with the ack, so
//!   the payload is never copied or reallocated (a move is three words).
//! - [`Copy`]: a fresh `Vec<u8>` copy each message, which the receiver
//!   frees: what "a channel that copies" costs in Rust, the allocation
//!   included (above glibc's mmap threshold, 128 KiB by default, that is a
//!   fresh mapping whose pages fault in as the copy writes them).
//! - [`Shared`]: an `Arc<Vec<u8>>` clone; the receiver drops its clone
//!   *before* it acks, so the sender gets the buffer back to itself
//!   (`Arc::get_mut`) to stamp the next message, the borrow rule enforced
//!   at run time.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::{Ack, Check, IpcError, Link, io, payload, stamp};

/// A receiver thread answering each `(message, len)` with `answer`.
struct Peer<M, R> {
    to: Option<Sender<(M, usize)>>,
    back: Receiver<R>,
    thread: Option<JoinHandle<()>>,
}

impl<M: Send + 'static, R: Send + 'static> Peer<M, R> {
    fn spawn(check: Check, answer: fn(M, usize, Check) -> R) -> Result<Self, IpcError> {
        let (to, rx) = bounded::<(M, usize)>(1);
        let (tx, back) = bounded::<R>(1);
        let thread = std::thread::Builder::new()
            .name("ipc-peer".into())
            .spawn(move || {
                for (message, len) in rx {
                    if tx.send(answer(message, len, check)).is_err() {
                        return;
                    }
                }
            })
            .map_err(io("spawning the peer thread"))?;
        Ok(Peer {
            to: Some(to),
            back,
            thread: Some(thread),
        })
    }

    fn round_trip(&self, message: M, len: usize) -> Result<R, IpcError> {
        let to = self.to.as_ref().ok_or(IpcError::HungUp)?;
        to.send((message, len)).map_err(|_| IpcError::HungUp)?;
        self.back.recv().map_err(|_| IpcError::HungUp)
    }

    fn close(mut self) -> Result<(), IpcError> {
        // Closing the channel ends the thread's loop.
        self.to = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(IpcError::Bad("the peer thread panicked".into())),
            _ => Ok(()),
        }
    }
}

impl<M, R> Drop for Peer<M, R> {
    fn drop(&mut self) {
        self.to = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `thread-move`.
pub struct Move {
    /// `None` only while the buffer is with the peer.
    buf: Option<Vec<u8>>,
    peer: Peer<Vec<u8>, (Ack, Vec<u8>)>,
}

impl Move {
    pub fn open(max_len: usize, check: Check) -> Result<Move, IpcError> {
        Ok(Move {
            buf: Some(payload(max_len)),
            peer: Peer::spawn(check, |buf: Vec<u8>, len, check| {
                (Ack::of(&buf[..len], check), buf)
            })?,
        })
    }
}

impl Link for Move {
    fn exchange(&mut self, seq: u64, len: usize) -> Result<Ack, IpcError> {
        let mut buf = self.buf.take().ok_or(IpcError::HungUp)?;
        stamp(&mut buf, seq);
        let (ack, buf) = self.peer.round_trip(buf, len)?;
        self.buf = Some(buf);
        Ok(ack)
    }

    fn sent(&self, len: usize) -> &[u8] {
        self.buf.as_deref().map_or(&[], |b| &b[..len])
    }

    fn close(self: Box<Self>) -> Result<(), IpcError> {
        self.peer.close()
    }
}

/// `thread-copy`.
pub struct Copy {
    buf: Vec<u8>,
    peer: Peer<Vec<u8>, Ack>,
}

impl Copy {
    pub fn open(max_len: usize, check: Check) -> Result<Copy, IpcError> {
        Ok(Copy {
            buf: payload(max_len),
            // The copy is freed here, on the receiving thread.
            peer: Peer::spawn(check, |copy: Vec<u8>, _, check| Ack::of(&copy, check))?,
        })
    }
}

impl Link for Copy {
    fn exchange(&mut self, seq: u64, len: usize) -> Result<Ack, IpcError> {
        stamp(&mut self.buf, seq);
        self.peer.round_trip(self.buf[..len].to_vec(), len)
    }

    fn sent(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    fn close(self: Box<Self>) -> Result<(), IpcError> {
        self.peer.close()
    }
}

/// `thread-arc`.
pub struct Shared {
    buf: Arc<Vec<u8>>,
    peer: Peer<Arc<Vec<u8>>, Ack>,
}

impl Shared {
    pub fn open(max_len: usize, check: Check) -> Result<Shared, IpcError> {
        Ok(Shared {
            buf: Arc::new(payload(max_len)),
            // `shared` is dropped when this returns, before the ack is sent.
            peer: Peer::spawn(check, |shared: Arc<Vec<u8>>, len, check| {
                Ack::of(&shared[..len], check)
            })?,
        })
    }
}

impl Link for Shared {
    fn exchange(&mut self, seq: u64, len: usize) -> Result<Ack, IpcError> {
        let buf = Arc::get_mut(&mut self.buf)
            .ok_or_else(|| IpcError::Bad("the peer still holds the last payload".into()))?;
        stamp(buf, seq);
        self.peer.round_trip(Arc::clone(&self.buf), len)
    }

    fn sent(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    fn close(self: Box<Self>) -> Result<(), IpcError> {
        self.peer.close()
    }
}
