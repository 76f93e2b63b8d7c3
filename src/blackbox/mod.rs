//! The black box: scientific software that is only queried, never differentiated.
//! `KnowledgeSource` takes a batch of SMILES and gives one result per molecule;
//! a molecule the software rejects is an `Err` for that molecule only.
pub mod cache;
pub mod rdkit;

use crate::chem::MolGraph;

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
}

pub use cache::FeatureCache;
pub use rdkit::RdkitSource;
