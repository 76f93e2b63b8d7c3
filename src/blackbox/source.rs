//! What every knowledge source is: the `KnowledgeSource` trait (a batch of SMILES
//! in, one result per molecule out), why one query failed (`QueryError`), a
//! source's running trouble counts (`SourceStats`) and where it runs
//! (`SourceContext`).
use crate::chem::{MolGraph, Molecule};
use crate::config::Config;
use std::path::PathBuf;

/// Why one query failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum QueryError {
    /// The software answered: this molecule is not acceptable to it.
    #[error("rejected by the knowledge source: {0}")]
    Rejected(String),
    /// The software did not answer properly (crash, hang, garbage, time limit).
    #[error("the knowledge source failed: {0}")]
    Failed(String),
}

/// Running totals of a source's own trouble since it was built.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct SourceStats {
    /// Queries answered with `QueryError::Failed`.
    pub failed: u64,
    /// Of those, queries that ran out of time.
    pub timeouts: u64,
    /// Times the source (process) was started again after a failure.
    pub restarts: u64,
    /// Seconds spent in external programs (physics codes) on this rank.
    pub program_s: f64,
}

/// Where a source runs: what a backend needs beyond the config.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub rank: usize,
    /// Cores this rank may use.
    pub threads: usize,
    /// Folder for per-rank logs (e.g. an external source's stderr).
    pub log_dir: PathBuf,
    /// The config file's folder (an external command's working directory).
    pub config_dir: PathBuf,
    /// The dataset file's folder (the default place of persistent caches).
    pub data_dir: PathBuf,
}

impl SourceContext {
    /// The context of rank `rank` with `threads` cores for a run of `cfg`.
    pub fn new(cfg: &Config, rank: usize, threads: usize) -> SourceContext {
        let folder = |p: &std::path::Path| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
        };
        SourceContext {
            rank,
            threads: threads.max(1),
            log_dir: cfg.run.out_dir.clone(),
            config_dir: folder(&cfg.path),
            data_dir: folder(&cfg.dataset_path()),
        }
    }
}

/// A gradient-free knowledge source that maps molecules to feature graphs.
pub trait KnowledgeSource: Send {
    /// A short name for logs and output files.
    fn name(&self) -> &str;
    /// One result per input, in input order.
    fn query(&self, smiles: &[String]) -> Vec<Result<MolGraph, QueryError>>;

    /// One result per molecule already built by RDKit (e.g. a decoded one). By
    /// default through its canonical SMILES; a source that reads RDKit molecules
    /// itself skips the SMILES round trip.
    fn query_molecules(&self, mols: &[&Molecule]) -> Vec<Result<MolGraph, QueryError>> {
        let smiles: Vec<Result<String, QueryError>> = mols
            .iter()
            .map(|m| m.smiles().map_err(|e| QueryError::Rejected(e.to_string())))
            .collect();
        let ok: Vec<String> = smiles.iter().filter_map(|s| s.clone().ok()).collect();
        let mut answers = self.query(&ok).into_iter();
        smiles
            .into_iter()
            .map(|s| match s {
                Ok(_) => answers
                    .next()
                    .unwrap_or_else(|| Err(QueryError::Rejected("no answer".into()))),
                Err(e) => Err(e),
            })
            .collect()
    }

    /// Names of the atom columns this source appends after the dataset's RDKit
    /// columns (the MPNN's input is as wide as both).
    fn extra_atom_columns(&self) -> Vec<String> {
        Vec::new()
    }

    /// Running totals of failures and restarts (counted in the metrics).
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}
