//! In-process RDKit backend of `KnowledgeSource`: the featurizer of `chem`.
use crate::blackbox::source::{KnowledgeSource, QueryError};
use crate::chem::{Featurizer, Limits, MolGraph, Molecule};

pub struct RdkitSource {
    featurizer: Featurizer,
    limits: Limits,
}

impl RdkitSource {
    /// A source with the default `Limits`.
    pub fn new(featurizer: Featurizer) -> Self {
        RdkitSource {
            featurizer,
            limits: Limits::default(),
        }
    }

    /// Queries over these limits are refused (a counted failure), before parsing
    /// where the SMILES is too long.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
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
                self.limits.check_smiles(s)?;
                let g = self.featurizer.featurize(s)?;
                self.limits.check_atoms(s, g.n_atoms)?;
                Ok(g)
            })
            .map(|r: Result<MolGraph, crate::chem::ChemError>| {
                r.map_err(|e| QueryError::Rejected(e.to_string()))
            })
            .collect()
    }

    fn query_molecules(&self, mols: &[&Molecule]) -> Vec<Result<MolGraph, QueryError>> {
        mols.iter()
            .map(|m| {
                let g = self.featurizer.molecule(m)?;
                self.limits.check_atoms("(held molecule)", g.n_atoms)?;
                Ok(g)
            })
            .map(|r: Result<MolGraph, crate::chem::ChemError>| {
                r.map_err(|e| QueryError::Rejected(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_over_the_limits_are_refused_not_computed() {
        let src = RdkitSource::new(Featurizer::full()).with_limits(Limits {
            max_atoms: 10,
            max_smiles_length: 50,
        });
        let q = [
            "CCO".to_string(),
            "C".repeat(100_000),
            "C".repeat(12),
            "not a smiles".to_string(),
        ];
        let r = src.query(&q);
        assert!(r[0].is_ok());
        let msg = |k: usize| match &r[k] {
            Err(QueryError::Rejected(m)) => m.clone(),
            other => panic!("query {k}: {other:?}"),
        };
        assert!(msg(1).contains("data.max_smiles_length = 50"));
        assert!(msg(2).contains("12 atoms exceed data.max_atoms = 10"));
        assert!(!msg(3).contains("data.max"));
        let m = Molecule::from_smiles(&"C".repeat(12)).unwrap();
        assert!(src.query_molecules(&[&m])[0].is_err());
    }
}
