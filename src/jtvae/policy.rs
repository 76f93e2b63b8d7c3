//! How a decode makes its choices. The tree walk (`walk`) asks a `WalkPolicy`
//! for the root labels, the expand/backtrack decisions and, per new child, the
//! labels to try in order (the chemistry accepts the first that attaches); the
//! assembly (`decode`) asks an `AssemblyPolicy` which of a new cluster's distinct
//! attachments to apply. `Greedy` is the deterministic decoder (argmax
//! everywhere, ties of the assembly scores broken by the smaller SMILES); the
//! stochastic decoder of the score-function estimator (`sample`) samples the same
//! decisions at a temperature and records them, and replays them with autograd.
use super::candidates::LocalGraph;
use tch::Tensor;

/// Candidate scores within this relative distance of each other are ties.
pub const TIE_TOLERANCE: f64 = 1e-4;

/// The tree walk's decisions. `walks` names, per row of `logits`, the walk (index
/// in the decoded batch) the row belongs to.
pub trait WalkPolicy {
    /// Root labels from the root logits `[B, vocab]`, one per walk.
    fn roots(&mut self, logits: &Tensor) -> Vec<usize>;
    /// Whether each walk expands, from its topology logit (`[n]`).
    fn expand(&mut self, walks: &[usize], logits: &Tensor) -> Vec<bool>;
    /// The labels each expanding walk tries for its new child, in order, from the
    /// label logits `[n, vocab]`; at most `top_k` each.
    fn labels(&mut self, walks: &[usize], logits: &Tensor, top_k: usize) -> Vec<Vec<usize>>;
    /// The label the chemistry accepted for `walk`'s last request (`None`: none
    /// attached, the walk backtracks).
    fn accepted(&mut self, _walk: usize, _label: Option<usize>) {}
}

/// The assembly's decisions.
pub trait AssemblyPolicy {
    /// The attachment to apply for molecule `mol`: `scores` of its distinct
    /// attachments (`smiles` of the results; `graphs`, their local graphs).
    fn pick(&mut self, mol: usize, scores: &[f32], smiles: &[&str], graphs: &[LocalGraph])
        -> usize;
}

/// Argmax decisions: the deterministic decoder.
pub struct Greedy;

impl WalkPolicy for Greedy {
    fn roots(&mut self, logits: &Tensor) -> Vec<usize> {
        Vec::<i64>::try_from(logits.argmax(-1, false))
            .unwrap_or_default()
            .into_iter()
            .map(|l| l as usize)
            .collect()
    }

    fn expand(&mut self, _walks: &[usize], logits: &Tensor) -> Vec<bool> {
        let v: Vec<f64> = Vec::try_from(logits).unwrap_or_default();
        v.into_iter().map(|t| t > 0.0).collect()
    }

    fn labels(&mut self, _walks: &[usize], logits: &Tensor, top_k: usize) -> Vec<Vec<usize>> {
        let k = (top_k.max(1) as i64).min(logits.size()[1]);
        let (_, best) = logits.topk(k, -1, true, true);
        Vec::<Vec<i64>>::try_from(&best)
            .unwrap_or_default()
            .into_iter()
            .map(|row| row.into_iter().map(|l| l as usize).collect())
            .collect()
    }
}

impl AssemblyPolicy for Greedy {
    fn pick(&mut self, _mol: usize, scores: &[f32], smiles: &[&str], _g: &[LocalGraph]) -> usize {
        let best = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        (0..scores.len())
            .find(|&k| scores[k] == best)
            .map_or(0, |k| tie_class(scores, smiles, k))
    }
}

/// The option that stands for option `k`: the smallest SMILES among the options
/// whose score ties with `k`'s (within `TIE_TOLERANCE`), so that a choice does
/// not depend on float rounding (batch size, perturbation size).
pub fn tie_class(scores: &[f32], smiles: &[&str], k: usize) -> usize {
    tied(scores, k)
        .min_by(|&a, &b| smiles[a].cmp(smiles[b]))
        .unwrap_or(k)
}

/// The options whose score ties with option `k`'s (`k` included).
pub fn tied(scores: &[f32], k: usize) -> impl Iterator<Item = usize> + '_ {
    let s = f64::from(scores[k]);
    let tol = TIE_TOLERANCE * (1.0 + s.abs());
    (0..scores.len()).filter(move |&j| (f64::from(scores[j]) - s).abs() <= tol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax_and_breaks_ties_by_smiles() {
        let mut g = Greedy;
        let smiles = ["CCN", "CCC", "CCO"];
        assert_eq!(g.pick(0, &[0.5, 2.0, 1.0], &smiles, &[]), 1);
        // 2.0 and 2.00001 tie: the smaller SMILES wins.
        assert_eq!(g.pick(0, &[2.0, 2.00001, 1.0], &smiles, &[]), 1);
        assert_eq!(g.pick(0, &[2.0, 1.0, 2.00001], &smiles, &[]), 0);
        let logits = Tensor::from_slice(&[0.3f32, -0.1]);
        assert_eq!(g.expand(&[0, 1], &logits), vec![true, false]);
        let l = Tensor::from_slice(&[0.1f32, 0.9, 0.5, 0.2, 0.0, 0.3]).view([2, 3]);
        assert_eq!(g.labels(&[0, 1], &l, 2), vec![vec![1, 2], vec![2, 0]]);
        assert_eq!(g.roots(&l), vec![1, 2]);
    }
}
