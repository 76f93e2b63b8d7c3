//! What a training stage gives the shared loop (`trainer`): the `Objective`
//! trait (its data size, loss terms, one step's gradients, the optional
//! projections reduced with the gradient, counters, phases and evaluation) and
//! `StepOut`, what one rank computed in one step.
use crate::dist::Dist;
use tch::Tensor;

/// What one rank computed for its shard in one step. The objective has already
/// put its gradients (sums over the shard) into the parameters' `.grad`.
#[derive(Debug, Default, Clone)]
pub struct StepOut {
    /// The loss summed over the shard.
    pub loss: f64,
    /// Sums of the terms, in `terms()` order.
    pub terms: Vec<f64>,
    /// `n_projections()` numbers summed over ranks in the step's one allreduce
    /// (Stage 2: the decoder directions' projection scalars), handed back to
    /// `apply_reduced`.
    pub projections: Vec<f64>,
    /// Counters summed over ranks, in `counters()` order (queries, failures…).
    pub counts: Vec<f64>,
    /// Seconds of this rank in each of `phases()`.
    pub phase_s: Vec<f64>,
}

impl StepOut {
    /// Adds another micro-batch's sums (element-wise; missing entries count as 0).
    pub(super) fn add(&mut self, o: &StepOut) {
        fn add_into(dst: &mut Vec<f64>, src: &[f64]) {
            if dst.len() < src.len() {
                dst.resize(src.len(), 0.0);
            }
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
        self.loss += o.loss;
        add_into(&mut self.terms, &o.terms);
        add_into(&mut self.projections, &o.projections);
        add_into(&mut self.counts, &o.counts);
        add_into(&mut self.phase_s, &o.phase_s);
    }
}

/// What a training stage provides to the loop.
pub trait Objective {
    /// Stage name, stored in the metrics.
    fn stage(&self) -> &'static str;
    /// Number of training samples (indices `0..n`).
    fn n_train(&self) -> usize;
    /// Names of the loss terms reported next to the total (may be empty).
    fn terms(&self) -> Vec<&'static str>;
    /// Gradients of the loss SUMMED over `samples` (training indices of this
    /// rank's shard) at global step `step`, accumulated into the parameters'
    /// `.grad` (first-order parts by backprop, zeroth-order estimates chained in
    /// by the objective). Never called with an empty shard.
    fn step(&mut self, samples: &[usize], step: usize) -> StepOut;
    /// Length of `StepOut::projections` (constant over a run).
    fn n_projections(&self) -> usize {
        0
    }
    /// Called on every rank after the allreduce with the projections summed over
    /// ranks: adds what they imply to the flat gradient sum `grad` (same layout as
    /// `Params::flat_grad`, not yet divided by the global batch size `1/scale`).
    /// Returns per-step values to store (e.g. the norms of the gradient's parts).
    fn apply_reduced(
        &self,
        _step: usize,
        _projections: &[f64],
        _grad: &mut [f32],
        _scale: f64,
    ) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// Called on every rank after each step with the counters summed over ranks
    /// (the same on every rank), e.g. to adapt a setting for the next step; an
    /// error stops the run (on every rank alike).
    fn observe(&mut self, _counts: &[f64]) -> Result<(), String> {
        Ok(())
    }
    /// Called on resume with the metrics restored from the checkpoint, so that
    /// state derived from past steps (see `observe`) is restored as well.
    fn restore(&mut self, _metrics: &crate::io::metrics::Metrics) {}
    /// Names of the per-step counters (summed over ranks; stored per step).
    fn counters(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Names of the objective's own per-step phases (max and mean over ranks are
    /// stored per step, next to the loop's allreduce and optimizer).
    fn phases(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Values derived from global step `step`'s counters (summed over ranks) and
    /// its wall time (slowest rank), stored per step (e.g. flip rate, queries per
    /// second, accuracies, a scheduled weight).
    fn derived(&self, _step: usize, _counts: &[f64], _step_s: f64) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// End-of-epoch evaluation as (name, value) pairs; every rank calls it (it may
    /// use collectives of `dist`).
    fn evaluate(&self, dist: &Dist) -> Vec<(String, f64)>;
    /// Constant facts for the metrics file (e.g. a baseline), as attributes.
    fn scalars(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// The target column or other description, for the metrics file.
    fn describe(&self) -> String {
        String::new()
    }
}

/// A first-order step: backward of the summed loss.
pub fn backward_step(loss: Tensor, terms: Vec<f64>) -> StepOut {
    loss.backward();
    StepOut {
        loss: loss.double_value(&[]),
        terms,
        ..Default::default()
    }
}
