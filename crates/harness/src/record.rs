//! What every experiment writes, and how.
//!
//! Each experiment has its own output type (its schema), which flattens a
//! [`RunMeta`] in, so every file says which run, commit and machine it came
//! from in the same fields. Files are written through a temporary file and a
//! rename ([`write_files`]), so an interrupted write never leaves half a
//! file, and tables are rendered by one function ([`markdown_table`]).
//!
//! **Schema versions.** Each experiment's record carries a `schema_version`,
//! bumped whenever a field changes meaning or goes away. Within a version,
//! fields are only added, with a default that means what older files
//! meant, and CSV columns only at the end. The harness reads only the
//! current version of each: when it changes, results of the older version
//! are re-run or deleted, never silently reinterpreted. A test parses every
//! committed result file to hold the repository to that.

use std::path::Path;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use serde::{Deserialize, Serialize};

use crate::clock::now_rfc3339;

/// The part of every result file that says where it came from.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RunMeta {
    pub name: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    /// False while the run goes on, and for good if it was interrupted.
    pub complete: bool,
    pub interrupted: bool,
    /// `git rev-parse HEAD` of the tree the harness was built from, with
    /// `+dirty` when anything in it was uncommitted.
    pub git_commit: Option<String>,
    /// The tree had uncommitted changes: these numbers are not to be quoted.
    pub dirty: bool,
    /// `debug` or `release`: the profile of the harness and of the servers
    /// it built.
    pub build: String,
    pub machine: Machine,
}

impl RunMeta {
    pub fn new(name: &str, git_commit: Option<String>, machine: Machine) -> RunMeta {
        RunMeta {
            name: name.to_owned(),
            started_at: now_rfc3339(),
            complete: false,
            interrupted: false,
            dirty: git_commit.as_deref().is_some_and(|c| c.ends_with("+dirty")),
            git_commit,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            machine,
        }
    }

    /// One line for the top of a Markdown report.
    pub fn describe(&self) -> String {
        let m = &self.machine;
        format!(
            "{} build, started {}{}. {} ({} logical cores), {:.1} GiB, kernel {}, commit {}{}.",
            self.build,
            self.started_at,
            if self.interrupted {
                ", **interrupted**"
            } else if !self.complete {
                ", **still running**"
            } else {
                ""
            },
            m.cpu_model,
            m.logical_cores,
            m.memory_bytes as f64 / (1024.0 * 1024.0 * 1024.0),
            m.kernel.as_deref().unwrap_or("?"),
            self.git_commit.as_deref().unwrap_or("unknown"),
            if self.dirty {
                " (**uncommitted changes: not to be quoted**)"
            } else {
                ""
            },
        )
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Machine {
    pub cpu_model: String,
    pub logical_cores: usize,
    pub physical_cores: Option<usize>,
    pub memory_bytes: u64,
    pub kernel: Option<String>,
    pub os: Option<String>,
}

/// How one cell of an experiment ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CellStatus {
    Ok,
    Failed,
}

/// Writes each `(file name, contents)` into `dir`, each through a temporary
/// file and a rename.
pub fn write_files(dir: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, contents) in files {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(())
}

/// Pretty JSON with a final newline.
pub fn to_json(value: &impl Serialize) -> std::io::Result<String> {
    Ok(serde_json::to_string_pretty(value).map_err(std::io::Error::other)? + "\n")
}

/// Where a table goes: a terminal or a Markdown file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableStyle {
    Terminal,
    Markdown,
}

/// A table with a header and rows; the columns from `right_from` on are
/// numbers, right-aligned.
pub fn render_table(
    header: &[&str],
    rows: Vec<Vec<String>>,
    right_from: usize,
    style: TableStyle,
) -> String {
    let mut table = Table::new();
    table
        .load_preset(match style {
            TableStyle::Terminal => presets::UTF8_FULL_CONDENSED,
            TableStyle::Markdown => presets::ASCII_MARKDOWN,
        })
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for row in rows {
        table.add_row(row);
    }
    for index in right_from..header.len() {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.to_string()
}

/// The Markdown table of [`render_table`].
pub fn markdown_table(header: &[&str], rows: Vec<Vec<String>>, right_from: usize) -> String {
    render_table(header, rows, right_from, TableStyle::Markdown)
}

/// A failed row: the labels, then the first line of the error, cut to keep
/// the table narrow (the whole error is in the JSON and under the table),
/// then empty cells to the table's width.
pub fn failed_row(mut labels: Vec<String>, error: Option<&str>, width: usize) -> Vec<String> {
    let why = error.unwrap_or("failed");
    let first = why.lines().next().unwrap_or(why);
    let short: String = first.chars().take(40).collect();
    let more = if short.len() < first.len() { "…" } else { "" };
    labels.push(format!("FAILED: {short}{more}"));
    labels.resize(width, String::new());
    labels
}

/// A number with `decimals`, or `-` when there is none.
pub fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// Formats an error with its causes, `outer: inner: innermost`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_whole_and_leave_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("harness-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_files(
            &dir,
            &[
                ("a.json".into(), "{}\n".into()),
                ("b.md".into(), "# b\n".into()),
            ],
        )
        .unwrap();
        write_files(&dir, &[("a.json".into(), "[]\n".into())]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a.json")).unwrap(), "[]\n");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.json", "b.md"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_row_says_why_in_one_short_line() {
        let row = failed_row(vec!["a".into()], Some("no server, in 15s\ncaused by: x"), 4);
        assert_eq!(row, ["a", "FAILED: no server, in 15s", "", ""]);
        let long = "x".repeat(100);
        let row = failed_row(vec![], Some(&long), 1);
        assert_eq!(row[0], format!("FAILED: {}…", "x".repeat(40)));
    }

    #[test]
    fn markdown_tables_hold_every_row() {
        let md = markdown_table(
            &["model", "rps"],
            vec![vec!["a".into(), "1".into()], vec!["b".into(), "2".into()]],
            1,
        );
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4, "{md}");
        assert!(lines[0].starts_with("| model") && lines[1].starts_with("|-"));
    }

    #[test]
    fn a_dirty_commit_marks_the_meta_dirty() {
        let machine = Machine {
            cpu_model: String::new(),
            logical_cores: 2,
            physical_cores: None,
            memory_bytes: 0,
            kernel: None,
            os: None,
        };
        assert!(RunMeta::new("x", Some("abc+dirty".into()), machine.clone()).dirty);
        assert!(!RunMeta::new("x", Some("abc".into()), machine.clone()).dirty);
        assert!(
            RunMeta::new("x", Some("abc+dirty".into()), machine)
                .describe()
                .contains("not to be quoted")
        );
    }
}
