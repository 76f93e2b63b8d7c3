//! What `prepare` could not use from the CSV (invalid SMILES, bad targets,
//! duplicates), and how many problems of each kind the log lists (`LIST_FIRST`).
use super::csv_table::BadRow;

/// How many problem rows of each kind are listed in the log.
pub const LIST_FIRST: usize = 10;

#[derive(Debug, Default)]
pub struct PrepareReport {
    pub n_rows: usize,
    pub invalid_smiles: Vec<BadRow>,
    pub bad_target: Vec<BadRow>,
    /// (line, canonical SMILES, line of the first occurrence that was kept)
    pub duplicates: Vec<(usize, String, usize)>,
    pub n_unique: usize,
}

impl PrepareReport {
    /// Logs the counts and the first offending lines of each kind.
    pub fn log(&self, file: &str) {
        log::info!(
            "{file}: {} rows, {} unique valid molecules",
            self.n_rows,
            self.n_unique
        );
        let list = |what: &str, rows: &[BadRow]| {
            if rows.is_empty() {
                return;
            }
            log::warn!("{file}: {} rows skipped: {what}", rows.len());
            for r in rows.iter().take(LIST_FIRST) {
                log::warn!("  line {}: {:?}: {}", r.line, r.smiles, r.reason);
            }
            if rows.len() > LIST_FIRST {
                log::warn!("  … and {} more", rows.len() - LIST_FIRST);
            }
        };
        list("invalid SMILES", &self.invalid_smiles);
        list("bad target", &self.bad_target);
        if !self.duplicates.is_empty() {
            log::warn!(
                "{file}: {} duplicate molecules skipped (first occurrence kept)",
                self.duplicates.len()
            );
            for (line, smi, first) in self.duplicates.iter().take(LIST_FIRST) {
                log::warn!("  line {line}: {smi} (same as line {first})");
            }
        }
    }
}
