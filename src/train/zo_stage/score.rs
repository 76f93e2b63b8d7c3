//! The score-function phase of a Stage-2 step (`zo.estimator = "score"`): the
//! latent's (and, with decoder = "zo", the decoder's) zeroth-order part through
//! a stochastic decoder instead of finite differences. Per sample i with a base
//! graph, q molecules x_ik are decoded from its latent mean z_i with every
//! decoder decision drawn at temperature τ (`zo.temperature`; keys (seed,
//! "score", step, gid, k), see `jtvae::sample`), queried on the black box
//! (through the cache) and scored by the MPNN without gradient: L_ik =
//! (head(embed(x_ik)) − y_i)². With b_ik the leave-one-out baseline
//! (`zo::score`), the phase returns the surrogate
//! S = Σ_i (1/q'_i) Σ_k (L_ik − b_ik)·log p_τ(x_ik | z_i, v),
//! whose backward puts E[(L − b)·∇ log p] into the encoder (through z_i) and
//! into the decoder's parameters v when they are trained. log p_τ is exact: the
//! recorded decisions of each sample are replayed through the same walk with
//! autograd on (`JtVae::trace_log_probs`). Nothing of the black box is
//! differentiated. Counters: `score_samples` (decodes), `score_failed` (failed
//! decode or black box, dropped), `score_distinct` (answered samples whose
//! molecule differs from the greedy one).
use super::counters::{Counts, Phases};
use super::state::{Base, Heads, ZoStep};
use crate::jtvae::decode::Decoded;
use crate::jtvae::sample::{SampleKeys, Trace};
use crate::pipeline::to_vec_f32;
use crate::zo::score::score_weights;
use std::time::Instant;
use tch::{Kind, Tensor};

/// The answered samples of a step: (base row, sample index k, loss, trace).
type Scored<'a> = Vec<(usize, usize, f64, &'a Trace)>;

impl ZoStep {
    /// The phase (see the module doc): S for the step's base samples, a scalar
    /// with gradient (0 when there is nothing to estimate).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn score_zo(
        &self,
        step: usize,
        samples: &[usize],
        enc_mean: &Tensor,
        base: &[Base],
        heads: &Heads,
        c: &mut Counts,
        ph: &mut Phases,
    ) -> Tensor {
        let t0 = Instant::now();
        let dev = self.pipe.device;
        let zero = Tensor::zeros([], (Kind::Float, dev));
        let q = self.zc.q;
        if base.is_empty() || q == 0 {
            return zero;
        }
        let l = self.pipe.jtvae.latent() as usize;
        let z = to_vec_f32(enc_mean);
        let mut ids = Vec::with_capacity(base.len() * q);
        let mut zs = Vec::with_capacity(base.len() * q * l);
        for b in base {
            for k in 0..q {
                ids.push(vec![step as u64, samples[b.k] as u64, k as u64]);
                zs.extend_from_slice(&z[b.k * l..(b.k + 1) * l]);
            }
        }
        let keys = SampleKeys {
            seed: self.seed,
            purpose: "score",
            ids: &ids,
        };
        let decoded = self
            .pipe
            .decode_many_sampled(&zs, keys, self.zc.temperature);
        c.add("score_samples", decoded.len() as f64);
        let scored = self.score_losses(samples, base, &decoded, c);
        let base_loss = self.base_losses(samples, base, heads);
        let mut rows = Vec::new();
        let mut weights = Vec::new();
        let mut traces = Vec::new();
        for (row, b) in base.iter().enumerate() {
            let mut losses = vec![None; q];
            for &(r, k, loss, _) in scored.iter().filter(|s| s.0 == row) {
                debug_assert_eq!(r, row);
                losses[k] = Some(loss);
            }
            let w = score_weights(&losses, base_loss[row]);
            for &(_, k, _, trace) in scored.iter().filter(|s| s.0 == row) {
                if let Some(w) = w[k].filter(|&w| w != 0.0) {
                    rows.push(b.k as i64);
                    weights.push(w as f32);
                    traces.push(trace);
                }
            }
        }
        let s = if traces.is_empty() {
            zero
        } else {
            let zsel = enc_mean.index_select(0, &Tensor::from_slice(&rows).to_device(dev));
            let logp = self
                .pipe
                .jtvae
                .trace_log_probs(&zsel, &traces, self.zc.temperature);
            (logp * Tensor::from_slice(&weights).to_device(dev)).sum(Kind::Float)
        };
        ph.add("score", t0);
        s
    }

    /// With decoder = "zo": adds Σ v·∂S/∂v (∂S/∂v a constant) to `surrogate`, so
    /// that the step's one backward gives the decoder's parameters the score
    /// estimate (S's graph is kept for the zeroth-order part's own gradient).
    pub(super) fn score_decoder_term(&self, s: &Tensor, surrogate: &mut Tensor) {
        if self.decoder.is_empty() {
            return;
        }
        let g = self.decoder.gradient_of(s);
        if let Some(t) = self.decoder.linear_term(&g) {
            *surrogate += t;
        }
    }

    /// The answered samples' losses (see `Scored`); counts the failed and the
    /// distinct ones.
    fn score_losses<'a>(
        &self,
        samples: &[usize],
        base: &[Base],
        decoded: &'a [(Option<Decoded>, Trace)],
        c: &mut Counts,
    ) -> Scored<'a> {
        let q = self.zc.q;
        let items: Vec<(usize, &Decoded)> = decoded
            .iter()
            .enumerate()
            .filter_map(|(m, (d, _))| d.as_ref().map(|d| (m, d)))
            .collect();
        c.add("score_failed", (decoded.len() - items.len()) as f64);
        let refs: Vec<&Decoded> = items.iter().map(|(_, d)| *d).collect();
        let (answers, hits) = self.pipe.featurize_decoded(&refs);
        c.add("cache_hits", hits as f64);
        let mut kept = Vec::new();
        let mut ok = Vec::new();
        for ((m, d), a) in items.into_iter().zip(answers) {
            if a.is_err() {
                c.add("score_failed", 1.0);
                continue;
            }
            if d.smiles != base[m / q].smiles {
                c.add("score_distinct", 1.0);
            }
            kept.push(m);
            ok.push(a);
        }
        if kept.is_empty() {
            return Vec::new();
        }
        let h = self.embed(ok.iter());
        let dim = self.pipe.mpnn.embed.out_dim();
        let y: Vec<f32> = kept
            .iter()
            .map(|&m| self.train[samples[base[m / q].k]].y)
            .collect();
        let losses = self.head_losses(&h, dim, &y);
        kept.into_iter()
            .zip(losses)
            .map(|(m, loss)| (m / q, m % q, loss, &decoded[m].1))
            .collect()
    }

    /// The greedy (base) molecules' losses, the baseline of a sample with one
    /// answered draw.
    fn base_losses(&self, samples: &[usize], base: &[Base], heads: &Heads) -> Vec<f64> {
        let y: Vec<f32> = base.iter().map(|b| self.train[samples[b.k]].y).collect();
        self.head_losses(&heads.h_base, heads.dim as i64, &y)
    }

    /// (head(h) − y)² per row of embeddings `h` (`dim` values a row), no gradient.
    fn head_losses(&self, h: &[f32], dim: i64, y: &[f32]) -> Vec<f64> {
        let dev = self.pipe.device;
        tch::no_grad(|| {
            let h = Tensor::from_slice(h).view([-1, dim]).to_device(dev);
            let pred = self.pipe.mpnn.head.forward(&h).reshape([-1]);
            let d = pred - Tensor::from_slice(y).to_device(dev);
            let sq = d.square().to_kind(Kind::Double).to_device(tch::Device::Cpu);
            Vec::<f64>::try_from(&sq).unwrap_or_default()
        })
    }
}
