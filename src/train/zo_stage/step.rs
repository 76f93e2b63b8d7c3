//! One Stage-2 step as a list of phases: `encode` the samples (with gradient),
//! decode their latents and the latent queries as one batch
//! (`decode_queries`), featurize the base molecules (`base_graphs`), the
//! prediction loss on them (`predict`), the latent and decoder zeroth-order
//! phases (`queries`), and the one `backward` that gives every gradient.
use super::counters::{Counts, Phases};
use super::state::{Base, Heads, Queries, ZoStep};
use crate::chem::MolGraph;
use crate::config::LatentMode;
use crate::jtvae::batch::TreeBatch;
use crate::jtvae::decode::Decoded;
use crate::jtvae::model::Sample;
use crate::pipeline::to_vec_f32;
use crate::train::trainer::StepOut;
use crate::zo::directions::latent_direction;
use crate::zo::noise::vae_noise;
use std::time::Instant;
use tch::{Kind, Tensor};

/// The encoder's output for the step's samples (with gradient).
struct Encoded<'a> {
    batch: Vec<Sample<'a>>,
    t: TreeBatch,
    mean: Tensor,
    logvar: Tensor,
    /// `mean` read back, row-major.
    z: Vec<f32>,
}

impl ZoStep {
    /// The step on samples (dataset positions) `samples` at global step `step`.
    pub(super) fn step(&self, samples: &[usize], step: usize) -> StepOut {
        let mut c = Counts::new();
        let mut ph = Phases::new();
        c.set("samples", samples.len() as f64);
        let source_before = self.pipe.source_stats();
        let differ_before = self.pipe.cache_differ();
        let enc = self.encode(samples, &mut ph);
        let queries = self.decode_queries(samples, step, &enc.z, &mut ph);
        let base = self.base_graphs(&queries, &mut c, &mut ph);
        let (base, mut heads) = self.predict_finite(samples, base, &mut c, &mut ph);
        let lat = self.latent_zo(
            step, samples, &enc.z, &queries, &base, &heads, &mut c, &mut ph,
        );
        let score = self.zc.estimator == crate::zo::estimator::Estimator::Score;
        let mut projections = if score {
            Vec::new() // the score phase gives the decoder its gradient itself
        } else {
            self.decoder_zo(step, &enc.z, &base, &heads, &mut c, &mut ph)
        };
        let s = (score && self.zc.latent != LatentMode::Off)
            .then(|| self.score_zo(step, samples, &enc.mean, &base, &heads, &mut c, &mut ph));
        let tb = Instant::now();
        let mut zo = self.encoder_surrogate(&enc.mean, &base, &lat.ghat);
        if let Some(s) = s {
            self.score_decoder_term(&s, &mut heads.surrogate);
            zo = Some(zo.map_or_else(|| s.shallow_clone(), |z| z + &s));
        }
        let (terms, zo_grad) =
            self.backward(samples, step, &enc, heads, zo, lat.cv_loss, &mut ph, tb);
        projections.extend(zo_grad.into_iter().map(f64::from));
        c.set_source(&source_before, &self.pipe.source_stats());
        c.set(
            "source_differ",
            (self.pipe.cache_differ() - differ_before) as f64,
        );
        StepOut {
            loss: terms[0] + terms[1],
            terms,
            projections,
            counts: c.into_vec(),
            phase_s: ph.into_vec(),
        }
    }

    /// Encodes the samples (with gradient).
    fn encode(&self, samples: &[usize], ph: &mut Phases) -> Encoded<'_> {
        let p = &self.pipe;
        let t0 = Instant::now();
        let batch: Vec<_> = samples.iter().map(|&i| self.train[i].ex.sample()).collect();
        let (g, t) = p.jtvae.batches(&batch, p.device);
        let (mean, logvar) = p.jtvae.encode(&g, &t);
        let z = to_vec_f32(&mean);
        ph.add("encode", t0);
        Encoded {
            batch,
            t,
            mean,
            logvar,
            z,
        }
    }

    /// Decodes every sample's base latent and its estimator's queries as one batch
    /// (the directions depend only on the key, not on the base molecule).
    fn decode_queries(
        &self,
        samples: &[usize],
        step: usize,
        z: &[f32],
        ph: &mut Phases,
    ) -> Queries {
        let l = self.pipe.jtvae.latent() as usize;
        let r = self.radius;
        let est = self.zc.estimator;
        let t1 = Instant::now();
        let off = self.zc.latent == LatentMode::Off;
        let offsets: Vec<Vec<Vec<f32>>> = samples
            .iter()
            .map(|&gid| {
                if off {
                    return Vec::new();
                }
                est.offsets(self.zc.q, l, |kk| {
                    latent_direction(self.seed, step as u64, gid as u64, kk as u64, l)
                })
            })
            .collect();
        let mut zs: Vec<f32> = Vec::new();
        let mut first_row = Vec::with_capacity(samples.len());
        for (k, offs) in offsets.iter().enumerate() {
            let zi = &z[k * l..(k + 1) * l];
            first_row.push(zs.len() / l);
            zs.extend_from_slice(zi);
            for u in offs {
                zs.extend(zi.iter().zip(u).map(|(&a, &b)| a + (r as f32) * b));
            }
        }
        let decoded = self.pipe.decode_many(&zs);
        ph.add("decode", t1);
        Queries {
            offsets,
            first_row,
            decoded,
        }
    }

    /// The samples whose base latent decoded to a molecule the black box
    /// answered; counts the others.
    fn base_graphs(&self, q: &Queries, c: &mut Counts, ph: &mut Phases) -> Vec<Base> {
        let t2 = Instant::now();
        let base_items: Vec<&Decoded> = q
            .first_row
            .iter()
            .filter_map(|&row| q.decoded[row].as_ref())
            .collect();
        let (answers, hits) = self.pipe.featurize_decoded(&base_items);
        c.add("cache_hits", hits as f64);
        ph.add("featurize", t2);
        let mut answers = answers.into_iter();
        let mut ok = Vec::new();
        for (k, &row) in q.first_row.iter().enumerate() {
            if let Some(d) = &q.decoded[row] {
                let a = answers.next().expect("one answer per decoded molecule");
                if a.is_ok() {
                    ok.push(Base {
                        k,
                        smiles: d.smiles.clone(),
                        answer: a,
                    });
                    continue;
                }
            }
            c.add("base_failed", 1.0);
        }
        ok
    }

    /// Prediction loss on the base graphs: w2 and a = ∂L/∂h by backprop.
    /// `predict` on the base rows whose loss (pred − y)² is finite: a sample with a
    /// non-finite one (an absurd answer, an overflowing embedding) is left out of
    /// the step, counted (`nonfinite`), instead of making the step's loss NaN.
    fn predict_finite(
        &self,
        samples: &[usize],
        mut base: Vec<Base>,
        c: &mut Counts,
        ph: &mut Phases,
    ) -> (Vec<Base>, Heads) {
        loop {
            match self.predict(samples, &base, ph) {
                Ok(heads) => return (base, heads),
                Err(bad) => {
                    c.add("nonfinite", bad.len() as f64);
                    let mut row = 0;
                    base.retain(|_| {
                        row += 1;
                        !bad.contains(&(row - 1))
                    });
                }
            }
        }
    }

    /// The MPNN on the base graphs: predictions, the loss's backward through the
    /// head, a = ∂L/∂h; or the rows whose loss is not finite (nothing done then).
    fn predict(
        &self,
        samples: &[usize],
        base: &[Base],
        ph: &mut Phases,
    ) -> Result<Heads, Vec<usize>> {
        let p = &self.pipe;
        let dev = p.device;
        let t3 = Instant::now();
        let mut pred_sum = 0.0;
        let mut h_base = Tensor::zeros([0], (Kind::Float, dev));
        let mut a_vec: Vec<f32> = Vec::new();
        let mut pred_rows: Vec<f32> = Vec::new();
        let y: Vec<f32> = base.iter().map(|b| self.train[samples[b.k]].y).collect();
        let mut surrogate = Tensor::zeros([], (Kind::Float, dev));
        let hd_dim = p.mpnn.embed.out_dim() as usize;
        if !base.is_empty() {
            let graphs: Vec<&MolGraph> = base
                .iter()
                .map(|b| b.answer.as_ref().as_ref().expect("kept only graphs"))
                .collect();
            let h = p.mpnn.embed.forward(&p.batch(&graphs));
            let hd = h.detach().set_requires_grad(true);
            let pred = p.mpnn.head.forward(&hd);
            pred_rows = to_vec_f32(&pred.detach().to_kind(Kind::Float));
            let per_row = (pred - Tensor::from_slice(&y).to_device(dev)).square();
            let bad: Vec<usize> = to_vec_f32(&per_row.detach().to_kind(Kind::Float))
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_finite())
                .map(|(i, _)| i)
                .collect();
            if !bad.is_empty() {
                ph.add("embed", t3);
                return Err(bad);
            }
            let loss = per_row.sum(Kind::Float);
            loss.backward();
            pred_sum = loss.double_value(&[]);
            let a = hd.grad().detach();
            a_vec = to_vec_f32(&a);
            if h.requires_grad() {
                surrogate = (&h * &a).sum(Kind::Float);
            }
            h_base = h.detach();
        }
        ph.add("embed", t3);
        Ok(Heads {
            pred_sum,
            a: a_vec,
            h_base: to_vec_f32(&h_base),
            dim: hd_dim,
            pred: pred_rows,
            y,
            surrogate,
        })
    }

    /// The encoder's zeroth-order part z·ĝ (None when nothing of it is trained).
    fn encoder_surrogate(&self, mean: &Tensor, base: &[Base], ghat: &[f32]) -> Option<Tensor> {
        if base.is_empty() || self.zo_part.is_empty() {
            return None;
        }
        let dev = self.pipe.device;
        let l = self.pipe.jtvae.latent() as usize;
        let rows: Vec<i64> = base.iter().map(|b| b.k as i64).collect();
        let zsel = mean.index_select(0, &Tensor::from_slice(&rows).to_device(dev));
        let g = Tensor::from_slice(ghat)
            .view([base.len() as i64, l as i64])
            .to_device(dev);
        Some((zsel * g).sum(Kind::Float))
    }

    /// The backward (timed from `tb`): the zeroth-order part z·ĝ first, into its
    /// own buffer (returned, `zo_part` order), then in one pass w1 (h·a), λ·JT-VAE
    /// and the control variate's fit into `.grad`. Returns the terms (pred, jtvae,
    /// word, topo, assm, kl) and the zeroth-order part.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        samples: &[usize],
        step: usize,
        enc: &Encoded,
        heads: Heads,
        zo: Option<Tensor>,
        cv_loss: Option<Tensor>,
        ph: &mut Phases,
        tb: Instant,
    ) -> (Vec<f64>, Vec<f32>) {
        let p = &self.pipe;
        let dev = p.device;
        let zo_grad = match &zo {
            Some(t) => self.zo_part.gradient_of(t),
            None => vec![0f32; self.zo_part.numel()],
        };
        let eps = vae_noise(self.seed, samples, step, p.jtvae.latent(), dev);
        let jl = p
            .jtvae
            .losses_encoded(&enc.batch, &enc.t, &enc.mean, &enc.logvar, &eps, dev);
        let jt = &jl.word + &jl.topo + &jl.assm + &jl.kl * self.beta;
        let mut total = heads.surrogate + &jt * self.lambda;
        let mut cv_sum = 0.0;
        if let Some(cv) = cv_loss {
            cv_sum = cv.double_value(&[]);
            total += cv;
        }
        if total.requires_grad() {
            total.backward();
        }
        let jt_sum = jt.double_value(&[]) * self.lambda;
        ph.add("backward", tb);
        let mut terms = vec![
            heads.pred_sum,
            jt_sum,
            jl.word.double_value(&[]),
            jl.topo.double_value(&[]),
            jl.assm.double_value(&[]),
            jl.kl.double_value(&[]),
        ];
        if self.cv.is_some() {
            terms.push(cv_sum);
        }
        (terms, zo_grad)
    }
}
