//! `lab ipc`'s command line, and its conversion into [`Settings`]; and
//! the hidden `lab ipc-peer`, the process peer's own three arguments.

use std::time::Duration;

use clap::Args;
use ipc::{Bounds, Check, Transport};

use super::Settings;
use crate::args::{OutputArgs, dedup, parse_duration};

/// `lab ipc`'s flags. With none: every transport at every size from 64 B
/// to 16 MiB (powers of 4), up to 2000 messages or 1 s per size; about
/// a minute on 2 cores (the slow ones, serde and copies of 16 MiB, stop at
/// the time bound). The Node transports need `node` on PATH and are
/// skipped with one line without it.
#[derive(Args, Debug, Clone)]
pub struct IpcArgs {
    /// The short version: 64 B, 4 KiB, 256 KiB and 16 MiB, up to 300
    /// messages or 200 ms per size; about ten seconds.
    #[arg(long)]
    pub quick: bool,

    /// Transports [default: all]: thread-move, thread-copy, thread-arc,
    /// pipe-raw, pipe-serde, unix-raw, unix-serde, shm, memfd,
    /// node-clone, node-transfer, node-sab, node-send.
    #[arg(long, value_delimiter = ',', value_name = "NAME,..", value_parser = parse_transport)]
    pub transports: Vec<Transport>,

    /// Payload sizes, in bytes or with a K or M suffix (KiB, MiB), 8 B to
    /// 16 MiB [default: 64 B to 16 MiB in powers of 4; quick: 64,4K,256K,16M].
    #[arg(long, value_delimiter = ',', value_name = "SIZE,..", value_parser = parse_size)]
    pub sizes: Vec<usize>,

    /// At most this many timed messages per transport and size [default:
    /// 2000; quick: 300].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub messages: Option<u32>,

    /// At most this long timing one transport at one size (at least one
    /// message is always timed) [default: 1s; quick: 200ms].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Untimed messages first, per transport and size, taking at most a
    /// quarter of --duration [default: 50; quick: 10].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub warmup: Option<u32>,

    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_transport(text: &str) -> Result<Transport, String> {
    Transport::parse(text).ok_or_else(|| {
        let names: Vec<&str> = Transport::ALL.iter().map(|t| t.name()).collect();
        format!("`{text}` is not a transport ({})", names.join(", "))
    })
}

/// `64`, `4K`, `4KiB`, `16M`: bytes, KiB or MiB, between the smallest and
/// the largest payload.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let scale = match unit {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        _ => return Err(format!("`{text}` is not a size (try 64, 4K or 16M)")),
    };
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{text}` is not a size (try 64, 4K or 16M)"))?;
    if !(ipc::MIN_BYTES..=ipc::MAX_BYTES).contains(&bytes) {
        return Err(format!(
            "`{text}` is out of range ({} B to {} MiB)",
            ipc::MIN_BYTES,
            ipc::MAX_BYTES >> 20
        ));
    }
    Ok(bytes)
}

/// 64 B to 16 MiB, in powers of 4: the sizes.
pub fn default_sizes() -> Vec<usize> {
    (0..10).map(|k| 64usize << (2 * k)).collect()
}

impl IpcArgs {
    /// The settings, the profile filling every flag left out.
    pub fn settings(&self) -> Result<Settings, String> {
        let sizes = if !self.sizes.is_empty() {
            let mut sizes = dedup(&self.sizes);
            sizes.sort_unstable();
            sizes
        } else if self.quick {
            vec![64, 4 << 10, 256 << 10, 16 << 20]
        } else {
            default_sizes()
        };
        let transports = if self.transports.is_empty() {
            Transport::ALL.to_vec()
        } else {
            dedup(&self.transports)
        };
        let pick = |given: Option<u32>, full: u32, quick: u32| {
            given.unwrap_or(if self.quick { quick } else { full })
        };
        let duration = self.duration.unwrap_or(if self.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        });
        if duration < Duration::from_millis(1) {
            return Err("--duration must be at least 1ms".into());
        }
        Ok(Settings {
            quick: self.quick,
            transports,
            sizes,
            bounds: Bounds {
                warmup: pick(self.warmup, 50, 10),
                messages: pick(self.messages, 2000, 300),
                duration,
            },
        })
    }
}

/// `lab ipc-peer TRANSPORT CHECK PARENT_PID`: the receiving end of a
/// process transport, which `lab ipc` starts by exec. Its transport is on
/// its stdin (and stdout, for pipes).
#[derive(Args, Debug, Clone)]
pub struct IpcPeerArgs {
    #[arg(value_parser = parse_transport)]
    pub transport: Transport,
    #[arg(value_parser = parse_check)]
    pub check: Check,
    /// The pid of the `lab ipc` that started it.
    pub parent: u32,
}

fn parse_check(text: &str) -> Result<Check, String> {
    Check::parse(text).ok_or_else(|| format!("`{text}` is not pages or full"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: IpcArgs,
    }

    fn settings(line: &[&str]) -> Result<Settings, String> {
        Line::try_parse_from(["ipc"].iter().chain(line).copied())
            .map_err(|e| e.to_string())?
            .args
            .settings()
    }

    #[test]
    fn the_sizes_are_powers_of_four_from_64_bytes_to_16_mib() {
        let all = settings(&[]).unwrap();
        assert_eq!(all.sizes.first(), Some(&64));
        assert_eq!(all.sizes.last(), Some(&(16 << 20)));
        assert!(all.sizes.windows(2).all(|w| w[1] == 4 * w[0]));
        assert_eq!(all.transports.len(), Transport::ALL.len());
        let quick = settings(&["--quick"]).unwrap();
        assert_eq!(quick.sizes, [64, 4096, 256 << 10, 16 << 20]);
        assert!(quick.bounds.duration < all.bounds.duration);
    }

    #[test]
    fn sizes_parse_with_units_sorted_and_once() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        for bad in ["", "4G", "4 K", "1", "17M", "-3", "lots"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        let s = settings(&["--sizes", "4K,64,4K", "--transports", "shm,thread-arc,shm"]).unwrap();
        assert_eq!(s.sizes, [64, 4096]);
        assert_eq!(s.transports, [Transport::Shm, Transport::ThreadArc]);
        assert!(settings(&["--transports", "carrier-pigeon"]).is_err());
        assert!(settings(&["--messages", "0"]).is_err());
    }
}
