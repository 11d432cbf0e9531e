//! The MLA family's reference math in f64, written to be checked against the DeepSeek-V2 paper
//! and FlashMLA's test reference in one sitting.

/// The decode's shape: `batch` sequences of `sq` new tokens, `heads` query heads over one latent
/// head of `latent` (+ `rope`) dims, a paged cache of `pages` pages of `page_size` tokens, and a
/// block table of `max_pages` entries per sequence.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// B: sequences.
    pub batch: usize,
    /// Sq: new query tokens per sequence (read by `decode` only; `prefill` uses `cu_seqlens`).
    pub sq: usize,
    /// H: query heads, all attending to the one latent head.
    pub heads: usize,
    /// L: latent width (the values, and the first part of each key).
    pub latent: usize,
    /// R: decoupled RoPE key width (0 for none).
    pub rope: usize,
    /// P: tokens per cache page.
    pub page_size: usize,
    /// Pages in the cache; valid page ids are `[0, pages)`.
    pub pages: usize,
    /// Block-table entries per sequence.
    pub max_pages: usize,
}

/// A sequence's length as the kernels use it: clamped to `[0, max_pages * page_size]`, with
/// `true` when it had to be (the status bit `INDEX_OUT_OF_RANGE`).
pub fn visible_len(seq_len: i32, s: &Shape) -> (usize, bool) {
    let cap = s.max_pages * s.page_size;
    match usize::try_from(seq_len) {
        Ok(n) if n <= cap => (n, false),
        Ok(_) => (cap, true),
        Err(_) => (0, true),
    }
}

/// One query row `qr [L + R]` over the cache rows `keys` it sees: `(o [L], lse)`, or `(0, -inf)`
/// when it sees none.
fn attend(qr: &[f64], keys: &[usize], c: &[f64], r: &[f64], s: &Shape, scale: f64) -> (Vec<f64>, f64) {
    let (l, rd) = (s.latent, s.rope);
    let mut o = vec![0.0; l];
    if keys.is_empty() {
        return (o, f64::NEG_INFINITY);
    }
    let sc: Vec<f64> = keys
        .iter()
        .map(|&row| {
            let dot: f64 = (0..l).map(|d| qr[d] * c[row * l + d]).sum::<f64>()
                + (0..rd).map(|d| qr[l + d] * r[row * rd + d]).sum::<f64>();
            scale * dot
        })
        .collect();
    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = sc.iter().map(|v| (v - m).exp()).sum();
    for (&row, &v) in keys.iter().zip(&sc) {
        let w = (v - m).exp() / sum;
        for d in 0..l {
            o[d] += w * c[row * l + d];
        }
    }
    (o, m + sum.ln())
}

/// The cache rows of sequence `b`'s first `len` tokens, `None` where the page id is out of range.
fn cache_rows(b: usize, len: usize, table: &[i32], s: &Shape, bad: &mut bool) -> Vec<Option<usize>> {
    (0..len)
        .map(|t| {
            let page = table[b * s.max_pages + t / s.page_size];
            let ok = usize::try_from(page).ok().filter(|&p| p < s.pages);
            *bad |= ok.is_none();
            ok.map(|p| p * s.page_size + t % s.page_size)
        })
        .collect()
}

/// Absorbed MLA decode. Query row `i` of sequence `b` sits at position `p = len_b - sq + i` and
/// sees keys `t <= p`: `s_t = scale * (q_lat . c_t + q_rope . r_t)`, `o = sum_t softmax(s)_t c_t`,
/// `lse = ln sum_t exp(s_t)`. Token `t` lives in page `table[b][t / P]`, slot `t % P`; a page id
/// outside `[0, pages)` hides its tokens and raises the status. No visible key: `o = 0`,
/// `lse = -inf`. `q [B, Sq, H, L + R]`, `c [pages * P, L]`, `r [pages * P, R]`; returns
/// `o [B, Sq, H, L]`, `lse [B, H, Sq]` and whether anything was out of range.
pub fn decode(
    q: &[f64],
    c: &[f64],
    r: &[f64],
    table: &[i32],
    seq_lens: &[i32],
    s: &Shape,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, bool) {
    let cu: Vec<i32> = (0..=s.batch).map(|b| (b * s.sq) as i32).collect();
    let (o, lse, bad) = prefill(q, c, r, &cu, table, seq_lens, s, scale);
    // prefill's lse is [H, B * Sq]; decode's is [B, H, Sq].
    let mut l = vec![0.0; lse.len()];
    for b in 0..s.batch {
        for h in 0..s.heads {
            for i in 0..s.sq {
                l[(b * s.heads + h) * s.sq + i] = lse[h * s.batch * s.sq + b * s.sq + i];
            }
        }
    }
    (o, l, bad)
}

/// Prefill: sequence `b`'s new tokens are rows `cu[b]..cu[b + 1]` of `q [tokens, H, L + R]`, the
/// last of its `len_b` tokens (already in the cache), each seeing the keys up to its own position.
/// A `cu_seqlens` that does not run from 0 to the token count without decreasing gives every
/// row `o = 0`, `lse = -inf` and raises the status (a valid one puts each token in exactly one
/// range). Returns `o [tokens, H, L]`, `lse [H, tokens]` (FlashAttention's varlen layout).
#[allow(clippy::too_many_arguments)]
pub fn prefill(
    q: &[f64],
    c: &[f64],
    r: &[f64],
    cu: &[i32],
    table: &[i32],
    seq_lens: &[i32],
    s: &Shape,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, bool) {
    let (l, w) = (s.latent, s.latent + s.rope);
    let tokens = q.len() / (s.heads * w);
    let mut o = vec![0.0; tokens * s.heads * l];
    let mut lse = vec![f64::NEG_INFINITY; s.heads * tokens];
    // Ends right but decreasing between (`[0, 5, 4]`) is as bad as wrong ends: every backend raises.
    let cu_bad = cu[0] != 0 || cu[s.batch] as i64 != tokens as i64 || (0..s.batch).any(|b| cu[b + 1] < cu[b]);
    // Every length is checked, even of a sequence no row reads.
    let mut bad = cu_bad || seq_lens[..s.batch].iter().any(|&len| visible_len(len, s).1);
    if cu_bad {
        return (o, lse, true);
    }
    for j in 0..tokens {
        // The one sequence whose range holds token j.
        let Some(b) = (0..s.batch).find(|&b| (cu[b] as i64) <= j as i64 && (j as i64) < cu[b + 1] as i64) else {
            continue;
        };
        let (len, clamped) = visible_len(seq_lens[b], s);
        bad |= clamped;
        let rows = cache_rows(b, len, table, s, &mut bad);
        // i64: a bad cu_seqlens entry may sit anywhere in i32, and cu[b] <= j < cu[b + 1] here.
        let (i, sq_b) = ((j as i64 - i64::from(cu[b])) as usize, (i64::from(cu[b + 1]) - i64::from(cu[b])) as usize);
        let visible = (len + i + 1).saturating_sub(sq_b).min(len);
        let keys: Vec<usize> = rows[..visible].iter().flatten().copied().collect();
        for h in 0..s.heads {
            let (out, v) = attend(&q[(j * s.heads + h) * w..][..w], &keys, c, r, s, scale);
            o[(j * s.heads + h) * l..][..l].copy_from_slice(&out);
            lse[h * tokens + j] = v;
        }
    }
    (o, lse, bad)
}
