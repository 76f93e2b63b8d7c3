//! The paper's model chain, free of MPI and of the training loop: x → JT-VAE
//! encoder → latent → decoder → molecule → knowledge source (black box) → graph →
//! MPNN → ŷ. `chain` builds it (`Pipeline`) and decodes, featurizes and embeds
//! through it; `labeled` makes the labeled molecules it learns and is evaluated
//! on; `eval` sums Table 1's numbers over them (`PipelineEval`).
pub mod chain;
pub mod eval;
pub mod labeled;

pub use chain::{decode_threads, to_vec_f32, Pipeline, PipelineError};
pub use eval::PipelineEval;
pub(crate) use labeled::{labeled, Labeled};
