//! Estimator "cv" inside a Stage-2 step: every answered latent query's difference
//! δ_j loses the control variate's c_j = a·(s(z + r·u_j) − s(z)), ĝ gains the
//! smoothed gradient ∇s̄(z) (the mean of autograd gradients at `CV_SAMPLES`
//! offsets keyed (seed, "cv", step, gid, m)), and s is fitted on the same pairs
//! (its loss joins the step's backward, so s trains like every other parameter
//! and stays the same on every rank). s is the one of the step's start, fitted on
//! earlier steps only, so the correction keeps the estimate unbiased.
use super::state::{Base, Heads, Queries, ZoStep};
use crate::blackbox::cache::Answer;
use crate::zo::control::ControlVariate;
use crate::zo::rng::Stream;
use tch::Tensor;

/// Offsets w per sample for the smoothed gradient ∇s̄.
pub(super) const CV_SAMPLES: usize = 8;

impl ZoStep {
    /// Applies the control variate to `deltas` and `ghat` (see the file's comment);
    /// returns s's fit loss (with gradient).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cv_correct(
        &self,
        cv: &ControlVariate,
        step: usize,
        samples: &[usize],
        z: &[f32],
        q: &Queries,
        base: &[Base],
        heads: &Heads,
        pending: &[(usize, usize, Answer)],
        h_changed: &[f32],
        deltas: &mut [Vec<Option<f64>>],
        ghat: &mut [f32],
    ) -> Tensor {
        let l = self.pipe.jtvae.latent() as usize;
        let dim = heads.dim;
        let r = self.radius as f32;
        let dev = self.pipe.device;
        let changed: std::collections::HashMap<(usize, usize), usize> = pending
            .iter()
            .enumerate()
            .map(|(n, (row, j, _))| ((*row, *j), n))
            .collect();
        let (mut zq, mut zb, mut a, mut dh, mut at) = (vec![], vec![], vec![], vec![], vec![]);
        for (row, b) in base.iter().enumerate() {
            let zi = &z[b.k * l..(b.k + 1) * l];
            for (j, d) in deltas[row].iter().enumerate() {
                if d.is_none() {
                    continue;
                }
                let u = &q.offsets[b.k][j];
                zq.extend(zi.iter().zip(u).map(|(&x, &v)| x + r * v));
                zb.extend_from_slice(zi);
                a.extend_from_slice(&heads.a[row * dim..(row + 1) * dim]);
                match changed.get(&(row, j)) {
                    Some(&n) => dh.extend(
                        heads
                            .row(h_changed, n)
                            .iter()
                            .zip(&heads.h_base[row * dim..(row + 1) * dim])
                            .map(|(h, hb)| h - hb),
                    ),
                    None => dh.extend(std::iter::repeat_n(0f32, dim)),
                }
                at.push((row, j));
            }
        }
        let rows = |v: &[f32], w: usize| {
            Tensor::from_slice(v)
                .view([(v.len() / w.max(1)) as i64, w as i64])
                .to_device(dev)
        };
        let (tq, tb, ta) = (rows(&zq, l), rows(&zb, l), rows(&a, dim));
        for (&(row, j), c) in at.iter().zip(cv.values(&tq, &tb, &ta)) {
            if let Some(d) = deltas[row][j].as_mut() {
                *d -= c;
            }
        }
        self.add_smoothed_grad(cv, step, samples, z, base, heads, ghat);
        cv.fit_loss(&tq, &tb, &rows(&dh, dim))
    }

    /// Adds ∇s̄(z_i)·a_i to each base row of `ghat`.
    #[allow(clippy::too_many_arguments)]
    fn add_smoothed_grad(
        &self,
        cv: &ControlVariate,
        step: usize,
        samples: &[usize],
        z: &[f32],
        base: &[Base],
        heads: &Heads,
        ghat: &mut [f32],
    ) {
        if base.is_empty() {
            return;
        }
        let l = self.pipe.jtvae.latent() as usize;
        let dev = self.pipe.device;
        let n = base.len() as i64;
        let zb: Vec<f32> = base
            .iter()
            .flat_map(|b| z[b.k * l..(b.k + 1) * l].iter().copied())
            .collect();
        let w: Vec<f32> = base
            .iter()
            .flat_map(|b| {
                let gid = samples[b.k] as u64;
                (0..CV_SAMPLES as u64).flat_map(move |m| {
                    let mut s = Stream::new(self.seed, "cv", &[step as u64, gid, m]);
                    (0..l).map(move |_| s.normal() as f32).collect::<Vec<_>>()
                })
            })
            .collect();
        let t = |v: &[f32], w: i64| Tensor::from_slice(v).view([-1, w]).to_device(dev);
        let g = cv.smoothed_grad(
            &t(&zb, l as i64),
            &t(&heads.a, heads.dim as i64).narrow(0, 0, n),
            &t(&w, l as i64),
            self.radius,
            CV_SAMPLES as i64,
        );
        for (dst, v) in ghat.iter_mut().zip(crate::pipeline::to_vec_f32(&g)) {
            *dst += v;
        }
    }
}
