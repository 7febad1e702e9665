//! Every committed result file, at any depth under `results/`, parses as
//! the current schema of the experiment that wrote it. The schema version
//! guards the format only if something reads every file with it: results
//! of an older schema are re-run or deleted, never left to be misread
//! (see `harness::record`).

use std::path::{Path, PathBuf};

use lab::experiments::balance::report::{self as balance, BalanceRun};
use lab::experiments::block::report::{self as block, BlockRun};
use lab::experiments::conns::report::{self as conns, ConnsRun};
use lab::experiments::crash::report::{self as crash, CrashRun};
use lab::experiments::ipc::report::{self as ipc, IpcRun};
use lab::experiments::run::report::{self as run, RunRecord};
use lab::experiments::split::report::{self as split, SplitRun};
use lab::experiments::stream::report::{self as stream, StreamRun};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn every_committed_result_file_is_of_the_current_schema() {
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results");
    let csv_header = run::csv(&[]);
    let mut runs = 0;
    for path in files(&results) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let shown = path.strip_prefix(&results).unwrap().display().to_string();
        runs += match name.as_str() {
            "run.json" => check::<RunRecord>(&text, &shown, run::SCHEMA_VERSION, |r| {
                (r.schema_version, r.meta.complete)
            }),
            "crash.json" => check::<CrashRun>(&text, &shown, crash::SCHEMA_VERSION, |r| {
                (r.schema_version, r.meta.complete)
            }),
            "balance.json" => check::<BalanceRun>(&text, &shown, balance::SCHEMA_VERSION, |r| {
                (r.schema_version, r.meta.complete)
            }),
            "block.json" => check::<BlockRun>(&text, &shown, block::SCHEMA_VERSION, |r| {
                (r.schema_version, r.meta.complete)
            }),
            "conns.json" => check::<ConnsRun>(&text, &shown, conns::SCHEMA_VERSION, |r| {
                (r.schema_version, r.meta.complete)
            }),
            "ipc.json" => check::<IpcRun>(&text, &shown, ipc::SCHEMA_VERSION, |r| {
                (r.schema_version, r.meta.complete)
            }),
            "split.json" => check::<SplitRun>(&text, &shown, split::SCHEMA_VERSION, |r| {
                (r.schema_version, r.meta.complete)
            }),
            "stream.json" => check::<StreamRun>(&text, &shown, stream::SCHEMA_VERSION, |r| {
                (r.schema_version, r.meta.complete)
            }),
            // Within a schema version the columns only grow at the end.
            "cells.csv" => {
                let header = text.lines().next().unwrap_or("");
                let current = csv_header.lines().next().unwrap_or("");
                assert!(
                    current == header || current.starts_with(&format!("{header},")),
                    "{shown}: columns {header} are not the current ones, nor their start"
                );
                0
            }
            _ if name.ends_with(".md") || name.ends_with(".svg") => 0,
            _ => panic!("{shown}: not a file any experiment writes"),
        };
    }
    assert!(runs > 0, "no results found under {}", results.display());
}

/// Parses a run's record file as `T`, the current schema of the experiment
/// that wrote it, which must be `version` and finished. Counts one run.
fn check<T: serde::de::DeserializeOwned>(
    text: &str,
    shown: &str,
    version: u32,
    of: fn(&T) -> (u32, bool),
) -> usize {
    let record: T = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{shown}: not the current schema: {e}"));
    let (found, complete) = of(&record);
    assert_eq!(found, version, "{shown}");
    assert!(complete, "{shown}: an unfinished run");
    1
}
