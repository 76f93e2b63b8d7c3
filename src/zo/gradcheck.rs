//! Checks of the zeroth-order estimators against exact gradients on a
//! differentiable stand-in for the black box ("decode + featurize + embed"), used
//! by the tests and the `gradcheck` command.
//!
//! The real pipeline has no gradient, so whether an estimator (and the chain rule
//! through the encoder that the trainer applies to it) is right can only be seen
//! on a smooth function whose gradient autograd knows: [`SmoothStandIn`].
//! [`estimator_stats`] compares ĝ with ∇f at random points; [`chained_check`]
//! compares the encoder-parameter gradient obtained by back-propagating ĝ with the
//! exact one, and with the error that the estimator's variance predicts.
use serde::Serialize;
use tch::{Kind, Tensor};

use super::directions::latent_direction;
use super::estimator::Estimator;
use super::rng::Stream;

/// A fixed random smooth map f(z) = a · tanh(W2 · tanh(W1 z + b1) + b2) +
/// (bowl/2)·‖z‖² from R^d to R, computed in f64 so that finite differences at tiny
/// µ stay accurate. `curvature` scales W1: the pre-activations have standard
/// deviation ≈ curvature for z ~ N(0, I), so a larger value means more of tanh's
/// bend is seen within a given radius. The bowl term is 0 unless set with
/// [`SmoothStandIn::with_bowl`].
pub struct SmoothStandIn {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    a: Tensor,
    bowl: f64,
    dim: usize,
}

impl SmoothStandIn {
    /// Hidden width of the map.
    pub const HIDDEN: usize = 32;

    /// Weights drawn from `Stream::new(seed, "gradcheck", &[0, tensor index])`.
    pub fn new(seed: u64, dim: usize, out_dim: usize, curvature: f64) -> Self {
        let h = Self::HIDDEN;
        let draw = |idx: u64, shape: &[usize], scale: f64| {
            let mut s = Stream::new(seed, "gradcheck", &[0, idx]);
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n).map(|_| scale * s.normal()).collect();
            let shape: Vec<i64> = shape.iter().map(|&x| x as i64).collect();
            Tensor::from_slice(&v).view(shape.as_slice())
        };
        SmoothStandIn {
            w1: draw(0, &[h, dim], curvature / (dim as f64).sqrt()),
            b1: draw(1, &[h], 0.5),
            w2: draw(2, &[out_dim, h], 1.0 / (h as f64).sqrt()),
            b2: draw(3, &[out_dim], 0.5),
            a: draw(4, &[out_dim], 1.0 / (out_dim as f64).sqrt()),
            bowl: 0.0,
            dim,
        }
    }

    /// Adds (bowl/2)·‖z‖². In the tanh map every derivative order scales with
    /// `curvature` together, so its Taylor remainders grow together with the
    /// radius; the bowl adds second-order curvature alone (Hessian bowl·I, trace
    /// bowl·d), the regime in which antithetic (central) differences pay for their
    /// second query.
    pub fn with_bowl(mut self, bowl: f64) -> Self {
        self.bowl = bowl;
        self
    }

    /// Input dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// f at each row of z: [B, d] → [B] (or [d] → []), in f64 whatever z's kind,
    /// and differentiable with respect to z.
    pub fn value(&self, z: &Tensor) -> Tensor {
        let z = z.to_kind(Kind::Double);
        let hidden = (z.matmul(&self.w1.tr()) + &self.b1).tanh();
        let out = (hidden.matmul(&self.w2.tr()) + &self.b2).tanh();
        let f = out.matmul(&self.a);
        if self.bowl == 0.0 {
            f
        } else {
            f + z.square().sum_dim_intlist(-1, false, Kind::Double) * (0.5 * self.bowl)
        }
    }

    /// f at one point.
    pub fn value_at(&self, z: &[f64]) -> f64 {
        tch::no_grad(|| self.value(&Tensor::from_slice(z)).double_value(&[]))
    }

    /// The exact gradient ∇f at each row of z ([B, d] → [B, d], f64), by autograd.
    pub fn gradient(&self, z: &Tensor) -> Tensor {
        let z = z.to_kind(Kind::Double).detach().set_requires_grad(true);
        let y = self.value(&z).sum(Kind::Double);
        Tensor::run_backward(&[y], &[&z], false, false).remove(0)
    }
}

/// ĝ at one point z: queries f(z + r·u_j) in one batch, f(z) alongside.
fn zo_gradient(
    g: &SmoothStandIn,
    est: Estimator,
    z: &[f64],
    q: usize,
    r: f64,
    direction: impl FnMut(usize) -> Vec<f32>,
) -> Option<(Vec<f64>, usize)> {
    let d = z.len();
    let offsets = est.offsets(q, d, direction);
    let mut points = Vec::with_capacity((offsets.len() + 1) * d);
    points.extend_from_slice(z);
    for u in &offsets {
        points.extend(z.iter().zip(u).map(|(x, &ui)| x + r * ui as f64));
    }
    let values: Vec<f64> = tch::no_grad(|| {
        let t = Tensor::from_slice(&points).view([(offsets.len() + 1) as i64, d as i64]);
        Vec::try_from(&g.value(&t)).expect("f64 values")
    });
    let deltas: Vec<Option<f64>> = values[1..].iter().map(|v| Some(v - values[0])).collect();
    est.combine(&offsets, &deltas, r)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Cosine similarity and relative error ‖est − exact‖ / ‖exact‖.
fn compare(est: &[f64], exact: &[f64]) -> (f64, f64) {
    let diff: Vec<f64> = est.iter().zip(exact).map(|(a, b)| a - b).collect();
    (
        dot(est, exact) / (norm(est) * norm(exact)),
        norm(&diff) / norm(exact),
    )
}

/// How well one estimator recovers ∇f on the stand-in, over random points.
#[derive(Debug, Clone, Serialize)]
pub struct EstimatorStats {
    pub estimator: Estimator,
    pub q: usize,
    pub mu: f64,
    pub sigma: f64,
    /// Perturbed queries per estimate.
    pub queries: usize,
    pub trials: usize,
    pub cosine_mean: f64,
    /// Standard deviation of the cosine over the trials.
    pub cosine_std: f64,
    /// Mean of ‖ĝ − ∇f‖ / ‖∇f‖.
    pub rel_err_mean: f64,
    /// The expected cosine in the small-µ limit ([`Estimator::theory_cosine`]).
    pub theory_cosine: Option<f64>,
}

/// Compares ĝ (radius r = µ·σ) with the autograd gradient at `trials` points
/// z ~ N(0, I) drawn from `Stream::new(seed, "gradcheck", &[1, trial])`, with
/// directions `latent_direction(seed, trial, 0, k, d)`.
pub fn estimator_stats(
    g: &SmoothStandIn,
    est: Estimator,
    q: usize,
    mu: f64,
    sigma: f64,
    trials: usize,
    seed: u64,
) -> EstimatorStats {
    assert!(trials > 0, "need at least one trial");
    let d = g.dim();
    let r = mu * sigma;
    let mut cos = Vec::with_capacity(trials);
    let mut rel = Vec::with_capacity(trials);
    for t in 0..trials as u64 {
        let mut s = Stream::new(seed, "gradcheck", &[1, t]);
        let z: Vec<f64> = (0..d).map(|_| s.normal()).collect();
        let exact: Vec<f64> =
            Vec::try_from(&g.gradient(&Tensor::from_slice(&z))).expect("f64 gradient");
        let (ghat, _) = zo_gradient(g, est, &z, q, r, |k| {
            latent_direction(seed, t, 0, k as u64, d)
        })
        .expect("the stand-in never fails");
        let (c, e) = compare(&ghat, &exact);
        cos.push(c);
        rel.push(e);
    }
    let n = trials as f64;
    let cosine_mean = cos.iter().sum::<f64>() / n;
    let cosine_std = (cos.iter().map(|c| (c - cosine_mean).powi(2)).sum::<f64>() / n).sqrt();
    EstimatorStats {
        estimator: est,
        q,
        mu,
        sigma,
        queries: est.n_queries(q, d),
        trials,
        cosine_mean,
        cosine_std,
        rel_err_mean: rel.iter().sum::<f64>() / n,
        theory_cosine: Some(est.theory_cosine(q, d)),
    }
}

/// Result of [`chained_check`].
#[derive(Debug, Clone, Serialize)]
pub struct ChainedCheck {
    pub batch: usize,
    pub dim: usize,
    pub q: usize,
    /// Total number of parameter entries.
    pub n_params: usize,
    /// Cosine between the ZO parameter gradient and the exact one.
    pub cosine: f64,
    /// ‖ZO − exact‖ / ‖exact‖ over all parameters.
    pub rel_err: f64,
    /// The root-mean-square relative error that the forward estimator's variance
    /// predicts (small-µ limit).
    pub predicted_rel_err: f64,
}

/// Gradients of `params` as one flat f64 vector (zeros where a tensor is unused).
fn flat(grads: &[Tensor], params: &[Tensor]) -> Vec<f64> {
    let mut out = Vec::new();
    for (g, p) in grads.iter().zip(params) {
        if g.defined() {
            let v: Vec<f64> =
                Vec::try_from(&g.to_kind(Kind::Double).flatten(0, -1)).expect("f64 gradient");
            out.extend(v);
        } else {
            out.extend(std::iter::repeat_n(0.0, p.numel()));
        }
    }
    out
}

/// The chain rule through an encoder, as the trainer applies it: `encode()`
/// returns z [B, d] computed from `params` (leaf tensors that require grad), and
/// the loss is Σ_i f(z_i).
///
/// - exact: autograd of Σ_i f(z_i) through the stand-in;
/// - ZO: ĝ_i per sample (forward estimator, q directions
///   `latent_direction(seed, 0, i, k, d)`, radius µ·σ), then the backward of the
///   surrogate Σ_i z_i · ĝ_i (ĝ_i a constant), i.e. Σ_i J_iᵀ ĝ_i with
///   J_i = ∂z_i/∂params;
/// - predicted error: at small µ, Cov(ĝ_i) = (‖g_i‖² I + g_i g_iᵀ)/q independently
///   over i, so E‖Σ_i J_iᵀ(ĝ_i − g_i)‖² = Σ_i (‖g_i‖² ‖J_i‖_F² + ‖J_iᵀ g_i‖²)/q,
///   divided by ‖Σ_i J_iᵀ g_i‖. J_i is built one row (latent coordinate) at a
///   time by autograd, so keep B·d small.
pub fn chained_check(
    g: &SmoothStandIn,
    params: &[Tensor],
    encode: &dyn Fn() -> Tensor,
    q: usize,
    mu: f64,
    sigma: f64,
    seed: u64,
) -> ChainedCheck {
    let d = g.dim();
    let r = mu * sigma;

    let z = encode();
    let (b, dz) = z.size2().expect("encode() must return [B, d]");
    assert_eq!(dz as usize, d, "latent width differs from the stand-in's");
    let b = b as usize;
    let loss = g.value(&z).sum(Kind::Double);
    let exact = flat(&Tensor::run_backward(&[loss], params, false, false), params);

    let z = encode();
    let zd: Vec<Vec<f64>> = Vec::try_from(&z.detach().to_kind(Kind::Double)).expect("f64 latents");
    let mut ghat = Vec::with_capacity(b * d);
    for (i, zi) in zd.iter().enumerate() {
        let (gi, _) = zo_gradient(g, Estimator::Forward, zi, q, r, |k| {
            latent_direction(seed, 0, i as u64, k as u64, d)
        })
        .expect("the stand-in never fails");
        ghat.extend(gi);
    }
    let ghat = Tensor::from_slice(&ghat)
        .view([b as i64, d as i64])
        .to_kind(z.kind());
    let surrogate = (&z * ghat).sum(z.kind());
    let zo = flat(
        &Tensor::run_backward(&[surrogate], params, true, false),
        params,
    );

    // Predicted error from the per-sample Jacobians (z's graph is still alive).
    let lat_grad: Vec<Vec<f64>> = Vec::try_from(&g.gradient(&z.detach())).expect("f64 gradient");
    let mut var = 0.0;
    for (i, gi) in lat_grad.iter().enumerate() {
        let mut jf2 = 0.0;
        let mut jtg = vec![0.0; exact.len()];
        for (j, &gij) in gi.iter().enumerate() {
            let zij = z.get(i as i64).get(j as i64);
            let row = flat(&Tensor::run_backward(&[zij], params, true, false), params);
            jf2 += dot(&row, &row);
            for (acc, x) in jtg.iter_mut().zip(&row) {
                *acc += gij * x;
            }
        }
        var += (dot(gi, gi) * jf2 + dot(&jtg, &jtg)) / q as f64;
    }

    let (cosine, rel_err) = compare(&zo, &exact);
    ChainedCheck {
        batch: b,
        dim: d,
        q,
        n_params: exact.len(),
        cosine,
        rel_err,
        predicted_rel_err: var.sqrt() / norm(&exact),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autograd_gradient_matches_central_differences() {
        let g = SmoothStandIn::new(1, 6, 8, 1.5).with_bowl(0.7);
        let z = [0.3, -0.2, 0.9, -1.1, 0.0, 0.5];
        let grad: Vec<f64> = Vec::try_from(&g.gradient(&Tensor::from_slice(&z))).unwrap();
        let h = 1e-5;
        for j in 0..6 {
            let (mut p, mut m) = (z, z);
            p[j] += h;
            m[j] -= h;
            let fd = (g.value_at(&p) - g.value_at(&m)) / (2.0 * h);
            assert!(
                (fd - grad[j]).abs() < 1e-7,
                "coord {j}: {fd} vs {}",
                grad[j]
            );
        }
        // Batched rows agree with single points (up to rounding: matrix and
        // vector products sum in different orders).
        let zb = Tensor::from_slice(&[z, z].concat()).view([2, 6]);
        let vb: Vec<f64> = Vec::try_from(&g.value(&zb)).unwrap();
        assert!((vb[0] - g.value_at(&z)).abs() < 1e-12);
        assert_eq!(vb[0], vb[1]);
    }

    #[test]
    fn stats_are_deterministic() {
        let g = SmoothStandIn::new(2, 10, 8, 1.0);
        let a = estimator_stats(&g, Estimator::Forward, 4, 1e-3, 1.0, 5, 9);
        let b = estimator_stats(&g, Estimator::Forward, 4, 1e-3, 1.0, 5, 9);
        assert_eq!(a.cosine_mean.to_bits(), b.cosine_mean.to_bits());
        assert_eq!(a.queries, 4);
        assert_eq!(
            estimator_stats(&g, Estimator::Central, 4, 1e-3, 1.0, 1, 9).queries,
            8
        );
    }
}
