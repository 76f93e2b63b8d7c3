//! The zeroth-order phases of a Stage-2 step. Latent: every query of a sample
//! with a base graph is compared with the base molecule, the changed ones are
//! featurized and embedded, and the estimator combines the differences into ĝ.
//! Decoder (decoder = "zo"): per direction k, the decoder's tensors are perturbed
//! (`zo::tensors`), the base latents decoded again, and the changed molecules
//! give the rank's projection c_k.
use super::counters::{Counts, Phases};
use super::state::{Base, Heads, Queries, ZoStep};
use crate::blackbox::cache::Answer;
use crate::config::{DecoderMode, LatentMode};
use crate::jtvae::decode::Decoded;
use crate::pipeline::Pipeline;
use crate::zo::rng::Stream;
use std::time::Instant;
use tch::Tensor;

/// Featurizes the molecules queries decoded to, all at once (through the cache,
/// so the source gets them in as few requests as its batch size allows), counting
/// the cache hits and the failures (in counter `failed`); `None` where the black
/// box failed.
fn featurize_queries(
    p: &Pipeline,
    qs: &[&Decoded],
    c: &mut Counts,
    failed: &str,
) -> Vec<Option<Answer>> {
    if qs.is_empty() {
        return Vec::new();
    }
    let (ans, hits) = p.featurize_decoded(qs);
    c.add("cache_hits", hits as f64);
    ans.into_iter()
        .map(|a| {
            if a.is_err() {
                c.add(failed, 1.0);
                return None;
            }
            Some(a)
        })
        .collect()
}

/// A latent query to embed: the base molecule's answer (`zo.skip_unchanged` off),
/// or the i-th changed molecule, featurized with the step's others.
enum Slot {
    Base(Answer),
    Changed(usize),
}

/// The latent queries of one step: each base row's differences δ (None for a
/// dropped direction; filled in by the embedding), and the answers still to
/// embed as (row in base, query index, answer).
type Pending = (Vec<Vec<Option<f64>>>, Vec<(usize, usize, Answer)>);

/// What the latent phase hands on: ĝ (`base.len()` rows of the latent width) and,
/// with estimator "cv", the control variate's fit loss (with gradient).
pub(super) struct Latent {
    pub(super) ghat: Vec<f32>,
    pub(super) cv_loss: Option<Tensor>,
}

impl ZoStep {
    /// Latent ZO: the estimator's queries of every sample with a base graph,
    /// combined into ĝ, then what `zo.latent` makes of it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn latent_zo(
        &self,
        step: usize,
        samples: &[usize],
        z: &[f32],
        q: &Queries,
        base: &[Base],
        heads: &Heads,
        c: &mut Counts,
        ph: &mut Phases,
    ) -> Latent {
        let l = self.pipe.jtvae.latent() as usize;
        let r = self.radius;
        let tf = Instant::now();
        let (mut deltas, pending) = self.latent_queries(q, base, c);
        ph.add("featurize", tf);
        let te = Instant::now();
        let mut h_changed = Vec::new();
        if !pending.is_empty() {
            c.add("embedded", pending.len() as f64);
            h_changed = self.embed(pending.iter().map(|(_, _, a)| a));
            let rows: Vec<usize> = pending.iter().map(|(row, _, _)| *row).collect();
            for ((row, j, _), d) in pending.iter().zip(self.deltas(heads, &rows, &h_changed)) {
                // A non-finite difference (an absurd answer) drops its direction.
                if d.is_finite() {
                    deltas[*row][*j] = Some(d);
                } else {
                    c.add("nonfinite_queries", 1.0);
                }
            }
        }
        ph.add("embed", te);
        let mut ghat = vec![0f32; base.len() * l];
        let mut cv_loss = None;
        if let Some(cv) = &self.cv {
            let tc = Instant::now();
            let fit = self.cv_correct(
                cv,
                step,
                samples,
                z,
                q,
                base,
                heads,
                &pending,
                &h_changed,
                &mut deltas,
                &mut ghat,
            );
            cv_loss = Some(fit);
            ph.add("control", tc);
        }
        for (row, (b, d)) in base.iter().zip(&deltas).enumerate() {
            if let Some((g, _)) = self.zc.estimator.combine(&q.offsets[b.k], d, r) {
                for (dst, v) in ghat[row * l..(row + 1) * l].iter_mut().zip(g) {
                    *dst += v as f32;
                }
            }
            let gid = samples[b.k] as u64;
            self.control_arm(step as u64, gid, &mut ghat[row * l..(row + 1) * l]);
        }
        Latent { ghat, cv_loss }
    }

    /// `zo.latent`: keeps ĝ, flips it, or replaces it by a random direction of the
    /// same norm keyed (seed, "placebo", step, gid).
    fn control_arm(&self, step: u64, gid: u64, g: &mut [f32]) {
        match self.zc.latent {
            LatentMode::Estimate | LatentMode::Off => {}
            LatentMode::Flipped => g.iter_mut().for_each(|x| *x = -*x),
            LatentMode::Placebo => {
                let norm = g.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                let mut s = Stream::new(self.seed, "placebo", &[step, gid]);
                let u: Vec<f64> = (0..g.len()).map(|_| s.normal()).collect();
                let un = u
                    .iter()
                    .map(|x| x * x)
                    .sum::<f64>()
                    .sqrt()
                    .max(f64::MIN_POSITIVE);
                for (x, v) in g.iter_mut().zip(u) {
                    *x = (v * norm / un) as f32;
                }
            }
        }
    }

    /// Sorts every query of the base samples: failed (its direction dropped),
    /// unchanged (δ = 0 exactly, unless `zo.skip_unchanged` is off), or changed
    /// and featurized (to embed).
    fn latent_queries(&self, q: &Queries, base: &[Base], c: &mut Counts) -> Pending {
        let mut deltas: Vec<Vec<Option<f64>>> = Vec::with_capacity(base.len());
        let mut slots: Vec<(usize, usize, Slot)> = Vec::new();
        let mut changed: Vec<&Decoded> = Vec::new();
        for (row, b) in base.iter().enumerate() {
            let n = q.offsets[b.k].len();
            let mut d = vec![None; n];
            for (j, dj) in d.iter_mut().enumerate() {
                c.add("queries", 1.0);
                let Some(qd) = &q.decoded[q.first_row[b.k] + 1 + j] else {
                    c.add("failed_decode", 1.0);
                    continue;
                };
                if qd.smiles == b.smiles {
                    c.add("unchanged", 1.0);
                    if self.zc.skip_unchanged {
                        *dj = Some(0.0);
                        continue;
                    }
                    let a = std::sync::Arc::clone(&b.answer);
                    slots.push((row, j, Slot::Base(a)));
                    continue;
                }
                c.add("changed", 1.0);
                slots.push((row, j, Slot::Changed(changed.len())));
                changed.push(qd);
            }
            deltas.push(d);
        }
        let mut answers = featurize_queries(&self.pipe, &changed, c, "failed_featurize");
        // In (row, query) order, as they were sorted.
        let pending = slots
            .into_iter()
            .filter_map(|(row, j, s)| match s {
                Slot::Base(a) => Some((row, j, a)),
                Slot::Changed(i) => answers[i].take().map(|a| (row, j, a)),
            })
            .collect();
        (deltas, pending)
    }

    /// Decoder ZO: the rank's q scalars c_k (none unless decoder = "zo").
    pub(super) fn decoder_zo(
        &self,
        step: usize,
        z: &[f32],
        base: &[Base],
        heads: &Heads,
        c: &mut Counts,
        ph: &mut Phases,
    ) -> Vec<f64> {
        let mut projections = Vec::new();
        if self.zc.decoder != DecoderMode::Zo {
            return projections;
        }
        let tz = Instant::now();
        let r2 = self.zc.mu_decoder * self.zc.sigma;
        for k in 0..self.zc.q_decoder {
            let dir = |name: &str, numel: usize| self.decoder_dir(step, k, name, numel);
            let (answers, rows) = self
                .decoder
                .with_perturbed(r2, dir, || self.decoder_queries(z, base, c));
            let mut ck = 0.0;
            if !answers.is_empty() {
                let h = self.embed(answers.iter());
                ck = self.deltas(heads, &rows, &h).iter().sum();
            }
            projections.push(ck / r2);
        }
        ph.add("decoder_zo", tz);
        projections
    }

    /// Decodes the base latents (`z`, the shard's rows) with the decoder as it is
    /// now and featurizes the molecules that changed: their answers and rows in
    /// `base`.
    fn decoder_queries(
        &self,
        z: &[f32],
        base: &[Base],
        c: &mut Counts,
    ) -> (Vec<Answer>, Vec<usize>) {
        let l = self.pipe.jtvae.latent() as usize;
        let mut graphs = Vec::new();
        let mut rows = Vec::new();
        let zk: Vec<f32> = base
            .iter()
            .flat_map(|b| z[b.k * l..(b.k + 1) * l].iter().copied())
            .collect();
        let dec = self.pipe.decode_many(&zk);
        let mut changed: Vec<(usize, &Decoded)> = Vec::new();
        for (row, (b, d)) in base.iter().zip(&dec).enumerate() {
            c.add("decoder_queries", 1.0);
            let Some(d) = d else {
                c.add("decoder_failed_decode", 1.0);
                continue;
            };
            if d.smiles == b.smiles {
                continue;
            }
            c.add("decoder_changed", 1.0);
            changed.push((row, d));
        }
        let qs: Vec<&Decoded> = changed.iter().map(|(_, d)| *d).collect();
        let answers = featurize_queries(&self.pipe, &qs, c, "decoder_failed_featurize");
        for ((row, _), a) in changed.iter().zip(answers) {
            if let Some(a) = a {
                graphs.push(a);
                rows.push(*row);
            }
        }
        (graphs, rows)
    }
}
