//! The knowledge source a config asks for (`build`), and why it could not be
//! started (`BuildError`).
use crate::blackbox::external::{ExternalError, ExternalSource};
use crate::blackbox::physics::{PhysicsError, PhysicsSource};
use crate::blackbox::rdkit::RdkitSource;
use crate::blackbox::source::{KnowledgeSource, SourceContext};
use crate::chem::Featurizer;
use crate::config::{Config, SourceConfig};

/// Why the configured source did not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    External(#[from] ExternalError),
    #[error(transparent)]
    Physics(#[from] PhysicsError),
}

/// The knowledge source `cfg.source` asks for, answering graphs whose RDKit columns
/// are `featurizer`'s (the dataset's) followed by the source's extra atom columns.
pub fn build(
    cfg: &Config,
    featurizer: &Featurizer,
    ctx: &SourceContext,
) -> Result<Box<dyn KnowledgeSource>, BuildError> {
    let rd = RdkitSource::new(featurizer.clone()).with_limits(cfg.data.limits());
    Ok(match &cfg.source {
        SourceConfig::Rdkit => Box::new(rd),
        SourceConfig::External(e) => Box::new(ExternalSource::start(
            e,
            featurizer,
            cfg.data.limits(),
            ctx,
        )?),
        SourceConfig::Physics(p) => Box::new(PhysicsSource::new(p, rd, ctx)?),
    })
}
