//! Flags more than one experiment takes, and the parsers of flag values.
//! Each experiment flattens these into its own command-line struct and
//! converts them, once, into the core's plain settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use harness::cpus::{self, Pinning};
use harness::servers::{Registry, ServerKind, ServerOptions, Servers, Template};
use harness::session::{self, Session};
use service::contract::{Balance, DatasetLoad};

/// How the servers are found, started and configured.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// Add a server kind from a command template, `NAME=COMMAND`, e.g.
    /// `--server 'mine=python3 app.py --port {port} --workers {workers}'`.
    /// Placeholders: {addr} (host:port), {host}, {port}, {workers}. With
    /// {addr} or {port} the harness picks a free port and takes the server
    /// as ready when `/health` or `/` answers 2xx; without them the server
    /// must print the contract's ready line. Repeatable; then name it in
    /// `--models`.
    #[arg(long = "server", value_name = "NAME=COMMAND", value_parser = parse_template)]
    pub servers: Vec<Template>,

    /// How long to wait for a server to be ready.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "15s")]
    pub ready_timeout: Duration,

    /// How multi-process servers spread connections over their workers
    /// (their `--balance`) [default: each server's own: prefork
    /// `reuseport`]. `reuseport`: one socket per worker, the kernel hashes
    /// connections across them, and connections hashed to a dead worker
    /// wait for its replacement. `shared` (alias `none`): one socket for
    /// all; keep-alive clients that reconnect while a dead worker is being
    /// replaced all land on the survivors and stay there. `rr`: the primary
    /// accepts and hands each connection to a worker. A server that lacks
    /// the policy asked for is skipped with one line.
    #[arg(long, value_enum)]
    pub balance: Option<Balance>,

    /// Give every server a read-only dataset of this many MiB (their
    /// `--dataset-mb`), to see how each model's memory grows with it.
    #[arg(long, value_name = "MB", default_value_t = 0)]
    pub dataset_mb: usize,

    /// Where prefork builds the dataset (its `--dataset-load`):
    /// `before-fork` once in the master, its pages shared copy-on-write by
    /// every worker; `per-worker` a private copy in each.
    #[arg(long, value_enum, default_value_t = DatasetLoad::default())]
    pub dataset_load: DatasetLoad,

    /// Take the built-in server binaries from this folder instead of
    /// building them next to `lab`.
    #[arg(long, value_name = "DIR")]
    pub server_dir: Option<PathBuf>,

    /// Pin the server and the load generator to disjoint halves of the
    /// CPUs, so neither takes CPU time from the other and the server's
    /// ceiling is its own half. `auto`: on with 4 or more CPUs.
    #[arg(long, value_enum, default_value_t = Pin::Auto)]
    pub pin: Pin,
}

/// `--pin`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pin {
    #[default]
    Auto,
    On,
    Off,
}

/// [`ServerArgs`] as plain settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub registry: Registry,
    pub options: ServerOptions,
    pub server_dir: Option<PathBuf>,
    pub ready_timeout: Duration,
    pub pinning: Option<Pinning>,
}

impl ServerArgs {
    /// The registry with the templates added; a template whose name is
    /// taken is bad input.
    pub fn settings(&self) -> Result<ServerSettings, String> {
        Ok(ServerSettings {
            registry: Registry::with_templates(&self.servers).map_err(|e| e.to_string())?,
            options: ServerOptions {
                balance: self.balance,
                dataset_mb: self.dataset_mb,
                dataset_load: self.dataset_load,
            },
            server_dir: self.server_dir.clone(),
            ready_timeout: self.ready_timeout,
            pinning: pinning(self.pin, &cpus::allowed())?,
        })
    }
}

/// What `--pin` means with these CPUs.
fn pinning(pin: Pin, allowed: &[usize]) -> Result<Option<Pinning>, String> {
    match pin {
        Pin::Off => Ok(None),
        Pin::Auto if allowed.len() < 4 => Ok(None),
        Pin::Auto => Ok(Pinning::split(allowed)),
        Pin::On => Pinning::split(allowed)
            .map(Some)
            .ok_or_else(|| "--pin on needs at least 2 CPUs to split".to_owned()),
    }
}

impl ServerSettings {
    /// The kinds `models` names, in order, or, when it names none, the
    /// built-in kinds that `default` keeps.
    pub fn kinds(
        &self,
        models: &[String],
        default: impl Fn(&ServerKind) -> bool,
    ) -> Result<Vec<ServerKind>, String> {
        if models.is_empty() {
            Ok(self
                .registry
                .builtins()
                .into_iter()
                .filter(default)
                .collect())
        } else {
            self.registry.select(models)
        }
    }

    /// The cores the servers may use: their `--pin` set, or all of the
    /// machine's `logical_cores`.
    pub fn cores(&self, logical_cores: usize) -> usize {
        self.pinning
            .as_ref()
            .map_or(logical_cores, |p| p.server.len())
    }

    /// Prepares the servers of `kinds` (see [`Servers::prepare`]); returns
    /// them with the kinds that can run here, or bad input when none can.
    pub fn prepare(
        &self,
        kinds: &[ServerKind],
    ) -> Result<(Servers, Vec<ServerKind>), crate::Error> {
        let mut kinds = kinds.to_vec();
        let servers = Servers::prepare(
            &mut kinds,
            self.options.clone(),
            self.server_dir.clone(),
            self.ready_timeout,
        )
        .map_err(crate::Error::OwnExe)?;
        if kinds.is_empty() {
            return Err(crate::Error::BadInput(
                "none of the server kinds asked for can run here (see the lines above)".into(),
            ));
        }
        let cpus = self.pinning.as_ref().map(|p| p.server.clone());
        Ok((servers.on_cpus(cpus.unwrap_or_default()), kinds))
    }
}

/// Where a run's folder goes.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Folder the run's folder is created in.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,

    /// The run's folder name [default: UTC date and time, then what ran].
    #[arg(long, value_name = "NAME", value_parser = parse_run_name)]
    pub name: Option<String>,
}

impl OutputArgs {
    /// Opens the run: its folder under `--out` is `--name`, or the UTC date
    /// and time and `what` ran.
    pub fn session(
        &self,
        what: &str,
        lab_exe: PathBuf,
        pinning: Option<Pinning>,
    ) -> Result<Session, crate::Error> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| session::default_name(what));
        Ok(Session::open(&self.out, &name, lab_exe, pinning)?)
    }
}

/// Keeps the first of each value, in the order given: flag lists may
/// repeat themselves, runs may not.
pub fn dedup<T: PartialEq + Clone>(values: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for value in values {
        if !out.contains(value) {
            out.push(value.clone());
        }
    }
    out
}

fn parse_template(text: &str) -> Result<Template, String> {
    Template::parse(text).map_err(|e| e.to_string())
}

/// Parses `5s`, `1500ms`, `1.5s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 5s, 1500ms or 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s or m)"
            ));
        }
    };
    // Zero is a valid warm-up ("none"); anything over a day is a typo.
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A run name becomes a folder name: keep it to one safe path component.
fn parse_run_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text != "."
        && text != ".."
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("use letters, digits, `-`, `_` and `.` only".to_owned())
    }
}

/// A share of capacity, 0.05 to 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.05..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a share between 0.05 and 1")),
    }
}

/// A request rate, 1 to 1,000,000 per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (1.0..=1_000_000.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a rate between 1 and 1000000")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn pinning_is_on_by_default_only_with_four_cpus_or_more() {
        assert_eq!(pinning(Pin::Auto, &[0, 1]), Ok(None));
        let four = pinning(Pin::Auto, &[0, 1, 2, 3]).unwrap().unwrap();
        assert_eq!((four.server, four.loadgen), (vec![0, 1], vec![2, 3]));
        assert_eq!(pinning(Pin::Off, &[0, 1, 2, 3]), Ok(None));
        assert!(pinning(Pin::On, &[0, 1]).unwrap().is_some());
        assert!(pinning(Pin::On, &[0]).is_err());
    }

    #[test]
    fn run_names_are_one_safe_path_component() {
        assert!(parse_run_name("2025-quick_1.x").is_ok());
        for bad in ["", ".", "..", "../x", "a/b", "a b"] {
            assert!(parse_run_name(bad).is_err(), "{bad:?}");
        }
    }
}
