//! The experiments whose record is a list of cells: the shape of their
//! files ([`Run`]), one cell's measurement guarded ([`observe`]), one
//! cell's server from start to stop ([`with_server`]), and their loop
//! ([`each`]): each cell measured and made
//! into its record, one line logged for it, and every file rewritten, so
//! that a crash or a Ctrl-C keeps each cell already done. Then the run is
//! stamped finished and written once more.

use std::path::Path;
use std::time::Duration;

use harness::TrialError;
use harness::procs::ProcEntry;
use harness::record::{RunMeta, chain};
use harness::servers::{Server, ServerKind, Servers, StartRequest};
use harness::session::Session;
use serde::{Deserialize, Serialize};

use crate::Error;

/// A run's record: the experiment's schema version, the run's metadata,
/// its parameters, its cells.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Run<P, C> {
    pub schema_version: u32,
    #[serde(flatten)]
    pub meta: RunMeta,
    pub params: P,
    pub cells: Vec<C>,
}

impl<P, C: CellRecord> Run<P, C> {
    /// How many cells failed.
    pub fn failed(&self) -> usize {
        self.cells.iter().filter(|c| c.failure().is_some()).count()
    }
}

/// A cell's record, as the loop logs it.
pub trait CellRecord {
    /// Why the cell failed; `None` when it worked.
    fn failure(&self) -> Option<&str>;
    /// One line about a cell that worked.
    fn summary(&self) -> String;
}

/// Measures one cell into a fresh `O` with `measure`, which fills it as
/// far as it gets; `failed` records in it the error that stopped it, if
/// one did. `None` when the session was interrupted meanwhile: the numbers
/// would be cut short.
pub fn observe<O: Default>(
    session: &Session,
    measure: impl FnOnce(&mut O) -> Result<(), TrialError>,
    failed: impl FnOnce(&mut O, String),
) -> Option<O> {
    let mut observed = O::default();
    let result = measure(&mut observed);
    if session.is_interrupted() {
        return None;
    }
    if let Err(error) = result {
        failed(&mut observed, chain(&error));
    }
    Some(observed)
}

/// A run's Markdown closing section: one line per cell that failed,
/// `label` naming it, and why; nothing when none did.
pub fn failures<C: CellRecord>(cells: &[C], label: impl Fn(&C) -> String) -> String {
    let lines: Vec<String> = cells
        .iter()
        .filter_map(|cell| Some(format!("- {}: {}\n", label(cell), cell.failure()?)))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("\n## Failures\n\n{}", lines.concat())
}

/// A cell's server for its whole life: started with `request`, handed to
/// `body` with the cell's working data `out`, then stopped with SIGTERM,
/// waiting out its grace period and 3 s more (a server may still be
/// draining queued work). Wherever something fails, and when the server
/// exits other than 0, `tail` of `out` gets the server's last lines of
/// stderr. Returns the exit code (`None`: killed by a signal) and the
/// processes of its group still running after it exited.
pub fn with_server<O>(
    servers: &Servers,
    kind: &ServerKind,
    request: &StartRequest,
    out: &mut O,
    tail: fn(&mut O) -> &mut Vec<String>,
    body: impl FnOnce(&mut Server, &mut O) -> Result<(), TrialError>,
) -> Result<(Option<i32>, Vec<ProcEntry>), TrialError> {
    let mut server = match servers.start(kind, request) {
        Ok(server) => server,
        Err(failure) => {
            *tail(out) = failure.stderr;
            return Err(failure.error.into());
        }
    };
    if let Err(error) = body(&mut server, out) {
        *tail(out) = server.stderr.lines();
        return Err(error);
    }
    let stderr = server.stderr.clone();
    let grace = Duration::from_millis(request.grace_ms) + Duration::from_secs(3);
    let (code, left) = server.stop(grace)?;
    if code != Some(0) {
        *tail(out) = stderr.lines();
    }
    Ok((code, left))
}

/// Runs `record` on each of `cells` (`None`: interrupted half-way, nothing
/// recorded), pushing each record into `run` and writing it with `write`
/// (every file of the run into the folder given, each whole); `label`
/// names a cell on the progress bar and in the log.
pub fn each<T, P, C: CellRecord>(
    session: &Session,
    run: &mut Run<P, C>,
    cells: &[T],
    label: impl Fn(&T) -> String,
    write: impl Fn(&Path, &Run<P, C>) -> std::io::Result<()>,
    mut record: impl FnMut(&T) -> Option<C>,
) -> Result<(), Error> {
    let write = |run: &Run<P, C>| {
        write(&session.dir, run).map_err(|source| Error::Output {
            path: session.dir.clone(),
            source,
        })
    };
    write(run)?;
    session.each(cells, &label, |cell, progress| -> Result<bool, Error> {
        let Some(done) = record(cell) else {
            return Ok(false);
        };
        let name = label(cell);
        progress.suspend(|| match done.failure() {
            None => tracing::info!("{name}: {}", done.summary()),
            Some(why) => tracing::warn!("{name} failed: {why}"),
        });
        run.cells.push(done);
        write(run)?;
        Ok(true)
    })?;
    session.finish(&mut run.meta);
    write(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cell(&'static str, Option<&'static str>);

    impl CellRecord for Cell {
        fn failure(&self) -> Option<&str> {
            self.1
        }
        fn summary(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn failures_lists_only_the_failed_cells_each_named_with_its_reason() {
        let cells = [
            Cell("a", None),
            Cell("b", Some("no ready line")),
            Cell("c", None),
        ];
        assert_eq!(
            failures(&cells, |c| c.0.to_owned()),
            "\n## Failures\n\n- b: no ready line\n"
        );
        assert_eq!(failures(&cells[..1], |c| c.0.to_owned()), "");
    }
}
