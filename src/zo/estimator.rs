//! Zeroth-order estimators of the gradient of a scalar black-box function
//! f: R^d → R at a point z, from function values only.
//!
//! Every estimator works in two halves so that the expensive part (evaluating f
//! at the query points, e.g. decoding and featurizing molecules) can be batched
//! and distributed by the caller:
//! 1. [`Estimator::offsets`] gives unit-scale offsets u_j; the caller queries
//!    f(z + r·u_j) with radius r = µ·σ (directions d = σ·u, u ~ N(0, I)).
//! 2. [`Estimator::combine`] turns the differences δ_j = f(z + r·u_j) − f(z)
//!    (None for a failed query, e.g. an invalid molecule) into the estimate ĝ.
//!
//! | estimator    | queries | ĝ                                                      |
//! |--------------|---------|--------------------------------------------------------|
//! | `forward`    | q       | (1/q') Σ_k δ_k / r · u_k  (the paper at q = 1)          |
//! | `central`    | 2q      | (1/q') Σ_k (δ_k⁺ − δ_k⁻) / (2r) · u_k  (antithetic)     |
//! | `sphere`     | q       | (d/q') Σ_k δ_k / r · u_k,  u_k uniform on the sphere    |
//! | `coordinate` | d       | ĝ_j = δ_j / r  (Liu et al. 2020; q is ignored)          |
//! | `es`         | q       | √π·S/(r q') Σ_k (s_k⁺ − s_k⁻) · u_k  (see below)         |
//! | `cv`         | q       | ∇s̄ + (1/q') Σ_k (δ_k − c_k) / r · u_k  (control variate) |
//! | `score`      | q       | not from differences: q sampled decodes (`zo::score`)   |
//!
//! `es` (as evolution strategies do): q/2 antithetic pairs ±u_k whose directions
//! are orthogonalised in blocks of d (each keeps its Gaussian length, so every u_k
//! is still N(0, I)), the 2q' values replaced by their centred ranks s ∈ [−½, ½]
//! (ties share their mean rank) and rescaled by S, the standard deviation of the
//! values. Ranks make one O(1) jump of a discrete decoder count no more than any
//! other change; √π makes the estimate unbiased on a linear f in the limit of many
//! pairs (E[(Φ(x) − ½)·x] = 1/(2√π) for x ~ N(0, 1)).
//!
//! `cv` uses forward's directions; the caller passes δ_k − c_k, c_k = a·(s(z + r·u_k)
//! − s(z)) from a learned s: z → h, and adds ∇s̄(z) itself (see `train::zo_stage`),
//! so `combine` is forward's.
//!
//! q' is the number of directions whose queries all succeeded; failed ones are
//! dropped rather than counted as zero, so a failure shrinks the sample instead
//! of biasing the estimate towards 0.
use serde::{Deserialize, Serialize};

/// Which zeroth-order gradient estimator to use (config key `zo.estimator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Estimator {
    /// One-sided Gaussian differences averaged over q directions.
    Forward,
    /// Antithetic pairs z ± r·u: the even (curvature) terms cancel.
    Central,
    /// One-sided differences along directions uniform on the unit sphere.
    Sphere,
    /// One-sided differences along each coordinate axis.
    Coordinate,
    /// Antithetic orthogonal pairs with centred-rank shaping.
    Es,
    /// Forward differences around a learned control variate.
    Cv,
    /// The score function through a stochastic decoder (`zo::score`, Stage 2's
    /// `score` phase): q sampled molecules, no offsets; `combine` gives None.
    Score,
}

impl Estimator {
    pub const ALL: [Estimator; 6] = [
        Estimator::Forward,
        Estimator::Central,
        Estimator::Sphere,
        Estimator::Coordinate,
        Estimator::Es,
        Estimator::Cv,
    ];

    /// The lowercase name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Forward => "forward",
            Estimator::Central => "central",
            Estimator::Sphere => "sphere",
            Estimator::Coordinate => "coordinate",
            Estimator::Es => "es",
            Estimator::Cv => "cv",
            Estimator::Score => "score",
        }
    }

    /// Whether `q` directions suit the estimator (`es` needs pairs).
    pub fn check_q(self, q: usize) -> Result<(), String> {
        if self == Estimator::Es && (q < 2 || !q.is_multiple_of(2)) {
            return Err(format!(
                "estimator \"es\" makes q/2 antithetic pairs: q must be even and >= 2, got {q}"
            ));
        }
        Ok(())
    }

    /// Number of perturbed queries (besides f(z) itself, which central does not
    /// need but the caller may have anyway) for q directions in `dim` dimensions.
    pub fn n_queries(self, q: usize, dim: usize) -> usize {
        match self {
            Estimator::Forward | Estimator::Sphere | Estimator::Cv | Estimator::Score => q,
            Estimator::Es => 2 * (q / 2),
            Estimator::Central => 2 * q,
            Estimator::Coordinate => dim,
        }
    }

    /// Unit-scale offsets u_j (`n_queries` of them, each of length `dim`); the
    /// query points are z + r·u_j. `direction(k)` must return the k-th standard
    /// normal direction of length `dim` (the caller keys it, e.g. with
    /// [`super::directions::latent_direction`]); it is called for k = 0..q, and
    /// not at all for `Coordinate`. Central returns the pairs as u_0, −u_0, u_1,
    /// −u_1, …
    pub fn offsets(
        self,
        q: usize,
        dim: usize,
        mut direction: impl FnMut(usize) -> Vec<f32>,
    ) -> Vec<Vec<f32>> {
        let mut draw = |k: usize| {
            let u = direction(k);
            assert_eq!(u.len(), dim, "direction {k} has the wrong length");
            u
        };
        match self {
            Estimator::Forward | Estimator::Cv => (0..q).map(draw).collect(),
            Estimator::Es => orthogonal_blocks((0..q / 2).map(draw).collect(), dim)
                .into_iter()
                .flat_map(|u| {
                    let minus = u.iter().map(|x| -x).collect();
                    [u, minus]
                })
                .collect(),
            Estimator::Central => (0..q)
                .flat_map(|k| {
                    let u = draw(k);
                    let minus = u.iter().map(|x| -x).collect();
                    [u, minus]
                })
                .collect(),
            Estimator::Sphere => (0..q)
                .map(|k| {
                    let u = draw(k);
                    let norm = u.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                    u.iter().map(|&x| (x as f64 / norm) as f32).collect()
                })
                .collect(),
            Estimator::Coordinate => (0..dim)
                .map(|j| {
                    let mut e = vec![0.0; dim];
                    e[j] = 1.0;
                    e
                })
                .collect(),
            Estimator::Score => Vec::new(),
        }
    }

    /// Combines the query results into the gradient estimate. `deltas[j]` is
    /// `Some(f(z + r·offsets[j]) − f(z))`, or `None` when query j failed. For
    /// `Central`, the pair (2k, 2k+1) gives the slope (δ⁺ − δ⁻)/(2r), in which
    /// f(z) cancels (raw values f(z ± r·u) work as well); a pair with a failed side
    /// is dropped. For `Coordinate` a failed query leaves its component at 0.
    ///
    /// Returns the estimate (length dim) and the number of directions used (pairs
    /// for `Central`, coordinates for `Coordinate`), or None when all failed.
    pub fn combine(
        self,
        offsets: &[Vec<f32>],
        deltas: &[Option<f64>],
        r: f64,
    ) -> Option<(Vec<f64>, usize)> {
        assert_eq!(offsets.len(), deltas.len(), "one delta per offset");
        assert!(r > 0.0, "radius must be positive, got {r}");
        if self == Estimator::Score {
            return None;
        }
        let dim = offsets.first()?.len();
        let mut g = vec![0.0f64; dim];
        let mut used = 0usize;
        fn add(g: &mut [f64], slope: f64, u: &[f32]) {
            for (gi, &ui) in g.iter_mut().zip(u) {
                *gi += slope * ui as f64;
            }
        }
        match self {
            Estimator::Es => return combine_ranked(offsets, deltas, r),
            Estimator::Central => {
                assert!(
                    offsets.len().is_multiple_of(2),
                    "central needs (+, −) pairs"
                );
                for (pair, d) in offsets.chunks(2).zip(deltas.chunks(2)) {
                    if let (Some(plus), Some(minus)) = (d[0], d[1]) {
                        add(&mut g, (plus - minus) / (2.0 * r), &pair[0]);
                        used += 1;
                    }
                }
            }
            Estimator::Forward
            | Estimator::Sphere
            | Estimator::Coordinate
            | Estimator::Cv
            | Estimator::Score => {
                for (u, d) in offsets.iter().zip(deltas) {
                    if let Some(delta) = d {
                        add(&mut g, delta / r, u);
                        used += 1;
                    }
                }
            }
        }
        if used == 0 {
            return None;
        }
        let scale = match self {
            Estimator::Forward | Estimator::Central | Estimator::Cv | Estimator::Score => {
                1.0 / used as f64
            }
            Estimator::Es => unreachable!("es combines by rank"),
            // E[u uᵀ] = I/d on the unit sphere.
            Estimator::Sphere => dim as f64 / used as f64,
            // Each axis is its own component: nothing to average.
            Estimator::Coordinate => 1.0,
        };
        g.iter_mut().for_each(|x| *x *= scale);
        Some((g, used))
    }

    /// The expected cosine between ĝ and ∇f in the small-µ limit (see
    /// [`theory_cosine_forward`]); `Central` with q pairs behaves like `Forward`
    /// with q directions there, and `Coordinate` is exact.
    pub fn theory_cosine(self, q: usize, dim: usize) -> f64 {
        match self {
            Estimator::Forward | Estimator::Central | Estimator::Cv | Estimator::Es => {
                theory_cosine_forward(q, dim)
            }
            Estimator::Sphere => theory_cosine_sphere(q, dim),
            Estimator::Coordinate => 1.0,
            // Not a finite-difference estimator; no small-µ theory.
            Estimator::Score => f64::NAN,
        }
    }
}

/// Gram–Schmidt within consecutive blocks of `dim` directions, each direction
/// rescaled to its own original length (so each stays marginally N(0, I)).
fn orthogonal_blocks(dirs: Vec<Vec<f32>>, dim: usize) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = Vec::with_capacity(dirs.len());
    for (i, u) in dirs.into_iter().enumerate() {
        let len = norm(&u);
        let mut v: Vec<f64> = u.iter().map(|&x| f64::from(x)).collect();
        let block = i - i % dim.max(1);
        for w in &out[block..] {
            let wn2: f64 = w.iter().map(|&x| f64::from(x).powi(2)).sum();
            let dot: f64 = v.iter().zip(w).map(|(a, &b)| a * f64::from(b)).sum();
            for (a, &b) in v.iter_mut().zip(w) {
                *a -= dot / wn2 * f64::from(b);
            }
        }
        let vn = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let s = if vn > 0.0 { len / vn } else { 0.0 };
        out.push(v.iter().map(|&x| (x * s) as f32).collect());
    }
    out
}

fn norm(u: &[f32]) -> f64 {
    u.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

/// Centred ranks in [−½, ½] of `v` (ties share their mean rank; one value: 0).
pub fn centred_ranks(v: &[f64]) -> Vec<f64> {
    let n = v.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut rank = vec![0.0; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0;
        for &k in &order[i..=j] {
            rank[k] = mean / (n - 1) as f64 - 0.5;
        }
        i = j + 1;
    }
    rank
}

/// `es`: the pairs with both sides answered, their values ranked together.
fn combine_ranked(
    offsets: &[Vec<f32>],
    deltas: &[Option<f64>],
    r: f64,
) -> Option<(Vec<f64>, usize)> {
    assert!(offsets.len().is_multiple_of(2), "es needs (+, −) pairs");
    let pairs: Vec<(&[f32], f64, f64)> = offsets
        .chunks(2)
        .zip(deltas.chunks(2))
        .filter_map(|(o, d)| Some((o[0].as_slice(), d[0]?, d[1]?)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let values: Vec<f64> = pairs.iter().flat_map(|p| [p.1, p.2]).collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let spread = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let s = centred_ranks(&values);
    let dim = offsets[0].len();
    let mut g = vec![0.0f64; dim];
    let scale = std::f64::consts::PI.sqrt() * spread / (r * pairs.len() as f64);
    for (k, (u, _, _)) in pairs.iter().enumerate() {
        let w = (s[2 * k] - s[2 * k + 1]) * scale;
        for (gi, &ui) in g.iter_mut().zip(*u) {
            *gi += w * f64::from(ui);
        }
    }
    Some((g, pairs.len()))
}

impl std::fmt::Display for Estimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Expected cosine similarity of the forward estimator with q Gaussian directions
/// in d dimensions at small µ: sqrt(q / (q + d + 1)).
///
/// One direction gives (uᵀg)·u with mean g and E‖(uᵀg)u‖² = (d+2)‖g‖², so the mean
/// of q has E‖ĝ‖² = ‖g‖²(1 + (d+1)/q) and E[ĝ·g] = ‖g‖²; cos ≈ E[ĝ·g] / (‖g‖
/// sqrt(E‖ĝ‖²)) = 1/sqrt(1 + (d+1)/q). (The ratio of means, slightly above the
/// mean of the ratio when q ≪ d.)
pub fn theory_cosine_forward(q: usize, dim: usize) -> f64 {
    (q as f64 / (q + dim + 1) as f64).sqrt()
}

/// As [`theory_cosine_forward`] for sphere directions: d·(uᵀg)u with ‖u‖ = 1 has
/// E‖·‖² = d‖g‖², so E‖ĝ‖² = ‖g‖²(1 + (d−1)/q) and cos ≈ sqrt(q / (q + d − 1)).
pub fn theory_cosine_sphere(q: usize, dim: usize) -> f64 {
    (q as f64 / (q + dim).saturating_sub(1).max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zo::directions::latent_direction;

    fn dirs(seed: u64, step: u64, dim: usize) -> impl FnMut(usize) -> Vec<f32> {
        move |k| latent_direction(seed, step, 0, k as u64, dim)
    }

    /// δ_j = f(z + r·u_j) − f(z) for every offset.
    fn deltas(f: &dyn Fn(&[f64]) -> f64, z: &[f64], offs: &[Vec<f32>], r: f64) -> Vec<Option<f64>> {
        let f0 = f(z);
        offs.iter()
            .map(|u| {
                let x: Vec<f64> = z.iter().zip(u).map(|(a, &b)| a + r * b as f64).collect();
                Some(f(&x) - f0)
            })
            .collect()
    }

    fn linear(g: Vec<f64>) -> impl Fn(&[f64]) -> f64 {
        move |x| 0.3 + g.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn shapes_and_offsets() {
        let d = 6;
        for est in Estimator::ALL {
            let offs = est.offsets(3, d, dirs(1, 0, d));
            assert_eq!(offs.len(), est.n_queries(3, d), "{est}");
            assert!(offs.iter().all(|u| u.len() == d));
        }
        let c = Estimator::Central.offsets(2, d, dirs(1, 0, d));
        assert_eq!(c[0], latent_direction(1, 0, 0, 0, d));
        assert!(c[0].iter().zip(&c[1]).all(|(a, b)| *a == -b));
        assert_eq!(c[2], latent_direction(1, 0, 0, 1, d));
        for u in Estimator::Sphere.offsets(4, d, dirs(1, 0, d)) {
            let n: f64 = u.iter().map(|&x| (x as f64).powi(2)).sum();
            assert!((n - 1.0).abs() < 1e-6);
        }
        let e = Estimator::Coordinate.offsets(99, 3, |_| unreachable!());
        assert_eq!(
            e,
            vec![
                vec![1.0, 0.0, 0.0],
                vec![0.0, 1.0, 0.0],
                vec![0.0, 0.0, 1.0]
            ]
        );
        let ser: Vec<String> = Estimator::ALL
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(
            ser,
            [
                "\"forward\"",
                "\"central\"",
                "\"sphere\"",
                "\"coordinate\"",
                "\"es\"",
                "\"cv\""
            ]
        );
    }

    #[test]
    fn coordinate_is_exact_on_linear() {
        let g = vec![1.5, -2.0, 0.25, 3.0, -0.5];
        let f = linear(g.clone());
        let z = [0.1, -0.2, 0.3, 0.4, -0.5];
        for r in [1e-3, 1.0, 50.0] {
            let offs = Estimator::Coordinate.offsets(1, 5, |_| unreachable!());
            let (gh, n) = Estimator::Coordinate
                .combine(&offs, &deltas(&f, &z, &offs, r), r)
                .unwrap();
            assert_eq!(n, 5);
            assert!(max_abs_diff(&gh, &g) < 1e-9, "r {r}: {gh:?}");
        }
    }

    #[test]
    fn central_is_exact_on_quadratic_for_any_radius() {
        // f = ½ xᵀAx + bᵀx: f(z+ru) − f(z−ru) = 2r uᵀ∇f(z) exactly, so the
        // estimate is (1/q) Σ (uᵀ∇f) u whatever r; forward is not.
        let d = 5;
        let a: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| 1.0 / (1.0 + (i + j) as f64) + if i == j { 2.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let b = [0.5, -1.0, 2.0, 0.0, 1.0];
        let a2 = a.clone();
        let f = move |x: &[f64]| {
            let mut s = 0.0;
            for i in 0..d {
                for j in 0..d {
                    s += 0.5 * x[i] * a2[i][j] * x[j];
                }
                s += b[i] * x[i];
            }
            s
        };
        let z = [0.3, -0.7, 0.2, 1.1, -0.4];
        let grad: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|j| a[i][j] * z[j]).sum::<f64>() + b[i])
            .collect();
        let q = 3;
        let us: Vec<Vec<f32>> = (0..q).map(dirs(2, 0, d)).collect();
        let mut proj = vec![0.0; d];
        for u in &us {
            let dd: f64 = u.iter().zip(&grad).map(|(&x, g)| x as f64 * g).sum();
            for (p, &x) in proj.iter_mut().zip(u) {
                *p += dd * x as f64 / q as f64;
            }
        }
        for r in [1e-3, 1.0, 100.0] {
            let offs = Estimator::Central.offsets(q, d, dirs(2, 0, d));
            let (gh, n) = Estimator::Central
                .combine(&offs, &deltas(&f, &z, &offs, r), r)
                .unwrap();
            assert_eq!(n, q);
            assert!(
                max_abs_diff(&gh, &proj) < 1e-7 * (1.0 + r),
                "r {r}: {gh:?} vs {proj:?}"
            );
        }
        let offs = Estimator::Forward.offsets(q, d, dirs(2, 0, d));
        let (gf, _) = Estimator::Forward
            .combine(&offs, &deltas(&f, &z, &offs, 1.0), 1.0)
            .unwrap();
        assert!(
            max_abs_diff(&gf, &proj) > 0.1,
            "forward should feel the curvature"
        );
    }

    /// Mean of `n` independent estimates on a linear f against its gradient:
    /// per component the spread of one direction's term is at most
    /// sqrt(‖g‖² + 2 g_j²) (Gaussian: ‖g‖² + g_j²; sphere: d(‖g‖² + 2g_j²)/(d+2)),
    /// so the mean of n·q terms must lie within 5 of those over sqrt(n·q).
    fn check_unbiased(est: Estimator) {
        let d = 8;
        let q = 2;
        let n = 3000;
        let g: Vec<f64> = (0..d).map(|i| (i as f64 - 3.5) * 0.4).collect();
        let f = linear(g.clone());
        let z = vec![0.2; d];
        let r = 0.01;
        let mut mean = vec![0.0; d];
        for step in 0..n {
            let offs = est.offsets(q, d, dirs(7, step, d));
            let (gh, used) = est.combine(&offs, &deltas(&f, &z, &offs, r), r).unwrap();
            assert_eq!(used, q);
            for (m, x) in mean.iter_mut().zip(gh) {
                *m += x / n as f64;
            }
        }
        let g2: f64 = g.iter().map(|x| x * x).sum();
        for j in 0..d {
            let tol = 5.0 * ((g2 + 2.0 * g[j] * g[j]) / (n * q as u64) as f64).sqrt();
            assert!(
                (mean[j] - g[j]).abs() < tol,
                "{est} component {j}: mean {} vs {} (tol {tol})",
                mean[j],
                g[j]
            );
        }
    }

    #[test]
    fn forward_is_unbiased_on_linear() {
        check_unbiased(Estimator::Forward);
    }

    #[test]
    fn sphere_is_unbiased_on_linear() {
        check_unbiased(Estimator::Sphere);
    }

    #[test]
    fn central_is_unbiased_on_linear() {
        check_unbiased(Estimator::Central);
    }

    #[test]
    fn failures_are_dropped() {
        let d = 4;
        let f = |x: &[f64]| x.iter().map(|v| v.sin()).sum::<f64>();
        let z = [0.1, 0.2, -0.3, 0.4];
        let r = 0.05;
        for est in Estimator::ALL {
            let q = 5;
            let offs = est.offsets(q, d, dirs(3, 1, d));
            let mut del = deltas(&f, &z, &offs, r);
            // Central: fail one side of pair 1 (drops the pair); others: query 1 and 3.
            let (fail, keep_groups): (Vec<usize>, Vec<usize>) = match est {
                Estimator::Central => (vec![3], vec![0, 2, 3, 4]),
                // q/2 = 2 pairs; pair 1 loses a side.
                Estimator::Es => (vec![3], vec![0]),
                _ => (
                    vec![1, 3],
                    (0..offs.len()).filter(|j| *j != 1 && *j != 3).collect(),
                ),
            };
            for j in fail {
                del[j] = None;
            }
            let width = if matches!(est, Estimator::Central | Estimator::Es) {
                2
            } else {
                1
            };
            let sub_offs: Vec<Vec<f32>> = keep_groups
                .iter()
                .flat_map(|&k| offs[k * width..(k + 1) * width].to_vec())
                .collect();
            let sub_del: Vec<Option<f64>> = keep_groups
                .iter()
                .flat_map(|&k| del[k * width..(k + 1) * width].to_vec())
                .collect();
            let (a, na) = est.combine(&offs, &del, r).unwrap();
            let (b, nb) = est.combine(&sub_offs, &sub_del, r).unwrap();
            assert_eq!(na, nb, "{est}");
            assert_eq!(na, keep_groups.len(), "{est}");
            assert!(max_abs_diff(&a, &b) < 1e-12, "{est}: {a:?} vs {b:?}");
            if est == Estimator::Coordinate {
                assert_eq!((a[1], a[3]), (0.0, 0.0));
            }
        }
    }

    #[test]
    fn all_failed_is_none() {
        for est in Estimator::ALL {
            let offs = est.offsets(3, 4, dirs(4, 0, 4));
            assert!(
                est.combine(&offs, &vec![None; offs.len()], 0.1).is_none(),
                "{est}"
            );
            assert!(est.combine(&[], &[], 0.1).is_none());
        }
        // Central: one failed side per pair fails every pair.
        let offs = Estimator::Central.offsets(2, 4, dirs(4, 0, 4));
        let del = [Some(1.0), None, None, Some(2.0)];
        assert!(Estimator::Central.combine(&offs, &del, 0.1).is_none());
    }

    #[test]
    fn es_pairs_are_antithetic_and_orthogonal_in_blocks() {
        let d = 5;
        let offs = Estimator::Es.offsets(14, d, dirs(9, 2, d));
        assert_eq!(offs.len(), 14);
        let plus: Vec<&Vec<f32>> = offs.iter().step_by(2).collect();
        for (p, m) in offs.chunks(2).map(|c| (&c[0], &c[1])) {
            assert!(p.iter().zip(m).all(|(a, b)| *a == -b));
        }
        let dot = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum()
        };
        // Pairs 0..5 form one block (orthogonal), 5..7 the next.
        for i in 0..5 {
            for j in 0..i {
                let c = dot(plus[i], plus[j]) / (norm(plus[i]) * norm(plus[j]));
                assert!(c.abs() < 1e-5, "block 0: {i}·{j} = {c}");
            }
        }
        assert!(dot(plus[5], plus[6]).abs() < 1e-4);
        // Each keeps its Gaussian length.
        let raw = latent_direction(9, 2, 0, 3, d);
        assert!((norm(plus[3]) - norm(&raw)).abs() < 1e-5);
        assert!(Estimator::Es.check_q(3).is_err() && Estimator::Es.check_q(4).is_ok());
    }

    #[test]
    fn es_ranks_ignore_a_monotone_transform() {
        // exp(f) has other values but the same order: the estimate's direction
        // is the same, only the spread S differs.
        let d = 6;
        let f = linear(vec![1.0, -2.0, 0.5, 0.0, 3.0, -1.0]);
        let g = |x: &[f64]| f(x).exp();
        let z = vec![0.1; d];
        let offs = Estimator::Es.offsets(8, d, dirs(5, 0, d));
        let (a, _) = Estimator::Es
            .combine(&offs, &deltas(&f, &z, &offs, 0.1), 0.1)
            .unwrap();
        let (b, _) = Estimator::Es
            .combine(&offs, &deltas(&g, &z, &offs, 0.1), 0.1)
            .unwrap();
        let cos = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>()
            / (a.iter().map(|x| x * x).sum::<f64>().sqrt()
                * b.iter().map(|x| x * x).sum::<f64>().sqrt());
        assert!((cos - 1.0).abs() < 1e-12, "{cos}");
        // All values tied (nothing flipped): the estimate is 0.
        let zero = vec![Some(0.0); offs.len()];
        let (e, n) = Estimator::Es.combine(&offs, &zero, 0.1).unwrap();
        assert_eq!(n, 4);
        assert!(e.iter().all(|&x| x == 0.0));
        let want = [1.0 / 3.0, -0.5, 1.0 / 3.0, -1.0 / 6.0];
        let got = centred_ranks(&[3.0, 1.0, 3.0, 2.0]);
        assert!(max_abs_diff(&got, &want) < 1e-12, "{got:?}");
    }

    #[test]
    fn es_is_unbiased_on_linear_with_many_pairs() {
        let d = 8;
        let g: Vec<f64> = (0..d).map(|i| (i as f64 - 3.5) * 0.4).collect();
        let f = linear(g.clone());
        let z = vec![0.2; d];
        let n = 1500;
        let mut mean = vec![0.0; d];
        for step in 0..n {
            let offs = Estimator::Es.offsets(64, d, dirs(11, step, d));
            let (gh, used) = Estimator::Es
                .combine(&offs, &deltas(&f, &z, &offs, 0.01), 0.01)
                .unwrap();
            assert_eq!(used, 32);
            for (m, x) in mean.iter_mut().zip(gh) {
                *m += x / n as f64;
            }
        }
        let dotp: f64 = mean.iter().zip(&g).map(|(a, b)| a * b).sum();
        let (nm, ng) = (
            mean.iter().map(|x| x * x).sum::<f64>().sqrt(),
            g.iter().map(|x| x * x).sum::<f64>().sqrt(),
        );
        assert!(dotp / (nm * ng) > 0.995, "direction: {mean:?} vs {g:?}");
        assert!((nm / ng - 1.0).abs() < 0.08, "length ratio {}", nm / ng);
    }

    #[test]
    fn theory_cosines() {
        assert!((theory_cosine_forward(1, 56) - (1.0f64 / 58.0).sqrt()).abs() < 1e-15);
        assert!((theory_cosine_sphere(4, 8) - (4.0f64 / 11.0).sqrt()).abs() < 1e-15);
        assert!(theory_cosine_forward(64, 56) > theory_cosine_forward(16, 56));
        assert_eq!(Estimator::Coordinate.theory_cosine(1, 56), 1.0);
    }
}
