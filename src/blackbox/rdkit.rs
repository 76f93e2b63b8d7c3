//! In-process RDKit backend of `KnowledgeSource`: the featurizer of `chem`.
use super::{KnowledgeSource, QueryError};
use crate::chem::{Featurizer, MolGraph, Molecule};

pub struct RdkitSource {
    featurizer: Featurizer,
}

impl RdkitSource {
    pub fn new(featurizer: Featurizer) -> Self {
        RdkitSource { featurizer }
    }

    pub fn featurizer(&self) -> &Featurizer {
        &self.featurizer
    }
}

impl KnowledgeSource for RdkitSource {
    fn name(&self) -> &str {
        "rdkit"
    }

    fn query(&self, smiles: &[String]) -> Vec<Result<MolGraph, QueryError>> {
        smiles
            .iter()
            .map(|s| {
                self.featurizer
                    .featurize(s)
                    .map_err(|e| QueryError::Rejected(e.to_string()))
            })
            .collect()
    }

    fn query_molecules(&self, mols: &[&Molecule]) -> Vec<Result<MolGraph, QueryError>> {
        mols.iter()
            .map(|m| {
                self.featurizer
                    .molecule(m)
                    .map_err(|e| QueryError::Rejected(e.to_string()))
            })
            .collect()
    }
}
