//! The loop of the experiments whose record is a list of cells: each cell
//! measured and made into its record, one line logged for it, and every
//! file rewritten, so that a crash or a Ctrl-C keeps each cell already
//! done. Then the run is stamped finished and written once more.

use std::path::Path;

use harness::record::RunMeta;
use harness::session::Session;

use crate::Error;

/// A cell's record, as the loop logs it.
pub trait CellRecord {
    /// One line about a cell that worked, or why it failed.
    fn outcome(&self) -> Result<String, &str>;
}

/// An experiment's record of a run, as the loop fills and writes it.
pub trait RunRecord {
    type Cell: CellRecord;
    fn meta_mut(&mut self) -> &mut RunMeta;
    fn push(&mut self, cell: Self::Cell);
    /// Writes every file of the run into `dir`, each whole.
    fn write(&self, dir: &Path) -> std::io::Result<()>;
}

/// Runs `record` on each of `cells` (`None`: interrupted half-way, nothing
/// recorded), pushing and writing each record into `run`; `label` names a
/// cell on the progress bar and in the log.
pub fn each<C, R: RunRecord>(
    session: &Session,
    run: &mut R,
    cells: &[C],
    label: impl Fn(&C) -> String,
    mut record: impl FnMut(&C) -> Option<R::Cell>,
) -> Result<(), Error> {
    let write = |run: &R| {
        run.write(&session.dir).map_err(|source| Error::Output {
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
        progress.suspend(|| match done.outcome() {
            Ok(line) => tracing::info!("{name}: {line}"),
            Err(why) => tracing::warn!("{name} failed: {why}"),
        });
        run.push(done);
        write(run)?;
        Ok(true)
    })?;
    session.finish(run.meta_mut());
    write(run)
}
