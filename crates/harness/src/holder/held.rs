//! The connections one holder process keeps: each opened from its source
//! address, used for one request, then left open in a `Vec`. An idle
//! connection costs the client a descriptor and nothing else, so one
//! thread opening them one after another is all it takes.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use socket2::{Domain, Protocol, Socket, Type};

use super::plan::Share;

/// Connections held open to one server, by source address.
#[derive(Debug, Default)]
pub struct Held {
    streams: Vec<TcpStream>,
    /// How many of `streams` came from each source, in the order opened.
    from: Vec<(IpAddr, usize)>,
}

/// Why one connection could not be opened and used.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {source}")]
pub struct OpenError {
    pub stage: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl Held {
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Opens connections to `server` until every source of `share` has
    /// its count, each answered once on `GET path` before the next is
    /// opened; calls `progress` with the count held every `every`
    /// connections. Stops at the first that fails, keeping those that
    /// worked. `share` must extend what is held already (see
    /// [`super::plan`]).
    pub fn grow_to(
        &mut self,
        server: SocketAddr,
        share: &Share,
        path: &str,
        timeout: Duration,
        every: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<(), OpenError> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\n\r\n");
        for (i, &(source, count)) in share.sources.iter().enumerate() {
            if self.from.len() <= i {
                self.from.push((source, 0));
            }
            if self.from[i].0 != source {
                return Err(OpenError {
                    stage: "plan",
                    source: std::io::Error::other(format!(
                        "source {i} is {} here, {source} in the share",
                        self.from[i].0
                    )),
                });
            }
            while self.from[i].1 < count {
                let stream = open(source, server, timeout)?;
                use_once(&stream, request.as_bytes(), timeout)?;
                self.streams.push(stream);
                self.from[i].1 += 1;
                if self.streams.len().is_multiple_of(every.max(1)) {
                    progress(self.streams.len());
                }
            }
        }
        Ok(())
    }

    /// Whether every held connection is still open: none has been closed
    /// by the server (an idle timeout would do that).
    pub fn all_open(&mut self) -> bool {
        self.streams.iter_mut().all(|stream| {
            let _ = stream.set_nonblocking(true);
            let mut byte = [0u8; 1];
            let open =
                matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
            let _ = stream.set_nonblocking(false);
            open
        })
    }
}

/// A connection to `server` from `source`. `IP_BIND_ADDRESS_NO_PORT`
/// makes `bind` take the address only and leave the port to `connect`,
/// which can then reuse a port that is free for this 4-tuple: without it,
/// `bind` would reserve a port for the address alone. The unspecified
/// address is not bound at all.
fn open(source: IpAddr, server: SocketAddr, timeout: Duration) -> Result<TcpStream, OpenError> {
    let fail = |stage| move |source| OpenError { stage, source };
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(fail("socket"))?;
    if !source.is_unspecified() {
        setsockopt(&socket, IpBindAddressNoPort, &true)
            .map_err(std::io::Error::from)
            .map_err(fail("IP_BIND_ADDRESS_NO_PORT"))?;
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(fail("bind to the source address"))?;
    }
    socket
        .connect_timeout(&server.into(), timeout)
        .map_err(fail("connect"))?;
    Ok(socket.into())
}

/// One request on `stream`, its answer read whole.
fn use_once(mut stream: &TcpStream, request: &[u8], timeout: Duration) -> Result<(), OpenError> {
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|source| OpenError {
            stage: "set a read timeout",
            source,
        })?;
    stream.write_all(request).map_err(|source| OpenError {
        stage: "send the request",
        source,
    })?;
    read_answer(stream).map_err(|source| OpenError {
        stage: if matches!(source.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            // A server out of descriptors leaves the connection in its
            // listen queue: accepted by the kernel, never answered.
            "no answer in time"
        } else {
            "read the answer"
        },
        source,
    })
}

/// Reads one answer with a `content-length` whole, and checks it is a 2xx.
fn read_answer(mut stream: &TcpStream) -> std::io::Result<()> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before a whole answer"));
        }
        answer.extend_from_slice(&buf[..n]);
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&answer[..end]).to_string();
        if !head.starts_with("HTTP/1.1 2") {
            return Err(std::io::Error::other(format!(
                "answered {}",
                head.lines().next().unwrap_or("")
            )));
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        if answer.len() >= end + 4 + length {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    fn share(sources: &[(u8, usize)]) -> Share {
        Share {
            sources: sources
                .iter()
                .map(|&(last, n)| (IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), n))
                .collect(),
        }
    }

    #[test]
    fn connections_come_from_their_sources_are_answered_once_then_held_open() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for _ in 0..3 {
                let (mut conn, peer) = listener.accept().unwrap();
                let mut request = [0u8; 256];
                let _ = conn.read(&mut request).unwrap();
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                    .unwrap();
                kept.push((conn, peer.ip()));
            }
            kept
        });
        let mut held = Held::default();
        let mut seen = Vec::new();
        held.grow_to(
            addr,
            &share(&[(2, 2), (3, 1)]),
            "/",
            Duration::from_secs(5),
            1,
            |n| seen.push(n),
        )
        .unwrap();
        let kept = server.join().unwrap();
        assert_eq!((held.len(), seen), (3, vec![1, 2, 3]));
        let peers: Vec<String> = kept.iter().map(|(_, ip)| ip.to_string()).collect();
        assert_eq!(peers, ["127.0.0.2", "127.0.0.2", "127.0.0.3"]);
        assert!(held.all_open());
        drop(kept);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!held.all_open(), "the server closed them");
    }

    #[test]
    fn a_share_that_does_not_extend_what_is_held_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = conn.read(&mut [0u8; 256]).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            conn
        });
        let mut held = Held::default();
        let timeout = Duration::from_secs(5);
        held.grow_to(addr, &share(&[(2, 1)]), "/", timeout, 1, |_| {})
            .unwrap();
        let _kept = server.join().unwrap();
        let error = held
            .grow_to(addr, &share(&[(3, 2)]), "/", timeout, 1, |_| {})
            .unwrap_err();
        assert_eq!((error.stage, held.len()), ("plan", 1));
    }

    #[test]
    fn a_refused_connection_says_where_it_failed() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let error = Held::default()
            .grow_to(
                addr,
                &share(&[(2, 2)]),
                "/",
                Duration::from_secs(1),
                1,
                |_| {},
            )
            .unwrap_err();
        assert_eq!(error.stage, "connect");
    }

    #[test]
    fn a_server_that_never_answers_is_named_as_such() {
        // Accepted by the kernel (the listen queue), never read.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let error = Held::default()
            .grow_to(
                addr,
                &share(&[(2, 1)]),
                "/",
                Duration::from_millis(200),
                1,
                |_| {},
            )
            .unwrap_err();
        assert_eq!(error.stage, "no answer in time");
        drop(listener);
    }
}
