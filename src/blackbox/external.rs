//! External-process backend of `KnowledgeSource` (being written).
use super::{KnowledgeSource, QueryError, SourceContext};
use crate::chem::{Featurizer, Limits, MolGraph};
use crate::config::SourceConfig;

pub struct ExternalSource {}

impl ExternalSource {
    pub fn start(
        _cfg: &SourceConfig,
        _featurizer: &Featurizer,
        _limits: Limits,
        _ctx: &SourceContext,
    ) -> anyhow::Result<ExternalSource> {
        anyhow::bail!("source.kind = \"external\" is not built yet")
    }
}

impl KnowledgeSource for ExternalSource {
    fn name(&self) -> &str {
        "external"
    }
    fn query(&self, smiles: &[String]) -> Vec<Result<MolGraph, QueryError>> {
        smiles
            .iter()
            .map(|_| Err(QueryError::Failed("not built".into())))
            .collect()
    }
}
