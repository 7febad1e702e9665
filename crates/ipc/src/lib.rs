//! Moving a payload from one execution context to another, and timing it:
//! the transports `lab ipc` compares, and nothing about the lab.
//!
//! **A message** is one round trip, the same for every transport, Rust or
//! Node. The sender stamps the message's sequence number into the
//! payload's first 8 bytes and hands the payload over; the receiver
//! *touches* it and answers with a 16-byte [`Ack`]: the sequence number it
//! read from the payload, and the sum of the bytes it touched. The time of
//! a message runs from before the send to after the ack arrives. Touching
//! means reading the first byte of every 4 KiB page and the last byte
//! ([`Check::Pages`]): every page of the payload is reached, as any reader
//! of the data would reach it (so a mapping that copies nothing still pays
//! its page faults, and nothing can be optimised away), yet a path that
//! copies nothing is not charged for a full scan it does not need. The
//! tests use [`Check::Full`] instead, a hash of every byte, to prove that
//! the bytes arrive intact.
//!
//! The tour:
//!
//! - [`Transport`]: the thirteen ways, by name, in three [`Family`]s.
//! - [`Link`]: a sender's end with its peer on the other side, opened by
//!   [`open`]; [`time`] runs warm-up and measured messages over one.
//! - `threads`: the peer is a thread (a channel that moves a `Vec`, one
//!   that copies it, an `Arc`).
//! - `stream`: pipes and UNIX sockets, raw (length-prefixed) or serde
//!   with postcard; `shm`: a shared mapping with an atomic hand-off;
//!   `memfd`: a fresh memfd per message, passed with `SCM_RIGHTS`.
//!   Their peers are processes started by exec ([`PeerCommand`]), which
//!   run [`peer::serve`].
//! - [`node`]: Node's four ways, measured by `crates/node/js/ipc.js` in a
//!   `node` process with the same message definition.

mod fdpass;
mod map;
mod memfd;
pub mod node;
pub mod peer;
mod process;
mod shm;
mod stream;
mod threads;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The smallest payload: the sequence number is stamped into its first
/// 8 bytes.
pub const MIN_BYTES: usize = 8;

/// The largest payload `lab ipc` asks for, 16 MiB.
pub const MAX_BYTES: usize = 16 << 20;

/// The step of [`Check::Pages`]: the smallest page of Linux on x86-64 and
/// arm64 alike.
const PAGE: usize = 4096;

/// One way to move a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// A channel that moves a `Vec<u8>` to a thread and back: no copy.
    ThreadMove,
    /// A channel that carries a fresh copy of the payload each message.
    ThreadCopy,
    /// An `Arc` of the payload sent over a channel: shared, not copied.
    ThreadArc,
    /// A pipe to a process, the bytes length-prefixed.
    PipeRaw,
    /// A pipe to a process, the message serialized with serde (postcard).
    PipeSerde,
    /// A UNIX stream socket to a process, the bytes length-prefixed.
    UnixRaw,
    /// A UNIX stream socket to a process, serialized with serde (postcard).
    UnixSerde,
    /// A region both processes map, handed back and forth by an atomic.
    Shm,
    /// A fresh memfd per message, its descriptor passed with `SCM_RIGHTS`.
    Memfd,
    /// Node: `postMessage` of a `Uint8Array` to a worker thread (cloned).
    NodeClone,
    /// Node: `postMessage` transferring the `ArrayBuffer`, and back.
    NodeTransfer,
    /// Node: a `SharedArrayBuffer` handed over with `Atomics.wait/notify`.
    NodeSab,
    /// Node: `process.send` to a forked child (advanced serialization).
    NodeSend,
}

/// Where the peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// A thread of the harness.
    Threads,
    /// A process started by exec.
    Processes,
    /// Node: worker threads or a forked child of a `node` process.
    Node,
}

impl Transport {
    pub const ALL: [Transport; 13] = [
        Transport::ThreadMove,
        Transport::ThreadCopy,
        Transport::ThreadArc,
        Transport::PipeRaw,
        Transport::PipeSerde,
        Transport::UnixRaw,
        Transport::UnixSerde,
        Transport::Shm,
        Transport::Memfd,
        Transport::NodeClone,
        Transport::NodeTransfer,
        Transport::NodeSab,
        Transport::NodeSend,
    ];

    /// The name on the command line and in the records.
    pub fn name(self) -> &'static str {
        match self {
            Transport::ThreadMove => "thread-move",
            Transport::ThreadCopy => "thread-copy",
            Transport::ThreadArc => "thread-arc",
            Transport::PipeRaw => "pipe-raw",
            Transport::PipeSerde => "pipe-serde",
            Transport::UnixRaw => "unix-raw",
            Transport::UnixSerde => "unix-serde",
            Transport::Shm => "shm",
            Transport::Memfd => "memfd",
            Transport::NodeClone => "node-clone",
            Transport::NodeTransfer => "node-transfer",
            Transport::NodeSab => "node-sab",
            Transport::NodeSend => "node-send",
        }
    }

    pub fn parse(name: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn family(self) -> Family {
        match self {
            Transport::ThreadMove | Transport::ThreadCopy | Transport::ThreadArc => Family::Threads,
            Transport::NodeClone
            | Transport::NodeTransfer
            | Transport::NodeSab
            | Transport::NodeSend => Family::Node,
            _ => Family::Processes,
        }
    }

    /// How the payload travels, in a few words, with the copies it costs
    /// one way.
    pub fn describe(self) -> &'static str {
        match self {
            Transport::ThreadMove => "`Vec<u8>` moved through a channel and back (no copy)",
            Transport::ThreadCopy => {
                "a fresh `Vec<u8>` copy through a channel (1 copy, 1 allocation)"
            }
            Transport::ThreadArc => "`Arc<Vec<u8>>` cloned through a channel (no copy)",
            Transport::PipeRaw => "length-prefixed bytes through a pipe (2 copies)",
            Transport::PipeSerde => {
                "postcard-serialized struct through a pipe (2 copies + encode/decode)"
            }
            Transport::UnixRaw => "length-prefixed bytes through a UNIX socket (2 copies)",
            Transport::UnixSerde => {
                "postcard-serialized struct through a UNIX socket (2 copies + encode/decode)"
            }
            Transport::Shm => "a region both processes map, atomic turn + futex (no copy)",
            Transport::Memfd => {
                "bytes written into a fresh memfd, fd passed by SCM_RIGHTS, receiver maps it (1 copy)"
            }
            Transport::NodeClone => "postMessage(Uint8Array) to a worker: structured clone",
            Transport::NodeTransfer => "postMessage transferring the ArrayBuffer, and back",
            Transport::NodeSab => "SharedArrayBuffer, Atomics.notify/wait hand-off (no copy)",
            Transport::NodeSend => {
                "process.send to a child_process.fork child, serialization 'advanced'"
            }
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the receiver reads of each payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The first byte of every 4 KiB page and the last byte, summed: what
    /// `lab ipc` measures with (see the crate docs).
    Pages,
    /// FNV-1a over every byte: for tests that the bytes arrive intact.
    Full,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Pages => "pages",
            Check::Full => "full",
        }
    }

    pub fn parse(name: &str) -> Option<Check> {
        [Check::Pages, Check::Full]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// The receiver's summary of `payload`.
    pub fn of(self, payload: &[u8]) -> u64 {
        match self {
            Check::Pages => {
                let pages: u64 = payload.iter().step_by(PAGE).map(|&b| u64::from(b)).sum();
                pages + payload.last().map_or(0, |&b| u64::from(b))
            }
            Check::Full => payload.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
                (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            }),
        }
    }
}

/// The receiver's answer: the sequence number it found in the payload and
/// its [`Check`] of the payload. 16 bytes on the wire, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
    pub check: u64,
}

impl Ack {
    /// What the receiver of `payload` answers.
    pub fn of(payload: &[u8], check: Check) -> Ack {
        Ack {
            seq: seq_of(payload),
            check: check.of(payload),
        }
    }

    fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..].copy_from_slice(&self.check.to_le_bytes());
        out
    }

    fn from_bytes(bytes: [u8; 16]) -> Ack {
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        Ack {
            seq: word(0),
            check: word(8),
        }
    }
}

/// A payload of `len` bytes that differ from position to position
/// (xorshift), so a transport that shifts, drops or repeats bytes fails
/// [`Check::Full`].
pub fn payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes `seq` into the first 8 bytes of `payload`.
fn stamp(payload: &mut [u8], seq: u64) {
    payload[..8].copy_from_slice(&seq.to_le_bytes());
}

/// The sequence number in the first 8 bytes of `payload` (0 if shorter).
fn seq_of(payload: &[u8]) -> u64 {
    payload
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Why a transport failed.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("message {seq}: the peer answered {got:?}, expected {want:?}")]
    BadAck { seq: u64, got: Ack, want: Ack },
    #[error("the peer hung up")]
    HungUp,
    #[error("postcard")]
    Serde(#[from] postcard::Error),
    #[error("cannot start the peer `{program}`")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the peer exited with {0}")]
    PeerExit(std::process::ExitStatus),
    #[error("the peer did not exit within {0:?} of being told to")]
    PeerStuck(Duration),
    #[error("node: {0}")]
    Node(String),
    #[error("{0}")]
    Bad(String),
}

/// Wraps an I/O error with what was being done.
fn io(what: &str) -> impl FnOnce(std::io::Error) -> IpcError + '_ {
    move |source| IpcError::Io {
        what: what.to_owned(),
        source,
    }
}

/// How to start a process peer: `program args... TRANSPORT CHECK PARENT`,
/// where the program hands the last three to [`peer::serve`] (the `lab
/// ipc-peer` subcommand; this crate's `ipc-peer` test binary).
#[derive(Clone, Debug)]
pub struct PeerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// The sender's end of a transport, its peer waiting on the other side.
pub trait Link {
    /// Sends the first `len` bytes of the payload, stamped with `seq`, and
    /// waits for the peer's ack.
    fn exchange(&mut self, seq: u64, len: usize) -> Result<Ack, IpcError>;

    /// The payload as the last exchange sent it (for checking its ack once
    /// the clock has stopped).
    fn sent(&self, len: usize) -> &[u8];

    /// Stops the peer and waits for it: a thread joined, a process that
    /// must exit 0.
    fn close(self: Box<Self>) -> Result<(), IpcError>;
}

/// Opens `transport` for payloads of up to `max_len` bytes, its receiver
/// answering with `check`. Process transports start their peer with
/// `peer`; Node transports are not links (see [`node`]).
pub fn open(
    transport: Transport,
    max_len: usize,
    check: Check,
    peer: &PeerCommand,
) -> Result<Box<dyn Link>, IpcError> {
    if max_len < MIN_BYTES {
        return Err(IpcError::Bad(format!(
            "payloads must be at least {MIN_BYTES} bytes"
        )));
    }
    Ok(match transport {
        Transport::ThreadMove => Box::new(threads::Move::open(max_len, check)?),
        Transport::ThreadCopy => Box::new(threads::Copy::open(max_len, check)?),
        Transport::ThreadArc => Box::new(threads::Shared::open(max_len, check)?),
        Transport::PipeRaw | Transport::PipeSerde => {
            Box::new(stream::pipe(transport, max_len, check, peer)?)
        }
        Transport::UnixRaw | Transport::UnixSerde => {
            Box::new(stream::unix(transport, max_len, check, peer)?)
        }
        Transport::Shm => Box::new(shm::Sender::open(max_len, check, peer)?),
        Transport::Memfd => Box::new(memfd::Sender::open(max_len, check, peer)?),
        Transport::NodeClone
        | Transport::NodeTransfer
        | Transport::NodeSab
        | Transport::NodeSend => {
            return Err(IpcError::Bad(format!(
                "{transport} runs in node: use ipc::node::measure"
            )));
        }
    })
}

/// How many messages to send at one size: `warmup` untimed first, then
/// timed ones until `messages` are done or `duration` has passed (at least
/// one, so every size has a figure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    pub warmup: u32,
    pub messages: u32,
    pub duration: Duration,
}

/// Sends `bounds`' messages of `len` bytes over `link`, numbering them from
/// `*seq` on, and returns each timed one's round trip in nanoseconds.
/// Every ack is checked against the payload sent, after the clock stops.
pub fn time(
    link: &mut dyn Link,
    len: usize,
    check: Check,
    bounds: &Bounds,
    seq: &mut u64,
) -> Result<Vec<u64>, IpcError> {
    let mut one = |link: &mut dyn Link| -> Result<u64, IpcError> {
        *seq += 1;
        let start = Instant::now();
        let got = link.exchange(*seq, len)?;
        let took = start.elapsed();
        let want = Ack::of(link.sent(len), check);
        if got != want || want.seq != *seq {
            return Err(IpcError::BadAck {
                seq: *seq,
                got,
                want,
            });
        }
        Ok(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX))
    };
    let warm = Instant::now();
    for _ in 0..bounds.warmup {
        one(link)?;
        // A warm-up never takes more than a quarter of the time allowed.
        if warm.elapsed() > bounds.duration / 4 {
            break;
        }
    }
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.is_empty()
        || (samples.len() < bounds.messages as usize && start.elapsed() < bounds.duration)
    {
        samples.push(one(link)?);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for t in Transport::ALL {
            assert_eq!(Transport::parse(t.name()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.name())
            );
        }
        assert_eq!(Transport::parse("carrier-pigeon"), None);
    }

    #[test]
    fn the_page_check_reads_one_byte_a_page_and_the_last() {
        let mut bytes = vec![0u8; 3 * PAGE + 10];
        bytes[0] = 1;
        bytes[PAGE] = 2;
        bytes[2 * PAGE + 1] = 100; // not read
        bytes[3 * PAGE] = 3;
        *bytes.last_mut().unwrap() = 4;
        assert_eq!(Check::Pages.of(&bytes), 1 + 2 + 3 + 4);
        assert_eq!(Check::Pages.of(&[]), 0);
    }

    #[test]
    fn the_full_check_sees_a_moved_byte() {
        let a = payload(1000);
        let mut b = a.clone();
        b.swap(10, 11);
        assert_ne!(a[10], a[11]);
        assert_ne!(Check::Full.of(&a), Check::Full.of(&b));
    }

    #[test]
    fn acks_stamp_and_read_back() {
        let mut p = payload(64);
        stamp(&mut p, 42);
        let ack = Ack::of(&p, Check::Full);
        assert_eq!(ack.seq, 42);
        assert_eq!(Ack::from_bytes(ack.to_bytes()), ack);
    }
}
