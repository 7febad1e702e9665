//! Where each held connection comes from: which holder process, and which
//! source address. Pure arithmetic over the machine's limits, tested here.
//!
//! Two limits decide it. A process can hold as many connections as it has
//! descriptors, so past that the connections are spread over several
//! holder processes. And a connection to one server is one 4-tuple (source
//! address, source port, server address, server port): with the server's
//! address and port fixed, one source address can have at most as many
//! connections as the ephemeral port range has ports (28,232 with Linux's
//! default 32768–60999), and in practice half of them ([`usable_ports`]). Every address in 127.0.0.0/8 is the loopback
//! interface, so more source addresses (127.0.0.2, 127.0.0.3, ...) give
//! more 4-tuples to the same server.
//!
//! Both are filled one after another: the first holder up to its cap, then
//! the next; the first source address up to its cap, then the next. So the
//! plan for a larger count extends the plan for a smaller one (every
//! holder keeps what it had and only the last ones grow), which is what
//! lets the connections of one step stay held into the next.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The first source address the held connections use. 127.0.0.1 is left
/// to everything else on the machine that talks to the server (the light
/// stream, the harness's own probes), so its ports are not used up.
pub const FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// How many connections a holder or a source address may take.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub per_holder: usize,
    pub per_source: usize,
}

/// One holder process's share: how many connections it holds from each of
/// its source addresses, in the order it opens them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Share {
    pub sources: Vec<(IpAddr, usize)>,
}

impl Share {
    pub fn total(&self) -> usize {
        self.sources.iter().map(|(_, n)| n).sum()
    }

    /// The first `held` connections of this share: what a holder that
    /// stopped short really holds.
    pub fn truncated(&self, held: usize) -> Share {
        let mut left = held;
        let sources = self
            .sources
            .iter()
            .map_while(|&(address, n)| {
                let take = n.min(left);
                left -= take;
                (take > 0).then_some((address, take))
            })
            .collect();
        Share { sources }
    }
}

/// Why connections cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("a cap of 0 connections per holder or per source address")]
    ZeroCap,
    #[error(
        "{needed} source addresses are needed, and only a loopback IPv4 server can be reached \
         from more than one (the server is at {server})"
    )]
    NotLoopback { server: SocketAddr, needed: usize },
    #[error("{needed} source addresses are needed, more than 127.0.0.0/8 has")]
    OutOfAddresses { needed: usize },
}

/// The ports one source address can use for connections to one server,
/// out of the ephemeral range `(low, high)`, inclusive: half of it, less
/// an eighth of that half. Half, because Linux's `connect` takes ports of
/// one parity first (even ones; `bind` takes the odd, since Linux 4.6)
/// and only past those searches the rest, port by port: measured on this
/// lab's machine, a connection from one address took about 0.1 ms up to
/// 14,000 held and 2 to 5 ms past that. Less an eighth, because other
/// connections may take ports from the same half (another client of the
/// same server from the same address, ports reserved in
/// `ip_local_reserved_ports`). Addresses are plentiful; ports are not.
pub fn usable_ports((low, high): (u16, u16)) -> usize {
    let half = (usize::from(high.saturating_sub(low)) + 1).div_ceil(2);
    half - half / 8
}

/// The machine's ephemeral port range.
pub fn port_range() -> std::io::Result<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    let mut words = text.split_whitespace().map(str::parse::<u16>);
    match (words.next(), words.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Ok((low, high)),
        _ => Err(std::io::Error::other(format!(
            "ip_local_port_range reads {text:?}"
        ))),
    }
}

/// The `index`-th source address for connections to `server`:
/// 127.0.0.2 upwards for a loopback IPv4 server. Any other server gets
/// one source, the unspecified address: the kernel chooses, as a plain
/// `connect` would.
pub fn source(server: SocketAddr, index: usize) -> Result<IpAddr, PlanError> {
    let needed = index + 1;
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let first = u32::from(FIRST_SOURCE);
            let last = u32::from(Ipv4Addr::new(127, 255, 255, 254));
            u32::try_from(index)
                .ok()
                .and_then(|i| first.checked_add(i))
                .filter(|&a| a <= last)
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .ok_or(PlanError::OutOfAddresses { needed })
        }
        ip if index == 0 => Ok(match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        }),
        _ => Err(PlanError::NotLoopback { server, needed }),
    }
}

/// The shares of `total` connections to `server`: holders and source
/// addresses each filled up to their cap before the next is used.
pub fn shares(total: usize, caps: Caps, server: SocketAddr) -> Result<Vec<Share>, PlanError> {
    if caps.per_holder == 0 || caps.per_source == 0 {
        return Err(PlanError::ZeroCap);
    }
    let mut shares = Vec::new();
    let mut share = Share::default();
    let (mut source_index, mut source_left) = (0, caps.per_source);
    let mut holder_left = caps.per_holder;
    let mut left = total;
    while left > 0 {
        let take = left.min(holder_left).min(source_left);
        let address = source(server, source_index)?;
        match share.sources.last_mut() {
            Some((last, n)) if *last == address => *n += take,
            _ => share.sources.push((address, take)),
        }
        left -= take;
        holder_left -= take;
        source_left -= take;
        if holder_left == 0 {
            shares.push(std::mem::take(&mut share));
            holder_left = caps.per_holder;
        }
        if source_left == 0 {
            source_index += 1;
            source_left = caps.per_source;
        }
    }
    if !share.sources.is_empty() {
        shares.push(share);
    }
    Ok(shares)
}

/// How many distinct source addresses `shares` use.
pub fn sources_used(shares: &[Share]) -> usize {
    let mut all: Vec<IpAddr> = shares
        .iter()
        .flat_map(|s| s.sources.iter().map(|(a, _)| *a))
        .collect();
    all.sort_unstable();
    all.dedup();
    all.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8080);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn a_source_uses_half_the_ports_less_an_eighth() {
        assert_eq!(usable_ports((32768, 60999)), 14116 - 1764);
        assert_eq!(usable_ports((1000, 1000)), 1);
    }

    #[test]
    fn holders_and_sources_fill_one_after_another() {
        let caps = Caps {
            per_holder: 5,
            per_source: 3,
        };
        let plan = shares(12, caps, SERVER).unwrap();
        let sources: Vec<Vec<(IpAddr, usize)>> = plan.iter().map(|s| s.sources.clone()).collect();
        assert_eq!(
            sources,
            [
                vec![(ip(2), 3), (ip(3), 2)],
                vec![(ip(3), 1), (ip(4), 3), (ip(5), 1)],
                vec![(ip(5), 2)],
            ]
        );
        assert_eq!(plan.iter().map(Share::total).sum::<usize>(), 12);
        assert_eq!(sources_used(&plan), 4);
    }

    #[test]
    fn a_share_cut_short_keeps_its_first_connections() {
        let share = Share {
            sources: vec![(ip(2), 3), (ip(3), 3), (ip(4), 3)],
        };
        assert_eq!(share.truncated(4).sources, [(ip(2), 3), (ip(3), 1)]);
        assert_eq!(share.truncated(3).sources, [(ip(2), 3)]);
        assert_eq!(share.truncated(0), Share::default());
        assert_eq!(share.truncated(100), share);
    }

    #[test]
    fn a_larger_plan_extends_a_smaller_one() {
        let caps = Caps {
            per_holder: 7,
            per_source: 4,
        };
        let small = shares(9, caps, SERVER).unwrap();
        let large = shares(30, caps, SERVER).unwrap();
        for (before, after) in small.iter().zip(&large) {
            for (i, (address, n)) in before.sources.iter().enumerate() {
                assert_eq!(after.sources[i].0, *address);
                assert!(after.sources[i].1 >= *n);
            }
        }
    }

    #[test]
    fn one_holder_and_one_source_when_the_caps_allow() {
        let caps = Caps {
            per_holder: 100_000,
            per_source: 12_352,
        };
        let plan = shares(10_000, caps, SERVER).unwrap();
        assert_eq!(
            plan,
            [Share {
                sources: vec![(ip(2), 10_000)]
            }]
        );
        let big = shares(100_000, caps, SERVER).unwrap();
        assert_eq!((big.len(), sources_used(&big)), (1, 9));
        assert!(shares(0, caps, SERVER).unwrap().is_empty());
    }

    #[test]
    fn a_server_off_loopback_gets_one_source_chosen_by_the_kernel() {
        let remote: SocketAddr = "192.0.2.7:80".parse().unwrap();
        let caps = Caps {
            per_holder: 10,
            per_source: 10,
        };
        assert_eq!(
            shares(10, caps, remote).unwrap()[0].sources,
            [(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10)]
        );
        assert_eq!(
            shares(11, caps, remote),
            Err(PlanError::NotLoopback {
                server: remote,
                needed: 2
            })
        );
        assert_eq!(
            source(SERVER, 1 << 24),
            Err(PlanError::OutOfAddresses {
                needed: (1 << 24) + 1
            })
        );
        let zero = Caps {
            per_holder: 0,
            per_source: 1,
        };
        assert_eq!(shares(1, zero, SERVER), Err(PlanError::ZeroCap));
    }
}
