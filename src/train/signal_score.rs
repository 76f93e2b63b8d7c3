//! The score-function estimator (`Estimator::Score`) in the signal test
//! (`super::signal`): no directions and no radius, but samples of the stochastic
//! decoder at temperature τ (`jtvae::sample`), so its rows carry τ where the
//! others carry µσ.
//!
//! Per held-out molecule i (z_i its encoder mean) and τ, the samples x_hk of half
//! h ∈ {0, 1}, k < q_max/2, are decoded once, keyed
//! `(seed, "signal-score", [dataset row, h, k])` (a larger q extends a smaller
//! one's samples, as the directions of the other estimators do), and scored like
//! any query: Δ_hk = f_i(x_hk) − f_i(z_i) through RDKit and the MPNN, None for
//! a failed decode or black box (dropped). A half's estimate (its first q/2
//! samples) is ĝ_h = ∇_z Σ_k w_k·log p_τ(x_hk | z) at z = z_i, with w the
//! leave-one-out weights of `zo::score::score_weights` over that half alone (the
//! greedy molecule's loss is the fallback baseline, i.e. 0 in Δ units), by
//! autograd on z as a leaf (`JtVae::trace_log_probs` replays the decisions).
//! The descent test's ĝ uses all q samples of both halves with one baseline.
//! Split-half statistics and the descent machinery are the other estimators'.
use super::signal_rows::{Estimates, Molecule, RowAcc};
use crate::io::signal_file::SplitRow;
use crate::jtvae::decode::Decoded;
use crate::jtvae::sample::{SampleKeys, Trace};
use crate::pipeline::{to_vec_f32, Pipeline};
use crate::zo::estimator::Estimator;
use crate::zo::score::score_weights;
use crate::zo::signal::unit;
use tch::{Kind, Tensor};

/// The descent test's default step length t for score (no probe distance to
/// take it from): 1, about the length of one forward probe at µσ = 0.13 (d = 56)
/// and a seventh of a prior latent's norm.
pub const SCORE_STEP: f64 = 1.0;

/// Replayed traces per backward pass (bounds the autograd graph's size).
const CHUNK_TRACES: usize = 2048;

/// The keys' purpose: disjoint from Stage 2's "score" samples.
const PURPOSE: &str = "signal-score";

/// ŷ of decoded molecules (None: the decode or the black box failed).
type Answer<'a> = &'a mut dyn FnMut(&[Option<&Decoded>]) -> Vec<Option<f64>>;

/// One estimate to form: the latent and its (trace, weight) pairs.
type Group<'a> = (&'a [f32], Vec<(&'a Trace, f64)>);

/// Split-half rows of score at temperature τ (every q), and the full estimates
/// of `descent_q` when given (unit ĝ per molecule; the offset length is unused:
/// 0); `answer` gives ŷ of decoded molecules (None: failed).
pub(super) fn split_half(
    pipe: &Pipeline,
    answer: Answer,
    mols: &[Molecule],
    (qs, descent_q): (&[usize], Option<usize>),
    (tau, seed): (f64, u64),
) -> (Vec<SplitRow>, Estimates) {
    let d = pipe.jtvae.latent() as usize;
    let half_max = qs.iter().max().copied().unwrap_or(0) / 2;
    let per_mol = 2 * half_max;
    let mut ids = Vec::with_capacity(mols.len() * per_mol);
    let mut zs = Vec::with_capacity(mols.len() * per_mol * d);
    for m in mols {
        for h in 0..2u64 {
            for k in 0..half_max as u64 {
                ids.push(vec![m.gid, h, k]);
                zs.extend_from_slice(&m.z);
            }
        }
    }
    let keys = SampleKeys {
        seed,
        purpose: PURPOSE,
        ids: &ids,
    };
    let decoded = pipe.decode_many_sampled(&zs, keys, tau);
    let refs: Vec<Option<&Decoded>> = decoded.iter().map(|(d, _)| d.as_ref()).collect();
    let preds = answer(&refs);
    // deltas[m][h][k], traces likewise.
    let at = |m: usize, h: usize, k: usize| m * per_mol + h * half_max + k;
    let mut rows = Vec::new();
    let mut estimates = (Vec::new(), 0.0);
    for &q in qs {
        let n = q / 2;
        let descent = descent_q == Some(q);
        let mut groups: Vec<Group> = Vec::new();
        let mut all_deltas = Vec::new();
        for (i, m) in mols.iter().enumerate() {
            let deltas: [Vec<Option<f64>>; 2] =
                [0, 1].map(|h| (0..n).map(|k| m.delta(preds[at(i, h, k)])).collect());
            let traces: [Vec<&Trace>; 2] =
                [0, 1].map(|h| (0..n).map(|k| &decoded[at(i, h, k)].1).collect());
            for h in 0..2 {
                groups.push((&m.z, weighted(&traces[h], &deltas[h])));
            }
            if descent {
                let all: Vec<&Trace> = traces.concat();
                groups.push((&m.z, weighted(&all, &deltas.concat())));
            }
            all_deltas.push(deltas);
        }
        let mut grads = gradients(pipe, tau, &groups).into_iter();
        let mut acc = RowAcc::default();
        for deltas in &all_deltas {
            let g = [0, 1].map(|_| grads.next().unwrap_or_else(|| vec![0.0; d]));
            acc.add(&g, deltas);
            if descent {
                estimates.0.push(grads.next().and_then(|g| unit(&g)));
            }
        }
        rows.push(acc.row(Estimator::Score, tau, q, d));
    }
    (rows, estimates)
}

/// The answered samples with their nonzero leave-one-out weights.
fn weighted<'a>(traces: &[&'a Trace], deltas: &[Option<f64>]) -> Vec<(&'a Trace, f64)> {
    traces
        .iter()
        .zip(score_weights(deltas, 0.0))
        .filter_map(|(&t, w)| w.filter(|&w| w != 0.0).map(|w| (t, w)))
        .collect()
}

/// ∇_z Σ_k w_k·log p_τ(x_k | z) of each group, in `CHUNK_TRACES`-sized passes.
fn gradients(pipe: &Pipeline, tau: f64, groups: &[Group]) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(groups.len());
    let mut start = 0;
    while start < groups.len() {
        let (mut end, mut n) = (start, 0);
        while end < groups.len() && (end == start || n + groups[end].1.len() <= CHUNK_TRACES) {
            n += groups[end].1.len();
            end += 1;
        }
        out.extend(chunk_gradients(pipe, tau, &groups[start..end]));
        start = end;
    }
    out
}

/// One backward pass: a leaf row of z per group, so that each row's gradient is
/// its group's estimate.
fn chunk_gradients(pipe: &Pipeline, tau: f64, groups: &[Group]) -> Vec<Vec<f64>> {
    let d = pipe.jtvae.latent() as usize;
    let dev = pipe.device;
    let (mut rows, mut weights, mut traces) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (_, ws)) in groups.iter().enumerate() {
        for &(t, w) in ws {
            rows.push(i as i64);
            weights.push(w as f32);
            traces.push(t);
        }
    }
    if traces.is_empty() {
        return vec![vec![0.0; d]; groups.len()];
    }
    let zs: Vec<f32> = groups.iter().flat_map(|g| g.0.iter().copied()).collect();
    let grad = tch::with_grad(|| {
        let z = Tensor::from_slice(&zs)
            .view([-1, d as i64])
            .to_device(dev)
            .set_requires_grad(true);
        let zsel = z.index_select(0, &Tensor::from_slice(&rows).to_device(dev));
        let logp = pipe.jtvae.trace_log_probs(&zsel, &traces, tau);
        // The zero term keeps z in the graph when no decision depends on it.
        let s = (logp * Tensor::from_slice(&weights).to_device(dev)).sum(Kind::Float)
            + (&z * 0.0).sum(Kind::Float);
        Tensor::run_backward(&[&s], &[&z], false, false)
    });
    let flat = grad.first().map(to_vec_f32).unwrap_or_default();
    if flat.len() != groups.len() * d {
        return vec![vec![0.0; d]; groups.len()];
    }
    flat.chunks(d)
        .map(|c| c.iter().map(|&x| f64::from(x)).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_drop_failed_and_zero_samples() {
        let t = [Trace::default(), Trace::default(), Trace::default()];
        let refs: Vec<&Trace> = t.iter().collect();
        // Leave-one-out over the two answered: w = (1 − 3)/2, (3 − 1)/2.
        let w = weighted(&refs, &[Some(1.0), None, Some(3.0)]);
        assert_eq!(w.iter().map(|x| x.1).collect::<Vec<_>>(), vec![-1.0, 1.0]);
        assert!(std::ptr::eq(w[1].0, &t[2]));
        // Equal losses carry no signal: nothing to replay.
        assert!(weighted(&refs, &[Some(2.0), Some(2.0), None]).is_empty());
        // One answered sample against the greedy baseline (0 in Δ units).
        let w = weighted(&refs, &[None, Some(0.5), None]);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].1, 0.5);
    }
}
