//! The harness's shape, checked on its source: dependencies point one way.
//!
//! - The modules of every crate of the workspace (the servers, the test
//!   kit, the harness) import each other without a cycle.
//! - Experiments never import each other or the command line; the shared
//!   flags (`args`) import no experiment.
//! - The core knows no command line (no clap) and no experiment.
//! - Only the `loadgen` crate links oha and rusqlite, so only it can know
//!   their formats.
//! - The `ipc` transports know neither the lab nor a command line.
//!
//! `cargo test -p lab --test architecture` shows a violation by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The module a file belongs to: its first path component under `src`
/// (`experiments` goes one deeper: each experiment is a module of its own),
/// or `lib` for the crate root.
fn module_of(relative: &str) -> String {
    let parts: Vec<&str> = relative.trim_end_matches(".rs").split('/').collect();
    match parts.as_slice() {
        ["lib"] | ["main"] => "lib".into(),
        ["experiments", "mod"] => "experiments".into(),
        ["experiments", one] => format!("experiments::{one}"),
        ["experiments", one, ..] => format!("experiments::{one}"),
        [first, ..] => first.to_string(),
        [] => "lib".into(),
    }
}

/// The module a `crate::a::b...` path points at, by the same rule.
fn target_of(path: &str) -> String {
    let parts: Vec<&str> = path.split("::").collect();
    match parts.as_slice() {
        ["experiments", one, ..] if one.chars().next().is_some_and(char::is_lowercase) => {
            format!("experiments::{one}")
        }
        [first, ..] if first.chars().next().is_some_and(char::is_lowercase) => first.to_string(),
        // `crate::Error` and other items of the root.
        _ => "lib".into(),
    }
}

/// Every module-to-module use in the crate at `src`, from `crate::` paths
/// in code and in doc links (`` [`crate::x`] `` ties the docs of one module
/// to another as much as a `use` does); other comments are prose. `mod`
/// declarations are not uses.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let from = module_of(&relative);
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().map(str::trim) {
            let comment = line.starts_with("//");
            for (at, _) in line.match_indices("crate::") {
                if comment && !line[..at].ends_with("[`") {
                    continue;
                }
                let rest = &line[at + "crate::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                let path = &rest[..end];
                // `use crate::a::{b, c}` lists several paths under `a`.
                if (path.is_empty() || path.ends_with("::"))
                    && let Some(inner) = rest[end..].strip_prefix('{')
                {
                    let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
                    for item in inner.split(',') {
                        let to = target_of(&format!("{path}{}", item.trim()));
                        if to != from {
                            edges.entry(from.clone()).or_default().insert(to);
                        }
                    }
                    continue;
                }
                let to = target_of(path.trim_end_matches("::"));
                if to != from {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    edges
}

/// A cycle in `edges`, if there is one, as the modules along it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut found = path[start..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(found) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(found);
        }
    }
    None
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(
        target_of("experiments::run::plan::Cell"),
        "experiments::run"
    );
    assert_eq!(target_of("Error"), "lib");
    assert_eq!(
        module_of("experiments/crash/figures.rs"),
        "experiments::crash"
    );
}

#[test]
fn modules_import_each_other_without_a_cycle() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(crates_dir()).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let edges = edges(&src);
        assert_eq!(cycle(&edges), None, "{}: {edges:#?}", src.display());
        checked.push(src);
    }
    // Every crate, not none because the folder moved.
    assert!(checked.len() >= 8, "{checked:?}");
}

#[test]
fn experiments_import_neither_each_other_nor_the_command_line() {
    let edges = edges(&crates_dir().join("lab/src"));
    for (from, to) in &edges {
        if from == "experiments" || from.starts_with("experiments::") || from == "args" {
            for target in to {
                assert!(
                    target != "cli" && !target.starts_with("experiments"),
                    "{from} imports {target}"
                );
            }
        }
    }
    // And the command line does reach them, so the check above is not
    // vacuous.
    assert!(edges["cli"].contains("experiments::run"), "{edges:#?}");
}

fn dependencies(krate: &str) -> String {
    let manifest = std::fs::read_to_string(crates_dir().join(krate).join("Cargo.toml")).unwrap();
    let Some(start) = manifest.find("[dependencies]") else {
        return String::new();
    };
    let end = manifest[start + 1..]
        .find("\n[")
        .map_or(manifest.len(), |i| start + 1 + i);
    manifest[start..end].to_owned()
}

#[test]
fn the_core_knows_no_command_line_and_no_experiment() {
    let core = dependencies("harness");
    assert!(!core.contains("clap"), "{core}");
    assert!(!core.contains("\nlab"), "{core}");
    for file in rust_files(&crates_dir().join("harness/src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("clap::"), "{} uses clap", file.display());
    }
}

#[test]
fn only_loadgen_links_oha_and_rusqlite() {
    for entry in std::fs::read_dir(crates_dir()).unwrap() {
        let krate = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !crates_dir().join(&krate).join("Cargo.toml").is_file() {
            continue;
        }
        let deps = dependencies(&krate);
        let links = deps.contains("\noha") || deps.contains("\nrusqlite");
        assert_eq!(links, krate == "loadgen", "{krate}: {deps}");
    }
}

#[test]
fn the_transports_know_neither_the_lab_nor_a_command_line() {
    // `ipc` is one job, moving bytes and timing it: the experiment that
    // reports on it depends on it, never the other way.
    let deps = dependencies("ipc");
    assert!(deps.contains("postcard"), "{deps}");
    for banned in ["clap", "harness", "\nlab", "service"] {
        assert!(!deps.contains(banned), "ipc depends on {banned}: {deps}");
    }
}
