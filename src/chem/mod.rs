//! Chemistry: the project's bridge to RDKit's C++ library and the molecular
//! featurizer that turns a molecule into an atom/bond feature graph.
pub mod featurize;
pub mod limits;
pub mod mol;
pub mod rdkit_ffi;

pub use featurize::{Featurizer, MolGraph};
pub use limits::Limits;
pub use mol::{
    canonical_order, canonicalize, embed_geometry, graph_smiles, parse, parse_kekule, quiet_logs,
    rdkit_version, CanonicalOrder, ChemError, EmbedError, Geometry, Molecule,
};
