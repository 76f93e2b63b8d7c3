//! What the phases of a Stage-2 step read (`ZoStep`: the pipeline, the labeled
//! training molecules, the settings, the decoder's tensors, the latent radius, the
//! tensors the zeroth-order part reaches, the control variate) and what they hand
//! on to each other (`Queries`, `Base`, `Heads`).
use crate::blackbox::cache::Answer;
use crate::chem::MolGraph;
use crate::config::{DeltaMode, ZoConfig};
use crate::jtvae::decode::Decoded;
use crate::pipeline::{to_vec_f32, Labeled, Pipeline};
use crate::zo::control::ControlVariate;
use crate::zo::directions::decoder_direction;
use crate::zo::tensors::NamedTensors;
use tch::{Kind, Tensor};

/// The models, data and settings of a Stage-2 step.
pub(super) struct ZoStep {
    pub(super) pipe: Pipeline,
    pub(super) train: Vec<Labeled>,
    pub(super) zc: ZoConfig,
    pub(super) seed: u64,
    pub(super) lambda: f64,
    pub(super) beta: f64,
    pub(super) eval_batch: usize,
    /// Decoder parameters (name, tensor, slot in the flat gradient) when decoder = "zo".
    pub(super) decoder: NamedTensors,
    /// The latent queries' radius µσ of this step (fixed, or adapted to
    /// `zo.target_flip` between steps).
    pub(super) radius: f64,
    /// The trained JT-VAE tensors the latent estimate reaches (through z·ĝ): their
    /// gradient is the zeroth-order part, reduced and clipped on its own. Empty
    /// when nothing of it is trained (`zo.latent = "off"`, a frozen encoder).
    pub(super) zo_part: NamedTensors,
    /// s: z → h of estimator "cv".
    pub(super) cv: Option<ControlVariate>,
}

impl ZoStep {
    /// Decoder direction k of `step` for one named tensor.
    pub(super) fn decoder_dir(&self, step: usize, k: usize, name: &str, numel: usize) -> Vec<f32> {
        decoder_direction(self.seed, step as u64, k as u64, name, numel)
    }

    /// The change of each base row's loss for embeddings `h` (row `n` of `h`
    /// belongs to base row `rows[n]`): a·(h − h_base), or with `zo.delta = "exact"`
    /// ℓ(head(h), y) − ℓ(head(h_base), y) by one head pass over `h`.
    pub(super) fn deltas(&self, heads: &Heads, rows: &[usize], h: &[f32]) -> Vec<f64> {
        match self.zc.delta {
            DeltaMode::Linear => rows
                .iter()
                .enumerate()
                .map(|(n, &row)| heads.dot(row, heads.row(h, n)))
                .collect(),
            DeltaMode::Exact => {
                if rows.is_empty() {
                    return Vec::new();
                }
                let t = Tensor::from_slice(h)
                    .view([rows.len() as i64, heads.dim as i64])
                    .to_device(self.pipe.device);
                let pred = tch::no_grad(|| self.pipe.mpnn.head.forward(&t));
                let pred = to_vec_f32(&pred.to_kind(Kind::Float));
                rows.iter()
                    .zip(pred)
                    .map(|(&row, p)| {
                        let y = f64::from(heads.y[row]);
                        let base = f64::from(heads.pred[row]);
                        (f64::from(p) - y).powi(2) - (base - y).powi(2)
                    })
                    .collect()
            }
        }
    }

    /// MPNN embeddings (no gradient) of answered molecules, one row each.
    pub(super) fn embed<'a>(&self, answers: impl Iterator<Item = &'a Answer>) -> Vec<f32> {
        let graphs: Vec<&MolGraph> = answers
            .map(|a| a.as_ref().as_ref().expect("kept only graphs"))
            .collect();
        to_vec_f32(&self.pipe.embed_nograd(&graphs, self.eval_batch))
    }
}

/// Every sample's base latent and its estimator's queries, decoded as one batch.
pub(super) struct Queries {
    /// The estimator's offsets of each sample (position in the shard).
    pub(super) offsets: Vec<Vec<Vec<f32>>>,
    /// Each sample's row of its base latent in `decoded` (its queries follow).
    pub(super) first_row: Vec<usize>,
    pub(super) decoded: Vec<Option<Decoded>>,
}

/// A sample whose base latent decoded to a molecule the black box answered.
pub(super) struct Base {
    /// Position in the shard.
    pub(super) k: usize,
    pub(super) smiles: String,
    pub(super) answer: Answer,
}

/// The prediction loss on the base graphs, and what the zeroth-order phases need
/// of it: a = ∂L/∂h and the base embeddings h (`dim` values per base row).
pub(super) struct Heads {
    pub(super) pred_sum: f64,
    pub(super) a: Vec<f32>,
    pub(super) h_base: Vec<f32>,
    pub(super) dim: usize,
    /// Each base row's prediction and target (for `zo.delta = "exact"`).
    pub(super) pred: Vec<f32>,
    pub(super) y: Vec<f32>,
    /// Σ h·a, with gradient (w1's part of the one backward).
    pub(super) surrogate: Tensor,
}

impl Heads {
    /// a·(h − h_base) of base row `row` for an embedding `h`.
    pub(super) fn dot(&self, row: usize, h: &[f32]) -> f64 {
        let dim = self.dim;
        let a = &self.a[row * dim..(row + 1) * dim];
        let hb = &self.h_base[row * dim..(row + 1) * dim];
        a.iter()
            .zip(h)
            .zip(hb)
            .map(|((&a, &h), &b)| f64::from(a) * (f64::from(h) - f64::from(b)))
            .sum()
    }

    /// Row `n` of embeddings `h`.
    pub(super) fn row<'h>(&self, h: &'h [f32], n: usize) -> &'h [f32] {
        &h[n * self.dim..(n + 1) * self.dim]
    }
}
