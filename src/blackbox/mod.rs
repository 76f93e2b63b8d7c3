//! The black box: scientific software that is only queried, never differentiated.
//! `KnowledgeSource` takes a batch of SMILES and gives one result per molecule;
//! a molecule the software rejects is an `Err` for that molecule only.
pub mod cache;
pub mod rdkit;

use crate::chem::{MolGraph, Molecule};

/// Why one query failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum QueryError {
    #[error("rejected by the knowledge source: {0}")]
    Rejected(String),
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
}

pub use cache::FeatureCache;
pub use rdkit::RdkitSource;
