//! `/stream` and `/buffer`: the same N MiB sent two ways, for the streams
//! vs buffers lesson.
//!
//! Both send N MiB in which every 64 KiB chunk is one letter, `a` to `z`,
//! cycling ([`byte_at`]), so a client can check any byte without the server
//! keeping anything. `/buffer` builds the whole body in memory, then sends
//! it: a slow client holds N MiB of the server's memory for as long as it
//! takes to read them. `/stream` makes each chunk only when hyper asks for
//! the next one, which it does only while its write buffer has room (up to
//! about 400 KiB, a few chunks) and the connection is taking what it
//! holds: that is backpressure, and a slow client holds that buffer plus
//! the socket's, not the whole body.

use std::convert::Infallible;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// `?mb=` accepts this range (MiB); it defaults to 1.
pub const MB_RANGE: RangeInclusive<u64> = 1..=64;
/// The unit both endpoints are made of.
pub const CHUNK: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;

/// The byte at `offset` of every download.
pub fn byte_at(offset: usize) -> u8 {
    letter(offset / CHUNK)
}

fn letter(chunk: usize) -> u8 {
    b'a' + (chunk % 26) as u8
}

/// `/buffer`'s body: all of it, in memory, before a byte is sent.
pub fn buffer(mb: usize) -> Bytes {
    let mut body = Vec::with_capacity(mb * MIB);
    for chunk in 0..mb * MIB / CHUNK {
        body.resize(body.len() + CHUNK, letter(chunk));
    }
    Bytes::from(body)
}

/// `/stream`'s body: each chunk made when hyper polls for it.
#[derive(Debug)]
pub struct Chunks {
    next: usize,
    count: usize,
}

impl Chunks {
    pub fn new(mb: usize) -> Chunks {
        Chunks {
            next: 0,
            count: mb * MIB / CHUNK,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.next == self.count {
            return Poll::Ready(None);
        }
        let chunk = Bytes::from(vec![letter(self.next); CHUNK]);
        self.next += 1;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.next == self.count
    }

    /// Exact, so hyper sends a `content-length` as `/buffer` does.
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(((self.count - self.next) * CHUNK) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn both_bodies_are_the_same_bytes() {
        let buffered = buffer(2);
        let streamed = Chunks::new(2).collect().await.unwrap().to_bytes();
        assert_eq!(buffered.len(), 2 * MIB);
        assert_eq!(streamed, buffered);
        for offset in [0, CHUNK - 1, CHUNK, 26 * CHUNK, 2 * MIB - 1] {
            assert_eq!(buffered[offset], byte_at(offset), "at {offset}");
        }
        assert_eq!(
            (byte_at(0), byte_at(CHUNK), byte_at(26 * CHUNK)),
            (b'a', b'b', b'a')
        );
    }

    #[test]
    fn a_stream_knows_its_length_and_counts_down() {
        let chunks = Chunks::new(1);
        assert_eq!(chunks.size_hint().exact(), Some(MIB as u64));
        assert!(!chunks.is_end_stream());
    }
}
