//! f64 oracles for the core kernels, written to read like the formulas.

/// `y = x / sqrt(mean(x^2) + eps) * w` for each row of a dense `[rows, cols]` input.
pub fn rmsnorm(x: &[f64], w: &[f64], rows: usize, cols: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let ms = row.iter().map(|v| v * v).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for c in 0..cols {
            y[r * cols + c] = row[c] * inv * w[c];
        }
    }
    y
}

/// Merge two softmax states over disjoint keys: `lse = log(e^l1 + e^l2)`,
/// `o = (e^l1 o1 + e^l2 o2) / e^lse`. An empty part (`-inf`) contributes nothing.
pub fn merge_states(o1: &[f64], l1: &[f64], o2: &[f64], l2: &[f64], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = l1.len();
    let mut o = vec![0.0; n * dim];
    let mut l = vec![f64::NEG_INFINITY; n];
    for s in 0..n {
        let m = l1[s].max(l2[s]);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let (w1, w2) = ((l1[s] - m).exp(), (l2[s] - m).exp());
        l[s] = m + (w1 + w2).ln();
        for c in 0..dim {
            let a = if w1 > 0.0 { w1 * o1[s * dim + c] } else { 0.0 };
            let b = if w2 > 0.0 { w2 * o2[s * dim + c] } else { 0.0 };
            o[s * dim + c] = (a + b) / (w1 + w2);
        }
    }
    (o, l)
}

/// `out[i] = src[idx[i]]`, a zero row where the index is out of range; also says whether any was.
pub fn gather_rows(src: &[f64], idx: &[i32], src_rows: usize, cols: usize) -> (Vec<f64>, bool) {
    let mut out = vec![0.0; idx.len() * cols];
    let mut bad = false;
    for (i, &j) in idx.iter().enumerate() {
        match usize::try_from(j).ok().filter(|&j| j < src_rows) {
            Some(j) => out[i * cols..(i + 1) * cols].copy_from_slice(&src[j * cols..(j + 1) * cols]),
            None => bad = true,
        }
    }
    (out, bad)
}
