//! Clients that download slowly: many connections at once, each reading
//! its answer at no more than a fixed rate through a small receive buffer,
//! so that what the clients have not read yet has to wait somewhere on the
//! server's side. Where it waits (the server's memory, or the socket's
//! buffers in the kernel) is what `lab stream` measures.
//!
//! One thread per client: blocking reads paced with sleeps are the
//! simplest honest model of a slow reader, and a few hundred threads are
//! nothing to the harness.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// What the clients ask for and how slowly they read.
#[derive(Clone, Debug)]
pub struct SlowSpec {
    pub addr: SocketAddr,
    /// Path and query, e.g. `/stream?mb=4`.
    pub path: String,
    pub clients: usize,
    /// Bytes per second each client reads at most.
    pub rate: u64,
    /// Each client's socket receive buffer, bytes (the kernel may double
    /// it): small, so that the client side holds little.
    pub recv_buffer: usize,
    /// Gives up on a download after this long.
    pub timeout: Duration,
}

/// One client's download.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Download {
    /// From the request sent to the first byte of the body.
    pub first_byte_s: Option<f64>,
    /// From the request sent to the last byte.
    pub total_s: Option<f64>,
    /// Body bytes received.
    pub bytes: u64,
    /// The `content-length` the answer declared.
    pub declared: Option<u64>,
    /// Why it did not finish, if it did not.
    pub error: Option<String>,
}

/// Runs `spec.clients` downloads at once (they start together) and returns
/// each, in client order.
pub fn download_all(spec: &SlowSpec) -> Vec<Download> {
    let start = Arc::new(Barrier::new(spec.clients));
    let handles: Vec<_> = (0..spec.clients)
        .map(|_| {
            let (spec, start) = (spec.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                let mut download = Download::default();
                if let Err(error) = download_one(&spec, &start, &mut download) {
                    download.error = Some(error.to_string());
                }
                download
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| Download {
                error: Some("the client thread panicked".into()),
                ..Download::default()
            })
        })
        .collect()
}

fn download_one(spec: &SlowSpec, start: &Barrier, out: &mut Download) -> std::io::Result<()> {
    // The receive buffer is set before connecting: the window the kernel
    // offers the server is fixed at the handshake.
    let socket = Socket::new(Domain::for_address(spec.addr), Type::STREAM, None)?;
    socket.set_recv_buffer_size(spec.recv_buffer)?;
    socket.connect_timeout(&spec.addr.into(), spec.timeout)?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(spec.timeout))?;
    start.wait();
    let sent = Instant::now();
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        spec.path, spec.addr
    );
    stream.write_all(head.as_bytes())?;

    let chunk = 16 * 1024;
    let mut buf = vec![0u8; chunk];
    let mut header = Vec::new();
    let mut in_body = false;
    while sent.elapsed() < spec.timeout {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut body = &buf[..n];
        if !in_body {
            header.extend_from_slice(body);
            let Some(end) = header.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            out.declared = content_length(&header[..end]);
            in_body = true;
            let rest = header.len() - (end + 4);
            body = &buf[n - rest..n];
        }
        if !body.is_empty() && out.first_byte_s.is_none() {
            out.first_byte_s = Some(sent.elapsed().as_secs_f64());
        }
        out.bytes += body.len() as u64;
        // Pace: no faster than `rate` on average since the request.
        let due = Duration::from_secs_f64(out.bytes as f64 / spec.rate as f64);
        if let Some(wait) = due.checked_sub(sent.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    match out.declared {
        Some(declared) if declared == out.bytes => {
            out.total_s = Some(sent.elapsed().as_secs_f64());
            Ok(())
        }
        declared => Err(std::io::Error::other(format!(
            "got {} body bytes of {declared:?} in {:.1} s",
            out.bytes,
            sent.elapsed().as_secs_f64()
        ))),
    }
}

fn content_length(head: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn slow_clients_read_whole_answers_at_their_pace() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body = vec![b'x'; 200 * 1024];
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request).unwrap();
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                conn.write_all(head.as_bytes()).unwrap();
                conn.write_all(&body).unwrap();
            }
        });
        let spec = SlowSpec {
            addr,
            path: "/".into(),
            clients: 2,
            rate: 1024 * 1024,
            recv_buffer: 16 * 1024,
            timeout: Duration::from_secs(20),
        };
        let downloads = download_all(&spec);
        server.join().unwrap();
        for d in downloads {
            assert_eq!(d.error, None);
            assert_eq!((d.bytes, d.declared), (200 * 1024, Some(200 * 1024)));
            // 200 KiB at 1 MiB/s cannot take less than about 0.2 s.
            assert!(d.total_s.unwrap() >= 0.15, "{d:?}");
            assert!(d.first_byte_s.unwrap() <= d.total_s.unwrap());
        }
    }

    #[test]
    fn content_length_is_read_from_the_head() {
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\nContent-Length: 12"),
            Some(12)
        );
        assert_eq!(content_length(b"HTTP/1.1 200 OK"), None);
    }
}
