//! Exact, order-independent summation over ranks of per-micro-batch vectors
//! (`train.micro_batch`).
//!
//! Why: a float sum depends on the order of its additions, so a gradient summed
//! per rank and then over ranks changes (in its last bits) with the number of
//! ranks, and over many steps the trained parameters drift apart. Here every
//! micro-batch's vector is converted to 64-bit fixed point with one exponent per
//! block (a parameter tensor, or the projection scalars) that all ranks agree on
//! (from the maximum magnitude over all micro-batches), the integers are summed
//! (locally, then by an MPI integer allreduce) and converted back. Integer
//! addition is associative, so the sum is bitwise the same for any assignment of
//! micro-batches to ranks. The exponent leaves room for the sum of all the
//! micro-batches in 63 bits; each value is rounded at 2^-62 of its block's
//! largest magnitude times the micro-batch count, far below float32 resolution.
use crate::dist::Dist;

/// ⌈log2 x⌉ for a finite x > 0, from the bits (no rounding of a logarithm).
/// Subnormals give -1022, which is at least their true value (safe here).
fn ceil_log2(x: f64) -> i32 {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        return -1022;
    }
    let frac = bits & ((1u64 << 52) - 1);
    biased - 1023 + i32::from(frac != 0)
}

/// 2^e as an f64 (exact; `e` within the normal range).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Per block: the scaling exponent for the largest magnitude `maxabs` over all of
/// `n_total` micro-batches (0 for an all-zero or non-finite block).
fn exponents(maxabs: &[f64], n_total: usize) -> Vec<i32> {
    let headroom = n_total.max(1).next_power_of_two().trailing_zeros() as i32;
    maxabs
        .iter()
        .map(|&m| {
            if m > 0.0 && m.is_finite() {
                (62 - ceil_log2(m) - headroom).clamp(-1000, 1000)
            } else {
                0
            }
        })
        .collect()
}

/// Largest magnitude per block over `parts` (+∞ where a value is not finite).
fn local_maxabs(blocks: &[usize], parts: &[Vec<f64>]) -> Vec<f64> {
    let mut max = vec![0f64; blocks.len()];
    for part in parts {
        let mut at = 0;
        for (b, &n) in blocks.iter().enumerate() {
            for &v in &part[at..at + n] {
                let a = if v.is_finite() {
                    v.abs()
                } else {
                    f64::INFINITY
                };
                max[b] = max[b].max(a);
            }
            at += n;
        }
    }
    max
}

/// Sum of `parts` in fixed point with the per-block exponents.
fn to_fixed(blocks: &[usize], exps: &[i32], parts: &[Vec<f64>]) -> Vec<i64> {
    let mut acc = vec![0i64; blocks.iter().sum()];
    for part in parts {
        let mut at = 0;
        for (&n, &e) in blocks.iter().zip(exps) {
            let scale = pow2(e);
            for (a, &v) in acc[at..at + n].iter_mut().zip(&part[at..at + n]) {
                // Non-finite values end as NaN blocks in `from_fixed`; 0 here.
                *a += if v.is_finite() {
                    (v * scale).round() as i64
                } else {
                    0
                };
            }
            at += n;
        }
    }
    acc
}

/// Back from fixed point; blocks whose maximum was not finite become NaN.
fn from_fixed(blocks: &[usize], exps: &[i32], maxabs: &[f64], sum: &[i64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(sum.len());
    let mut at = 0;
    for ((&n, &e), &m) in blocks.iter().zip(exps).zip(maxabs) {
        let inv = pow2(-e);
        let block = &sum[at..at + n];
        if m.is_finite() {
            out.extend(block.iter().map(|&s| s as f64 * inv));
        } else {
            out.extend(std::iter::repeat_n(f64::NAN, n));
        }
        at += n;
    }
    out
}

/// The element-wise sum over all ranks of all ranks' `parts` (this rank's
/// micro-batch vectors, each laid out in consecutive blocks of the lengths in
/// `blocks`; `n_total` micro-batches over all ranks), bitwise independent of how
/// the micro-batches are spread over ranks. Collective: every rank calls it.
pub fn sum_over_ranks(
    dist: &Dist,
    blocks: &[usize],
    parts: &[Vec<f64>],
    n_total: usize,
) -> Vec<f64> {
    let mut maxabs = local_maxabs(blocks, parts);
    dist.allreduce_max_f64(&mut maxabs);
    let exps = exponents(&maxabs, n_total);
    let mut sum = to_fixed(blocks, &exps, parts);
    dist.allreduce_sum_i64(&mut sum);
    from_fixed(blocks, &exps, &maxabs, &sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sum_over_ranks` computes with the parts split over "ranks" at `cuts`.
    fn split_sum(blocks: &[usize], parts: &[Vec<f64>], cuts: &[usize]) -> Vec<f64> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(parts.len());
        let ranks: Vec<&[Vec<f64>]> = bounds.windows(2).map(|w| &parts[w[0]..w[1]]).collect();
        let mut maxabs = vec![0f64; blocks.len()];
        for r in &ranks {
            for (m, l) in maxabs.iter_mut().zip(local_maxabs(blocks, r)) {
                *m = m.max(l);
            }
        }
        let exps = exponents(&maxabs, parts.len());
        let mut sum = vec![0i64; parts[0].len()];
        for r in &ranks {
            for (s, l) in sum.iter_mut().zip(to_fixed(blocks, &exps, r)) {
                *s += l;
            }
        }
        from_fixed(blocks, &exps, &maxabs, &sum)
    }

    #[test]
    fn ceil_log2_is_exact() {
        assert_eq!(ceil_log2(1.0), 0);
        assert_eq!(ceil_log2(1.5), 1);
        assert_eq!(ceil_log2(2.0), 1);
        assert_eq!(ceil_log2(0.75), 0);
        assert_eq!(ceil_log2(0.5), -1);
        assert_eq!(ceil_log2(1e300), 997);
    }

    #[test]
    fn any_split_gives_the_same_bits_and_a_close_sum() {
        let blocks = [3, 1, 4];
        let scales = [1e-8, 1.0, 1e6];
        let which: Vec<usize> = blocks
            .iter()
            .enumerate()
            .flat_map(|(b, &n)| std::iter::repeat_n(b, n))
            .collect();
        let mut x = 0.123f64;
        let parts: Vec<Vec<f64>> = (0..7)
            .map(|i| {
                (0..8)
                    .map(|j| {
                        x = (x * 9301.0 + 49297.0) % 233280.0;
                        let sign = if i % 2 == 0 { 1.0 } else { -3.0 };
                        let scale = scales[which[j]] * sign;
                        (x / 233280.0 - 0.4) * scale
                    })
                    .collect()
            })
            .collect();
        let one = split_sum(&blocks, &parts, &[]);
        for cuts in [vec![3], vec![1, 5], vec![2, 4, 6], vec![0, 7]] {
            let other = split_sum(&blocks, &parts, &cuts);
            let a: Vec<u64> = one.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u64> = other.iter().map(|v| v.to_bits()).collect();
            assert_eq!(a, b, "cuts {cuts:?}");
        }
        for (i, &s) in one.iter().enumerate() {
            let exact: f64 = parts.iter().map(|p| p[i]).sum();
            let tol = 1e-15 * scales[which[i]];
            assert!((s - exact).abs() <= tol, "{s} vs {exact}");
        }
    }

    #[test]
    fn zeros_and_non_finite_blocks() {
        let blocks = [2, 2];
        let parts = vec![vec![0.0, 0.0, 1.0, f64::NAN], vec![0.0, -0.0, 2.0, 1.0]];
        let s = split_sum(&blocks, &parts, &[1]);
        assert_eq!(s[0], 0.0);
        assert_eq!(s[1], 0.0);
        assert!(s[2].is_nan() && s[3].is_nan());
    }
}
