//! The signal test of `zo-hpc gradcheck` on the real pipeline: does a
//! zeroth-order estimate through the discrete decoder and the black box carry any
//! signal? On a trained Stage 1 and M held-out (test split) molecules, with z_i
//! the encoder mean of molecule i and the per-molecule loss
//! f_i(z) = (MPNN(blackbox(decode(z))) − y_i)² (normalized units, the loss Stage 2
//! trains; greedy decode, `featurize_decoded`, embed + head without gradient):
//!
//! 1. Split-half agreement, per estimator (every `Estimator` that draws random
//!    directions), radius µσ and q: two estimates from q/2 directions each,
//!    `zo::signal::half_direction(seed, gid, half, k)` (the dataset row as gid),
//!    their cosine, and the noise-corrected cosine with the smoothed gradient
//!    (`zo::signal`). The directions do not depend on q or the radius, so the
//!    rows of one molecule share them (common random numbers), and a query point
//!    met twice (a larger q, central's + side = forward's) is decoded once.
//! 2. Descent: the full q-direction estimate ĝ at the radius with the best
//!    split-half agreement; Δ = f_i(z − t·ĝ/‖ĝ‖) − f_i(z) against the mean Δ of
//!    random unit directions of the same length t; a paired sign test.
//!
//! 3. The score-function estimator (`Estimator::Score`, `super::signal_score`):
//!    samples of the stochastic decoder at temperature τ instead of directions
//!    at a radius (its rows carry τ in the radius column); the same statistics.
//!
//! A failed decode or featurization is a failed query: dropped by the estimator,
//! counted. All queries of one radius (or of the descent test) go through the
//! decoder as one batch. Rank 0 runs it alone: the result depends on the seed only.
use super::signal_rows::{Estimates, Molecule, RowAcc};
use super::signal_score;
use crate::data::samples::Prepared;
use crate::io::dataset::Dataset;
use crate::io::signal_file::{Descent, Signal, SplitRow, PLACEBO};
use crate::jtvae::decode::Decoded;
use crate::jtvae::vocab::Vocab;
use crate::pipeline::{labeled, to_vec_f32, Labeled, Pipeline};
use crate::zo::estimator::Estimator;
use crate::zo::signal::{
    half_direction, mean_interval, median, random_unit, sign_test_p, unit, PLACEBO_SLOT,
    RANDOM_SLOT,
};
use std::collections::HashMap;
use std::time::Instant;

/// What the signal test measures (command-line options of `gradcheck`).
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Held-out molecules (the first of the test split).
    pub molecules: usize,
    /// Directions of the full estimate (even: q/2 per half).
    pub qs: Vec<usize>,
    /// Radii µσ.
    pub radii: Vec<f64>,
    /// Decoder temperatures τ of the score estimator (used when `estimators`
    /// holds `Score`).
    pub temperatures: Vec<f64>,
    pub estimators: Vec<Estimator>,
    /// q of the descent test (added to `qs`); its estimator is the first of `estimators`.
    pub descent_q: usize,
    /// Radius of the descent test (τ when its estimator is score); None: the one
    /// with the best split-half c̄.
    pub descent_radius: Option<f64>,
    /// Step length t; None: the estimator's probe distance, r·√(mean ‖u_k‖²)
    /// (≈ r√d for Gaussian directions, r on the sphere), and
    /// `signal_score::SCORE_STEP` for score.
    pub step: Option<f64>,
    /// Random unit directions per molecule in the descent test.
    pub random: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            molecules: 64,
            qs: vec![4, 16, 64],
            radii: vec![0.03, 0.1, 0.3, 1.0],
            temperatures: vec![1.0],
            estimators: vec![Estimator::Forward, Estimator::Central, Estimator::Sphere],
            descent_q: 16,
            descent_radius: None,
            step: None,
            random: 16,
        }
    }
}

/// Options the test cannot run with.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OptionsError {
    #[error("signal q = {0}: each q must be even and at least 2 (q/2 directions per half)")]
    OddQ(usize),
    #[error("signal radius {0}: radii must be positive and finite")]
    Radius(f64),
    #[error("signal estimator {0} draws no random directions: its halves would be equal (use forward, central, sphere, es or score)")]
    NotRandom(Estimator),
    #[error(
        "the signal test needs at least one estimator, q and radius, and one random direction"
    )]
    Empty,
}

impl Options {
    /// Checks the options; the descent q joins `qs`, which are sorted.
    pub fn checked(mut self) -> Result<Options, OptionsError> {
        self.qs.push(self.descent_q);
        self.qs.sort_unstable();
        self.qs.dedup();
        if self.estimators.first() == Some(&Estimator::Score) {
            self.temperatures.extend(self.descent_radius);
        }
        self.temperatures.sort_unstable_by(f64::total_cmp);
        self.temperatures.dedup();
        if let Some(&q) = self.qs.iter().find(|&&q| q < 2 || q % 2 == 1) {
            return Err(OptionsError::OddQ(q));
        }
        let radii = self
            .radii
            .iter()
            .chain(&self.temperatures)
            .chain(&self.descent_radius)
            .chain(&self.step);
        if let Some(&r) = radii.into_iter().find(|r| !(r.is_finite() && **r > 0.0)) {
            return Err(OptionsError::Radius(r));
        }
        let sampled = |e: &Estimator| is_random(*e) || *e == Estimator::Score;
        if let Some(&e) = self.estimators.iter().find(|e| !sampled(e)) {
            return Err(OptionsError::NotRandom(e));
        }
        let no_tau = self.temperatures.is_empty() && self.estimators.contains(&Estimator::Score);
        if self.estimators.is_empty() || self.radii.is_empty() || self.random == 0 || no_tau {
            return Err(OptionsError::Empty);
        }
        Ok(self)
    }
}

/// Whether an estimator draws random directions (asks its `direction` closure),
/// i.e. whether two halves can differ.
pub fn is_random(est: Estimator) -> bool {
    let mut asked = false;
    let _ = est.offsets(2, 4, |k| {
        asked = true;
        (0..4).map(|j| if j == k { 1.0 } else { 0.0 }).collect()
    });
    asked
}

/// Query points (rows of length d), each distinct point once (by its bits).
struct Points {
    dim: usize,
    flat: Vec<f32>,
    index: HashMap<Vec<u32>, usize>,
}

impl Points {
    fn new(dim: usize) -> Points {
        Points {
            dim,
            flat: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The row of point `p`, added when new.
    fn add(&mut self, p: Vec<f32>) -> usize {
        let key: Vec<u32> = p.iter().map(|x| x.to_bits()).collect();
        let n = self.flat.len() / self.dim;
        *self.index.entry(key).or_insert_with(|| {
            self.flat.extend_from_slice(&p);
            n
        })
    }
}

/// z + s·u.
fn moved(z: &[f32], s: f64, u: &[f64]) -> Vec<f32> {
    z.iter()
        .zip(u)
        .map(|(&a, &b)| (f64::from(a) + s * b) as f32)
        .collect()
}

/// The pipeline's prediction at latent points: decode, black box, MPNN, with
/// one prediction per distinct molecule (so a query that decodes to the base's
/// molecule has exactly the base's loss).
struct Oracle<'p> {
    pipe: &'p Pipeline,
    preds: HashMap<String, Option<f64>>,
    queries: usize,
}

impl Oracle<'_> {
    /// ŷ at each row of `points` (one decode batch); None where the decode or the
    /// black box failed.
    fn predict(&mut self, points: &[f32]) -> Vec<Option<f64>> {
        let decoded = self.pipe.decode_many(points);
        let refs: Vec<Option<&Decoded>> = decoded.iter().map(Option::as_ref).collect();
        self.answer(&refs)
    }

    /// ŷ of decoded molecules (None: the decode or the black box failed).
    fn answer(&mut self, decoded: &[Option<&Decoded>]) -> Vec<Option<f64>> {
        self.queries += decoded.len();
        let mut new: Vec<&Decoded> = Vec::new();
        for &d in decoded.iter().flatten() {
            if !self.preds.contains_key(&d.smiles) && !new.iter().any(|x| x.smiles == d.smiles) {
                new.push(d);
            }
        }
        let (answers, _) = self.pipe.featurize_decoded(&new);
        let mut ok = Vec::new();
        for (d, a) in new.iter().zip(&answers) {
            match a.as_ref() {
                Ok(g) => ok.push((d.smiles.clone(), g)),
                Err(_) => {
                    self.preds.insert(d.smiles.clone(), None);
                }
            }
        }
        for chunk in ok.chunks(256) {
            let graphs: Vec<_> = chunk.iter().map(|(_, g)| *g).collect();
            let pred = tch::no_grad(|| self.pipe.mpnn.forward(&self.pipe.batch(&graphs)));
            for ((s, _), p) in chunk.iter().zip(to_vec_f32(&pred)) {
                self.preds.insert(s.clone(), Some(f64::from(p)));
            }
        }
        decoded
            .iter()
            .map(|d| d.and_then(|d| self.preds.get(&d.smiles).copied().flatten()))
            .collect()
    }
}

/// Runs the test on `mols` (gid = dataset row, molecule); see the module doc.
pub(crate) fn run(pipe: &Pipeline, mols: &[(u64, Labeled)], o: &Options, seed: u64) -> Signal {
    let t0 = Instant::now();
    let d = pipe.jtvae.latent() as usize;
    let mut oracle = Oracle {
        pipe,
        preds: HashMap::new(),
        queries: 0,
    };
    let exs: Vec<_> = mols.iter().map(|(_, l)| &l.ex).collect();
    let z = if exs.is_empty() {
        Vec::new()
    } else {
        to_vec_f32(&pipe.encode_means(&exs))
    };
    let base = oracle.predict(&z[..mols.len() * d]);
    let ok: Vec<Molecule> = mols
        .iter()
        .zip(&base)
        .enumerate()
        .filter_map(|(i, ((gid, l), p))| {
            let y = f64::from(l.y);
            Some(Molecule {
                gid: *gid,
                z: z[i * d..(i + 1) * d].to_vec(),
                y,
                base: (p.as_ref()? - y).powi(2),
            })
        })
        .collect();
    let mut rows = Vec::new();
    let mut kept = Vec::new();
    for &r in &o.radii {
        let (mut rs, estimates) = split_half(&mut oracle, &ok, o, (r, seed));
        log::info!(
            "signal: µσ = {r}: {} rows, {} queries so far, {:.0} s",
            rs.len(),
            oracle.queries,
            t0.elapsed().as_secs_f64()
        );
        rows.append(&mut rs);
        kept.push((r, estimates));
    }
    if o.estimators.contains(&Estimator::Score) {
        let mut score_kept = Vec::new();
        for &tau in &o.temperatures {
            let (mut rs, estimates) = score_split(&mut oracle, &ok, o, (tau, seed));
            log::info!(
                "signal: score, τ = {tau}: {} rows, {} queries so far, {:.0} s",
                rs.len(),
                oracle.queries,
                t0.elapsed().as_secs_f64()
            );
            rows.append(&mut rs);
            score_kept.push((tau, estimates));
        }
        if o.estimators[0] == Estimator::Score {
            kept = score_kept;
        }
    }
    let (descent, placebo) = descent(&mut oracle, &ok, o, (&rows, kept), seed).unzip();
    let n = ok.len().max(1) as f64;
    Signal {
        dim: d as f64,
        molecules: mols.len() as f64,
        base_failed: (mols.len() - ok.len()) as f64,
        base_loss: ok.iter().map(|m| m.base).sum::<f64>() / n,
        wall_s: t0.elapsed().as_secs_f64(),
        rows,
        descent,
        placebo,
    }
}

/// The first `m` molecules of the test split that the JT-VAE can encode, with
/// their dataset rows (the key of their directions).
pub(crate) fn test_molecules(ds: &Dataset, vocab: &Vocab, m: usize) -> Vec<(u64, Labeled)> {
    ds.test
        .iter()
        .take(m)
        .filter_map(|&gid| {
            let (mut l, _) = labeled(ds, &[gid], vocab, &mut Prepared::none(None));
            Some((gid, l.pop()?))
        })
        .collect()
}

/// The offsets of one half for molecule `gid`.
fn half_offsets(
    est: Estimator,
    q: usize,
    d: usize,
    (seed, gid, half): (u64, u64, u64),
) -> Vec<Vec<f32>> {
    est.offsets(q / 2, d, |k| half_direction(seed, gid, half, k as u64, d))
}

/// Split-half rows at radius r (every estimator and q), and the full estimates
/// of the descent's estimator and q.
fn split_half(
    oracle: &mut Oracle,
    mols: &[Molecule],
    o: &Options,
    (r, seed): (f64, u64),
) -> (Vec<SplitRow>, Estimates) {
    let d = oracle.pipe.jtvae.latent() as usize;
    let mut pts = Points::new(d);
    // plan[e][q][m] = (offsets A, B; their point rows)
    type Half = (Vec<Vec<f32>>, Vec<usize>);
    let mut plan: Vec<Vec<Vec<[Half; 2]>>> = Vec::new();
    for &est in &o.estimators {
        let mut per_q = Vec::new();
        for &q in &o.qs {
            let per_m = mols
                .iter()
                .map(|m| {
                    [0, 1].map(|h| {
                        let offs = half_offsets(est, q, d, (seed, m.gid, h));
                        let idx = offs
                            .iter()
                            .map(|u| {
                                pts.add(moved(
                                    &m.z,
                                    r,
                                    &u.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
                                ))
                            })
                            .collect();
                        (offs, idx)
                    })
                })
                .collect();
            per_q.push(per_m);
        }
        plan.push(per_q);
    }
    let preds = oracle.predict(&pts.flat);
    let mut rows = Vec::new();
    let mut estimates = (Vec::new(), 0.0);
    for (e, &est) in o.estimators.iter().enumerate() {
        if est == Estimator::Score {
            continue; // no directions: `signal_score`
        }
        for (qi, &q) in o.qs.iter().enumerate() {
            let mut acc = RowAcc::default();
            let descent = e == 0 && q == o.descent_q;
            for (m, halves) in mols.iter().zip(&plan[e][qi]) {
                let deltas: [Vec<Option<f64>>; 2] =
                    [0, 1].map(|h| halves[h].1.iter().map(|&j| m.delta(preds[j])).collect());
                let g = [0, 1].map(|h| {
                    est.combine(&halves[h].0, &deltas[h], r)
                        .map_or_else(|| vec![0.0; d], |x| x.0)
                });
                acc.add(&g, &deltas);
                if descent {
                    let offs: Vec<Vec<f32>> = halves.iter().flat_map(|h| h.0.clone()).collect();
                    let all: Vec<Option<f64>> = deltas.concat();
                    let full = est.combine(&offs, &all, r).and_then(|x| unit(&x.0));
                    estimates.0.push(full);
                    let sq: f64 = offs.iter().flatten().map(|&x| f64::from(x).powi(2)).sum();
                    estimates.1 += sq / (offs.len().max(1) * mols.len()) as f64;
                }
            }
            rows.push(acc.row(est, r, q, d));
        }
    }
    estimates.1 = estimates.1.sqrt();
    (rows, estimates)
}

/// The descent test and its placebo arm (None when no molecule is left).
fn descent(
    oracle: &mut Oracle,
    mols: &[Molecule],
    o: &Options,
    (rows, kept): (&[SplitRow], Vec<(f64, Estimates)>),
    seed: u64,
) -> Option<(Descent, Descent)> {
    let est = *o.estimators.first()?;
    let radius = o.descent_radius.or_else(|| {
        rows.iter()
            .filter(|r| r.estimator == est.name() && r.q == o.descent_q as f64)
            .max_by(|a, b| a.cos_mean.total_cmp(&b.cos_mean))
            .map(|r| r.radius)
    })?;
    let (estimates, rms) = match kept.into_iter().find(|(r, _)| *r == radius) {
        Some((_, e)) => e,
        // A radius of its own: estimate there first.
        None if est == Estimator::Score => score_split(oracle, mols, o, (radius, seed)).1,
        None => split_half(oracle, mols, o, (radius, seed)).1,
    };
    if mols.is_empty() {
        return None;
    }
    let d = oracle.pipe.jtvae.latent() as usize;
    let t = o.step.unwrap_or(if est == Estimator::Score {
        signal_score::SCORE_STEP
    } else {
        radius * rms
    });
    let mut pts = Points::new(d);
    let plan: Vec<(Option<usize>, usize, Vec<usize>)> = mols
        .iter()
        .zip(&estimates)
        .map(|(m, g)| {
            let along = g.as_ref().map(|g| pts.add(moved(&m.z, -t, g)));
            let placebo = random_unit(seed, m.gid, (PLACEBO_SLOT, 0), d);
            let placebo = pts.add(moved(&m.z, t, &placebo));
            let random = (0..o.random as u64)
                .map(|k| {
                    pts.add(moved(
                        &m.z,
                        t,
                        &random_unit(seed, m.gid, (RANDOM_SLOT, k), d),
                    ))
                })
                .collect();
            (along, placebo, random)
        })
        .collect();
    let preds = oracle.predict(&pts.flat);
    let (mut real, mut control) = (DescentAcc::default(), DescentAcc::default());
    for (m, (along, placebo, random)) in mols.iter().zip(&plan) {
        let rand: Vec<f64> = random.iter().filter_map(|&j| m.delta(preds[j])).collect();
        real.add(along.map(|j| m.delta(preds[j])), &rand);
        control.add(Some(m.delta(preds[*placebo])), &rand);
    }
    let at = (radius, o.descent_q, t, o.random);
    Some((
        real.finish(est.name(), at, mols.len()),
        control.finish(PLACEBO, at, mols.len()),
    ))
}

/// `signal_score::split_half` with the oracle and the options.
fn score_split(
    oracle: &mut Oracle,
    mols: &[Molecule],
    o: &Options,
    at: (f64, u64),
) -> (Vec<SplitRow>, Estimates) {
    let pipe = oracle.pipe;
    let descent_q = (o.estimators.first() == Some(&Estimator::Score)).then_some(o.descent_q);
    let mut answer = |d: &[Option<&Decoded>]| oracle.answer(d);
    signal_score::split_half(pipe, &mut answer, mols, (&o.qs, descent_q), at)
}

/// Sums over molecules for the descent test.
#[derive(Default)]
struct DescentAcc {
    wins: u64,
    losses: u64,
    ties: u64,
    excluded: u64,
    grad: Vec<f64>,
    random: Vec<f64>,
}

impl DescentAcc {
    /// One molecule: `along` is None when ĝ = 0, Some(None) when its step
    /// failed; a win when its Δ lies below the median Δ of the random directions.
    fn add(&mut self, along: Option<Option<f64>>, rand: &[f64]) {
        if rand.is_empty() || along == Some(None) {
            self.excluded += 1;
            return;
        }
        let Some(Some(a)) = along else {
            self.ties += 1;
            return;
        };
        self.grad.push(a);
        self.random
            .push(rand.iter().sum::<f64>() / rand.len() as f64);
        match a.total_cmp(&median(rand)) {
            std::cmp::Ordering::Less => self.wins += 1,
            std::cmp::Ordering::Greater => self.losses += 1,
            std::cmp::Ordering::Equal => self.ties += 1,
        }
    }

    fn finish(
        self,
        est: &str,
        (radius, q, step, random): (f64, usize, f64, usize),
        n: usize,
    ) -> Descent {
        let diff: Vec<f64> = self
            .grad
            .iter()
            .zip(&self.random)
            .map(|(a, b)| a - b)
            .collect();
        let (grad_mean, grad_ci) = mean_interval(&self.grad);
        let (random_mean, random_ci) = mean_interval(&self.random);
        let (diff_mean, diff_ci) = mean_interval(&diff);
        Descent {
            estimator: est.into(),
            radius,
            q: q as f64,
            step,
            random: random as f64,
            molecules: n as f64,
            wins: self.wins as f64,
            losses: self.losses as f64,
            ties: self.ties as f64,
            excluded: self.excluded as f64,
            p_value: sign_test_p(self.wins, self.losses),
            grad_mean,
            grad_ci,
            random_mean,
            random_ci,
            diff_mean,
            diff_ci,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let o = Options::default().checked().unwrap();
        assert_eq!(o.qs, vec![4, 16, 64]);
        let o = Options {
            descent_q: 8,
            ..Options::default()
        };
        assert_eq!(o.checked().unwrap().qs, vec![4, 8, 16, 64]);
        let odd = Options {
            qs: vec![3],
            ..Options::default()
        };
        assert_eq!(odd.checked(), Err(OptionsError::OddQ(3)));
        let coord = Options {
            estimators: vec![Estimator::Coordinate],
            ..Options::default()
        };
        assert_eq!(
            coord.checked(),
            Err(OptionsError::NotRandom(Estimator::Coordinate))
        );
        let bad = Options {
            radii: vec![0.1, 0.0],
            ..Options::default()
        };
        assert_eq!(bad.checked(), Err(OptionsError::Radius(0.0)));
        assert!(is_random(Estimator::Forward) && is_random(Estimator::Central));
        assert!(is_random(Estimator::Sphere) && !is_random(Estimator::Coordinate));
    }

    #[test]
    fn options_accept_score() {
        // Score draws samples, not directions; its descent τ joins the temperatures.
        let score = Options {
            estimators: vec![Estimator::Score, Estimator::Forward],
            temperatures: vec![1.0, 0.5],
            descent_radius: Some(0.25),
            ..Options::default()
        };
        assert_eq!(score.checked().unwrap().temperatures, vec![0.25, 0.5, 1.0]);
        let cold = Options {
            estimators: vec![Estimator::Score],
            temperatures: vec![0.0],
            ..Options::default()
        };
        assert_eq!(cold.checked(), Err(OptionsError::Radius(0.0)));
        assert!(!is_random(Estimator::Score));
    }

    #[test]
    fn points_are_kept_once() {
        let mut p = Points::new(2);
        assert_eq!(p.add(vec![1.0, 2.0]), 0);
        assert_eq!(p.add(vec![3.0, 2.0]), 1);
        assert_eq!(p.add(vec![1.0, 2.0]), 0);
        assert_eq!(p.flat, vec![1.0, 2.0, 3.0, 2.0]);
    }

    #[test]
    fn halves_of_one_molecule_use_disjoint_directions() {
        let d = 6;
        for est in [Estimator::Forward, Estimator::Central, Estimator::Sphere] {
            let a = half_offsets(est, 8, d, (1, 5, 0));
            let b = half_offsets(est, 8, d, (1, 5, 1));
            assert_eq!(a.len(), est.n_queries(4, d));
            assert!(a.iter().all(|u| !b.contains(u)), "{est}");
            // A larger q extends a smaller one's directions.
            let big = half_offsets(est, 16, d, (1, 5, 0));
            assert_eq!(&big[..a.len()], &a[..], "{est}");
        }
    }

    #[test]
    fn descent_counts_wins_losses_ties() {
        let mut s = DescentAcc::default();
        s.add(Some(Some(-1.0)), &[0.0, 1.0]); // win
        s.add(Some(Some(2.0)), &[0.0, 1.0]); // loss
        s.add(Some(Some(0.0)), &[0.0, 0.0]); // tie: nothing changed
        s.add(None, &[0.5]); // ĝ = 0: tie
        s.add(Some(None), &[0.5]); // the step along −ĝ failed
        s.add(Some(Some(0.0)), &[]); // every random step failed
                                     // Below the mean (1.0) but not below the median (0): a tie, not a win.
        s.add(Some(Some(0.0)), &[0.0, 0.0, 3.0]);
        let d = s.finish("forward", (0.1, 16, 0.7, 2), 7);
        assert_eq!((d.wins, d.losses, d.ties, d.excluded), (1.0, 1.0, 3.0, 2.0));
        assert_eq!(d.p_value, 1.0);
        assert_eq!(d.grad_mean, (-1.0 + 2.0 + 0.0 + 0.0) / 4.0);
        assert_eq!(d.random_mean, (0.5 + 0.5 + 0.0 + 1.0) / 4.0);
    }
}
