//! The black box: scientific software that is only queried, never differentiated.
//! `KnowledgeSource` (`source`) takes a batch of SMILES and gives one result per
//! molecule; a molecule the software rejects is an `Err` for that molecule only.
//! Backends: `rdkit` (in process, the default), `external` (a user command kept
//! running, speaking a line protocol) and `physics` (RDKit plus columns a physics
//! program computes); `build` makes the one a config asks for; `cache` keeps
//! answers by canonical SMILES. This file only declares and re-exports.
pub mod build;
pub mod cache;
pub mod external;
pub mod physics;
pub mod rdkit;
pub mod source;

pub use build::{build, BuildError};
pub use cache::FeatureCache;
pub use rdkit::RdkitSource;
pub use source::{KnowledgeSource, QueryError, SourceContext, SourceStats};
