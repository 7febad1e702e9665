//! Idle connections, held: each opened, used for one request, then left
//! open, so that what a server spends per idle connection can be measured
//! (`lab conns`).
//!
//! One thread opens them one after another and keeps them in a `Vec`: an
//! idle connection costs the client a descriptor and nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Why the connections stopped growing.
#[derive(Debug, thiserror::Error)]
#[error("stopped at {held} connections: {source}")]
pub struct HoldError {
    pub held: usize,
    #[source]
    pub source: std::io::Error,
}

/// Raises this process's descriptor limit to its hard limit (children
/// started afterwards inherit it); returns the limit now in force.
pub fn raise_descriptor_limit() -> nix::Result<u64> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// Connections held open to one server.
#[derive(Debug, Default)]
pub struct Held {
    streams: Vec<TcpStream>,
}

impl Held {
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Opens connections to `addr` until `total` are held, each answered
    /// once on `GET path` before the next is opened. Stops at the first
    /// that fails, keeping those that worked.
    pub fn grow_to(
        &mut self,
        addr: SocketAddr,
        total: usize,
        path: &str,
        timeout: Duration,
    ) -> Result<(), HoldError> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        while self.streams.len() < total {
            let held = self.streams.len();
            let fail = |source| HoldError { held, source };
            let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
            stream.set_read_timeout(Some(timeout)).map_err(fail)?;
            stream.write_all(request.as_bytes()).map_err(fail)?;
            read_answer(&mut stream).map_err(fail)?;
            self.streams.push(stream);
        }
        Ok(())
    }

    /// Whether every held connection is still open: none has been closed
    /// by the server (an idle timeout would do that).
    pub fn all_open(&mut self) -> bool {
        self.streams.iter_mut().all(|stream| {
            let _ = stream.set_nonblocking(true);
            let mut byte = [0u8; 1];
            let open = matches!(stream.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            let _ = stream.set_nonblocking(false);
            open
        })
    }
}

/// Reads one answer with a `content-length` whole, and checks it is a 2xx.
fn read_answer(stream: &mut TcpStream) -> std::io::Result<()> {
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
    use std::net::TcpListener;

    #[test]
    fn connections_are_answered_once_then_held_open() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for _ in 0..3 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = [0u8; 256];
                let _ = conn.read(&mut request).unwrap();
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                    .unwrap();
                kept.push(conn);
            }
            kept
        });
        let mut held = Held::default();
        held.grow_to(addr, 3, "/", Duration::from_secs(5)).unwrap();
        let kept = server.join().unwrap();
        assert_eq!(held.len(), 3);
        assert!(held.all_open());
        drop(kept);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!held.all_open(), "the server closed them");
    }

    #[test]
    fn a_refused_connection_says_how_many_were_held() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let error = Held::default()
            .grow_to(addr, 2, "/", Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(error.held, 0);
    }
}
