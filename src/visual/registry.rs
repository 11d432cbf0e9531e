//! The visual kernels in the registry: case tables, random masses, selections and attention
//! inputs, oracle calls, launches.

use serde_json::{json, Value};

use super::{AttnMass, Compact, Merge, NeighborAttention, Select, SparseAttention};
use crate::backend::{Backend, Status};
use crate::dtype::{to_f64, DType};
use crate::error::Result;
use crate::harness::{
    bf16_cases, compare, float_cases, host, tagged_cases, with_extra, Case, Comparison, DevMap, Expected, Fixture,
    HostTensor, Kernel, Launch, Reg, Registered, Rng, TensorMap,
};
use crate::plan::Plan;
use crate::{launch, with_float, Float};

pub(crate) fn kernels() -> Vec<&'static dyn Kernel> {
    vec![
        &Reg::<AttnMass>::NEW,
        &Reg::<Select>::NEW,
        &Reg::<Compact>::NEW,
        &Reg::<SparseAttention>::NEW,
        &Reg::<NeighborAttention>::NEW,
        &Reg::<Merge>::NEW,
    ]
}

fn owned(dtype: Option<DType>, rows: &[(String, Value)]) -> Vec<Case> {
    let rows: Vec<(&str, Value)> = rows.iter().map(|(l, p)| (l.as_str(), p.clone())).collect();
    match dtype {
        Some(dt) => tagged_cases(dt, &rows),
        None => float_cases(&rows),
    }
}

fn ints(m: &mut TensorMap, name: &str, v: &[i32]) {
    m.insert(name.into(), HostTensor::from_i32(&[v.len()], v));
}

fn f32s(m: &mut TensorMap, name: &str, v: &[f64]) {
    m.insert(name.into(), HostTensor::from_f64(DType::F32, &[v.len()], v));
}

/// Sequence lengths: the `lens` fixture where it describes `seqs` sequences of `tokens` in all
/// (the registered cases), else `tokens` split evenly (other params, as the property tests draw).
fn lens_of(fx: &Fixture, seqs: usize, tokens: usize) -> Vec<usize> {
    let l = fx.sizes("lens");
    if l.len() >= seqs && l[..seqs].iter().sum::<usize>() == tokens {
        return l[..seqs].to_vec();
    }
    (0..seqs).map(|b| tokens / seqs + usize::from(b < tokens % seqs)).collect()
}

/// `cu_seqlens` of [`lens_of`]; `bad_cu` spoils it.
fn cu_of(fx: &Fixture, seqs: usize, tokens: usize) -> Vec<i32> {
    let mut cu = vec![0i32];
    for l in lens_of(fx, seqs, tokens) {
        cu.push(cu[cu.len() - 1] + l as i32);
    }
    if fx.is("bad_cu") && seqs > 1 {
        cu[1] = cu[2] + 1;
    }
    cu
}

/// Each sequence's image grid (start, Hg, Wg): the `img` fixture where it has one per sequence,
/// else the largest near-square grid from the sequence's start.
fn grids(fx: &Fixture, lens: &[usize]) -> Vec<i32> {
    let g = fx.sizes("img");
    if g.len() >= 3 * lens.len() {
        return g[..3 * lens.len()].iter().map(|&v| v as i32).collect();
    }
    lens.iter()
        .flat_map(|&l| {
            let h = (1..=l).take_while(|h| h * h <= l).last().unwrap_or(0);
            [0, h as i32, l.checked_div(h).unwrap_or(0) as i32]
        })
        .collect()
}

/// Each sequence's visual segment (start, len pairs): the `segs` fixture where it has one per
/// sequence, else the middle of each sequence, at most `n` tokens.
fn segs(fx: &Fixture, seqs: usize, tokens: usize, n: usize) -> Vec<i32> {
    let s = fx.sizes("segs");
    if s.len() >= 2 * seqs {
        return s[..2 * seqs].iter().map(|&v| v as i32).collect();
    }
    lens_of(fx, seqs, tokens)
        .into_iter()
        .flat_map(|l| {
            let len = (l / 2).max(l.min(1)).min(n);
            [((l - len) / 2) as i32, len as i32]
        })
        .collect()
}

/// The bench shape: 8 AnyRes-sized sequences (35 text tokens, 2880 image tokens, 60 text), a
/// LLaVA-NeXT-7B layer (32 heads of 128, here with 8 KV heads).
const BENCH: (usize, usize, usize, usize) = (8, 35, 2880, 60);

impl Registered for Select {
    const FAMILY: &'static str = "visual";
    fn bench_cases() -> Vec<Case> {
        let (b, _, n, _) = BENCH;
        tagged_cases(DType::F32, &[(&format!("B{b} n{n} top half"), json!({"seqs": b, "n": n, "k": n / 2}))])
    }
    fn counter_cases() -> Vec<Case> {
        let (_, _, n, _) = BENCH;
        tagged_cases(DType::F32, &[(&format!("B1 n{n} top half (bench B8)"), json!({"seqs": 1, "n": n, "k": n / 2}))])
    }
    fn cases() -> Vec<Case> {
        let c = |l: &str, p: Value| (l.to_string(), p);
        owned(
            Some(DType::F32),
            &[
                c("top-k 5 of 1 x 9", json!({"seqs": 1, "n": 9, "k": 5})),
                c("top-k 0", json!({"seqs": 2, "n": 7, "k": 0})),
                c("top-k all (k > n)", json!({"seqs": 2, "n": 7, "k": 50})),
                c(
                    "top-k 144 of 576, lens 576/300/0",
                    json!({"seqs": 3, "n": 576, "k": 144, "fixture": {"lens": [576, 300, 0]}}),
                ),
                c("top-k with ties", json!({"seqs": 3, "n": 40, "k": 13, "fixture": "ties"})),
                c("top-k all equal", json!({"seqs": 2, "n": 30, "k": 7, "fixture": "equal"})),
                c("mass tau 0.5", json!({"seqs": 2, "n": 300, "mode": "mass", "tau": 0.5})),
                c("mass tau 1", json!({"seqs": 2, "n": 50, "mode": "mass", "tau": 1.0})),
                c(
                    "mass tau 0.8, ranked by another score",
                    json!({"seqs": 2, "n": 64, "mode": "mass", "tau": 0.8, "has_order": true}),
                ),
                c("mass with ties", json!({"seqs": 2, "n": 40, "mode": "mass", "tau": 0.7, "fixture": "ties"})),
                // Rows of 20000 are too long for CUDA's shared-memory sort: ranks by counting.
                c(
                    "top-k 10 of 300 in rows of 20000 (CUDA: ranks by counting)",
                    json!({"seqs": 2, "n": 20000, "k": 10, "fixture": {"lens": [300, 77]}}),
                ),
                c(
                    "mass tau 0.6 of 300 in rows of 20000, ranked by another score",
                    json!({"seqs": 1, "n": 20000, "mode": "mass", "tau": 0.6, "has_order": true, "fixture": {"lens": [300]}}),
                ),
                c("above mean", json!({"seqs": 3, "n": 257, "mode": "above_mean"})),
                c("above mean all equal", json!({"seqs": 1, "n": 20, "mode": "above_mean", "fixture": "equal"})),
                c("bad length and a NaN", json!({"seqs": 3, "n": 10, "k": 4, "fixture": "bad"})),
                // LOOK-M's forced tokens: +inf scores are always kept, in every mode (top-k below
                // and above the forced count, mass with and without an order, above the mean, a
                // sequence of forced tokens only), in both CUDA ranking paths; -inf stays bad.
                c("forced (+inf) top-k 2 < 3 forced", json!({"seqs": 3, "n": 40, "k": 2, "fixture": "forced"})),
                c("forced (+inf) top-k 10", json!({"seqs": 2, "n": 40, "k": 10, "fixture": "forced"})),
                c(
                    "forced (+inf) mass tau 0.5, ranked by another score",
                    json!({"seqs": 2, "n": 64, "mode": "mass", "tau": 0.5, "has_order": true, "fixture": "forced"}),
                ),
                c("forced (+inf) mass tau 0.7", json!({"seqs": 2, "n": 50, "mode": "mass", "tau": 0.7, "fixture": "forced"})),
                c("forced (+inf) above mean", json!({"seqs": 2, "n": 33, "mode": "above_mean", "fixture": "forced"})),
                c(
                    "forced (+inf) top-k 10 in rows of 20000 (CUDA: ranks by counting)",
                    json!({"seqs": 2, "n": 20000, "k": 10, "fixture": {"lens": [300, 77], "forced": true}}),
                ),
                c(
                    "forced (+inf) mass in rows of 20000, ranked by another score",
                    json!({"seqs": 1, "n": 20000, "mode": "mass", "tau": 0.6, "has_order": true,
                        "fixture": {"lens": [300], "forced": true}}),
                ),
                c("only forced (+inf) tokens", json!({"seqs": 2, "n": 12, "k": 3, "mode": "above_mean", "fixture": "all_forced"})),
                c("a -inf score", json!({"seqs": 2, "n": 12, "k": 3, "fixture": "neg_inf"})),
                // FastV's k per image: images of 576, 300 and 0 tokens in one launch, counts
                // from one drop ratio (and one past its length, one of 0); then a negative count.
                c(
                    "top-k per sequence, lens 576/300/0/40",
                    json!({"seqs": 4, "n": 576, "per_seq_k": true,
                        "fixture": {"lens": [576, 300, 0, 40], "keep": [144, 75, 3, 0]}}),
                ),
                c(
                    "top-k per sequence, CUDA ranks by counting",
                    json!({"seqs": 2, "n": 20000, "per_seq_k": true, "fixture": {"lens": [300, 77], "keep": [10, 100]}}),
                ),
                c(
                    "top-k per sequence, a negative count",
                    json!({"seqs": 3, "n": 30, "per_seq_k": true, "fixture": {"keep": [5, -1, 7]}}),
                ),
            ],
        )
        .into_iter()
        // ZipVL's cumulative mass over an AnyRes image's 2880 candidates.
        .chain([Case::realistic(
            "mass tau 0.9 of 2880 candidates",
            DType::F32,
            false,
            json!({"seqs": 1, "n": 2880, "mode": "mass", "tau": 0.9}),
        )])
        .collect()
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut s: Vec<f64> = (0..p.seqs * p.n).map(|_| rng.range(0.0, 1.0)).collect();
        if fx.is("ties") {
            s.iter_mut().for_each(|v| *v = (*v * 4.0).round() / 4.0);
        }
        if fx.is("equal") {
            s.fill(0.25);
        }
        let mut lens: Vec<i32> = fx.sizes("lens").into_iter().map(|v| v as i32).collect();
        lens.resize(p.seqs, p.n as i32);
        if fx.is("bad") {
            lens[0] = p.n as i32 + 1;
            s[p.n + 2] = f64::NAN;
        }
        if fx.is("forced") {
            for b in 0..p.seqs {
                for j in [0, 1, 5] {
                    s[b * p.n + j] = f64::INFINITY;
                }
            }
        }
        if fx.is("all_forced") {
            s[..p.n].fill(f64::INFINITY);
        }
        if fx.is("neg_inf") {
            s[p.n + 3] = f64::NEG_INFINITY;
        }
        let mut m = TensorMap::new();
        f32s(&mut m, "score", &s);
        ints(&mut m, "lens", &lens);
        if p.has_order {
            f32s(&mut m, "order", &rng.normals(p.seqs * p.n, 1.0));
        }
        if p.per_seq_k {
            let mut keep: Vec<i32> =
                fx.0.get("keep")
                    .and_then(|v| v.as_array())
                    .map_or(vec![], |a| a.iter().map(|x| x.as_i64().unwrap_or(0) as i32).collect());
            keep.resize(p.seqs, 1);
            ints(&mut m, "keep", &keep);
        }
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let (mut idx, mut count) = (vec![0; p.seqs * p.n], vec![0; p.seqs]);
        let order: Option<Vec<f32>> = i.get("order").map(|t| t.to_vec()).transpose()?;
        let (score, lens): (Vec<f32>, _) = (host(i, "score")?.to_vec()?, host(i, "lens")?.to_i32());
        let keep = i.get("keep").map(|t| t.to_i32());
        self.run_cpu(&score, &lens, order.as_deref(), keep.as_deref(), &mut idx, &mut count, &st)?;
        let f = |v: &[i32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let mut e = Expected::with("idx", f(&idx)).and("count", f(&count));
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; any;
            score: ro f32, lens: ro i32, order: opt f32, keep: opt i32, idx: rw i32, count: rw i32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        let order: Option<Vec<f32>> = i.get("order").map(|t| t.to_vec()).transpose()?;
        let keep = i.get("keep").map(|t| t.to_i32());
        self.validate(&host(i, "score")?.to_vec()?, &host(i, "lens")?.to_i32(), order.as_deref(), keep.as_deref())
    }
}

fn compact_case(label: &str, lens: &[usize], segs: &[usize], n: usize, extra: Value) -> (String, Value) {
    let p = json!({"seqs": lens.len(), "tokens": lens.iter().sum::<usize>(), "n": n,
        "fixture": {"lens": lens, "segs": segs}});
    (label.to_string(), with_extra(p, &extra))
}

impl Registered for Compact {
    const FAMILY: &'static str = "visual";
    fn cases() -> Vec<Case> {
        owned(
            Some(DType::I32),
            &[
                compact_case("1 seq, 5 text + 16 visual + 3 text", &[24], &[5, 16], 16, json!({})),
                compact_case("3 seqs, LLaVA-like and text only", &[700, 40, 9], &[35, 576, 0, 0, 2, 7], 576, json!({})),
                compact_case("keep all", &[30, 12], &[4, 20, 1, 10], 20, json!({"fixture.all": true})),
                compact_case("keep none", &[30, 12], &[4, 20, 1, 10], 20, json!({"fixture.none": true})),
                compact_case(
                    "bad segment and selection",
                    &[30, 12, 20],
                    &[4, 20, 5, 10, 2, 9],
                    20,
                    json!({"fixture.bad": true}),
                ),
                compact_case(
                    "bad cu_seqlens",
                    &[30, 12, 20],
                    &[4, 20, 1, 10, 2, 9],
                    20,
                    json!({"fixture.bad_cu": true}),
                ),
            ],
        )
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let seg = segs(fx, p.seqs, p.tokens, p.n);
        let (mut idx, mut count) = (vec![-1i32; p.seqs * p.n], vec![0i32; p.seqs]);
        for b in 0..p.seqs {
            let n = (seg[2 * b + 1].max(0) as usize).min(p.n);
            let kept: Vec<i32> = (0..n as i32)
                .filter(|_| {
                    if fx.is("all") {
                        true
                    } else if fx.is("none") {
                        false
                    } else {
                        rng.below(3) != 0
                    }
                })
                .collect();
            count[b] = kept.len() as i32;
            idx[b * p.n..b * p.n + kept.len()].copy_from_slice(&kept);
        }
        let mut seg = seg;
        if fx.is("bad") {
            seg[3] = 40; // segment past the end of sequence 1
            if count[2] >= 2 {
                idx.swap(2 * p.n, 2 * p.n + 1); // sequence 2's selection not ascending
            }
        }
        let mut m = TensorMap::new();
        ints(&mut m, "cu_seqlens", &cu_of(fx, p.seqs, p.tokens));
        ints(&mut m, "seg", &seg);
        ints(&mut m, "idx", &idx);
        ints(&mut m, "count", &count);
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let (mut rows, mut pos, mut cu_out) = (vec![0; p.tokens], vec![0; p.tokens], vec![0; p.seqs + 1]);
        let g = |n: &str| -> Result<Vec<i32>> { Ok(host(i, n)?.to_i32()) };
        self.run_cpu(&g("cu_seqlens")?, &g("seg")?, &g("idx")?, &g("count")?, &mut rows, &mut pos, &mut cu_out, &st)?;
        let f = |v: &[i32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let mut e = Expected::with("rows", f(&rows)).and("pos", f(&pos)).and("cu_out", f(&cu_out));
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; any;
            cu_seqlens: ro i32, seg: ro i32, idx: ro i32, count: ro i32, rows: rw i32, pos: rw i32, cu_out: rw i32;
            status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        let g = |n: &str| -> Result<Vec<i32>> { Ok(host(i, n)?.to_i32()) };
        self.validate(&g("cu_seqlens")?, &g("seg")?, &g("idx")?, &g("count")?)
    }
}

#[allow(clippy::too_many_arguments)]
fn mass_case(
    label: &str,
    lens: &[usize],
    segs: &[usize],
    rows: usize,
    h: usize,
    hkv: usize,
    d: usize,
    extra: Value,
) -> (String, Value) {
    let n = segs.chunks(2).map(|s| s[1]).max().unwrap_or(1).max(1);
    let p = json!({"seqs": lens.len(), "tokens": lens.iter().sum::<usize>(), "rows": rows, "heads": h, "kv_heads": hkv,
        "dim": d, "n": n, "scale": 1.0 / (d as f64).sqrt(), "fixture": {"lens": lens, "segs": segs}});
    (label.to_string(), with_extra(p, &extra))
}

impl Registered for AttnMass {
    const FAMILY: &'static str = "visual";
    fn bench_cases() -> Vec<Case> {
        let (b, t0, n, t1) = BENCH;
        let lens = vec![t0 + n + t1; b];
        let segs: Vec<usize> = (0..b).flat_map(|_| [t0, n]).collect();
        let (l, p) =
            mass_case(&format!("B{b} T{} last rows H32/8 D128", t0 + n + t1), &lens, &segs, b, 32, 8, 128, json!({}));
        bf16_cases([(l, p)])
    }
    fn counter_cases() -> Vec<Case> {
        let (_, t0, n, t1) = BENCH;
        let (l, p) = mass_case(
            &format!("B1 T{} last rows H32/8 D128 (bench B8)", t0 + n + t1),
            &[t0 + n + t1],
            &[t0, n],
            1,
            32,
            8,
            128,
            json!({}),
        );
        bf16_cases([(l, p)])
    }
    fn cases() -> Vec<Case> {
        owned(
            None,
            &[
                mass_case("last row, 1 seq, H2 D16", &[30], &[4, 20], 1, 2, 2, 16, json!({})),
                mass_case(
                    "text rows, 2 seqs, GQA 4/2 D64 per head",
                    &[50, 37],
                    &[3, 40, 2, 30],
                    9,
                    4,
                    2,
                    64,
                    json!({"reduce_heads": false}),
                ),
                mass_case(
                    "rows before the segment end, D40",
                    &[60],
                    &[10, 40],
                    6,
                    3,
                    1,
                    40,
                    json!({"fixture.early": true}),
                ),
                mass_case("given LSE", &[45, 20], &[5, 30, 1, 12], 5, 2, 1, 32, json!({"has_lse": true})),
                mass_case("bad row and segment", &[30, 20], &[4, 20, 10, 15], 4, 1, 1, 8, json!({"fixture.bad": true})),
                // The NaN policy (ARCHITECTURE.md): a NaN in a rater's query makes every mass
                // it rates NaN.
                mass_case("NaN in a rater row", &[30], &[4, 20], 2, 2, 2, 16, json!({"fixture.nan_q": true})),
                // Tensor cores (f16/bf16, D a multiple of 16): 70 rows over 2 sequences are two
                // chunks of 64 and two groups of (row, head) pairs; a 150-key segment is three
                // key tiles, the last partial; per head and summed; a bad row and segment.
                mass_case(
                    "tensor cores: 70 rows, 150 keys, GQA 4/2 D32 per head",
                    &[200, 90],
                    &[20, 150, 5, 60],
                    70,
                    4,
                    2,
                    32,
                    json!({"reduce_heads": false, "fixture.early": true}),
                ),
                mass_case(
                    "tensor cores: 70 rows, 150 keys, MQA 3/1 D48",
                    &[200, 90],
                    &[20, 150, 5, 60],
                    70,
                    3,
                    1,
                    48,
                    json!({}),
                ),
                // ZipCache's per-group sums: H6 over 3 KV heads (two heads a group), both kernels.
                mass_case(
                    "per KV group: GQA 6/3 D16",
                    &[40, 25],
                    &[3, 30, 2, 20],
                    7,
                    6,
                    3,
                    16,
                    json!({"reduce_groups": true}),
                ),
                mass_case(
                    "tensor cores per KV group: 70 rows, GQA 8/2 D32",
                    &[200, 90],
                    &[20, 150, 5, 60],
                    70,
                    8,
                    2,
                    32,
                    json!({"reduce_groups": true, "fixture.early": true}),
                ),
                mass_case(
                    "tensor cores: bad row and segment D16",
                    &[30, 20],
                    &[4, 20, 10, 15],
                    4,
                    2,
                    1,
                    16,
                    json!({"fixture.bad": true}),
                ),
            ],
        )
        .into_iter()
        .chain(
            [
                // FastV at a 7B model's heads: 27 rater rows (SparseVLM's text raters) over LLaVA's
                // 576 visual tokens, summed over 32 heads of D128.
                mass_case(
                    "7B heads: 32 x 27 raters x D128, 576 candidates",
                    &[700],
                    &[35, 576],
                    27,
                    32,
                    32,
                    128,
                    json!({}),
                ),
                // YOPO's head score: every row rates, per head.
                mass_case(
                    "every row rates, per head: 300 rows H8 D64",
                    &[320],
                    &[10, 256],
                    300,
                    8,
                    8,
                    64,
                    json!({"reduce_heads": false, "fixture.early": true}),
                ),
            ]
            .map(|(l, p)| Case::realistic(&l, DType::F16, true, p)),
        )
        .collect()
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let cu = cu_of(fx, p.seqs, p.tokens);
        let mut seg = segs(fx, p.seqs, p.tokens, p.n);
        // Query rows: each sequence's last token first, then random rows (anywhere in the
        // sequence with `early`, else after its segment), weights in (0, 1].
        let qpos: Vec<i32> = (0..p.rows)
            .map(|r| {
                let b = r % p.seqs;
                let (lo, hi) = (cu[b], cu[b + 1]);
                if r < p.seqs {
                    hi - 1
                } else if fx.is("early") {
                    lo + rng.below((hi - lo) as u64) as i32
                } else {
                    let after = lo + seg[2 * b] + seg[2 * b + 1];
                    after + rng.below((hi - after).max(1) as u64) as i32
                }
            })
            .map(|t| t.min(cu[p.seqs] - 1))
            .collect();
        let mut qpos = qpos;
        if fx.is("bad") {
            // A row outside the tokens, and a segment whose end overflows i32.
            qpos[1] = p.tokens as i32 + 3;
            (seg[2], seg[3]) = (i32::MAX, 1);
        }
        let mut m = TensorMap::new();
        let mut q = rng.normals(p.rows * p.heads * p.dim, 1.0);
        if fx.is("nan_q") {
            q[0] = f64::NAN;
        }
        let k = rng.normals(p.tokens * p.kv_heads * p.dim, 1.0);
        m.insert("q".into(), HostTensor::from_f64(p.dtype, &[q.len()], &q));
        m.insert("k".into(), HostTensor::from_f64(p.dtype, &[k.len()], &k));
        if p.has_lse {
            // The LSE an engine's attention would give, from the rounded q and k.
            let (qr, kr) = (p.dtype.round_f64(&q), p.dtype.round_f64(&k));
            let g = p.heads / p.kv_heads;
            let mut lse = Vec::new();
            for r in 0..p.rows {
                let t = qpos[r] as usize;
                let b = (0..p.seqs).find(|&b| t < cu[b + 1] as usize).unwrap_or(0);
                for h in 0..p.heads {
                    let s: Vec<f64> = (cu[b] as usize..=t)
                        .map(|j| {
                            let kk = &kr[(j * p.kv_heads + h / g) * p.dim..(j * p.kv_heads + h / g + 1) * p.dim];
                            let qq = &qr[(r * p.heads + h) * p.dim..(r * p.heads + h + 1) * p.dim];
                            f64::from(p.scale) * qq.iter().zip(kk).map(|(a, b)| a * b).sum::<f64>()
                        })
                        .collect();
                    let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    lse.push(mx + s.iter().map(|x| (x - mx).exp()).sum::<f64>().ln());
                }
            }
            f32s(&mut m, "lse", &lse);
        }
        ints(&mut m, "qpos", &qpos);
        f32s(&mut m, "qw", &(0..p.rows).map(|_| rng.range(0.1, 1.0)).collect::<Vec<_>>());
        ints(&mut m, "cu_seqlens", &cu);
        ints(&mut m, "seg", &seg);
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let mut mass = vec![0f32; Plan::spec(self, "mass")?.len];
        let lse: Option<Vec<f32>> = i.get("lse").map(|t| t.to_vec()).transpose()?;
        with_float!(p.dtype, T => self.run_cpu::<T>(&host(i, "q")?.to_vec()?, &host(i, "qpos")?.to_i32(),
            &host(i, "qw")?.to_vec()?, &host(i, "k")?.to_vec()?, &host(i, "cu_seqlens")?.to_i32(),
            &host(i, "seg")?.to_i32(), lse.as_deref(), &mut mass, &mut vec![0.0; p.rows * p.heads], &st))?;
        let mut e = Expected::with("mass", to_f64(&mass));
        // Sums of many exponentials of long dot products (16-bit inputs are exact, the sums f32).
        e.rtol.insert("mass".into(), 1e-4);
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            q: ro T, qpos: ro i32, qw: ro f32, k: ro T, cu_seqlens: ro i32, seg: ro i32, lse: opt f32, mass: rw f32,
            ws: rw f32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "qpos")?.to_i32(), &host(i, "cu_seqlens")?.to_i32(), &host(i, "seg")?.to_i32())
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        (4 * p.rows * p.heads * p.dim * p.tokens / p.seqs) as f64
    }
}

/// Random `q [T, H, D]`, `k` and `v [T, Hkv, D]` (`per_head` = T x D elements a head), drawn
/// in that order; with `nan_q` the query's first element is NaN.
fn qkv_inputs(m: &mut TensorMap, fx: &Fixture, rng: &mut Rng, dtype: DType, per_head: usize, (h, hkv): (usize, usize)) {
    for (name, heads) in [("q", h), ("k", hkv), ("v", hkv)] {
        let mut x = rng.normals(per_head * heads, 1.0);
        if name == "q" && fx.is("nan_q") && !x.is_empty() {
            x[0] = f64::NAN;
        }
        m.insert(name.into(), HostTensor::from_f64(dtype, &[x.len()], &x));
    }
}

fn attn_case(label: &str, lens: &[usize], h: usize, hkv: usize, d: usize, extra: Value) -> (String, Value) {
    let p = json!({"seqs": lens.len(), "tokens": lens.iter().sum::<usize>(), "heads": h, "kv_heads": hkv, "dim": d,
        "scale": 1.0 / (d as f64).sqrt(), "fixture": {"lens": lens}});
    (label.to_string(), with_extra(p, &extra))
}

impl Registered for SparseAttention {
    const FAMILY: &'static str = "visual";
    fn bench_cases() -> Vec<Case> {
        let (b, t0, n, t1) = BENCH;
        bf16_cases([1.0, 0.5, 0.25, 0.1].map(|keep: f64| {
            let len = t0 + t1 + (n as f64 * keep).round() as usize;
            attn_case(
                &format!("B{b} keep {keep} of {n} image: {len} tokens H32/8 D128"),
                &vec![len; b],
                32,
                8,
                128,
                json!({}),
            )
        }))
    }
    /// One sequence with a tenth of the image and four query heads per KV head as in the bench
    /// (4/1 instead of 32/8): causal attention over 3,000 tokens is billions of emulated steps.
    fn counter_cases() -> Vec<Case> {
        let (_, t0, n, t1) = BENCH;
        let n = n / 10;
        bf16_cases([1.0, 0.25].map(|keep: f64| {
            let len = t0 + t1 + (n as f64 * keep).round() as usize;
            attn_case(
                &format!("B1 keep {keep} of {n}: {len} tokens H4/1 D128 (bench B8, 2880, H32/8)"),
                &[len],
                4,
                1,
                128,
                json!({}),
            )
        }))
    }
    fn cases() -> Vec<Case> {
        owned(
            None,
            &[
                attn_case("1 token H1 D8", &[1], 1, 1, 8, json!({})),
                attn_case("kept tokens, 2 seqs GQA 4/2 D64", &[70, 33], 4, 2, 64, json!({})),
                attn_case("every token kept (dense causal), D128", &[150], 2, 1, 128, json!({"fixture.dense": true})),
                attn_case("3 seqs D40 H3", &[5, 0, 64], 3, 3, 40, json!({})),
                attn_case("D256 MQA", &[20], 4, 1, 256, json!({})),
                // Tensor cores (f16/bf16; D a multiple of 16): groups of 64 (token, head) rows
                // straddle tokens and end partial; one sequence is empty; 16 heads share a KV head.
                attn_case("tensor cores: 3 seqs 70/0/130 GQA 8/2 D128", &[70, 0, 130], 8, 2, 128, json!({})),
                attn_case("tensor cores: MQA 16/1 D64", &[45], 16, 1, 64, json!({})),
                attn_case("bad cu_seqlens", &[5, 6, 7], 1, 1, 8, json!({"fixture.bad_cu": true})),
                // The NaN policy (ARCHITECTURE.md): the row whose query holds a NaN is NaN.
                attn_case("NaN in a query row", &[20, 9], 2, 1, 16, json!({"fixture.nan_q": true})),
                // Decode over the pruned cache: new tokens (`new` a sequence) after the kept ones,
                // or (`mid`) at positions among them, which then see only the keys before them;
                // GQA, an empty sequence, tensor-core groups, bad query offsets.
                attn_case(
                    "decode 1/3/0 new over 70/33/5 kept, GQA 4/2 D64",
                    &[70, 33, 5],
                    4,
                    2,
                    64,
                    json!({"queries": 4, "fixture.new": [1, 3, 0]}),
                ),
                attn_case(
                    "decode at positions among the kept, D40",
                    &[40, 25],
                    3,
                    1,
                    40,
                    json!({"queries": 6, "fixture.new": [2, 4], "fixture.mid": true}),
                ),
                attn_case(
                    "decode tensor cores: 20/1 new over 130/60 kept, GQA 8/2 D128",
                    &[130, 60],
                    8,
                    2,
                    128,
                    json!({"queries": 21, "fixture.new": [20, 1], "fixture.mid": true}),
                ),
                attn_case(
                    "decode with bad cu_seqlens_q",
                    &[6, 7],
                    2,
                    1,
                    16,
                    json!({"queries": 3, "fixture.new": [1, 2], "fixture.bad_cu_q": true}),
                ),
            ],
        )
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let cu = cu_of(fx, p.seqs, p.tokens);
        let mut pos = Vec::with_capacity(p.tokens);
        for b in 0..p.seqs {
            // Increasing original positions with gaps (dropped tokens), or 0.. when dense.
            let mut at = 0i32;
            for _ in cu[b]..cu[b + 1] {
                pos.push(at);
                at += if fx.is("dense") { 1 } else { 1 + rng.below(3) as i32 };
            }
        }
        pos.resize(p.tokens, 0);
        let mut m = TensorMap::new();
        qkv_inputs(&mut m, fx, rng, p.dtype, p.tokens * p.dim, (p.heads, p.kv_heads));
        ints(&mut m, "cu_seqlens", &cu);
        ints(&mut m, "pos", &pos);
        if let Some(tq) = p.queries {
            // The new tokens of each sequence: after its last kept position, or anywhere
            // among them (`mid`).
            let new = fx.sizes("new");
            let (mut cu_q, mut pos_q) = (vec![0i32], Vec::with_capacity(tq));
            for b in 0..p.seqs {
                let n = new.get(b).copied().unwrap_or(0);
                let last = if cu[b + 1] > cu[b] { pos[cu[b + 1] as usize - 1] } else { -1 };
                for i in 0..n {
                    pos_q.push(if fx.is("mid") { rng.below((last + 3) as u64) as i32 } else { last + 1 + i as i32 });
                }
                cu_q.push(cu_q[b] + n as i32);
            }
            cu_q.resize(p.seqs + 1, tq as i32);
            pos_q.resize(tq, 0);
            if fx.is("bad_cu_q") {
                cu_q[1] = cu_q[2] + 1;
            }
            ints(&mut m, "cu_seqlens_q", &cu_q);
            ints(&mut m, "pos_q", &pos_q);
            let mut x = rng.normals(tq * p.heads * p.dim, 1.0);
            if fx.is("nan_q") && !x.is_empty() {
                x[0] = f64::NAN;
            }
            m.insert("q".into(), HostTensor::from_f64(p.dtype, &[x.len()], &x));
        }
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let n = self.query_rows() * p.heads;
        let mut lse = vec![f32::NAN; n];
        let (cu_q, pos_q) = (i.get("cu_seqlens_q").map(|t| t.to_i32()), i.get("pos_q").map(|t| t.to_i32()));
        let o = with_float!(p.dtype, T => {
            let mut o = vec![T::from_f32(f32::NAN); n * p.dim];
            self.run_cpu::<T>(&host(i, "q")?.to_vec()?, &host(i, "k")?.to_vec()?, &host(i, "v")?.to_vec()?,
                &host(i, "cu_seqlens")?.to_i32(), &host(i, "pos")?.to_i32(), cu_q.as_deref(), pos_q.as_deref(),
                &mut o, &mut lse, &st)?;
            Ok(to_f64(&o))
        })?;
        let mut e = Expected::with("o", o).and("lse", to_f64(&lse));
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            q: ro T, k: ro T, v: ro T, cu_seqlens: ro i32, pos: ro i32, cu_seqlens_q: opt i32, pos_q: opt i32,
            o: rw T, lse: rw f32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        let cu_q = i.get("cu_seqlens_q").map(|t| t.to_i32());
        self.validate(&host(i, "cu_seqlens")?.to_i32(), cu_q.as_deref())
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        (2 * p.heads * p.dim * self.query_rows() * p.tokens / p.seqs) as f64
    }
}

fn grid_case(
    label: &str,
    lens: &[usize],
    img: &[usize],
    h: usize,
    hkv: usize,
    d: usize,
    extra: Value,
) -> (String, Value) {
    let p = json!({"seqs": lens.len(), "tokens": lens.iter().sum::<usize>(), "heads": h, "kv_heads": hkv, "dim": d,
        "scale": 1.0 / (d as f64).sqrt(), "radius": 1, "fixture": {"lens": lens, "img": img}});
    (label.to_string(), with_extra(p, &extra))
}

impl Registered for NeighborAttention {
    const FAMILY: &'static str = "visual";
    fn bench_cases() -> Vec<Case> {
        let (b, t0, n, t1) = BENCH;
        let lens = vec![t0 + n + t1; b];
        let img: Vec<usize> = (0..b).flat_map(|_| [t0, 48, 60]).collect();
        bf16_cases([2usize, 4].map(|r| {
            grid_case(&format!("B{b} 48x60 grid r{r} H32/8 D128"), &lens, &img, 32, 8, 128, json!({"radius": r}))
        }))
    }
    fn counter_cases() -> Vec<Case> {
        let (_, t0, _, t1) = BENCH;
        bf16_cases([2usize, 4].map(|r| {
            grid_case(
                &format!("B1 12x15 grid r{r} H4/1 D128 (bench B8 48x60 H32/8)"),
                &[t0 + 180 + t1],
                &[t0, 12, 15],
                4,
                1,
                128,
                json!({"radius": r}),
            )
        }))
    }
    fn cases() -> Vec<Case> {
        owned(
            None,
            &[
                grid_case("text + 6x7 grid r1 + text, H2 D32", &[57], &[10, 6, 7], 2, 2, 32, json!({})),
                grid_case("NaN in a query row", &[57], &[10, 6, 7], 2, 2, 32, json!({"fixture.nan_q": true})),
                grid_case(
                    "raster-causal window r2, GQA 4/2",
                    &[8 + 30 + 4],
                    &[8, 5, 6],
                    4,
                    2,
                    16,
                    json!({"radius": 2, "causal_window": true}),
                ),
                grid_case(
                    "head masks (key, out, both, none)",
                    &[5 + 16 + 3],
                    &[5, 4, 4],
                    4,
                    4,
                    8,
                    json!({"has_head_mask": true, "fixture.masks": [1, 2, 3, 0]}),
                ),
                grid_case("2 seqs, one without an image, D64", &[20, 9], &[2, 3, 5, 0, 0, 0], 2, 1, 64, json!({})),
                // Tensor cores: masks on GQA heads of one group; a window reaching 3 rows ahead of
                // the query (non-causal) over 80 keys; an image that does not fit.
                grid_case(
                    "tensor cores: head masks on GQA 4/2 D32",
                    &[5 + 16 + 3],
                    &[5, 4, 4],
                    4,
                    2,
                    32,
                    json!({"has_head_mask": true, "fixture.masks": [1, 2, 3, 0]}),
                ),
                grid_case(
                    "tensor cores: 8x10 grid r3 GQA 8/2 D64",
                    &[6 + 80 + 5],
                    &[6, 8, 10],
                    8,
                    2,
                    64,
                    json!({"radius": 3}),
                ),
                grid_case("tensor cores: bad image D16", &[20, 9], &[2, 3, 5, 4, 3, 3], 2, 1, 16, json!({})),
                grid_case("1 x 1 grid, r0", &[4], &[1, 1, 1], 1, 1, 8, json!({"radius": 0})),
                grid_case("bad image", &[20, 9], &[2, 3, 5, 4, 3, 3], 1, 1, 8, json!({})),
                grid_case(
                    "bad cu_seqlens",
                    &[20, 9, 3],
                    &[2, 3, 5, 0, 2, 2, 0, 1, 1],
                    1,
                    1,
                    8,
                    json!({"fixture.bad_cu": true}),
                ),
            ],
        )
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = TensorMap::new();
        qkv_inputs(&mut m, fx, rng, p.dtype, p.tokens * p.dim, (p.heads, p.kv_heads));
        ints(&mut m, "cu_seqlens", &cu_of(fx, p.seqs, p.tokens));
        ints(&mut m, "img", &grids(fx, &lens_of(fx, p.seqs, p.tokens)));
        if p.has_head_mask {
            ints(&mut m, "head_mask", &fx.sizes("masks").into_iter().map(|v| v as i32).collect::<Vec<_>>());
        }
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let n = p.tokens * p.heads;
        let mut lse = vec![f32::NAN; n];
        let mask = i.get("head_mask").map(|t| t.to_i32());
        let o = with_float!(p.dtype, T => {
            let mut o = vec![T::from_f32(f32::NAN); n * p.dim];
            self.run_cpu::<T>(&host(i, "q")?.to_vec()?, &host(i, "k")?.to_vec()?, &host(i, "v")?.to_vec()?,
                &host(i, "cu_seqlens")?.to_i32(), &host(i, "img")?.to_i32(), mask.as_deref(), &mut o, &mut lse, &st)?;
            Ok(to_f64(&o))
        })?;
        let mut e = Expected::with("o", o).and("lse", to_f64(&lse));
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            q: ro T, k: ro T, v: ro T, cu_seqlens: ro i32, img: ro i32, head_mask: opt i32, o: rw T, lse: rw f32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "cu_seqlens")?.to_i32(), &host(i, "img")?.to_i32())
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        (2 * p.heads * p.dim * p.tokens * p.tokens / p.seqs) as f64
    }
}

impl Registered for Merge {
    const FAMILY: &'static str = "visual";
    fn cases() -> Vec<Case> {
        let c = |l: &str, lens: &[usize], segs: &[usize], n: usize, d: usize, extra: Value| {
            let p = json!({"seqs": lens.len(), "tokens": lens.iter().sum::<usize>(), "n": n, "dim": d,
                "fixture": {"lens": lens, "segs": segs}});
            (l.to_string(), with_extra(p, &extra))
        };
        owned(
            None,
            &[
                c("1 seq, 20 candidates, D16", &[26], &[3, 20], 20, 16, json!({})),
                c(
                    "2 seqs D40, one keeps nothing",
                    &[50, 30],
                    &[5, 40, 2, 25],
                    40,
                    40,
                    json!({"fixture.none_in_1": true}),
                ),
                c("every dropped token to one kept token", &[40], &[0, 40], 40, 8, json!({"fixture.one_kept": true})),
                c("bad selection", &[20, 20], &[2, 10, 2, 10], 10, 8, json!({"fixture.bad": true})),
                c("bad cu_seqlens", &[20, 20, 5], &[2, 10, 2, 10, 0, 3], 10, 8, json!({"fixture.bad_cu": true})),
            ],
        )
        .into_iter()
        .chain([{
            let (l, p) = c("AnyRes: 2975 candidates D128, a third kept", &[3000], &[20, 2975], 2975, 128, json!({}));
            Case::realistic(&l, DType::F16, true, p)
        }])
        .collect()
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let seg = segs(fx, p.seqs, p.tokens, p.n);
        let (mut idx, mut count) = (vec![-1i32; p.seqs * p.n], vec![0i32; p.seqs]);
        for b in 0..p.seqs {
            let n = (seg[2 * b + 1].max(0) as usize).min(p.n);
            let kept: Vec<i32> = if fx.is("one_kept") {
                vec![n as i32 / 2]
            } else if fx.is("none_in_1") && b == 1 {
                vec![]
            } else {
                (0..n as i32).filter(|_| rng.below(3) == 0).collect()
            };
            count[b] = kept.len() as i32;
            idx[b * p.n..b * p.n + kept.len()].copy_from_slice(&kept);
        }
        let mut seg = seg;
        if fx.is("bad") {
            // A count above the segment, and a segment whose end overflows i32.
            count[1] = seg[3] + 1;
            (seg[0], seg[1]) = (i32::MAX - 1, 2);
        }
        let mut m = TensorMap::new();
        let x = rng.normals(p.tokens * p.dim, 1.0);
        m.insert("x".into(), HostTensor::from_f64(p.dtype, &[x.len()], &x));
        ints(&mut m, "cu_seqlens", &cu_of(fx, p.seqs, p.tokens));
        ints(&mut m, "seg", &seg);
        ints(&mut m, "idx", &idx);
        ints(&mut m, "count", &count);
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let mut assign = vec![0i32; p.seqs * p.n];
        let g = |n: &str| -> Result<Vec<i32>> { Ok(host(i, n)?.to_i32()) };
        let merged = with_float!(p.dtype, T => {
            let mut merged = vec![T::default(); p.seqs * p.n * p.dim];
            self.run_cpu::<T>(&host(i, "x")?.to_vec()?, &g("cu_seqlens")?, &g("seg")?, &g("idx")?, &g("count")?,
                &mut assign, &mut merged, &st)?;
            Ok(to_f64(&merged))
        })?;
        let mut e = Expected::with("assign", assign.iter().map(|&v| f64::from(v)).collect()).and("merged", merged);
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    /// The device may pick another kept slot for a dropped token where the cosine similarities
    /// tie within f32 rounding; such a choice is accepted, and the means are checked against the
    /// device's own assignment.
    fn check(&self, i: &TensorMap, expected: &Expected, outputs: &TensorMap) -> Vec<Comparison> {
        let (Some(got_a), Some(got_m), Some(want_a)) =
            (outputs.get("assign"), outputs.get("merged"), expected.outputs.get("assign"))
        else {
            return vec![Comparison::failed("assign", "assign or merged missing")];
        };
        let p = &self.params;
        let g = |n: &str| host(i, n).map(|t| t.to_i32()).unwrap_or_default();
        let (x, cu, seg, idx, count) =
            (host(i, "x").map(|t| t.to_f64()), g("cu_seqlens"), g("seg"), g("idx"), g("count"));
        let Ok(x) = x else {
            return vec![Comparison::failed("assign", "input x missing")];
        };
        let dev = got_a.to_i32();
        let mut accepted: Vec<i32> = want_a.iter().map(|&v| v as i32).collect();
        let mut want_m = expected.outputs.get("merged").cloned().unwrap_or_default();
        let d = p.dim;
        for b in 0..p.seqs {
            let a = b * p.n;
            // Only sequences the oracle merged (its assignment has a slot) can differ by ties.
            if (0..p.n).all(|j| dev[a + j] == accepted[a + j]) || accepted[a..a + p.n].iter().all(|&v| v < 0) {
                continue;
            }
            let (s0, len, c) = ((cu[b] + seg[2 * b]) as usize, seg[2 * b + 1] as usize, count[b] as usize);
            let kept: Vec<usize> = idx[a..a + c].iter().map(|&j| j as usize).collect();
            let row = |j: usize| &x[(s0 + j) * d..(s0 + j + 1) * d];
            for j in (0..len).filter(|j| !kept.contains(j)) {
                let (w, g) = (accepted[a + j], dev[a + j]);
                if w != g && w >= 0 && g >= 0 && (g as usize) < c {
                    let (cw, cg) =
                        (Merge::cosine(row(j), row(kept[w as usize])), Merge::cosine(row(j), row(kept[g as usize])));
                    if cg >= cw - 1e-5 {
                        accepted[a + j] = g;
                    }
                }
            }
            let rows: Vec<usize> = (0..len).map(|j| s0 + j).collect();
            let m = Merge::means(&x, d, &rows, &kept, &accepted[a..a + len]);
            want_m[a * d..a * d + m.len()].copy_from_slice(&m);
        }
        let want_a: Vec<f64> = accepted.iter().map(|&v| f64::from(v)).collect();
        vec![compare("assign", got_a, &want_a, None, None), compare("merged", got_m, &want_m, None, None)]
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            x: ro T, cu_seqlens: ro i32, seg: ro i32, idx: ro i32, count: ro i32, assign: rw i32, merged: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        let g = |n: &str| -> Result<Vec<i32>> { Ok(host(i, n)?.to_i32()) };
        self.validate(&g("cu_seqlens")?, &g("seg")?, &g("idx")?, &g("count")?)
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        (3 * p.seqs * p.n * p.n * p.dim / 4) as f64
    }
}
