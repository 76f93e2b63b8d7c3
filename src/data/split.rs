//! The deterministic train/test split: a permutation drawn from the counter RNG
//! keyed (seed, "split"), so the same seed always gives the same split.
use crate::zo::rng::Stream;

/// Picks `n_train` and `n_test` disjoint indices out of `0..n`.
pub fn split(n: usize, n_train: usize, n_test: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    assert!(n_train + n_test <= n, "split larger than the data");
    let perm = Stream::new(seed, "split", &[]).permutation(n);
    let train = perm[..n_train].to_vec();
    let test = perm[n_train..n_train + n_test].to_vec();
    (train, test)
}
