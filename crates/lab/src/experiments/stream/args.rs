//! `lab stream`'s command line, and its conversion into [`Settings`].

use clap::Args;

use super::{Endpoint, Settings};
use crate::args::{OutputArgs, ServerArgs, dedup};

/// `lab stream`'s flags. With none: prefork, threadpool and, where `node`
/// is on PATH, node-single, node-cluster and node-threads, both endpoints,
/// 1, 20 and 100 clients of 16 MiB at 4 MiB/s each; about 3 minutes.
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// The short version: 1 and 10 clients of 8 MiB at 8 MiB/s; under a
    /// minute here.
    #[arg(long)]
    pub quick: bool,

    /// Server kinds [default: every contract server: prefork, threadpool,
    /// node-single, node-cluster, node-threads].
    #[arg(long, value_delimiter = ',', value_name = "NAME,..")]
    pub models: Vec<String>,

    /// Endpoints [default: stream,buffer].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ENDPOINT,..")]
    pub endpoints: Vec<Endpoint>,

    /// Clients downloading at once [default: 1,20,100; quick: 1,10].
    #[arg(long, value_delimiter = ',', value_name = "K,..",
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub clients: Vec<u16>,

    /// Worker processes or pool threads.
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,

    /// MiB each client downloads, 1 to 64 (the contract's bound): more than
    /// a socket's send buffer can take (4 MiB on Linux by default), or the
    /// kernel absorbs the difference [default: 16; quick: 8].
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub mb: Option<u32>,

    /// How fast each client reads, in KiB per second [default: 4096;
    /// quick: 8192].
    #[arg(long, value_name = "KIB_PER_S",
          value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub rate_kib: Option<u64>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub servers: ServerArgs,
}

/// K × N must fit: the buffered case holds every body at once.
const MAX_TOTAL_MIB: u64 = 4096;

impl StreamArgs {
    /// The settings, the profile filling every flag left out.
    pub fn settings(&self) -> Result<Settings, String> {
        let servers = self.servers.settings()?;
        let kinds = servers.kinds(&self.models, |k| k.contract)?;
        if let Some(kind) = kinds.iter().find(|k| k.noop_only) {
            return Err(format!(
                "--models {}: it has no /stream or /buffer",
                kind.name
            ));
        }
        let clients: Vec<usize> = if self.clients.is_empty() {
            if self.quick {
                vec![1, 10]
            } else {
                vec![1, 20, 100]
            }
        } else {
            dedup(&self.clients).into_iter().map(usize::from).collect()
        };
        let mb = self.mb.unwrap_or(if self.quick { 8 } else { 16 });
        let most = clients.iter().max().copied().unwrap_or(1) as u64;
        if most * u64::from(mb) > MAX_TOTAL_MIB {
            return Err(format!(
                "--clients {most} × --mb {mb} is over {MAX_TOTAL_MIB} MiB, more than the buffered case should hold"
            ));
        }
        let rate_kib = self
            .rate_kib
            .unwrap_or(if self.quick { 8192 } else { 4096 });
        Ok(Settings {
            quick: self.quick,
            kinds,
            endpoints: if self.endpoints.is_empty() {
                vec![Endpoint::Stream, Endpoint::Buffer]
            } else {
                dedup(&self.endpoints)
            },
            clients,
            workers: self.workers,
            mb,
            rate: rate_kib * 1024,
            recv_buffer: 64 * 1024,
            servers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: StreamArgs,
    }

    fn settings(line: &[&str]) -> Result<Settings, String> {
        Line::try_parse_from(["stream"].iter().chain(line).copied())
            .map_err(|e| e.to_string())?
            .args
            .settings()
    }

    #[test]
    fn the_default_is_every_contract_server_both_endpoints_three_sizes() {
        let all = settings(&[]).unwrap();
        assert_eq!(all.cells(&all.kinds).len(), 5 * 2 * 3);
        assert_eq!((all.mb, all.rate), (16, 4096 * 1024));
        assert_eq!(settings(&["--quick"]).unwrap().clients, [1, 10]);
    }

    #[test]
    fn too_much_to_buffer_and_bare_are_refused() {
        let error = settings(&["--clients", "1000", "--mb", "64"]).unwrap_err();
        assert!(error.contains("MiB"), "{error}");
        assert!(
            settings(&["--models", "bare"])
                .unwrap_err()
                .contains("/stream")
        );
    }
}
