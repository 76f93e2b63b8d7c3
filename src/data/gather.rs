//! Columnar stores (`io::columns`) gathered over the MPI ranks: every column is
//! gathered as a plain vector (`Dist::gather`), and rank 0 appends the ranks'
//! blocks in rank order. `dist` knows nothing of the stores; the stores nothing of MPI.
use crate::dist::{Dist, GatherTooLarge};
use crate::io::columns::{self, ColRef, Column, ColumnMismatch, Columnar};

#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error("gathering {what}")]
    TooLarge {
        what: &'static str,
        #[source]
        source: GatherTooLarge,
    },
    #[error("gathering {what}")]
    Columns {
        what: &'static str,
        #[source]
        source: ColumnMismatch,
    },
}

/// Every rank's block of `store`, appended in rank order on rank 0 (`None`
/// elsewhere); `what` names the store in errors (collective).
pub fn gather_store<S: Columnar>(
    dist: &Dist,
    store: &S,
    what: &'static str,
) -> Result<Option<S>, GatherError> {
    let too_large = |source| GatherError::TooLarge { what, source };
    // Per rank, its columns (filled on rank 0 only).
    let mut ranks: Vec<Vec<Column>> = (0..dist.size).map(|_| Vec::new()).collect();
    for col in store.columns() {
        let parts: Vec<Column> = match col {
            ColRef::U8(v) => dist
                .gather(v)
                .map(|p| p.into_iter().map(Column::U8).collect()),
            ColRef::I8(v) => dist
                .gather(v)
                .map(|p| p.into_iter().map(Column::I8).collect()),
            ColRef::U16(v) => dist
                .gather(v)
                .map(|p| p.into_iter().map(Column::U16).collect()),
            ColRef::U32(v) => dist
                .gather(v)
                .map(|p| p.into_iter().map(Column::U32).collect()),
            ColRef::U64(v) => dist
                .gather(v)
                .map(|p| p.into_iter().map(Column::U64).collect()),
        }
        .map_err(too_large)?;
        for (r, part) in parts.into_iter().enumerate() {
            ranks[r].push(part);
        }
    }
    if !dist.is_root() {
        return Ok(None);
    }
    let mut all = S::default();
    for cols in ranks {
        let block = columns::unflatten::<S>(cols)
            .map_err(|source| GatherError::Columns { what, source })?;
        columns::append(&mut all, &block);
    }
    Ok(Some(all))
}
