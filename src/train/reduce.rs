//! The one allreduce of a training step: the layout of its flat float buffer
//! ([gradients (not with micro-batches) | loss | terms | projections | counters |
//! per-rank phase seconds (ranks × (phases + 1))]), packing this rank's sums into
//! it and reading the summed tail back, and, with `train.micro_batch`, the exact
//! (integer, order-independent) sum of the micro-batches' [gradient | projections]
//! over the ranks (`exact`).
use super::objective::StepOut;
use crate::dist::Dist;

/// What a step's buffer carries after the gradient, fixed for a run.
pub(super) struct Layout {
    /// Names of the loss terms (one float each).
    pub terms: Vec<&'static str>,
    /// Names of the counters (one float each).
    pub counters: Vec<&'static str>,
    /// Names of the objective's phases (per rank, plus the step's own total).
    pub phases: Vec<&'static str>,
    /// Number of projection scalars.
    pub n_proj: usize,
    /// Number of ranks, and this rank.
    pub ranks: usize,
    pub rank: usize,
}

/// The first `n` entries of `v` as f32, missing ones 0.
fn pad(v: &[f64], n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| v.get(i).copied().unwrap_or(0.0) as f32)
        .collect()
}

impl Layout {
    /// Floats per rank in the phase-seconds block: each phase and the step's total.
    pub fn per_rank(&self) -> usize {
        self.phases.len() + 1
    }

    /// `flat` (the gradient, or nothing) followed by this rank's loss, terms,
    /// projections, counters and phase seconds (in its own slot of the per-rank
    /// block, the other ranks' slots 0).
    pub fn pack(&self, mut flat: Vec<f32>, out: &StepOut) -> Vec<f32> {
        flat.push(out.loss as f32);
        flat.extend(pad(&out.terms, self.terms.len()));
        flat.extend(pad(&out.projections, self.n_proj));
        flat.extend(pad(&out.counts, self.counters.len()));
        let per_rank = self.per_rank();
        let mut times = vec![0f32; self.ranks * per_rank];
        for (i, v) in pad(&out.phase_s, per_rank).into_iter().enumerate() {
            times[self.rank * per_rank + i] = v;
        }
        flat.extend(times);
        flat
    }

    /// The summed buffer after the gradient (`tail`), read back.
    pub fn unpack(&self, tail: &[f32]) -> Reduced {
        let mut at = 1;
        let mut take = |n: usize| {
            let v: Vec<f64> = tail[at..at + n].iter().map(|&x| f64::from(x)).collect();
            at += n;
            v
        };
        let terms = take(self.terms.len());
        let projections = take(self.n_proj);
        let counts = take(self.counters.len());
        let times = take(self.ranks * self.per_rank());
        Reduced {
            loss: tail[0],
            terms,
            projections,
            counts,
            times,
        }
    }
}

/// The step's sums over all ranks, as read from the buffer.
pub(super) struct Reduced {
    /// The loss summed over the global batch.
    pub loss: f32,
    pub terms: Vec<f64>,
    pub projections: Vec<f64>,
    pub counts: Vec<f64>,
    /// Every rank's phase seconds, rank-major (`Layout::per_rank` each).
    pub times: Vec<f64>,
}

impl Reduced {
    /// Maximum and mean over ranks of phase column `i` (`phases.len()`: the step).
    pub fn phase_time(&self, layout: &Layout, i: usize) -> (f64, f64) {
        let per_rank = layout.per_rank();
        let ranks = layout.ranks as f64;
        let v = (0..layout.ranks).map(|r| self.times[r * per_rank + i]);
        (v.clone().fold(0f64, f64::max), v.sum::<f64>() / ranks)
    }
}

/// One micro-batch's part for the exact sum: its gradient `grad` then its
/// `n_proj` projections (missing ones 0), as f64.
pub(super) fn micro_part(grad: Vec<f32>, projections: &[f64], n_proj: usize) -> Vec<f64> {
    let mut part: Vec<f64> = grad.into_iter().map(f64::from).collect();
    part.extend((0..n_proj).map(|i| projections.get(i).copied().unwrap_or(0.0)));
    part
}

/// The exact sum over ranks of every rank's micro-batch `parts` (`n_micro` in
/// all; parameter blocks of `numels` elements, `n_params` in all, then the
/// projections): the gradient sum as f32 and the projection sums. Collective.
pub(super) fn exact_sum(
    dist: &Dist,
    numels: &[usize],
    n_params: usize,
    n_proj: usize,
    parts: &[Vec<f64>],
    n_micro: usize,
) -> (Vec<f32>, Vec<f64>) {
    let mut blocks = numels.to_vec();
    blocks.push(n_proj);
    let mut sum = super::exact::sum_over_ranks(dist, &blocks, parts, n_micro);
    let projections = sum.split_off(n_params);
    let grad: Vec<f32> = sum.into_iter().map(|v| v as f32).collect();
    (grad, projections)
}
