//! The score-function (REINFORCE) estimator's weights: for samples x_k ~ p_θ with
//! losses L_k, ∇_θ E[L] = E[(L − b)·∇_θ log p_θ(x)] for any baseline b that does
//! not depend on x_k. The caller forms the surrogate S = Σ_k w_k·log p_θ(x_k)
//! with the weights of [`score_weights`]; its gradient is the estimate.
//!
//! Baseline: with q' ≥ 2 answered samples, sample k's is the mean of the other
//! samples' losses (leave-one-out: independent of x_k, so the estimate stays
//! unbiased); with one, a fallback loss the caller supplies (the greedy
//! molecule's). A failed sample (None) is dropped: the average runs over the q'
//! answered ones.

/// w_k = (L_k − b_k)/q' for each answered sample (None for a failed one); see
/// the module doc for b_k.
pub fn score_weights(losses: &[Option<f64>], fallback: f64) -> Vec<Option<f64>> {
    let ok: Vec<f64> = losses.iter().flatten().copied().collect();
    let n = ok.len();
    let sum: f64 = ok.iter().sum();
    losses
        .iter()
        .map(|l| {
            l.map(|l| {
                let b = if n >= 2 {
                    (sum - l) / (n - 1) as f64
                } else {
                    fallback
                };
                (l - b) / n as f64
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zo::rng::Stream;

    /// A categorical p_θ = softmax(θ) over 3 outcomes with fixed losses: the exact
    /// gradient of E[L] is p ⊙ (L − E[L]); ∇_θ log p(x) = e_x − p.
    fn check(q: usize, fail_every: usize) {
        let theta = [0.3f64, -0.5, 1.1];
        let loss = [1.0f64, 3.0, -2.0];
        let z: f64 = theta.iter().map(|t| t.exp()).sum();
        let p: Vec<f64> = theta.iter().map(|t| t.exp() / z).collect();
        let mean: f64 = p.iter().zip(&loss).map(|(p, l)| p * l).sum();
        let exact: Vec<f64> = (0..3).map(|i| p[i] * (loss[i] - mean)).collect();
        let trials = 200_000;
        let mut avg = [0f64; 3];
        let mut n_failed = 0;
        for t in 0..trials {
            let mut s = Stream::new(5, "score-test", &[q as u64, t]);
            let xs: Vec<usize> = (0..q)
                .map(|_| {
                    let u = s.uniform();
                    if u < p[0] {
                        0
                    } else if u < p[0] + p[1] {
                        1
                    } else {
                        2
                    }
                })
                .collect();
            let losses: Vec<Option<f64>> = xs
                .iter()
                .enumerate()
                .map(|(k, &x)| {
                    let failed = fail_every > 0 && (t as usize + k).is_multiple_of(fail_every);
                    n_failed += usize::from(failed);
                    (!failed).then_some(loss[x])
                })
                .collect();
            // A fallback baseline that does not depend on the samples.
            for (w, &x) in score_weights(&losses, 0.7).iter().zip(&xs) {
                if let Some(w) = w {
                    for (i, a) in avg.iter_mut().enumerate() {
                        let grad_logp = f64::from(u8::from(i == x)) - p[i];
                        *a += w * grad_logp / trials as f64;
                    }
                }
            }
        }
        assert!(fail_every == 0 || n_failed > 0);
        for i in 0..3 {
            assert!(
                (avg[i] - exact[i]).abs() < 0.025,
                "q {q}: component {i}: {} vs exact {}",
                avg[i],
                exact[i]
            );
        }
    }

    #[test]
    fn the_weights_give_an_unbiased_gradient_on_a_categorical() {
        check(1, 0);
        check(4, 0);
        check(4, 3);
    }

    #[test]
    fn leave_one_out_baseline_and_dropped_failures() {
        let w = score_weights(&[Some(1.0), None, Some(3.0), Some(5.0)], 100.0);
        // q' = 3; b_0 = 4, b_2 = 3, b_3 = 2.
        assert_eq!(w, vec![Some(-1.0), None, Some(0.0), Some(1.0)]);
        // One answered sample: the fallback is the baseline.
        assert_eq!(
            score_weights(&[None, Some(2.0)], 0.5),
            vec![None, Some(1.5)]
        );
        assert!(score_weights(&[None, None], 0.5)
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn score_has_no_offsets_and_no_combine() {
        let e = crate::zo::estimator::Estimator::Score;
        assert_eq!(e.n_queries(16, 56), 16);
        assert!(e.offsets(16, 56, |_| vec![0.0; 56]).is_empty());
        assert!(e.combine(&[], &[], 0.1).is_none());
        assert!(e.combine(&[vec![1.0; 3]], &[Some(1.0)], 0.1).is_none());
    }
}
