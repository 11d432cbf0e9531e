//! The MLA family's reference math in f64, written to be checked against the DeepSeek-V2 paper
//! and FlashMLA's test reference in one sitting.

/// The decode's shape: `batch` sequences of `sq` new tokens, `heads` query heads over one latent
/// head of `latent` (+ `rope`) dims, a paged cache of `pages` pages of `page_size` tokens, and a
/// block table of `max_pages` entries per sequence.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub batch: usize,
    pub sq: usize,
    pub heads: usize,
    pub latent: usize,
    pub rope: usize,
    pub page_size: usize,
    pub pages: usize,
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
    let (l, rd, w) = (s.latent, s.rope, s.latent + s.rope);
    let mut o = vec![0.0; s.batch * s.sq * s.heads * l];
    let mut lse = vec![f64::NEG_INFINITY; s.batch * s.heads * s.sq];
    let mut bad = false;
    for b in 0..s.batch {
        let (len, clamped) = visible_len(seq_lens[b], s);
        bad |= clamped;
        // Token rows in the cache, None where the page id is out of range.
        let rows: Vec<Option<usize>> = (0..len)
            .map(|t| {
                let page = table[b * s.max_pages + t / s.page_size];
                let ok = usize::try_from(page).ok().filter(|&p| p < s.pages);
                bad |= ok.is_none();
                ok.map(|p| p * s.page_size + t % s.page_size)
            })
            .collect();
        for i in 0..s.sq {
            let Some(p) = (len + i).checked_sub(s.sq) else { continue };
            for h in 0..s.heads {
                let qr = &q[((b * s.sq + i) * s.heads + h) * w..][..w];
                let keys: Vec<(usize, f64)> = rows[..=p]
                    .iter()
                    .flatten()
                    .map(|&row| {
                        let dot: f64 = (0..l).map(|d| qr[d] * c[row * l + d]).sum::<f64>()
                            + (0..rd).map(|d| qr[l + d] * r[row * rd + d]).sum::<f64>();
                        (row, scale * dot)
                    })
                    .collect();
                if keys.is_empty() {
                    continue;
                }
                let m = keys.iter().map(|k| k.1).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = keys.iter().map(|k| (k.1 - m).exp()).sum();
                let out = &mut o[((b * s.sq + i) * s.heads + h) * l..][..l];
                for &(row, sc) in &keys {
                    let wgt = (sc - m).exp() / sum;
                    for d in 0..l {
                        out[d] += wgt * c[row * l + d];
                    }
                }
                lse[(b * s.heads + h) * s.sq + i] = m + sum.ln();
            }
        }
    }
    (o, lse, bad)
}
