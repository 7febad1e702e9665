//! The harness's own small requests to a server during a crash run: the
//! `/stats` reads and the `POST /crash` that injects a fault. Plain
//! HTTP/1.1 over a `TcpStream` with `Connection: close` and timeouts, so a
//! hung or dead worker costs a timeout and never blocks the run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach {addr}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the connection closed without an answer")]
    NoAnswer,
    #[error("not an HTTP answer: {0}")]
    Garbled(String),
    #[error("/stats answered {status}")]
    Status { status: u16 },
    #[error("/stats is not the contract's JSON")]
    Json(#[source] serde_json::Error),
}

/// What a request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The `x-worker` header: which worker's loop answered.
    pub worker: Option<String>,
    pub body: String,
}

/// One request.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<Answer, ProbeError> {
    let io = |source| ProbeError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    // The server closes after the answer (Connection: close); a reset or a
    // timeout after some bytes still leaves what arrived.
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err(match read {
            Err(source) => io(source),
            Ok(_) => ProbeError::NoAnswer,
        });
    }
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| ProbeError::Garbled(text.lines().next().unwrap_or("").to_owned()))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let worker = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-worker")
            .then(|| value.trim().to_owned())
    });
    Ok(Answer {
        status,
        worker,
        body: body.to_owned(),
    })
}

/// The parts of `/stats` a crash run reads (the contract's, plus
/// threadpool's `main`, `queue` and `lost`).
#[derive(Deserialize, Clone, Debug, Default)]
pub struct Stats {
    pub workers: Vec<WorkerStats>,
    /// threadpool: the event loop's slot, which counts every request the
    /// process holds (running on a pool thread, queued, or on the loop).
    #[serde(default)]
    pub main: Option<MainStats>,
    #[serde(default)]
    pub queue: Option<QueueStats>,
    /// The worker slot whose loop answered this `/stats` (its `x-worker`),
    /// and so counts the `/stats` request itself as in flight.
    #[serde(skip)]
    pub answered_by: Option<usize>,
    #[serde(default)]
    pub lost: Vec<LostStats>,
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct WorkerStats {
    pub id: usize,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub in_flight: u64,
    #[serde(default)]
    pub restarts: u64,
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct MainStats {
    #[serde(default)]
    pub in_flight: u64,
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct QueueStats {
    #[serde(default)]
    pub depth: u64,
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct LostStats {
    pub slot: usize,
    pub tid: u32,
    #[serde(default)]
    pub cpu_ms: Option<u64>,
    #[serde(default)]
    pub lost_for_ms: u64,
}

impl Stats {
    /// Requests the server held when it answered this `/stats`, the
    /// `/stats` request itself not counted. prefork: the sum of the
    /// workers' `in_flight` (each worker counts every request its loop
    /// handles, `/stats` included). threadpool: the loop's own `in_flight`,
    /// which covers jobs running on pool threads and jobs queued for them
    /// (the pool threads' counters cover only the running ones).
    pub fn in_flight(&self) -> u64 {
        let total = match &self.main {
            Some(main) => main.in_flight,
            None => self.workers.iter().map(|w| w.in_flight).sum(),
        };
        total.saturating_sub(1)
    }

    /// Requests worker `slot` held, the `/stats` request not counted if
    /// that worker answered it.
    pub fn in_flight_on(&self, slot: usize) -> Option<u64> {
        let worker = self.workers.iter().find(|w| w.id == slot)?;
        let own = u64::from(self.answered_by == Some(slot));
        Some(worker.in_flight.saturating_sub(own))
    }

    pub fn restarts(&self) -> u64 {
        self.workers.iter().map(|w| w.restarts).sum()
    }
}

/// `GET /stats`, parsed.
pub fn stats(addr: SocketAddr, timeout: Duration) -> Result<Stats, ProbeError> {
    let answer = request(addr, "GET", "/stats", timeout)?;
    if answer.status != 200 {
        return Err(ProbeError::Status {
            status: answer.status,
        });
    }
    let mut stats: Stats = serde_json::from_str(&answer.body).map_err(ProbeError::Json)?;
    stats.answered_by = answer.worker.and_then(|id| id.parse().ok());
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_leaves_out_the_stats_request() {
        let prefork: Stats = serde_json::from_str(
            r#"{"model":"prefork","workers":[
                {"id":0,"pid":10,"state":"ready","in_flight":3,"restarts":0},
                {"id":1,"pid":11,"state":"ready","in_flight":2,"restarts":1}]}"#,
        )
        .unwrap();
        assert_eq!(prefork.in_flight(), 4);
        assert_eq!(prefork.restarts(), 1);
        // Per worker, the /stats request counts only where it was served.
        let answered_by_1 = Stats {
            answered_by: Some(1),
            ..prefork.clone()
        };
        assert_eq!(answered_by_1.in_flight_on(0), Some(3));
        assert_eq!(answered_by_1.in_flight_on(1), Some(1));
        assert_eq!(answered_by_1.in_flight_on(7), None);
        let threadpool: Stats = serde_json::from_str(
            r#"{"model":"threadpool","workers":[{"id":0,"pid":9,"state":"ready","in_flight":1,"restarts":0}],
                "main":{"in_flight":7},"queue":{"depth":5,"capacity":64,"rejected":0},
                "lost":[{"slot":0,"tid":12,"lost_for_ms":300,"cpu_ms":1200}]}"#,
        )
        .unwrap();
        assert_eq!(threadpool.in_flight(), 6);
        assert_eq!(threadpool.lost[0].cpu_ms, Some(1200));
    }

    #[test]
    fn nothing_listening_is_an_error_not_a_hang() {
        // Bind, learn the port, close: nothing listens there now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(stats(addr, Duration::from_millis(200)).is_err());
    }
}
