//! The visual family's reference math, to be read beside FastV, ZipVL and SparseVLM.

/// Rank of candidate `j` by descending `s`, ties to the lower index: the number of candidates
/// that come before it.
pub fn rank(s: &[f32], j: usize) -> usize {
    s.iter().enumerate().filter(|&(i, &v)| v > s[j] || (v == s[j] && i < j)).count()
}

/// How tokens are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    /// The `k` largest.
    TopK(usize),
    /// ZipVL: the fewest `p` whose largest raw masses reach `tau` times the total, then the
    /// top-`p` by the ranking score. The total sums in f32 in index order and the sorted masses
    /// in sorted order, as the kernels do, so every backend finds the same `p`.
    Mass(f32),
    /// Strictly above the mean mass.
    AboveMean,
}

/// The kept candidates of one sequence, ascending: `score` is the raw mass, `order` the
/// ranking score (`score` itself unless a caller passes another). A `+inf` score is always kept
/// (LOOK-M forces its first tokens so): the forced candidates come first in every ranking, the
/// rule applies to the rest (top-k keeps `max(k, forced)`; the mass total and the mean are over
/// the finite scores only).
pub fn select(score: &[f32], order: &[f32], keep: Keep) -> Vec<usize> {
    let n = score.len();
    let forced = |j: usize| score[j] == f32::INFINITY;
    let nf = (0..n).filter(|&j| forced(j)).count();
    let total: f32 = score.iter().filter(|v| v.is_finite()).sum();
    let key: Vec<f32> = (0..n).map(|j| if forced(j) { f32::INFINITY } else { order[j] }).collect();
    let top = |k: usize| (0..n).filter(|&j| rank(&key, j) < k).collect::<Vec<_>>();
    match keep {
        Keep::TopK(k) => top(k.max(nf)),
        Keep::Mass(tau) => {
            // The raw masses sorted descending (ties to the lower index; the forced lead), the
            // finite ones summed in that order.
            let mut sorted = vec![0f32; n];
            (0..n).for_each(|j| sorted[rank(score, j)] = score[j]);
            let need = tau * total;
            let mut cum = 0f32;
            let p = sorted.iter().position(|&v| {
                if v == f32::INFINITY {
                    return false;
                }
                cum += v;
                cum >= need
            });
            top(p.map_or(n, |p| p + 1))
        }
        Keep::AboveMean => {
            let mean = total / (n - nf) as f32;
            (0..n).filter(|&j| forced(j) || score[j] > mean).collect()
        }
    }
}

/// FastV's keep count for a drop ratio `r`: `round_half_even(n * (1 - r))`.
pub fn keep_count(n: usize, drop_ratio: f64) -> usize {
    let x = n as f64 * (1.0 - drop_ratio);
    let f = x.floor();
    let k = if x - f == 0.5 {
        if (f as i64) % 2 == 0 {
            f
        } else {
            f + 1.0
        }
    } else {
        x.round()
    };
    k.clamp(0.0, n as f64) as usize
}

/// Softmax attention of one query row over the visible keys `keys` (absolute rows), scaled dot
/// products in f64: `(o [D], lse)`, or `(0, -inf)` when it sees none.
pub fn attend(
    q: &[f64],
    k: &dyn Fn(usize) -> Vec<f64>,
    v: &dyn Fn(usize) -> Vec<f64>,
    keys: &[usize],
    scale: f64,
) -> (Vec<f64>, f64) {
    let d = q.len();
    if keys.is_empty() {
        return (vec![0.0; d], f64::NEG_INFINITY);
    }
    let s: Vec<f64> = keys.iter().map(|&j| scale * k(j).iter().zip(q).map(|(a, b)| a * b).sum::<f64>()).collect();
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = s.iter().map(|x| (x - m).exp()).sum();
    let mut o = vec![0.0; d];
    for (&j, x) in keys.iter().zip(&s) {
        let p = (x - m).exp() / sum;
        for (a, b) in o.iter_mut().zip(v(j)) {
            *a += p * b;
        }
    }
    (o, m + sum.ln())
}
