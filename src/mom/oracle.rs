//! The MoM family's reference math in f64, to be read beside the MoM paper and fla's
//! `MomAttention` layer (`fla/layers/mom.py`) and recurrent gated delta rule.

/// The router: `p = softmax(logits)`, the `k` largest (ties to the lower index), and their
/// weights renormalized over the `k`: `w_j = p_j / sum p = softmax over the kept logits`.
pub fn route(logits: &[f64], k: usize) -> (Vec<usize>, Vec<f64>) {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Stable sort by descending logit: equal logits keep index order. The softmax is monotonic,
    // so ranking logits ranks probabilities.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(k);
    let top = order.iter().map(|&m| logits[m]).fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = order.iter().map(|&m| (logits[m] - top).exp()).collect();
    let sum: f64 = e.iter().sum();
    (order, e.iter().map(|v| v / sum).collect())
}

/// The stable grouping of (token, choice) pairs by (memory, sequence): stream `m * seqs + b`
/// lists, in time order, the tokens of sequence `b` routed to memory `m`; with `shared`, stream
/// `M * seqs + b` lists every token of `b`. Returns each stream's tokens. Pairs naming a memory
/// outside `[0, M)`, or one the token already chose, are dropped (`bad` = true).
pub fn streams(idx: &[i32], cu: &[usize], memories: usize, k: usize, shared: bool) -> (Vec<Vec<usize>>, bool) {
    let seqs = cu.len() - 1;
    let groups = (memories + usize::from(shared)) * seqs;
    let mut out = vec![Vec::new(); groups];
    let mut bad = false;
    for b in 0..seqs {
        for t in cu[b]..cu[b + 1] {
            for j in 0..k {
                match choice(idx, t, j, k, memories) {
                    Some(m) => out[m * seqs + b].push(t),
                    None => bad = true,
                }
            }
            if shared {
                out[memories * seqs + b].push(t);
            }
        }
    }
    (out, bad)
}

/// Token `t`'s `j`-th memory, or `None` when it is out of range or repeats an earlier choice.
pub fn choice(idx: &[i32], t: usize, j: usize, k: usize, memories: usize) -> Option<usize> {
    let m = idx[t * k + j];
    let ok = m >= 0 && (m as usize) < memories && !idx[t * k..t * k + j].contains(&m);
    ok.then_some(m as usize)
}

/// One causal depthwise convolution tap set on a window of the last `W` inputs (newest last):
/// shifts `x` in and returns `silu(sum_i w_i window_i)`.
pub fn conv_step(window: &mut [f64], w: &[f64], x: f64) -> f64 {
    window.rotate_left(1);
    let n = window.len();
    window[n - 1] = x;
    silu(window.iter().zip(w).map(|(a, b)| a * b).sum())
}

/// SiLU, `x * sigmoid(x)`: the conv activation and the output gate.
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// The logistic function; `beta = sigmoid(b)`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)`, returning `x` itself above 20 as torch does; used by [`decay`].
pub fn softplus(x: f64) -> f64 {
    // torch's softplus (beta 1, threshold 20).
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The log decay of one memory head: `g = -exp(A_log) * softplus(a + dt_bias)`.
pub fn decay(a: f64, a_log: f64, dt_bias: f64) -> f64 {
    -a_log.exp() * softplus(a + dt_bias)
}

/// `x / sqrt(sum x^2 + 1e-6)`, the in-kernel normalization of q and k.
pub fn l2norm(x: &[f64]) -> Vec<f64> {
    let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() + 1e-6).sqrt();
    x.iter().map(|v| v * r).collect()
}

/// Which recurrence a memory runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `S <- e^g S; u = beta (v - S^T k); S <- S + k u^T`.
    Delta,
    /// `S <- e^g S + k v^T` (scalar-gated linear attention; beta unused).
    Linear,
}

/// One token of one head: updates `s [K][V]` (row-major, `s[i * V + c]`) and returns
/// `o = S^T q`, read from the updated state. `q` and `k` arrive normalized and scaled.
pub fn recur(s: &mut [f64], q: &[f64], k: &[f64], v: &[f64], g: f64, beta: f64, rule: Rule) -> Vec<f64> {
    let (kd, vd) = (k.len(), v.len());
    let decay = g.exp();
    s.iter_mut().for_each(|x| *x *= decay);
    let u: Vec<f64> = match rule {
        Rule::Delta => (0..vd).map(|c| beta * (v[c] - (0..kd).map(|i| s[i * vd + c] * k[i]).sum::<f64>())).collect(),
        Rule::Linear => v.to_vec(),
    };
    for i in 0..kd {
        for c in 0..vd {
            s[i * vd + c] += k[i] * u[c];
        }
    }
    (0..vd).map(|c| (0..kd).map(|i| s[i * vd + c] * q[i]).sum()).collect()
}

/// fla's `FusedRMSNormGated` on one head: `rmsnorm(o) * w * silu(gate)`.
pub fn gated_norm(o: &[f64], gate: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let r = 1.0 / (o.iter().map(|v| v * v).sum::<f64>() / o.len() as f64 + eps).sqrt();
    (0..o.len()).map(|c| o[c] * r * w[c] * silu(gate[c])).collect()
}

/// The small weights of a layer, in f64.
pub struct LayerWeights<'a> {
    /// `[C, W]` conv taps (channels `[q | k | v]`, shared by every memory).
    pub conv_w: &'a [f64],
    /// `[H]` `A_log`, shared by every memory: the decay rate is `exp(A_log)`.
    pub a_log: &'a [f64],
    /// `[H]` bias added to `a` inside the decay's softplus, shared by every memory.
    pub dt_bias: &'a [f64],
    /// `[V]` output-norm weight.
    pub norm_w: &'a [f64],
}

/// A whole MoM layer (fla's `MomAttention` between its projections) over packed sequences,
/// token by token: route each token (`logits [T, M]`); each memory (and the shared one) runs
/// over its own tokens of each sequence in time order: conv step from the (memory, slot) conv
/// state, q/k L2-normalized (q scaled), the gated delta rule on the (memory, slot) state; the
/// outputs mix with the routing weights (the shared memory's unweighted); then
/// `rmsnorm(o) * w * silu(gate)` per head. `x [T, P]` is the fused projection row (see
/// [`super::Dims`]). `slots[b]` is sequence b's pool slot, `None` for one the kernels skip
/// (its outputs 0, its states untouched). States are `[M' * pool, H, K, V]` row-major and
/// conv states `[M' * pool, C, W]`. `inner` rounds the intermediates the prefill kernels store
/// (conv outputs, each memory's output; identity for the fused step, which keeps them in f32)
/// and `store` the mix before the norm (the storage dtype's rounding).
#[allow(clippy::too_many_arguments)]
pub fn layer(
    d: &super::Dims,
    w: &LayerWeights,
    (scale, eps, pool): (f64, f64, usize),
    (inner, store): (&dyn Fn(f64) -> f64, &dyn Fn(f64) -> f64),
    logits: &[f64],
    x: &[f64],
    gate: &[f64],
    cu: &[usize],
    slots: &[Option<usize>],
    state: &mut [f64],
    conv: &mut [f64],
) -> Vec<f64> {
    let (h_n, k_n, v_n, c_n, w_n) = (d.heads, d.head_k, d.head_v, d.channels(), d.conv);
    let (hk, hv, pw) = (d.hk(), d.hv(), d.proj_width());
    let tokens = cu[cu.len() - 1];
    let routes: Vec<(Vec<usize>, Vec<f64>)> =
        (0..tokens).map(|t| route(&logits[t * d.memories..(t + 1) * d.memories], d.topk)).collect();
    let mut mix = vec![0.0; tokens * hv];
    for (b, slot) in slots.iter().enumerate() {
        let Some(slot) = *slot else { continue };
        for m in 0..d.mems() {
            let e = m * pool + slot;
            for t in cu[b]..cu[b + 1] {
                let wt = if m == d.memories {
                    1.0
                } else {
                    match routes[t].0.iter().position(|&c| c == m) {
                        Some(j) => f64::from(routes[t].1[j] as f32),
                        None => continue,
                    }
                };
                let y: Vec<f64> = (0..c_n)
                    .map(|c| {
                        let win = &mut conv[(e * c_n + c) * w_n..(e * c_n + c + 1) * w_n];
                        inner(conv_step(win, &w.conv_w[c * w_n..(c + 1) * w_n], x[t * pw + d.col(m, c)]))
                    })
                    .collect();
                for h in 0..h_n {
                    let q: Vec<f64> = l2norm(&y[h * k_n..(h + 1) * k_n]).iter().map(|v| v * scale).collect();
                    let k = l2norm(&y[hk + h * k_n..hk + (h + 1) * k_n]);
                    let v = &y[2 * hk + h * v_n..2 * hk + (h + 1) * v_n];
                    let g = decay(x[t * pw + d.gate_col(m, h, false)], w.a_log[h], w.dt_bias[h]);
                    let beta = sigmoid(x[t * pw + d.gate_col(m, h, true)]);
                    let base = (e * h_n + h) * k_n * v_n;
                    let o = recur(&mut state[base..base + k_n * v_n], &q, &k, v, g, beta, Rule::Delta);
                    for (c, val) in o.iter().enumerate() {
                        mix[t * hv + h * v_n + c] += wt * inner(*val);
                    }
                }
            }
        }
    }
    let mut out = vec![0.0; tokens * hv];
    for r in 0..tokens * h_n {
        let s = r * v_n..(r + 1) * v_n;
        let o: Vec<f64> = mix[s.clone()].iter().map(|&v| store(v)).collect();
        out[s.clone()].copy_from_slice(&gated_norm(&o, &gate[s], w.norm_w, eps));
    }
    out
}
