//! Server kinds and running servers.
//!
//! - [`registry`]: the kinds by name: the built-in binaries and `--server`
//!   command templates.
//! - [`process`]: the [`Server`] guard: start in a process group, wait for
//!   ready, stop, kill the group on drop.
//! - This module: where the built-in binaries come from (built by the cargo
//!   that runs `lab`, in its profile, so a fresh clone needs nothing but
//!   `cargo run --release -p lab -- run`), and [`Servers::start`], which
//!   turns a kind and a start request into a running server.

pub mod process;
pub mod registry;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use service::contract::{Balance, DatasetLoad, Offload, PoolKind};

pub use process::{Group, Server, ServerError, StartFailure, StderrTail};
pub use registry::{Launch, Registry, ServerKind, ServerOptions, Template, TemplateError};

use crate::kernel::Runtime;

/// How the servers of a run were found and configured, as result files
/// record it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ServerParams {
    /// Where the built-in binaries came from.
    pub server_dir: PathBuf,
    /// The `--balance` each multi-process kind ran with.
    pub balance: BTreeMap<String, Balance>,
    /// Every contract server's `--dataset-mb` (0: none).
    pub dataset_mb: usize,
    /// prefork's `--dataset-load`.
    pub dataset_load: DatasetLoad,
    /// The `--server` templates, by name, as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, Vec<String>>,
    /// `node --version`, when a Node kind was in the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_version: Option<String>,
}

impl ServerParams {
    /// One sentence for a report: the policies and the dataset.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .balance
            .iter()
            .map(|(kind, balance)| format!("{kind} runs with `--balance {balance}`"))
            .collect();
        if self.dataset_mb > 0 {
            parts.push(format!(
                "every server holds a {} MiB dataset (prefork builds it `--dataset-load {}`)",
                self.dataset_mb, self.dataset_load
            ));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("Servers: {}.", parts.join("; "))
        }
    }
}

/// One server to start.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub workers: u16,
    pub grace_ms: u64,
    /// `--allow-crash`, for contract servers (a template gets what it
    /// says).
    pub allow_crash: bool,
    /// `--worker-timeout-ms`, for contract servers with workers to time
    /// out.
    pub worker_timeout_ms: Option<u64>,
    /// Environment on top of ours.
    pub env: Vec<(String, String)>,
    /// The `--balance` for this server alone, instead of the run's
    /// (`lab balance` compares the policies of one kind).
    pub balance: Option<Balance>,
    /// `--offload`, for a kind that takes it (`lab block`).
    pub offload: Option<Offload>,
    /// `--pool`, for a kind that takes it (`lab split`).
    pub pool: Option<PoolKind>,
    /// `--header-timeout-ms`, for a contract server: how long an idle
    /// connection may stay (`lab conns` holds them longer than the
    /// default).
    pub idle_timeout_ms: Option<u64>,
}

impl StartRequest {
    /// `workers` workers and a grace period of `grace_ms`, nothing else
    /// asked for: an experiment sets the few fields it needs on top.
    pub fn new(workers: u16, grace_ms: u64) -> StartRequest {
        StartRequest {
            workers,
            grace_ms,
            allow_crash: false,
            worker_timeout_ms: None,
            env: Vec::new(),
            balance: None,
            offload: None,
            pool: None,
            idle_timeout_ms: None,
        }
    }
}

/// Where the servers come from, and how they are configured.
#[derive(Debug)]
pub struct Servers {
    pub options: ServerOptions,
    /// The folder with the built-in binaries.
    pub dir: PathBuf,
    pub ready_timeout: Duration,
    /// The CPUs servers run on; empty: anywhere.
    cpus: Vec<usize>,
    /// Kinds that cannot run here, with the reason: their cells fail with it.
    unavailable: HashMap<String, String>,
}

impl Servers {
    /// Prepares `kinds`: builds the built-in ones with cargo when cargo runs
    /// us and no `server_dir` is given, and checks each can be started.
    /// A template whose program is not there is dropped from `kinds` with
    /// one clear line, and the run goes on without it.
    pub fn prepare(
        kinds: &mut Vec<ServerKind>,
        options: ServerOptions,
        server_dir: Option<PathBuf>,
        ready_timeout: Duration,
    ) -> std::io::Result<Servers> {
        let mut unavailable = HashMap::new();
        kinds.retain(|kind| {
            if let Err(why) = kind.balance(&options) {
                tracing::warn!("skipping server `{}`: {why}", kind.name);
                return false;
            }
            true
        });
        // Kinds that need a program the machine lacks: one line per program.
        let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
        kinds.retain(|kind| {
            let program = match &kind.launch {
                Launch::Command(template) => {
                    (template.program().is_none()).then(|| template.argv[0].clone())
                }
                Launch::Builtin { .. } => kind
                    .needs
                    .filter(|program| registry::find_program(program).is_none())
                    .map(str::to_owned),
                Launch::Remote(_) => None,
            };
            if let Some(program) = program {
                missing.entry(program).or_default().push(kind.name.clone());
                return false;
            }
            true
        });
        for (program, names) in missing {
            tracing::warn!(
                "skipping {}: `{program}` is not there (not found on PATH or not a file)",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let binaries: Vec<(&str, &str)> = kinds
            .iter()
            .filter_map(|k| match k.launch {
                Launch::Builtin { package, binary } => Some((package, binary)),
                Launch::Command(_) | Launch::Remote(_) => None,
            })
            .collect();
        let mut packages: Vec<&str> = binaries.iter().map(|&(package, _)| package).collect();
        packages.sort_unstable();
        packages.dedup();
        let dir = match server_dir {
            Some(dir) => dir,
            None => {
                build_servers(&packages, &mut unavailable);
                own_dir()?
            }
        };
        for (package, binary) in binaries {
            if !unavailable.contains_key(package)
                && let Err(e) = locate(&dir, binary)
            {
                tracing::warn!("{e}; its cells will fail");
            }
        }
        Ok(Servers {
            options,
            dir,
            ready_timeout,
            cpus: Vec::new(),
            unavailable,
        })
    }

    /// Runs every server on `cpus` only (empty: anywhere).
    pub fn on_cpus(self, cpus: Vec<usize>) -> Servers {
        Servers { cpus, ..self }
    }

    /// What the result files record about the servers of `kinds`.
    pub fn params(&self, kinds: &[ServerKind]) -> ServerParams {
        ServerParams {
            server_dir: self.dir.clone(),
            balance: kinds
                .iter()
                .filter_map(|k| Some((k.name.clone(), k.balance(&self.options).ok()??)))
                .collect(),
            dataset_mb: self.options.dataset_mb,
            dataset_load: self.options.dataset_load,
            templates: kinds
                .iter()
                .filter_map(|k| match &k.launch {
                    Launch::Command(t) => Some((k.name.clone(), t.argv.clone())),
                    Launch::Builtin { .. } | Launch::Remote(_) => None,
                })
                .collect(),
            node_version: kinds
                .iter()
                .any(|k| k.runtime == Some(Runtime::Node))
                .then(crate::kernel::node_version)
                .flatten(),
        }
    }

    /// Starts one server of `kind` on a free port of 127.0.0.1.
    pub fn start(&self, kind: &ServerKind, request: &StartRequest) -> Result<Server, StartFailure> {
        let fail = |error| StartFailure {
            error,
            stderr: Vec::new(),
        };
        if let Launch::Builtin { package, .. } = kind.launch
            && let Some(why) = self.unavailable.get(package)
        {
            return Err(fail(ServerError::Spawn {
                program: kind.name.clone(),
                source: std::io::Error::other(why.clone()),
            }));
        }
        let env = request.env.clone();
        let launch = match &kind.launch {
            &Launch::Remote(addr) => return Err(fail(ServerError::Remote(addr))),
            Launch::Builtin { binary, .. } => {
                let mut args: Vec<String> = vec![
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--workers".into(),
                    // A kind without workers takes only 1.
                    if kind.single { 1 } else { request.workers }.to_string(),
                    "--grace-ms".into(),
                    request.grace_ms.to_string(),
                ];
                if kind.contract && request.allow_crash {
                    args.push("--allow-crash".into());
                }
                if let Some(ms) = request
                    .worker_timeout_ms
                    .filter(|_| kind.contract && !kind.single)
                {
                    args.extend(["--worker-timeout-ms".into(), ms.to_string()]);
                }
                let options = ServerOptions {
                    balance: request.balance.or(self.options.balance),
                    ..self.options.clone()
                };
                args.extend(kind.flags(&options));
                if let Some(ms) = request.idle_timeout_ms.filter(|_| kind.contract) {
                    args.extend(["--header-timeout-ms".into(), ms.to_string()]);
                }
                if kind.pool_flags {
                    if let Some(offload) = request.offload {
                        args.extend(["--offload".into(), offload.name().into()]);
                    }
                    if let Some(pool) = request.pool {
                        args.extend(["--pool".into(), pool.name().into()]);
                    }
                }
                process::Spawn {
                    program: locate(&self.dir, binary).map_err(fail)?,
                    args,
                    env,
                    told_addr: None,
                    ready_timeout: self.ready_timeout,
                    cpus: self.cpus.clone(),
                }
            }
            Launch::Command(template) => {
                let host = std::net::Ipv4Addr::LOCALHOST;
                let told_addr = if template.takes_address() {
                    let port = process::free_port(host.into()).map_err(fail)?;
                    Some(std::net::SocketAddr::from((host, port)))
                } else {
                    None
                };
                let mut argv = template
                    .expand(
                        &host.to_string(),
                        told_addr.map_or(0, |a| a.port()),
                        request.workers,
                    )
                    .into_iter();
                let program = PathBuf::from(argv.next().unwrap_or_default());
                process::Spawn {
                    program,
                    args: argv.collect(),
                    env,
                    told_addr,
                    ready_timeout: self.ready_timeout,
                    cpus: self.cpus.clone(),
                }
            }
        };
        Server::start(launch)
    }
}

/// `"--release "` when this harness is a release build, else `""`.
fn profile_flag() -> &'static str {
    if cfg!(debug_assertions) {
        ""
    } else {
        "--release "
    }
}

/// The folder this executable is in.
fn own_dir() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Where `binary` is in `dir`, if it is there.
fn locate(dir: &Path, binary: &str) -> Result<PathBuf, ServerError> {
    let path = dir.join(binary);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ServerError::Missing {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            profile: profile_flag(),
        })
    }
}

/// Builds `packages` with the cargo that runs us (`CARGO` is set), in our
/// profile. If the combined build fails, each is built alone, so one broken
/// crate does not take the others' cells down with it; what still fails is
/// recorded in `unavailable`, by package.
fn build_servers(packages: &[&str], unavailable: &mut HashMap<String, String>) {
    // `lab` too, in the combined build: cargo unifies features over the
    // packages of one build, and lab's graph (oha's tokio and hyper
    // features among them) is a superset of the servers', so with lab named
    // the dependencies it already built are reused as they are; without
    // it, tokio, hyper and everything above them would be compiled a second
    // time with fewer features. Alone, each package is built by itself, so
    // that a broken lab does not pass for a broken server.
    let all: Vec<&str> = std::iter::once("lab")
        .chain(packages.iter().copied())
        .collect();
    if packages.is_empty() || cargo_build(&all).is_ok() {
        return;
    }
    for &package in packages {
        if let Err(e) = cargo_build(&[package]) {
            tracing::warn!("{e}");
            unavailable.insert(
                package.to_owned(),
                format!("building {package} failed: {e}"),
            );
        }
    }
}

/// Whether `key` is one of the variables `cargo run` sets for the program
/// it runs, rather than one that configures cargo itself.
fn from_cargo_run(key: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_",
        "CARGO_CRATE_",
    ]
    .iter()
    .any(|prefix| key.starts_with(prefix))
        || key == "CARGO_PRIMARY_PACKAGE"
}

#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed ({status}):\n{stderr}")]
struct BuildError {
    command: String,
    status: String,
    stderr: String,
}

fn cargo_build(packages: &[&str]) -> Result<(), BuildError> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let mut command = Command::new(&cargo);
    command.arg("build").arg("--quiet");
    // `cargo run` gives the program it runs its package's variables
    // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...). Some build scripts in the
    // tree (nix's, aws-lc's) ask to rerun when those change, so inheriting
    // them here would rebuild those crates and all above them, and the next
    // `cargo run` would rebuild them back: about a minute each way.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(from_cargo_run) {
            command.env_remove(&key);
        }
    }
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    // The workspace this harness was compiled from, whatever the current
    // folder is.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    if manifest.exists() {
        command.arg("--manifest-path").arg(&manifest);
    }
    for package in packages {
        command.arg("-p").arg(package);
    }
    let shown = format!("{command:?}");
    tracing::info!(command = %shown, "building the servers");
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| BuildError {
            command: shown.clone(),
            status: "not started".into(),
            stderr: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    Err(BuildError {
        command: shown,
        status: output.status.to_string(),
        stderr: lines[lines.len().saturating_sub(30)..].join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_variables_of_cargo_run_are_told_from_cargo_settings() {
        for key in [
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_CRATE_NAME",
        ] {
            assert!(from_cargo_run(key), "{key}");
        }
        for key in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "PATH",
        ] {
            assert!(!from_cargo_run(key), "{key}");
        }
    }
}
