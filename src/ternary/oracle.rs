//! f64 oracles for the MatMul-free family ("Scalable MatMul-free Language Modeling"; BitNet b1.58).
//! Written to be read beside the paper and the reference code, not to be fast.

/// 16 two-bit codes per u32 word; weight k of a row sits at bits `2 * (k % 16)` of word `k / 16`.
pub const CODES_PER_WORD: usize = 16;

/// u32 words per packed row of `k` weights: `k / 16`, rounded up.
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

/// `sigmoid(v) = 1 / (1 + exp(-v))`.
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
        // A row with a non-finite value cannot be quantized: its codes are 0 and its scale NaN,
        // so every product out of it is NaN (ARCHITECTURE.md, numerics).
        if y.iter().any(|v| !v.is_finite()) {
            s[r] = f64::NAN;
            continue;
        }
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

/// One BitLinear's weights as the oracle reads them: the norm weight, packed ternary rows and
/// one gamma per partition (equal blocks of output rows).
pub struct BitLinearWeights<'a> {
    /// The RMSNorm weight `[k]`.
    pub norm: &'a [f64],
    /// Packed ternary rows `[n, words_per_row(k)]`.
    pub packed: &'a [u32],
    /// One gamma per partition, each over `n / gamma.len()` consecutive rows.
    pub gamma: &'a [f64],
}

/// BitLinear on dense rows `x [m, k]` to `[m, n]`: RMSNorm + absmax int8 quantization (q rounded
/// half to even in f64), the exact ternary product, scaled by `gamma / s`.
pub fn bitlinear(x: &[f64], m: usize, k: usize, n: usize, w: &BitLinearWeights, eps: f64) -> Vec<f64> {
    let (q, s, _) = rmsnorm_quant(x, w.norm, m, k, eps);
    let (t, _) = unpack(w.packed, n, k);
    let acc = accumulate(&q, &t, m, n, k);
    let rows = n / w.gamma.len();
    let g: Vec<f64> = (0..n).map(|j| w.gamma[j / rows]).collect();
    dequantize(&acc, &g, &s, m, n)
}

/// The GLU channel mixer: `y = down(silu(g) * u)` with `[g, u] = up(x)`, both BitLinear; the
/// intermediate is rounded to `dtype` as the device stores it.
#[allow(clippy::too_many_arguments)]
pub fn glu_mlp(
    x: &[f64],
    m: usize,
    d: usize,
    inner: usize,
    up: &BitLinearWeights,
    down: &BitLinearWeights,
    eps: f64,
    dtype: crate::dtype::DType,
) -> Vec<f64> {
    let gu = dtype.round_f64(&bitlinear(x, m, d, 2 * inner, up, eps));
    bitlinear(&glu(&gu, m, inner), m, inner, d, down, eps)
}

/// A MatMul-free block's weights (the reference `HGRNBitBlock`): `fcg` stacks the f, c and g
/// projections (one gamma each).
pub struct BlockWeights<'a> {
    /// The token mixer's pre-norm weight `[d]`.
    pub attn_norm: &'a [f64],
    /// The f, c, g projections stacked: norm `[3 * d]`, packed `[3 * d, words_per_row(d)]`,
    /// gamma `[3]`.
    pub fcg: BitLinearWeights<'a>,
    /// The forget-gate lower bound `[d]`, or `None` to skip it (the model's layer 0).
    pub lb: Option<&'a [f64]>,
    /// The MLGRU output gate's norm weight `[d]`.
    pub g_norm: &'a [f64],
    /// The output projection `[d, d]`.
    pub o: BitLinearWeights<'a>,
    /// The channel mixer's pre-norm weight `[d]`.
    pub mlp_norm: &'a [f64],
    /// The GLU's `gate_up` projection `[2 * inner, d]`.
    pub up: BitLinearWeights<'a>,
    /// The GLU's `down` projection `[d, inner]`.
    pub down: BitLinearWeights<'a>,
}

/// The block's epsilons: pre-norms, gate norm, BitLinear norms (the model's are all 1e-6).
pub struct BlockEps {
    /// The block's two pre-norms (`attn_norm`, `mlp_norm`).
    pub norm: f64,
    /// The MLGRU output gate's norm (`g_norm`).
    pub gate: f64,
    /// The norm inside every BitLinear.
    pub bitlinear: f64,
}

/// One decode step of a MatMul-free block for `m` sequences: `x += o_proj(mlgru(fcg(norm(x))))`,
/// then `x += glu_mlp(norm(x))`, with each row's recurrent state in `state[slot_ids[r]]`
/// (distinct slots). Intermediates are rounded to `dtype` where the device stores them.
#[allow(clippy::too_many_arguments)]
pub fn matmul_free_block(
    x: &mut [f64],
    state: &mut [f64],
    slot_ids: &[i32],
    m: usize,
    d: usize,
    inner: usize,
    w: &BlockWeights,
    eps: &BlockEps,
    dtype: crate::dtype::DType,
) -> u32 {
    let rnd = |v: &[f64]| dtype.round_f64(v);
    let a = rnd(&crate::core::oracle::rmsnorm(x, w.attn_norm, m, d, eps.norm));
    let kw = words_per_row(d);
    let mut fcg = vec![0.0; m * 3 * d];
    for pr in 0..3 {
        let proj = BitLinearWeights {
            norm: &w.fcg.norm[pr * d..(pr + 1) * d],
            packed: &w.fcg.packed[pr * d * kw..(pr + 1) * d * kw],
            gamma: &w.fcg.gamma[pr..pr + 1],
        };
        let part = bitlinear(&a, m, d, d, &proj, eps.bitlinear);
        for r in 0..m {
            fcg[r * 3 * d + pr * d..r * 3 * d + (pr + 1) * d].copy_from_slice(&part[r * d..(r + 1) * d]);
        }
    }
    let fcg = rnd(&fcg);
    let mut o = vec![0.0; m * d];
    let mut bits = 0;
    for r in 0..m {
        // A bad or repeated slot id leaves its row's state alone and its output zero, and is
        // reported, as the MLGRU step does.
        let s = match crate::layout::slot_of(&slot_ids[..m], r, state.len() / d) {
            Ok(s) => s,
            Err(bit) => {
                bits |= bit;
                continue;
            }
        };
        let row = &fcg[r * 3 * d..(r + 1) * 3 * d];
        let h = &mut state[s * d..(s + 1) * d];
        let out = mlgru_step(&row[..d], &row[d..2 * d], &row[2 * d..], h, w.lb, w.g_norm, eps.gate);
        o[r * d..(r + 1) * d].copy_from_slice(&out);
    }
    let y = bitlinear(&rnd(&o), m, d, d, &w.o, eps.bitlinear);
    let sum = rnd(&x.iter().zip(&y).map(|(a, b)| a + b).collect::<Vec<_>>());
    x.copy_from_slice(&sum);
    let b = rnd(&crate::core::oracle::rmsnorm(x, w.mlp_norm, m, d, eps.norm));
    let y = glu_mlp(&b, m, d, inner, &w.up, &w.down, eps.bitlinear, dtype);
    for (xv, yv) in x.iter_mut().zip(y) {
        *xv += yv;
    }
    bits
}
