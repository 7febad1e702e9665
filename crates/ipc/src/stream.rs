//! Pipes and UNIX stream sockets: a byte stream each way, so every message
//! is framed, an 8-byte little-endian length and then its bytes. Both copy
//! the payload twice, into the kernel and out of it.
//!
//! - raw (`pipe-raw`, `unix-raw`): the frame is the payload; the receiver
//!   reads it into a buffer it reuses; the ack is its 16 bytes.
//! - serde (`pipe-serde`, `unix-serde`): the frame is a [`Message`]
//!   serialized with postcard, and so is the ack. The payload field is a
//!   plain `Vec<u8>`, as `#[derive(Serialize)]` code has it unless someone
//!   reaches for `serde_bytes`: serde then walks it byte by byte, and the
//!   receiver's decode allocates it anew. Both sides reuse their frame
//!   buffers, so what this adds over raw is the encoding and decoding.
//!
//! A pipe is one-way: the payload goes down one (the peer's stdin), the
//! ack comes back up another (its stdout). A socket pair carries both, the
//! peer's end as its stdin. Pipes keep Linux's default 64 KiB buffer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use serde::{Deserialize, Serialize};

use crate::process::Peer;
use crate::{Ack, Check, IpcError, Link, PeerCommand, Transport, io, payload, stamp};

/// The serde transports' message, as the sender serializes it (borrowing
/// the payload, as a sender would).
#[derive(Serialize)]
struct Message<'a> {
    payload: &'a [u8],
}

/// The same message as the receiver decodes it (owning the payload).
#[derive(Deserialize)]
struct Received {
    payload: Vec<u8>,
}

/// Writes one frame: `bytes`' length, then `bytes`.
fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)
}

/// Reads one frame into `buf` (resized to it); `false` at a clean end of
/// the stream, before a frame.
fn read_frame(input: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 8];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = usize::try_from(u64::from_le_bytes(len))
        .ok()
        .filter(|&n| n <= crate::MAX_BYTES * 2)
        .ok_or_else(|| std::io::Error::other("a frame longer than any payload"))?;
    buf.resize(len, 0);
    input.read_exact(buf)?;
    Ok(true)
}

/// The sender's end of a stream transport.
pub struct Sender<R, W> {
    reader: R,
    writer: W,
    serde: bool,
    buf: Vec<u8>,
    /// The serde frame, and the ack's frame, reused.
    frame: Vec<u8>,
    ack: Vec<u8>,
    peer: Option<Peer>,
}

fn is_serde(transport: Transport) -> bool {
    matches!(transport, Transport::PipeSerde | Transport::UnixSerde)
}

/// `pipe-raw` or `pipe-serde`: two pipes, the peer's stdin and stdout.
pub fn pipe(
    transport: Transport,
    max_len: usize,
    check: Check,
    command: &PeerCommand,
) -> Result<Sender<std::io::PipeReader, std::io::PipeWriter>, IpcError> {
    let (theirs_in, writer) = std::io::pipe().map_err(io("creating a pipe"))?;
    let (reader, theirs_out) = std::io::pipe().map_err(io("creating a pipe"))?;
    let peer = Peer::spawn(
        command,
        transport,
        check,
        Stdio::from(theirs_in),
        Stdio::from(theirs_out),
    )?;
    Ok(Sender::new(reader, writer, transport, max_len, peer))
}

/// `unix-raw` or `unix-serde`: a socket pair, the peer's end its stdin.
pub fn unix(
    transport: Transport,
    max_len: usize,
    check: Check,
    command: &PeerCommand,
) -> Result<Sender<UnixStream, UnixStream>, IpcError> {
    let (mine, theirs) = UnixStream::pair().map_err(io("creating a socket pair"))?;
    let reader = mine.try_clone().map_err(io("cloning a socket"))?;
    let theirs = std::os::fd::OwnedFd::from(theirs);
    let peer = Peer::spawn(
        command,
        transport,
        check,
        Stdio::from(theirs),
        Stdio::null(),
    )?;
    Ok(Sender::new(reader, mine, transport, max_len, peer))
}

impl<R: Read, W: Write> Sender<R, W> {
    fn new(reader: R, writer: W, transport: Transport, max_len: usize, peer: Peer) -> Self {
        Sender {
            reader,
            writer,
            serde: is_serde(transport),
            buf: payload(max_len),
            frame: Vec::new(),
            ack: Vec::new(),
            peer: Some(peer),
        }
    }
}

impl<R: Read, W: Write> Link for Sender<R, W> {
    fn exchange(&mut self, seq: u64, len: usize) -> Result<Ack, IpcError> {
        stamp(&mut self.buf, seq);
        let payload = &self.buf[..len];
        if self.serde {
            self.frame.clear();
            let frame = postcard::to_extend(&Message { payload }, std::mem::take(&mut self.frame))?;
            self.frame = frame;
            write_frame(&mut self.writer, &self.frame)
        } else {
            write_frame(&mut self.writer, payload)
        }
        .map_err(io("sending a message"))?;
        if !read_frame(&mut self.reader, &mut self.ack).map_err(io("reading an ack"))? {
            return Err(IpcError::HungUp);
        }
        if self.serde {
            Ok(postcard::from_bytes(&self.ack)?)
        } else {
            let bytes: [u8; 16] = self.ack[..]
                .try_into()
                .map_err(|_| IpcError::Bad(format!("an ack of {} bytes", self.ack.len())))?;
            Ok(Ack::from_bytes(bytes))
        }
    }

    fn sent(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    fn close(mut self: Box<Self>) -> Result<(), IpcError> {
        let peer = self.peer.take();
        // Dropping our ends is the peer's end of stream: it exits.
        drop(self);
        peer.map_or(Ok(()), Peer::finish)
    }
}

/// The peer's side: answers every frame on `input` on `output` until the
/// stream ends.
pub fn serve(
    mut input: impl Read,
    mut output: impl Write,
    serde: bool,
    check: Check,
) -> Result<(), IpcError> {
    let mut buf = Vec::new();
    let mut frame = Vec::new();
    while read_frame(&mut input, &mut buf).map_err(io("reading a message"))? {
        if serde {
            let received: Received = postcard::from_bytes(&buf)?;
            let ack = Ack::of(&received.payload, check);
            frame.clear();
            frame = postcard::to_extend(&ack, frame)?;
            write_frame(&mut output, &frame)
        } else {
            write_frame(&mut output, &Ack::of(&buf, check).to_bytes())
        }
        .map_err(io("sending an ack"))?;
    }
    Ok(())
}
