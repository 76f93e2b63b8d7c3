//! Physics-augmented backend of `KnowledgeSource` (being written).
use super::rdkit::RdkitSource;
use super::{KnowledgeSource, QueryError, SourceContext};
use crate::chem::MolGraph;
use crate::config::SourceConfig;

pub struct PhysicsSource {
    _rdkit: RdkitSource,
}

impl PhysicsSource {
    pub fn new(
        _cfg: &SourceConfig,
        _rdkit: RdkitSource,
        _ctx: &SourceContext,
    ) -> anyhow::Result<PhysicsSource> {
        anyhow::bail!("source.kind = \"physics\" is not built yet")
    }
}

impl KnowledgeSource for PhysicsSource {
    fn name(&self) -> &str {
        "physics"
    }
    fn query(&self, smiles: &[String]) -> Vec<Result<MolGraph, QueryError>> {
        smiles
            .iter()
            .map(|_| Err(QueryError::Failed("not built".into())))
            .collect()
    }
}
