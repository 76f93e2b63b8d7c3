//! The statistics of the signal test (`zo-hpc gradcheck`'s part on the real
//! pipeline; `train::signal` runs it): does a zeroth-order estimate through the
//! discrete decoder and the black box point anywhere consistent?
//!
//! - Split-half agreement: two independent estimates ĝ_A, ĝ_B of the same
//!   (smoothed) gradient g from disjoint sets of q/2 directions each
//!   ([`half_direction`]). If ĝ = g + independent zero-mean noise of variance σ²
//!   per estimate, E[ĝ_A·ĝ_B] = ‖g‖², so the cosine of the halves estimates the
//!   reliability ρ = ‖g‖²/(‖g‖² + σ²) and the cosine of one half with g is √ρ
//!   ([`half_cosine`]). The full estimate from all q directions has noise σ²/2, so
//!   (Spearman–Brown) its cosine with g is √(2ρ/(1+ρ)) ([`full_cosine`]); both
//!   are 0 when the measured agreement is ≤ 0.
//! - Descent test: along −ĝ and along random directions, which lowers the loss
//!   more? A paired sign test ([`sign_test_p`], exact binomial, two-sided) of
//!   Δ along −ĝ against the [`median`] Δ of the random directions: under the null
//!   (−ĝ no better than a random direction) the 1 + K values are exchangeable, so
//!   a win and a loss are equally likely. (Against the *mean* of K they are not:
//!   Δ is often exactly 0 and skewed, and one draw falls below a mean of K more
//!   often than half the time.)
//! - Means over molecules with a 95% Student-t interval ([`mean_interval`]).
use super::rng::Stream;

/// The k-th standard normal direction (length `dim`) of half `half` (0 or 1) of
/// the split-half estimate for molecule `gid`:
/// `Stream::new(seed, "signal", &[gid, half, k])`. Directions of the two halves
/// (and of the random descent directions, [`random_unit`]) come from disjoint
/// keys, so they are independent; they do not depend on q, so a larger q reuses a
/// smaller one's directions and adds more.
pub fn half_direction(seed: u64, gid: u64, half: u64, k: u64, dim: usize) -> Vec<f32> {
    let mut s = Stream::new(seed, "signal", &[gid, half, k]);
    (0..dim).map(|_| s.normal() as f32).collect()
}

/// Index of the random descent directions in the `half` slot of the key.
pub const RANDOM_SLOT: u64 = 2;
/// Index of the placebo direction (the descent test's control arm: a random
/// direction in place of −ĝ) in the `half` slot of the key.
pub const PLACEBO_SLOT: u64 = 3;

/// The k-th random unit direction of molecule `gid` in key slot `slot`
/// ([`RANDOM_SLOT`] or [`PLACEBO_SLOT`]): [`half_direction`] with half = slot,
/// normalized.
pub fn random_unit(seed: u64, gid: u64, (slot, k): (u64, u64), dim: usize) -> Vec<f64> {
    unit(
        &half_direction(seed, gid, slot, k, dim)
            .iter()
            .map(|&x| f64::from(x))
            .collect::<Vec<f64>>(),
    )
    .unwrap_or_else(|| vec![0.0; dim])
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `a / ‖a‖`, None for the zero vector.
pub fn unit(a: &[f64]) -> Option<Vec<f64>> {
    let n = norm(a);
    (n > 0.0 && n.is_finite()).then(|| a.iter().map(|x| x / n).collect())
}

/// The cosine of two estimates; 0 when either is all-zero (no direction to agree
/// on: no query of that half changed the loss).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let (na, nb) = (norm(a), norm(b));
    if na > 0.0 && nb > 0.0 {
        dot(a, b) / (na * nb)
    } else {
        0.0
    }
}

/// Noise-corrected cosine of a half (q/2-direction) estimate with the gradient it
/// estimates, from the mean split-half cosine c: √c (0 when c ≤ 0).
pub fn half_cosine(c: f64) -> f64 {
    if c > 0.0 {
        c.min(1.0).sqrt()
    } else {
        0.0
    }
}

/// Noise-corrected cosine of the full q-direction estimate with the gradient,
/// from the mean split-half cosine c (Spearman–Brown): √(2c/(1+c)) (0 when c ≤ 0).
pub fn full_cosine(c: f64) -> f64 {
    if c > 0.0 {
        let c = c.min(1.0);
        (2.0 * c / (1.0 + c)).sqrt()
    } else {
        0.0
    }
}

/// The 0.975 quantile of Student's t with `nu` degrees of freedom (Cornish–Fisher
/// expansion around the normal quantile; within 1e-3 for ν ≥ 3).
pub fn t975(nu: usize) -> f64 {
    let z: f64 = 1.959_963_984_540_054;
    if nu == 0 {
        return f64::INFINITY;
    }
    let n = nu as f64;
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * n)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * n * n)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * n.powi(3))
}

/// Mean and the half-width of its 95% interval (Student t, n − 1 degrees of
/// freedom); (NaN, NaN) for no values, (x, NaN) for one.
pub fn mean_interval(v: &[f64]) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, t975(n - 1) * (var / n as f64).sqrt())
}

/// The median (the mean of the two middle values for an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// ln C(n, k), summed in f64 logs (exact enough for any n the test sees).
fn ln_choose(n: u64, k: u64) -> f64 {
    let k = k.min(n - k);
    (1..=k)
        .map(|j| ((n - k + j) as f64).ln() - (j as f64).ln())
        .sum()
}

/// Two-sided exact sign test: with `wins` and `losses` (ties excluded) and
/// X ~ Binomial(n = wins + losses, 1/2), p = min(1, 2·P(X ≤ min(wins, losses))).
/// The tail is summed in logs (log-sum-exp), so large n does not underflow.
/// 1 when there is no untied pair.
pub fn sign_test_p(wins: u64, losses: u64) -> f64 {
    let n = wins + losses;
    if n == 0 {
        return 1.0;
    }
    let k = wins.min(losses);
    let half = -(n as f64) * std::f64::consts::LN_2;
    let terms: Vec<f64> = (0..=k).map(|j| ln_choose(n, j) + half).collect();
    let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ln_tail = top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
    (2.0 * ln_tail.exp()).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_p_values() {
        assert!((sign_test_p(10, 0) - 2.0 / 1024.0).abs() < 1e-15);
        assert!((sign_test_p(0, 10) - 2.0 / 1024.0).abs() < 1e-15);
        assert_eq!(sign_test_p(0, 0), 1.0);
        assert_eq!(sign_test_p(5, 5), 1.0);
        // P(X ≤ 5), X ~ Bin(20, ½) = 21700 / 2^20.
        let want = 2.0 * 21_700.0 / 1_048_576.0;
        assert!((sign_test_p(15, 5) - want).abs() < 1e-13);
        // Bin(1, ½): one win is no evidence.
        assert_eq!(sign_test_p(1, 0), 1.0);
        // No underflow: 1 000 of 1 000 gives 2^-999 (ln = −692.45).
        let p = sign_test_p(1000, 0);
        assert!(p > 0.0 && (p.ln() + 999.0 * std::f64::consts::LN_2).abs() < 1e-9);
        // Large balanced n stays at (about) 1 and in [0, 1].
        let p = sign_test_p(5000, 5001);
        assert!((0.9..=1.0).contains(&p), "{p}");
    }

    #[test]
    fn corrected_cosines() {
        assert_eq!(half_cosine(-0.2), 0.0);
        assert_eq!(full_cosine(0.0), 0.0);
        assert!((half_cosine(0.25) - 0.5).abs() < 1e-15);
        // c = 1/3: 2c/(1+c) = 1/2.
        assert!((full_cosine(1.0 / 3.0) - 0.5f64.sqrt()).abs() < 1e-15);
        assert!((full_cosine(1.0) - 1.0).abs() < 1e-15);
        // Full is always at least the half.
        for c in [0.01, 0.1, 0.5, 0.9] {
            assert!(full_cosine(c) > half_cosine(c));
        }
    }

    /// On g + independent Gaussian noise the split-half correction recovers the
    /// cosine of a full estimate with g.
    #[test]
    fn the_correction_matches_simulation() {
        let d = 40;
        let mut s = Stream::new(1, "test", &[0]);
        let g: Vec<f64> = (0..d).map(|_| s.normal()).collect();
        let sigma = 1.5; // per component: ‖noise‖² ≈ 2.25 d, ‖g‖² ≈ d
        let noisy = |s: &mut Stream, scale: f64| -> Vec<f64> {
            g.iter().map(|x| x + scale * sigma * s.normal()).collect()
        };
        let (mut halves, mut fulls) = (Vec::new(), Vec::new());
        for _ in 0..2000 {
            let a = noisy(&mut s, 1.0);
            let b = noisy(&mut s, 1.0);
            halves.push(cosine(&a, &b));
            // The full estimate averages two halves: noise scale 1/√2.
            fulls.push(cosine(&noisy(&mut s, std::f64::consts::FRAC_1_SQRT_2), &g));
        }
        let (c, _) = mean_interval(&halves);
        let (truth, _) = mean_interval(&fulls);
        assert!(
            (full_cosine(c) - truth).abs() < 0.02,
            "{} vs {truth}",
            full_cosine(c)
        );
    }

    #[test]
    fn intervals() {
        assert!((t975(31) - 2.0395).abs() < 1e-3);
        assert!((t975(10) - 2.2281).abs() < 1e-3);
        assert!((t975(100_000) - 1.96).abs() < 1e-3);
        let (m, h) = mean_interval(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        // sd = 1.291, t(3) = 3.182: 3.182 · 1.291 / 2 = 2.054
        assert!((h - 2.054).abs() < 0.02, "{h}");
        assert!(mean_interval(&[]).0.is_nan());
        assert!(mean_interval(&[1.0]).1.is_nan());
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 0.0]), 1.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn halves_and_random_directions_are_disjoint_streams() {
        let d = 2000;
        let a = half_direction(3, 7, 0, 1, d);
        let b = half_direction(3, 7, 1, 1, d);
        let r = half_direction(3, 7, RANDOM_SLOT, 1, d);
        assert_ne!(a, b);
        assert_ne!(a, r);
        // Not the training directions either (another purpose).
        assert_ne!(a, crate::zo::directions::latent_direction(3, 7, 0, 1, d));
        let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let bound = 4.0 / (d as f64).sqrt();
        assert!(cosine(&f(&a), &f(&b)).abs() < bound);
        assert!(cosine(&f(&a), &f(&r)).abs() < bound);
        // Prefixes: q does not enter the key.
        assert_eq!(half_direction(3, 7, 0, 1, 10), a[..10].to_vec());
        let u = random_unit(3, 7, (RANDOM_SLOT, 1), d);
        assert_ne!(u, random_unit(3, 7, (PLACEBO_SLOT, 1), d));
        assert!((norm(&u) - 1.0).abs() < 1e-12);
    }
}
