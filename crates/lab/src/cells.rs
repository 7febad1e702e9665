//! The experiments whose record is a list of cells: the shape of their
//! files ([`Run`]), one cell's measurement guarded ([`observe`]), and their
//! loop ([`each`]): each cell measured and made
//! into its record, one line logged for it, and every file rewritten, so
//! that a crash or a Ctrl-C keeps each cell already done. Then the run is
//! stamped finished and written once more.

use std::path::Path;

use harness::TrialError;
use harness::record::{RunMeta, chain};
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
