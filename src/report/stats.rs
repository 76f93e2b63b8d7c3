//! The statistics of `zo-hpc report`'s arm tables: a sample's mean, sample sd and
//! 95% t-interval of the mean, Student's t quantile for small samples (the exact
//! finite series of the t distribution for whole degrees of freedom, inverted by
//! bisection; no statistics crate), and the pairing of two arms' values by seed.
use std::collections::BTreeMap;

/// Two-sided coverage of the intervals the report prints.
pub const LEVEL: f64 = 0.95;

/// P(|T| ≤ t) for Student's t with `df` ≥ 1 degrees of freedom (Abramowitz &
/// Stegun 26.7.3–4: with θ = atan(t/√df), a finite series in cos θ).
pub fn t_two_sided(t: f64, df: u32) -> f64 {
    let t = t.abs();
    if t.is_infinite() {
        return 1.0;
    }
    let theta = (t / f64::from(df).sqrt()).atan();
    let (s, c) = theta.sin_cos();
    let c2 = c * c;
    if df % 2 == 1 {
        // (2/π)·(θ + sin θ·(c + (2/3)c³ + (2·4)/(3·5)c⁵ + … up to c^(df−2)))
        let mut term = c;
        let mut sum = 0.0;
        for k in 1..=(df - 1) / 2 {
            sum += term;
            term *= c2 * f64::from(2 * k) / f64::from(2 * k + 1);
        }
        (2.0 / std::f64::consts::PI) * (theta + s * sum)
    } else {
        // sin θ·(1 + (1/2)c² + (1·3)/(2·4)c⁴ + … up to c^(df−2))
        let mut term = 1.0;
        let mut sum = 0.0;
        for k in 1..=df / 2 {
            sum += term;
            term *= c2 * f64::from(2 * k - 1) / f64::from(2 * k);
        }
        s * sum
    }
}

/// The t with P(|T| ≤ t) = `level` (e.g. 0.95 → the 97.5% quantile), by bisection.
pub fn t_quantile(level: f64, df: u32) -> f64 {
    let df = df.max(1);
    let mut hi = 1.0;
    while t_two_sided(hi, df) < level && hi < 1e12 {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_two_sided(mid, df) < level {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// A sample's size and mean; with two or more values its sample sd and the
/// `LEVEL` t-interval of the mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub sd: Option<f64>,
    pub interval: Option<(f64, f64)>,
}

/// None for an empty sample.
pub fn summarize(v: &[f64]) -> Option<Summary> {
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some(Summary {
            n,
            mean,
            sd: None,
            interval: None,
        });
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let df = u32::try_from(n - 1).unwrap_or(u32::MAX);
    let half = t_quantile(LEVEL, df) * sd / (n as f64).sqrt();
    Some(Summary {
        n,
        mean,
        sd: Some(sd),
        interval: Some((mean - half, mean + half)),
    })
}

/// An arm against its control, seed by seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    /// (seed, arm − control) for the seeds both have, in seed order.
    pub diffs: Vec<(u64, f64)>,
    /// Seeds of the arm without a control run.
    pub only_arm: Vec<u64>,
    /// Seeds of the control without a run of the arm.
    pub only_control: Vec<u64>,
}

impl Paired {
    pub fn values(&self) -> Vec<f64> {
        self.diffs.iter().map(|d| d.1).collect()
    }
}

/// Pairs the values of an arm and its control (seed → value) by seed.
pub fn pair(arm: &BTreeMap<u64, f64>, control: &BTreeMap<u64, f64>) -> Paired {
    Paired {
        diffs: arm
            .iter()
            .filter_map(|(s, a)| control.get(s).map(|c| (*s, a - c)))
            .collect(),
        only_arm: arm
            .keys()
            .filter(|s| !control.contains_key(s))
            .copied()
            .collect(),
        only_control: control
            .keys()
            .filter(|s| !arm.contains_key(s))
            .copied()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        // 97.5% quantiles of Student's t (any statistics table).
        for (df, want) in [
            (1, 12.7062),
            (2, 4.3027),
            (3, 3.1824),
            (4, 2.7764),
            (5, 2.5706),
            (9, 2.2622),
            (10, 2.2281),
            (30, 2.0423),
            (120, 1.9799),
        ] {
            let got = t_quantile(0.95, df);
            assert!(close(got, want, 5e-4), "df {df}: {got} vs {want}");
        }
        // 99.5% (two-sided 0.99) for df 4, and the CDF itself at df 1 (Cauchy).
        assert!(close(t_quantile(0.99, 4), 4.6041, 5e-4));
        assert!(close(t_two_sided(1.0, 1), 0.5, 1e-12));
        assert!(close(t_two_sided(f64::INFINITY, 3), 1.0, 1e-12));
    }

    #[test]
    fn summary_gives_the_t_interval_of_the_mean() {
        // The five HOF pairs of issue 19: mean −1.314, 95% interval [−2.65, +0.02].
        let d = [-1.59, -2.57, -1.91, 0.16, -0.66];
        let s = summarize(&d).unwrap();
        assert_eq!(s.n, 5);
        assert!(close(s.mean, -1.314, 1e-9));
        let (lo, hi) = s.interval.unwrap();
        assert!(close(lo, -2.65, 0.01) && close(hi, 0.02, 0.01), "{lo} {hi}");
        let sd = s.sd.unwrap();
        assert!(close(hi - s.mean, 2.7764 * sd / 5f64.sqrt(), 1e-3));
        let one = summarize(&[3.0]).unwrap();
        assert_eq!(
            (one.n, one.mean, one.sd, one.interval),
            (1, 3.0, None, None)
        );
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn pairing_by_seed_lists_who_has_no_partner() {
        let arm = BTreeMap::from([(42, 1.0), (43, 5.0), (47, 2.0)]);
        let control = BTreeMap::from([(42, 3.0), (43, 4.0), (44, 9.0)]);
        let p = pair(&arm, &control);
        assert_eq!(p.diffs, vec![(42, -2.0), (43, 1.0)]);
        assert_eq!(p.only_arm, vec![47]);
        assert_eq!(p.only_control, vec![44]);
        assert_eq!(p.values(), vec![-2.0, 1.0]);
    }
}
