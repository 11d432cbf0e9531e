//! f64 oracles for the MatMul-free family ("Scalable MatMul-free Language Modeling"; BitNet b1.58).
//! Written to be read beside the paper and the reference code, not to be fast.

/// 16 two-bit codes per u32 word; weight k of a row sits at bits `2 * (k % 16)` of word `k / 16`.
pub const CODES_PER_WORD: usize = 16;

pub fn words_per_row(k: usize) -> usize {
    k.div_ceil(CODES_PER_WORD)
}

/// i8 rows (activations, ternary values) are padded with zeros to whole packed words.
pub fn padded_k(k: usize) -> usize {
    words_per_row(k) * CODES_PER_WORD
}

/// `gamma = max(mean |W|, 1e-5)` over each partition: `parts` equal blocks of output rows.
pub fn absmean_gammas(w: &[f64], n: usize, k: usize, parts: usize) -> Vec<f64> {
    let rows = n / parts;
    (0..parts)
        .map(|p| {
            let block = &w[p * rows * k..(p + 1) * rows * k];
            (block.iter().map(|v| v.abs()).sum::<f64>() / block.len() as f64).max(1e-5)
        })
        .collect()
}

/// `t = clamp(round(W / gamma), -1, 1)`, round half to even, as i8 rows padded to `padded_k`.
pub fn ternarize(w: &[f64], n: usize, k: usize, gammas: &[f64]) -> Vec<i8> {
    let (kp, rows) = (padded_k(k), n / gammas.len());
    let mut t = vec![0i8; n * kp];
    for r in 0..n {
        for c in 0..k {
            t[r * kp + c] = (w[r * k + c] / gammas[r / rows]).round_ties_even().clamp(-1.0, 1.0) as i8;
        }
    }
    t
}

/// Packs padded i8 rows of {-1, 0, 1} as codes `t + 1`; padding gets code 1 (weight 0).
pub fn pack(t: &[i8], n: usize, k: usize) -> Vec<u32> {
    let (kp, kw) = (padded_k(k), words_per_row(k));
    let mut p = vec![0u32; n * kw];
    for r in 0..n {
        for c in 0..kp {
            let code = if c < k { (t[r * kp + c].clamp(-1, 1) + 1) as u32 } else { 1 };
            p[r * kw + c / 16] |= code << (2 * (c % 16));
        }
    }
    p
}

/// Unpacks to padded i8 rows; code 3 is invalid: read as 0 and reported.
pub fn unpack(p: &[u32], n: usize, k: usize) -> (Vec<i8>, bool) {
    let (kp, kw) = (padded_k(k), words_per_row(k));
    let mut t = vec![0i8; n * kp];
    let mut bad = false;
    for r in 0..n {
        for c in 0..k {
            let code = (p[r * kw + c / 16] >> (2 * (c % 16))) & 3;
            bad |= code == 3;
            t[r * kp + c] = if code == 3 { 0 } else { code as i8 - 1 };
        }
    }
    (t, bad)
}

/// `silu(v) = v * sigmoid(v)`.
pub fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

pub fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// BitLinear's activation side: `y = x / sqrt(mean(x^2) + eps) * w`, then per row
/// `s = 127 / max(max |y|, 1e-5)`, `q = clamp(round(y * s), -128, 127)`.
/// Returns q (rows padded to `padded_k`), s, and `y * s` (to find rounding ties).
pub fn rmsnorm_quant(x: &[f64], w: &[f64], m: usize, k: usize, eps: f64) -> (Vec<i8>, Vec<f64>, Vec<f64>) {
    let kp = padded_k(k);
    let (mut q, mut s, mut ys) = (vec![0i8; m * kp], vec![0.0; m], vec![0.0; m * kp]);
    for r in 0..m {
        let row = &x[r * k..(r + 1) * k];
        let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / k as f64 + eps).sqrt();
        let y: Vec<f64> = row.iter().zip(w).map(|(v, g)| v * inv * g).collect();
        s[r] = 127.0 / y.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-5);
        for c in 0..k {
            ys[r * kp + c] = y[c] * s[r];
            q[r * kp + c] = ys[r * kp + c].round_ties_even().clamp(-128.0, 127.0) as i8;
        }
    }
    (q, s, ys)
}

/// Exact integer accumulation `acc[m, n] = sum_k q[m, k] * t[n, k]` on padded rows.
pub fn accumulate(q: &[i8], t: &[i8], m: usize, n: usize, k: usize) -> Vec<i64> {
    let kp = padded_k(k);
    let mut acc = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            acc[i * n + j] = (0..kp).map(|c| i64::from(q[i * kp + c]) * i64::from(t[j * kp + c])).sum();
        }
    }
    acc
}

/// `out = acc * gamma / s`: the dequantized product of BitLinear.
pub fn dequantize(acc: &[i64], gamma_of_row: &[f64], s: &[f64], m: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = acc[i * n + j] as f64 * gamma_of_row[j] / s[i];
        }
    }
    out
}

/// One MLGRU step for one sequence, as the reference layer computes it:
/// `f = sigmoid(f_raw)` (then `lb + (1 - lb) f` with a lower bound), `i = silu(c_raw) (1 - f)`,
/// `h = f h + i`, `o = rmsnorm(g_raw) * w * silu(h)`. Updates `h` in place and returns `o`.
pub fn mlgru_step(
    f_raw: &[f64],
    c_raw: &[f64],
    g_raw: &[f64],
    h: &mut [f64],
    lb: Option<&[f64]>,
    w: &[f64],
    eps: f64,
) -> Vec<f64> {
    let d = h.len();
    for j in 0..d {
        let mut f = sigmoid(f_raw[j]);
        if let Some(lb) = lb {
            f = lb[j] + (1.0 - lb[j]) * f;
        }
        let i = silu(c_raw[j]) * (1.0 - f);
        h[j] = f * h[j] + i;
    }
    let inv = 1.0 / (g_raw.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
    (0..d).map(|j| g_raw[j] * inv * w[j] * silu(h[j])).collect()
}

/// The GLU channel mixer's inner product: `silu(g) * u` for `[g, u]` halves of each row.
pub fn glu(gu: &[f64], m: usize, inner: usize) -> Vec<f64> {
    let mut h = vec![0.0; m * inner];
    for r in 0..m {
        for j in 0..inner {
            h[r * inner + j] = silu(gu[r * 2 * inner + j]) * gu[r * 2 * inner + inner + j];
        }
    }
    h
}
