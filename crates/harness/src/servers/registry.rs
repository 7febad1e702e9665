//! Server kinds: what the harness can start, by name.
//!
//! A kind is a name, how to launch it, and what the harness may expect of
//! it. The built-in kinds are this workspace's binaries; any other server
//! comes from a command template (`--server 'mine=python3 app.py --port
//! {port}'`) and is taken at its word: the harness gives it only what the
//! template says and measures only what it can see from outside.

use std::path::{Path, PathBuf};

use service::contract::{Balance, DatasetLoad};

use crate::kernel::Runtime;

/// The options an experiment sets on the servers it starts; each kind picks
/// the flags that apply to it ([`ServerKind::flags`]).
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `None`: each kind's own default policy.
    pub balance: Option<Balance>,
    pub dataset_mb: usize,
    pub dataset_load: DatasetLoad,
}

/// How a kind is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// One of this workspace's binaries: found next to `lab` (or in
    /// `--server-dir`) and built by cargo (`-p package`) when cargo runs the
    /// harness.
    Builtin {
        package: &'static str,
        binary: &'static str,
    },
    /// A command template, run as given.
    Command(Template),
    /// A server the lab did not start and never stops, already listening
    /// at this address (`lab run --url`), perhaps on another machine.
    Remote(std::net::SocketAddr),
}

/// One server kind.
#[derive(Clone, Debug)]
pub struct ServerKind {
    pub name: String,
    pub launch: Launch,
    /// Serves only `GET /` (bare): cells of other workloads are skipped.
    pub noop_only: bool,
    /// Speaks the whole contract: the ready line, `/stats`, and `/crash`
    /// under `--allow-crash`, with the model flags below.
    pub contract: bool,
    /// Its workers are processes (prefork), which can be killed one by one.
    pub worker_processes: bool,
    /// It has no workers to count (node-single): its cells run at one
    /// worker only, whatever the plan's worker counts.
    pub single: bool,
    /// The runtime its `/cpu` runs in, if known (a template's is not).
    pub runtime: Option<Runtime>,
    /// A program it needs on `PATH` (the Node kinds need `node`).
    pub needs: Option<&'static str>,
    /// The `--balance` policies it has, its default first; empty for a
    /// kind without the flag.
    pub balances: &'static [Balance],
    /// It takes `--offload` and `--pool` (threadpool): where its CPU work
    /// runs, and on what.
    pub pool_flags: bool,
    /// The model flags it takes, from the experiment's options.
    flags: fn(&ServerKind, &ServerOptions) -> Vec<String>,
}

impl ServerKind {
    /// A server already running at `addr`, called `name`: measured, never
    /// started or stopped. What it is beyond HTTP is unknown here, so it
    /// claims no runtime and no flags.
    pub fn remote(name: String, addr: std::net::SocketAddr) -> ServerKind {
        ServerKind {
            name,
            launch: Launch::Remote(addr),
            noop_only: false,
            contract: false,
            worker_processes: false,
            single: false,
            runtime: None,
            needs: None,
            balances: &[],
            pool_flags: false,
            flags: no_flags,
        }
    }

    /// The flags for `options`, beyond the contract's common ones.
    pub fn flags(&self, options: &ServerOptions) -> Vec<String> {
        (self.flags)(self, options)
    }

    /// The policy it runs with under `options`: the one asked for, or its
    /// default. `Err` when it lacks the one asked for; `Ok(None)` for a
    /// kind without `--balance`.
    pub fn balance(&self, options: &ServerOptions) -> Result<Option<Balance>, String> {
        match (options.balance, self.balances.first()) {
            (_, None) => Ok(None),
            (None, Some(&default)) => Ok(Some(default)),
            (Some(asked), Some(_)) if self.balances.contains(&asked) => Ok(Some(asked)),
            (Some(asked), Some(_)) => Err(format!(
                "{} has no --balance {asked} (it has {})",
                self.name,
                self.balances
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

fn no_flags(_: &ServerKind, _: &ServerOptions) -> Vec<String> {
    Vec::new()
}

fn dataset_flags(_: &ServerKind, options: &ServerOptions) -> Vec<String> {
    if options.dataset_mb > 0 {
        vec!["--dataset-mb".into(), options.dataset_mb.to_string()]
    } else {
        Vec::new()
    }
}

/// The dataset and `--balance`: a multi-process kind's flags.
fn balanced_flags(kind: &ServerKind, options: &ServerOptions) -> Vec<String> {
    let mut flags = dataset_flags(kind, options);
    if let Ok(Some(balance)) = kind.balance(options) {
        flags.extend(["--balance".into(), balance.name().into()]);
    }
    flags
}

fn prefork_flags(kind: &ServerKind, options: &ServerOptions) -> Vec<String> {
    let mut flags = balanced_flags(kind, options);
    flags.extend(["--dataset-load".into(), options.dataset_load.name().into()]);
    flags
}

/// The known kinds, in the order tables list them.
#[derive(Clone, Debug)]
pub struct Registry {
    kinds: Vec<ServerKind>,
}

impl Default for Registry {
    /// The built-in kinds. `bare` first, so its noop rows sit right above
    /// prefork's; then the Rust models, then their Node peers.
    fn default() -> Registry {
        // A Rust contract server of this workspace, one process, no model
        // flags but the dataset; each kind below says how it differs.
        let builtin = |name: &'static str| ServerKind {
            name: name.into(),
            launch: Launch::Builtin {
                package: name,
                binary: name,
            },
            noop_only: false,
            contract: true,
            worker_processes: false,
            single: false,
            runtime: Some(Runtime::Rust),
            needs: None,
            balances: &[],
            pool_flags: false,
            flags: dataset_flags,
        };
        // A Node peer: a binary of `crates/node` that execs `node`.
        let node = |name: &'static str| ServerKind {
            launch: Launch::Builtin {
                package: "node-peers",
                binary: name,
            },
            runtime: Some(Runtime::Node),
            needs: Some("node"),
            ..builtin(name)
        };
        Registry {
            kinds: vec![
                ServerKind {
                    noop_only: true,
                    contract: false,
                    worker_processes: true,
                    flags: no_flags,
                    ..builtin("bare")
                },
                ServerKind {
                    worker_processes: true,
                    balances: &[Balance::Reuseport, Balance::Shared, Balance::Rr],
                    flags: prefork_flags,
                    ..builtin("prefork")
                },
                ServerKind {
                    pool_flags: true,
                    ..builtin("threadpool")
                },
                ServerKind {
                    single: true,
                    ..node("node-single")
                },
                ServerKind {
                    worker_processes: true,
                    balances: &[Balance::Rr, Balance::Shared],
                    flags: balanced_flags,
                    ..node("node-cluster")
                },
                node("node-threads"),
            ],
        }
    }
}

impl Registry {
    /// The built-in kinds and the `--server` templates, which may not reuse
    /// a built-in's name.
    pub fn with_templates(templates: &[Template]) -> Result<Registry, TemplateError> {
        let mut registry = Registry::default();
        for template in templates {
            if registry.get(&template.name).is_some() {
                return Err(TemplateError::Taken(template.name.clone()));
            }
            registry.kinds.push(ServerKind {
                name: template.name.clone(),
                launch: Launch::Command(template.clone()),
                noop_only: false,
                contract: false,
                worker_processes: false,
                single: false,
                runtime: None,
                needs: None,
                balances: &[],
                pool_flags: false,
                flags: no_flags,
            });
        }
        Ok(registry)
    }

    pub fn get(&self, name: &str) -> Option<&ServerKind> {
        self.kinds.iter().find(|k| k.name == name)
    }

    /// The built-in kinds, in the registry's order: what an experiment runs
    /// when none is named.
    pub fn builtins(&self) -> Vec<ServerKind> {
        self.kinds
            .iter()
            .filter(|k| matches!(k.launch, Launch::Builtin { .. }))
            .cloned()
            .collect()
    }

    /// The names, for help texts and errors.
    pub fn names(&self) -> Vec<&str> {
        self.kinds.iter().map(|k| k.name.as_str()).collect()
    }

    /// Looks up each of `names`, in order, without repeats.
    pub fn select(&self, names: &[String]) -> Result<Vec<ServerKind>, String> {
        let mut selected: Vec<ServerKind> = Vec::new();
        for name in names {
            let kind = self.get(name).ok_or_else(|| {
                format!(
                    "unknown server `{name}`: known are {} (add others with --server NAME=COMMAND)",
                    self.names().join(", ")
                )
            })?;
            if !selected.iter().any(|k| k.name == kind.name) {
                selected.push(kind.clone());
            }
        }
        Ok(selected)
    }
}

/// A `--server NAME=COMMAND` template, split into words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub argv: Vec<String>,
}

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 4] = ["{addr}", "{host}", "{port}", "{workers}"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("--server `{0}`: expected NAME=COMMAND, e.g. 'mine=python3 app.py --port {{port}}'")]
    NoName(String),
    #[error("--server name `{0}`: use lowercase letters, digits, `-` and `_`")]
    BadName(String),
    #[error("--server {0}: the name is taken")]
    Taken(String),
    #[error("--server {name}: the command is empty or its quotes do not close")]
    BadCommand { name: String },
    #[error(
        "--server {name}: unknown placeholder `{placeholder}` (known: {{addr}}, {{host}}, {{port}}, {{workers}})"
    )]
    Placeholder { name: String, placeholder: String },
}

impl Template {
    /// Parses `NAME=COMMAND`; the command is split the way a shell would
    /// split it, without running a shell.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let (name, command) = text
            .split_once('=')
            .ok_or_else(|| TemplateError::NoName(text.to_owned()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(TemplateError::NoName(text.to_owned()));
        }
        let name_ok = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !name_ok {
            return Err(TemplateError::BadName(name.to_owned()));
        }
        let argv = shlex::split(command)
            .filter(|argv| !argv.is_empty())
            .ok_or_else(|| TemplateError::BadCommand {
                name: name.to_owned(),
            })?;
        for word in &argv {
            if let Some(placeholder) = unknown_placeholder(word) {
                return Err(TemplateError::Placeholder {
                    name: name.to_owned(),
                    placeholder,
                });
            }
        }
        Ok(Template {
            name: name.to_owned(),
            argv,
        })
    }

    /// Whether the command is told where to listen; if not, the server must
    /// say where it does, on a ready line.
    pub fn takes_address(&self) -> bool {
        self.argv
            .iter()
            .any(|w| w.contains("{addr}") || w.contains("{port}"))
    }

    /// The command line with the placeholders filled in.
    pub fn expand(&self, host: &str, port: u16, workers: u16) -> Vec<String> {
        self.argv
            .iter()
            .map(|word| {
                word.replace("{addr}", &format!("{host}:{port}"))
                    .replace("{host}", host)
                    .replace("{port}", &port.to_string())
                    .replace("{workers}", &workers.to_string())
            })
            .collect()
    }

    /// Where the program is, if it can be found: a path as given, or a
    /// name searched on `PATH`.
    pub fn program(&self) -> Option<PathBuf> {
        find_program(&self.argv[0])
    }
}

/// Where `program` is: a path as given, or a name searched on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let program = Path::new(program);
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// The first `{...}` in `word` that is not a known placeholder.
fn unknown_placeholder(word: &str) -> Option<String> {
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}')?;
        let candidate = &rest[open..open + close + 1];
        if !PLACEHOLDERS.contains(&candidate) {
            return Some(candidate.to_owned());
        }
        rest = &rest[open + close + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_expands_every_placeholder() {
        let t = Template::parse(
            "mine=python3 'my app.py' --bind {addr} -p {port} -w {workers} --host={host}",
        )
        .unwrap();
        assert_eq!(t.name, "mine");
        assert!(t.takes_address());
        assert_eq!(
            t.expand("127.0.0.1", 8000, 4),
            [
                "python3",
                "my app.py",
                "--bind",
                "127.0.0.1:8000",
                "-p",
                "8000",
                "-w",
                "4",
                "--host=127.0.0.1"
            ]
        );
        assert!(!Template::parse("x=./server").unwrap().takes_address());
    }

    #[test]
    fn malformed_templates_say_what_is_wrong() {
        assert!(matches!(
            Template::parse("python3 app.py"),
            Err(TemplateError::NoName(_))
        ));
        assert!(matches!(
            Template::parse("=python3 app.py"),
            Err(TemplateError::NoName(_))
        ));
        assert!(matches!(
            Template::parse("My App=x"),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(
            Template::parse("x="),
            Err(TemplateError::BadCommand { .. })
        ));
        assert!(matches!(
            Template::parse("x=run 'open"),
            Err(TemplateError::BadCommand { .. })
        ));
        assert_eq!(
            Template::parse("x=run --port {prot}"),
            Err(TemplateError::Placeholder {
                name: "x".into(),
                placeholder: "{prot}".into()
            })
        );
    }

    #[test]
    fn the_registry_refuses_a_taken_name_and_an_unknown_one() {
        let taken = Template::parse("prefork=./mine").unwrap();
        assert_eq!(
            Registry::with_templates(&[taken]).unwrap_err(),
            TemplateError::Taken("prefork".into())
        );
        let mine = Template::parse("mine=./mine --port {port}").unwrap();
        let registry = Registry::with_templates(&[mine]).unwrap();
        assert_eq!(
            registry.names(),
            [
                "bare",
                "prefork",
                "threadpool",
                "node-single",
                "node-cluster",
                "node-threads",
                "mine"
            ]
        );
        // A template is run only when named.
        assert!(registry.builtins().iter().all(|k| k.name != "mine"));
        assert_eq!(registry.builtins().len(), 6);
        let error = registry.select(&["nginx".into()]).unwrap_err();
        assert!(
            error.contains("unknown server `nginx`") && error.contains("mine"),
            "{error}"
        );
        let picked = registry
            .select(&["mine".into(), "bare".into(), "mine".into()])
            .unwrap();
        assert_eq!(picked.len(), 2);
        assert!(!picked[0].contract && picked[1].noop_only);
    }

    #[test]
    fn each_kind_gets_only_the_flags_it_takes() {
        let options = ServerOptions {
            balance: Some(Balance::Shared),
            dataset_mb: 8,
            dataset_load: DatasetLoad::PerWorker,
        };
        let registry = Registry::default();
        let flags = |name: &str| registry.get(name).unwrap().flags(&options);
        assert_eq!(
            flags("prefork"),
            [
                "--dataset-mb",
                "8",
                "--balance",
                "shared",
                "--dataset-load",
                "per-worker"
            ]
        );
        assert_eq!(flags("threadpool"), ["--dataset-mb", "8"]);
        assert!(flags("bare").is_empty());
        let no_dataset = ServerOptions::default();
        assert!(
            registry
                .get("threadpool")
                .unwrap()
                .flags(&no_dataset)
                .is_empty()
        );
    }

    #[test]
    fn a_program_is_found_on_path_or_not_at_all() {
        let found = Template::parse("x=sh -c true").unwrap();
        assert!(found.program().is_some());
        let missing = Template::parse("x=no-such-program-here --port {port}").unwrap();
        assert_eq!(missing.program(), None);
        let missing_path = Template::parse("x=/no/such/server").unwrap();
        assert_eq!(missing_path.program(), None);
    }
}
