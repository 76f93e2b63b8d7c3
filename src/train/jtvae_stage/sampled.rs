//! Reconstruction by the JT-VAE paper's protocol, so that our figure and the
//! literature's are the same kind of number: per held-out molecule, `E` latents
//! drawn from the encoder's posterior q(z | x) and `D` stochastic decodes of each
//! (every decision drawn at temperature τ, `JtVae::decode_sampled`). Reported:
//! the share of all decodes identical to the input (the JT-VAE paper's figure),
//! the share of molecules whose most frequent decode is the input, and of those
//! with at least one exact decode. The greedy "decode the mean" figure
//! (`reconstruct`) is unchanged beside it.
//!
//! Every draw is keyed by the molecule's held-out index (posterior noise:
//! `(seed, "recon_encode", [i, e])`; decode: `(seed, "recon_decode", [i, e, d])`),
//! so the figure does not depend on the rank count or the batch.
use super::JtvaeObjective;
use crate::data::samples::flat;
use crate::dist::Dist;
use crate::jtvae::candidates::LabelGraphs;
use crate::jtvae::decode::DecodeTimes;
use crate::jtvae::recon::{Protocol, SampledRecon};
use crate::jtvae::sample::SampleKeys;
use crate::zo::rng::Stream;
use std::collections::BTreeMap;
use tch::Tensor;

/// What the decodes of one molecule say: (exact decodes, majority exact, failed).
fn tally(want: Option<&str>, decoded: &[Option<String>]) -> (usize, bool, usize) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in decoded.iter().flatten() {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    let exact = want.and_then(|w| counts.get(w)).copied().unwrap_or(0);
    // BTreeMap iterates by SMILES: the first of the largest count wins ties.
    let top = counts
        .iter()
        .fold(None, |best: Option<(&str, usize)>, (s, &c)| match best {
            Some((_, b)) if b >= c => best,
            _ => Some((s, c)),
        });
    let majority = matches!((top, want), (Some((s, _)), Some(w)) if s == w);
    let failed = decoded.iter().filter(|d| d.is_none()).count();
    (exact, majority, failed)
}

impl JtvaeObjective {
    /// `Protocol` on the first `limit` held-out molecules (sharded over ranks).
    pub fn reconstruct_sampled(&self, dist: &Dist, limit: usize, p: Protocol) -> SampledRecon {
        let n = limit.min(self.test.len());
        let idx: Vec<usize> = dist.shard(n).collect();
        let per = p.encodings * p.decodings;
        let mut r = [0f64; 6];
        let mut labels = LabelGraphs::default();
        let mut times = DecodeTimes::default();
        // About `eval_batch` decodes per batch.
        let molecules_per_batch = (self.eval_batch / per.max(1)).max(1);
        tch::no_grad(|| {
            for chunk in idx.chunks(molecules_per_batch) {
                let z = self.posterior_draws(chunk, p.encodings);
                let z = z.repeat_interleave_self_int(p.decodings as i64, 0, None);
                let ids: Vec<Vec<u64>> = chunk
                    .iter()
                    .flat_map(|&i| {
                        (0..p.encodings).flat_map(move |e| {
                            (0..p.decodings).map(move |d| vec![i as u64, e as u64, d as u64])
                        })
                    })
                    .collect();
                let keys = SampleKeys {
                    seed: self.seed,
                    purpose: "recon_decode",
                    ids: &ids,
                };
                let out = self.model.decode_sampled(
                    &z,
                    keys,
                    p.temperature,
                    (&self.vocab, &mut labels),
                    &mut times,
                    self.decode_threads,
                );
                let decoded: Vec<Option<String>> = out
                    .into_iter()
                    .map(|(d, _)| d.ok().map(|d| d.smiles))
                    .collect();
                for (m, &i) in chunk.iter().enumerate() {
                    let want = flat(&self.test_smiles[i]);
                    let (exact, majority, failed) =
                        tally(want.as_deref(), &decoded[m * per..(m + 1) * per]);
                    r[0] += 1.0;
                    r[1] += per as f64;
                    r[2] += exact as f64;
                    r[3] += f64::from(u8::from(majority));
                    r[4] += f64::from(u8::from(exact > 0));
                    r[5] += failed as f64;
                }
            }
        });
        dist.allreduce_sum_f64(&mut r);
        SampledRecon {
            protocol: p,
            molecules: r[0],
            decodes: r[1],
            exact_decodes: r[2],
            majority_exact: r[3],
            any_exact: r[4],
            failed_decodes: r[5],
        }
    }

    /// `encodings` draws z = µ + σ·ε from q(z | x) per molecule of `chunk`
    /// (held-out indices), molecule-major: `[chunk × encodings, latent]`.
    fn posterior_draws(&self, chunk: &[usize], encodings: usize) -> Tensor {
        let samples = Self::samples(&self.test, chunk);
        let (g, t) = self.model.batches(&samples, self.device);
        let (mean, logvar) = self.model.encode(&g, &t);
        let latent = self.model.latent();
        let mut eps = Vec::with_capacity(chunk.len() * encodings * latent as usize);
        for &i in chunk {
            for e in 0..encodings {
                let mut s = Stream::new(self.seed, "recon_encode", &[i as u64, e as u64]);
                eps.extend((0..latent).map(|_| s.normal() as f32));
            }
        }
        let eps = Tensor::from_slice(&eps)
            .view([(chunk.len() * encodings) as i64, latent])
            .to_device(self.device);
        let k = encodings as i64;
        let mean = mean.repeat_interleave_self_int(k, 0, None);
        let sd = (logvar * 0.5).exp().repeat_interleave_self_int(k, 0, None);
        mean + sd * eps
    }
}

#[cfg(test)]
mod tests {
    use super::tally;

    fn d(v: &[&str]) -> Vec<Option<String>> {
        v.iter()
            .map(|s| (!s.is_empty()).then(|| s.to_string()))
            .collect()
    }

    #[test]
    fn the_tally_counts_exact_decodes_and_the_most_frequent() {
        assert_eq!(
            tally(Some("CCO"), &d(&["CCO", "CCN", "CCO", ""])),
            (2, true, 1)
        );
        assert_eq!(
            tally(Some("CCO"), &d(&["CCN", "CCN", "CCO"])),
            (1, false, 0)
        );
        // a tie goes to the smaller SMILES
        assert_eq!(tally(Some("CCO"), &d(&["CCN", "CCO"])), (1, false, 0));
        assert_eq!(tally(Some("CCN"), &d(&["CCN", "CCO"])), (1, true, 0));
        assert_eq!(tally(Some("CCO"), &d(&["", ""])), (0, false, 2));
        assert_eq!(tally(None, &d(&["CCO"])), (0, false, 0));
    }
}
