//! The harness's own small requests to a server: the `/stats` reads, the
//! `POST /crash` that injects a fault, the readiness check of a server
//! without a ready line. Plain
//! HTTP/1.1 over a `TcpStream` with `Connection: close` and timeouts, so a
//! hung or dead worker costs a timeout and never blocks the run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use service::contract::{ProcessStats, Stats};

use crate::procs::{Counters, Memory};

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

/// A `/stats` document (the contract's [`Stats`]) and which worker
/// answered it.
#[derive(Clone, Debug, Default)]
pub struct StatsRead {
    pub stats: Stats,
    /// The worker slot whose loop answered this `/stats` (its `x-worker`),
    /// and so counts the `/stats` request itself as in flight.
    pub answered_by: Option<usize>,
}

impl StatsRead {
    /// Requests worker `slot` held, the `/stats` request not counted if
    /// that worker answered it.
    pub fn in_flight_on(&self, slot: usize) -> Option<u64> {
        let worker = self.stats.workers.iter().find(|w| w.id == slot)?;
        let own = u64::from(self.answered_by == Some(slot));
        Some(worker.in_flight.saturating_sub(own))
    }
}

/// `GET /stats`, parsed as the contract says.
pub fn stats(addr: SocketAddr, timeout: Duration) -> Result<StatsRead, ProbeError> {
    let answer = request(addr, "GET", "/stats", timeout)?;
    if answer.status != 200 {
        return Err(ProbeError::Status {
            status: answer.status,
        });
    }
    let stats: Stats = serde_json::from_str(&answer.body).map_err(ProbeError::Json)?;
    Ok(StatsRead {
        stats,
        answered_by: answer.worker.and_then(|id| id.parse().ok()),
    })
}

/// A server's processes as its `/stats` lists them (`processes`): how the
/// harness measures a server whose `/proc` it cannot see (`lab run
/// --url`). USS and context switches are not reported, and stay 0 here:
/// a caller records them as not measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reported(pub Vec<ProcessStats>);

impl Reported {
    /// `Ok(None)` when the `/stats` document has no `processes`.
    pub fn read(addr: SocketAddr, timeout: Duration) -> Result<Option<Reported>, ProbeError> {
        Ok(stats(addr, timeout)?.stats.processes.map(Reported))
    }

    /// Summed over the processes.
    pub fn memory(&self) -> Memory {
        Memory {
            rss: self.0.iter().filter_map(|p| p.rss_bytes).sum(),
            pss: self.0.iter().filter_map(|p| p.pss_bytes).sum(),
            uss: 0,
        }
    }

    /// CPU time since each process started, summed: only a difference of
    /// two readings means something ([`Counters::since`]).
    pub fn counters(&self) -> Counters {
        Counters {
            user_s: self.0.iter().map(|p| p.cpu_user_s).sum(),
            system_s: self.0.iter().map(|p| p.cpu_system_s).sum(),
            ..Counters::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_worker_in_flight_leaves_out_the_stats_request_where_it_ran() {
        let stats: Stats = serde_json::from_str(
            r#"{"model":"prefork","pid":1,"uptime_ms":1,"workers":[
                {"id":0,"pid":10,"state":"ready","requests":5,"in_flight":3,"errors":0,"restarts":0},
                {"id":1,"pid":11,"state":"ready","requests":5,"in_flight":2,"errors":0,"restarts":1}]}"#,
        )
        .unwrap();
        let read = StatsRead {
            stats,
            answered_by: Some(1),
        };
        assert_eq!(read.in_flight_on(0), Some(3));
        assert_eq!(read.in_flight_on(1), Some(1));
        assert_eq!(read.in_flight_on(7), None);
    }

    #[test]
    fn reported_processes_sum_and_leave_out_what_is_missing() {
        let process = |pid, cpu: f64, pss| ProcessStats {
            pid,
            cpu_user_s: cpu,
            cpu_system_s: cpu / 2.0,
            pss_bytes: pss,
            rss_bytes: pss.map(|p| p * 2),
        };
        let before = Reported(vec![process(1, 1.0, Some(10)), process(2, 2.0, None)]);
        assert_eq!(before.memory().pss, 10);
        assert_eq!(before.memory().rss, 20);
        let after = Reported(vec![process(1, 1.5, Some(12)), process(2, 4.0, None)]);
        let spent = after.counters().since(before.counters());
        assert!((spent.user_s - 2.5).abs() < 1e-9, "{spent:?}");
        assert!((spent.system_s - 1.25).abs() < 1e-9, "{spent:?}");
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
