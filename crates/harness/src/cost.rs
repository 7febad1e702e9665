//! What a server spent on a load, per request, and what limited the load:
//! the figures every experiment that applies load reports, the same way.
//!
//! The measurement is [`crate::procs::counters`] of the server's process
//! group around the load (or, for a server elsewhere, its `/stats`); what
//! is here turns it into records, and is pure.

use serde::{Deserialize, Serialize};

use crate::cpus::Pinning;
use crate::loadgen::LoadSummary;
use crate::procs::Counters;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct CpuRecord {
    /// User + system seconds of the server's processes during the measured
    /// load.
    pub server_s: f64,
    pub server_user_s: f64,
    pub server_system_s: f64,
    /// Context switches of every thread of the server's processes during
    /// the measured load: voluntary (it waited) and involuntary (preempted).
    /// `null` when not measured (`--url`: a server's `/stats` has none).
    pub server_voluntary_switches: Option<u64>,
    pub server_involuntary_switches: Option<u64>,
    /// User + system seconds of the load generator process (whole run).
    pub loadgen_s: f64,
    /// Wall seconds of the measured load, to turn seconds into cores.
    pub wall_s: f64,
}

/// The server's cost per 2xx answer during the measured load.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct PerRequest {
    /// CPU microseconds (user + system), over every process and thread.
    pub cpu_us: f64,
    pub user_us: f64,
    pub system_us: f64,
    pub voluntary_switches: Option<f64>,
    pub involuntary_switches: Option<f64>,
}

/// What limited a cell.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BoundBy {
    /// More than 1% of the requests failed.
    Errors,
    /// The server refused work with 503: its queue was full.
    Queue,
    /// The server used nearly all the cores it can use.
    ServerCpu,
    /// The load generator used nearly all the cores it can use.
    Loadgen,
    /// Server and load generator together used nearly all the machine.
    SharedCores,
    /// The clients' concurrency: near Little's law for the wait.
    Concurrency,
    /// An open loop that got the rate it offered: the load, not the
    /// server, set the pace (by design).
    OfferedRate,
    /// Nothing measured was near its limit.
    None,
}

impl BoundBy {
    pub fn name(self) -> &'static str {
        match self {
            BoundBy::Errors => "errors",
            BoundBy::Queue => "queue",
            BoundBy::ServerCpu => "server cpu",
            BoundBy::Loadgen => "loadgen",
            BoundBy::SharedCores => "shared cores",
            BoundBy::Concurrency => "concurrency",
            BoundBy::OfferedRate => "offered rate",
            BoundBy::None => "-",
        }
    }

    /// Whether the cell's throughput says more about the machine and the
    /// load generator than about the server.
    pub fn not_the_server(self) -> bool {
        matches!(self, BoundBy::Loadgen | BoundBy::SharedCores)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Bound {
    pub by: BoundBy,
    /// The figures behind it, in words.
    pub evidence: String,
}

impl CpuRecord {
    /// The record of a load that lasted `wall_s`, in which the server's
    /// processes spent `server` and the load generator `loadgen_s`.
    /// `reported`: the counters came from the server's `/stats`, which has
    /// no context switches.
    pub fn new(server: Counters, reported: bool, loadgen_s: f64, wall_s: f64) -> CpuRecord {
        CpuRecord {
            server_s: server.user_s + server.system_s,
            server_user_s: server.user_s,
            server_system_s: server.system_s,
            server_voluntary_switches: (!reported).then_some(server.voluntary),
            server_involuntary_switches: (!reported).then_some(server.involuntary),
            loadgen_s,
            wall_s,
        }
    }
}

/// The server's cost per 2xx answer; none when nothing was answered.
pub fn per_request(cpu: &CpuRecord, ok: u64) -> Option<PerRequest> {
    if ok == 0 {
        return None;
    }
    let per = |total: f64| total / ok as f64;
    Some(PerRequest {
        cpu_us: per(cpu.server_s * 1e6),
        user_us: per(cpu.server_user_s * 1e6),
        system_us: per(cpu.server_system_s * 1e6),
        voluntary_switches: cpu.server_voluntary_switches.map(|n| per(n as f64)),
        involuntary_switches: cpu.server_involuntary_switches.map(|n| per(n as f64)),
    })
}

/// A resource counts as the limit at this share of what could be used.
pub const NEAR: f64 = 0.85;

/// Where a load ran, as far as the bound rule needs to know.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// The cores the server can use: min(its workers, the cores it may run
    /// on); 0 when unknown (a server elsewhere).
    pub usable_cores: f64,
    /// The cores the load generator may use.
    pub loadgen_cores: f64,
    /// The cores the server and the load generator share, when they do
    /// (`None`: pinned apart, or the server elsewhere).
    pub shared_cores: Option<f64>,
}

impl Limits {
    /// The limits of a server with `workers` workers (1 for a kind without
    /// workers) on a machine of `machine_cores`, pinned apart from the load
    /// generator or not.
    pub fn new(workers: usize, machine_cores: usize, pinning: Option<&Pinning>) -> Limits {
        let cores = pinning.map_or(machine_cores, |p| p.server.len());
        Limits {
            usable_cores: workers.min(cores) as f64,
            loadgen_cores: pinning.map_or(machine_cores, |p| p.loadgen.len()) as f64,
            shared_cores: pinning.is_none().then_some(cores as f64),
        }
    }
}

/// What limited a load, checked in order: failures first (they make
/// every other figure moot), then an open loop that got its rate, the
/// server's cores, the load generator's, the two together (when they
/// share them), and the clients' concurrency (`little`: where Little's
/// law applies, the share of it reached and for how many connections).
pub fn bound(
    summary: &LoadSummary,
    cpu: &CpuRecord,
    limits: &Limits,
    offered_rps: Option<f64>,
    little: Option<(f64, u32)>,
) -> Bound {
    let found = |by, evidence: String| Bound { by, evidence };
    let answered = summary.ok + summary.non_2xx + summary.client_errors();
    let failed = summary.non_2xx + summary.client_errors();
    let refused = summary.status_codes.get("503").copied().unwrap_or(0);
    if refused > 0 {
        return found(BoundBy::Queue, format!("{refused} answers were 503"));
    }
    if answered > 0 && failed as f64 > 0.01 * answered as f64 {
        return found(
            BoundBy::Errors,
            format!("{failed} of {answered} requests failed"),
        );
    }
    if let Some(offered) = offered_rps
        && summary.rps >= NEAR * offered
    {
        return found(
            BoundBy::OfferedRate,
            format!("{:.0} of the {offered:.0} req/s offered", summary.rps),
        );
    }
    if cpu.wall_s <= 0.0 {
        return found(BoundBy::None, "no load time measured".into());
    }
    let usable = limits.usable_cores;
    let loadgen_cores = limits.loadgen_cores;
    let server = cpu.server_s / cpu.wall_s;
    let loadgen = cpu.loadgen_s / cpu.wall_s;
    if usable > 0.0 && server >= NEAR * usable {
        return found(
            BoundBy::ServerCpu,
            format!("server {server:.2} of {usable:.0} usable cores"),
        );
    }
    if loadgen >= NEAR * loadgen_cores {
        return found(
            BoundBy::Loadgen,
            format!("load generator {loadgen:.2} of {loadgen_cores:.0} cores"),
        );
    }
    if let Some(cores) = limits.shared_cores
        && server + loadgen >= NEAR * cores
    {
        return found(
            BoundBy::SharedCores,
            format!("server {server:.2} + load generator {loadgen:.2} of {cores:.0} cores"),
        );
    }
    if let Some((share, concurrency)) = little.filter(|&(share, _)| share >= NEAR) {
        return found(
            BoundBy::Concurrency,
            format!(
                "{:.0}% of Little's law for {concurrency} connections",
                share * 100.0
            ),
        );
    }
    let server = if usable > 0.0 {
        format!("server {server:.2} of {usable:.0} usable cores")
    } else {
        format!("server {server:.2} cores of a machine not measured")
    };
    found(
        BoundBy::None,
        format!("{server}, load generator {loadgen:.2}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(server_s: f64, loadgen_s: f64) -> CpuRecord {
        CpuRecord::new(
            Counters {
                user_s: server_s,
                voluntary: 30,
                ..Counters::default()
            },
            false,
            loadgen_s,
            1.0,
        )
    }

    fn summary(rps: f64) -> LoadSummary {
        LoadSummary {
            ok: rps as u64,
            rps,
            ..LoadSummary::default()
        }
    }

    #[test]
    fn per_request_divides_by_the_answers_and_has_none_without_them() {
        let per = per_request(&cpu(0.5, 0.1), 1000).unwrap();
        assert!((per.cpu_us - 500.0).abs() < 1e-9);
        assert_eq!(per.voluntary_switches, Some(0.03));
        assert!(per_request(&cpu(0.5, 0.1), 0).is_none());
    }

    #[test]
    fn sharing_cores_is_a_bound_only_when_they_are_shared() {
        let apart = Limits::new(2, 2, Some(&Pinning::split(&[0, 1]).unwrap()));
        assert_eq!((apart.usable_cores, apart.shared_cores), (1.0, None));
        let shared = Limits::new(4, 2, None);
        assert_eq!((shared.usable_cores, shared.shared_cores), (2.0, Some(2.0)));
        // 1.0 + 0.8 of 2 shared cores; the server alone is under 85% of 2.
        let load = summary(1000.0);
        let by = |limits| bound(&load, &cpu(1.0, 0.8), &limits, None, None).by;
        assert_eq!(by(shared), BoundBy::SharedCores);
        assert_eq!(by(apart), BoundBy::ServerCpu, "pinned: 1 usable core, used");
        // An open loop that got its rate was bound by it, whatever else.
        assert_eq!(
            bound(&load, &cpu(1.9, 0.1), &shared, Some(1000.0), None).by,
            BoundBy::OfferedRate
        );
    }
}
