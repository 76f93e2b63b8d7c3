//! What the signal test's estimators share (`super::signal` with its
//! finite-difference estimators, `super::signal_score` with the score
//! estimator): a held-out molecule with its loss change, and the sums over
//! molecules behind one split-half row.
use crate::io::signal_file::SplitRow;
use crate::zo::estimator::Estimator;
use crate::zo::signal::{cosine, full_cosine, half_cosine, mean_interval, norm};

/// A held-out molecule whose base decoded and featurized.
pub(super) struct Molecule {
    pub(super) gid: u64,
    pub(super) z: Vec<f32>,
    pub(super) y: f64,
    /// f_i(z_i).
    pub(super) base: f64,
}

impl Molecule {
    pub(super) fn delta(&self, pred: Option<f64>) -> Option<f64> {
        pred.map(|p| (p - self.y).powi(2) - self.base)
    }
}

/// The full descent estimates at one radius: per molecule ĝ (None: all-zero or
/// every query failed), and the root-mean-square offset length.
pub(super) type Estimates = (Vec<Option<Vec<f64>>>, f64);

/// Sums over molecules for one split-half row.
#[derive(Default)]
pub(super) struct RowAcc {
    cos: Vec<f64>,
    zero: usize,
    queries: usize,
    changed: usize,
    failed: usize,
}

impl RowAcc {
    pub(super) fn add(&mut self, g: &[Vec<f64>; 2], deltas: &[Vec<Option<f64>>; 2]) {
        self.cos.push(cosine(&g[0], &g[1]));
        if norm(&g[0]) == 0.0 && norm(&g[1]) == 0.0 {
            self.zero += 1;
        }
        for x in deltas.iter().flatten() {
            self.queries += 1;
            match x {
                None => self.failed += 1,
                Some(v) if *v != 0.0 => self.changed += 1,
                Some(_) => {}
            }
        }
    }

    pub(super) fn row(&self, est: Estimator, r: f64, q: usize, d: usize) -> SplitRow {
        let (c, ci) = mean_interval(&self.cos);
        let n = self.cos.len();
        let share = |x: usize, of: usize| {
            if of > 0 {
                x as f64 / of as f64
            } else {
                f64::NAN
            }
        };
        SplitRow {
            estimator: est.name().into(),
            radius: r,
            q: q as f64,
            queries: est.n_queries(q / 2, d) as f64 * 2.0,
            molecules: n as f64,
            cos_mean: c,
            cos_ci: ci,
            zero_share: share(self.zero, n),
            changed_share: share(self.changed, self.queries),
            failed_share: share(self.failed, self.queries),
            half_cosine: half_cosine(c),
            full_cosine: full_cosine(c),
            theory: est.theory_cosine(q, d),
        }
    }
}
