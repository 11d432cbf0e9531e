//! The MoM kernels in the registry: case tables, random routings and pools, oracle calls, launches.

use serde_json::{json, Value};

use super::{
    ApplyState, GatedDeltaChunk, GatedDeltaStep, GatedNorm, MomLayer, MomLayerStep, Permute, PermuteParams, Route,
    ShortConv, Transport, Unpermute,
};
use crate::backend::{Backend, Status, StatusBits};
use crate::dtype::{to_f64, DType};
use crate::error::Result;
use crate::harness::{
    bf16_cases, float_cases, host, tagged_cases, with_extra, Case, DevMap, Expected, Fixture, HostTensor, Kernel,
    Launch, Reg, Registered, Rng, TensorMap,
};
use crate::plan::Plan;
use crate::{launch, with_float};

pub(crate) fn kernels() -> Vec<&'static dyn Kernel> {
    vec![
        &Reg::<Route>::NEW,
        &Reg::<Permute>::NEW,
        &Reg::<Unpermute>::NEW,
        &Reg::<ShortConv>::NEW,
        &Reg::<GatedDeltaChunk>::NEW,
        &Reg::<GatedDeltaStep>::NEW,
        &Reg::<GatedNorm>::NEW,
        &Reg::<Transport>::NEW,
        &Reg::<ApplyState>::NEW,
        &Reg::<MomLayer>::NEW,
        &Reg::<MomLayerStep>::NEW,
    ]
}

/// `float_cases` over rows whose labels were built at run time.
fn owned_cases(rows: &[(String, Value)]) -> Vec<Case> {
    float_cases(&rows.iter().map(|(l, p)| (l.as_str(), p.clone())).collect::<Vec<_>>())
}

fn shuffled(rng: &mut Rng, n: usize) -> Vec<i32> {
    let mut v: Vec<i32> = (0..n as i32).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v
}

/// `tokens x k` distinct random choices of `memories`; `one_memory` sends every token to
/// memories `0..k` (memory 0 first), `skip_last` never picks the last memory, and `bad_idx`
/// puts one choice out of range and repeats another.
fn routing(rng: &mut Rng, tokens: usize, memories: usize, k: usize, fx: &Fixture) -> Vec<i32> {
    let pool = if fx.is("skip_last") { memories - 1 } else { memories };
    let mut idx = Vec::with_capacity(tokens * k);
    for _ in 0..tokens {
        let mut c = shuffled(rng, pool);
        if fx.is("one_memory") {
            c = (0..pool as i32).collect();
        }
        idx.extend_from_slice(&c[..k]);
    }
    if fx.is("bad_idx") {
        idx[0] = memories as i32 + 3;
        if k >= 2 && tokens > 1 {
            idx[k + 1] = idx[k];
        }
    }
    idx
}

/// Offsets from the `lens` fixture (padded with zero-length entries to `n`).
fn offsets(fx: &Fixture, n: usize) -> Vec<i32> {
    let mut cu = vec![0i32];
    for l in fx.sizes("lens").into_iter().chain(std::iter::repeat(0)).take(n) {
        cu.push(cu[cu.len() - 1] + l as i32);
    }
    if fx.is("bad_cu") {
        cu[1] = cu[2] + 1;
    }
    cu
}

/// Distinct shuffled slot ids; `bad_slot` and `repeat_slot` spoil one each way.
fn slot_ids(rng: &mut Rng, seqs: usize, slots: usize, fx: &Fixture) -> Vec<i32> {
    let mut ids = shuffled(rng, slots);
    ids.truncate(seqs);
    if fx.is("bad_slot") {
        ids[0] = slots as i32 + 2;
    }
    if fx.is("repeat_slot") && seqs >= 3 {
        ids[2] = ids[1];
    }
    ids
}

/// `A_log = ln U(1, 16)` and `dt_bias` = softplus^-1 of a step in [1e-3, 0.1], as fla initializes them.
fn gate_params(rng: &mut Rng, heads: usize) -> Vec<f64> {
    let a_log: Vec<f64> = (0..heads).map(|_| rng.range(1.0, 16.0).ln()).collect();
    let dt: Vec<f64> = (0..heads)
        .map(|_| {
            let d = (rng.range(0.001f64.ln(), 0.1f64.ln())).exp();
            d + (-(-d).exp_m1()).ln()
        })
        .collect();
    [a_log, dt].concat()
}

fn normals(m: &mut TensorMap, rng: &mut Rng, name: &str, dtype: DType, n: usize, scale: f64) {
    m.insert(name.into(), HostTensor::from_f64(dtype, &[n], &rng.normals(n, scale)));
}

fn ints(m: &mut TensorMap, name: &str, v: &[i32]) {
    m.insert(name.into(), HostTensor::from_i32(&[v.len()], v));
}

/// A buffer of `n` NaNs: outputs the kernel must leave unwritten keep them in the expectation.
fn gaps<T: crate::Float>(n: usize) -> Vec<T> {
    vec![T::from_f32(f32::NAN); n]
}

/// Recurrent outputs and f32 states: the chunked kernels sum in another order than the oracle.
fn recurrent_tolerance(e: &mut Expected, names: &[&str]) {
    for n in names {
        e.rtol.insert((*n).into(), 1e-4);
        e.atol.insert((*n).into(), 2e-4);
    }
}

impl Registered for Route {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1 token M4 top2", json!({"tokens": 1, "memories": 4, "topk": 2})),
            ("37 tokens M4 top2", json!({"tokens": 37, "memories": 4, "topk": 2})),
            ("70 tokens M40 top5", json!({"tokens": 70, "memories": 40, "topk": 5})),
            ("9 tokens M3 top3", json!({"tokens": 9, "memories": 3, "topk": 3})),
            ("ties and a NaN row", json!({"tokens": 6, "memories": 8, "topk": 3, "fixture": "ties"})),
        ])
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut v = rng.normals(p.tokens * p.memories, 2.0);
        if fx.is("ties") {
            // Row 0 all equal, row 1 a three-way tie for first, row 2 two pairs, row 3 a NaN.
            v[..p.memories].fill(0.5);
            let m = p.memories;
            (v[m + 1], v[m + 4], v[m + 6]) = (3.0, 3.0, 3.0);
            (v[2 * m], v[2 * m + 7], v[2 * m + 3], v[2 * m + 5]) = (2.0, 2.0, 1.5, 1.5);
            v[3 * m + 2] = f64::NAN;
        }
        let mut m = TensorMap::new();
        m.insert("logits".into(), HostTensor::from_f64(p.dtype, &[v.len()], &v));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let (mut idx, mut w) = (vec![0i32; p.tokens * p.topk], vec![0f32; p.tokens * p.topk]);
        with_float!(p.dtype, T => self.run_cpu::<T>(&host(i, "logits")?.to_vec()?, &mut idx, &mut w, &st))?;
        let mut e = Expected::with("idx", idx.iter().map(|&v| f64::from(v)).collect())
            .and("weights", w.iter().map(|&v| f64::from(v)).collect());
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype; logits: ro T, idx: rw i32, weights: rw f32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        let v = host(i, "logits")?.to_f64();
        match v.iter().position(|x| !x.is_finite()) {
            Some(e) => Err(crate::error::Error::InvalidInput(format!(
                "logits[{}][{}] = {} is not finite (the row routes to memories 0..k)",
                e / self.params.memories,
                e % self.params.memories,
                v[e]
            ))),
            None => Ok(()),
        }
    }
    fn flops(&self) -> f64 {
        (3 * self.params.tokens * self.params.memories) as f64
    }
}

fn permute_case(label: &str, lens: &[usize], memories: usize, topk: usize, extra: Value) -> (String, Value) {
    let p = json!({"tokens": lens.iter().sum::<usize>(), "seqs": lens.len(), "memories": memories, "topk": topk,
        "fixture": {"lens": lens}});
    (label.to_string(), with_extra(p, &extra))
}

impl Registered for Permute {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        let rows = [
            permute_case("1 token M4 top2", &[1], 4, 2, json!({})),
            permute_case("3 seqs 5/0/300 M4 top2", &[5, 0, 300], 4, 2, json!({})),
            permute_case("2 seqs M7 top3 no shared", &[33, 17], 7, 3, json!({"shared": false})),
            permute_case("all to one memory", &[40, 9], 4, 2, json!({"fixture.one_memory": true})),
            permute_case("a memory with no tokens", &[20, 7], 4, 2, json!({"fixture.skip_last": true})),
            permute_case("bad choices", &[6, 5], 4, 2, json!({"fixture.bad_idx": true})),
            permute_case("bad cu_seqlens", &[6, 5, 4], 4, 2, json!({"fixture.bad_cu": true})),
        ];
        tagged_cases(DType::I32, &rows.iter().map(|(l, p)| (l.as_str(), p.clone())).collect::<Vec<_>>())
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = TensorMap::new();
        ints(&mut m, "idx", &routing(rng, p.tokens, p.memories, p.topk, fx));
        ints(&mut m, "cu_seqlens", &offsets(fx, p.seqs));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let mut st = Status::new(&Backend::Cpu)?;
        let (mut order, mut inverse) = (vec![0; self.rows()], vec![0; self.rows()]);
        let (mut cu_mem, mut counts) = (vec![0; self.streams() + 1], vec![0; self.streams()]);
        let (idx, cu) = (host(i, "idx")?.to_i32(), host(i, "cu_seqlens")?.to_i32());
        self.run_cpu(&idx, &cu, &mut order, &mut inverse, &mut cu_mem, &mut counts, &st)?;
        let f = |v: &[i32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let mut e = Expected::with("order", f(&order)).and("inverse", f(&inverse)).and("cu_mem", f(&cu_mem));
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; any;
            idx: ro i32, cu_seqlens: ro i32, order: rw i32, inverse: rw i32, cu_mem: rw i32, counts: rw i32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "idx")?.to_i32(), &host(i, "cu_seqlens")?.to_i32())
    }
}

impl Registered for Unpermute {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1 token top2 shared", json!({"tokens": 1, "topk": 2, "width": 8, "rows": 3})),
            ("41 tokens top2 shared H4 V64", json!({"tokens": 41, "topk": 2, "width": 256, "rows": 123})),
            ("9 tokens top3 width 40", json!({"tokens": 9, "topk": 3, "shared": false, "width": 40, "rows": 30})),
            ("dropped and bad rows", json!({"tokens": 5, "topk": 2, "width": 16, "rows": 15, "fixture": "bad"})),
        ])
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let n = p.topk + usize::from(p.shared);
        let mut m = TensorMap::new();
        normals(&mut m, rng, "y", p.dtype, p.rows * p.width, 1.0);
        let mut inv = shuffled(rng, p.rows);
        inv.truncate(p.tokens * n);
        // Fewer stream rows than pairs: the rest are dropped pairs.
        inv.resize(p.tokens * n, -1);
        if fx.is("bad") {
            (inv[1], inv[3], inv[6]) = (-1, p.rows as i32 + 4, -7);
        }
        ints(&mut m, "inverse", &inv);
        let w: Vec<f64> = (0..p.tokens * p.topk).map(|_| rng.range(0.0, 1.0)).collect();
        m.insert("weights".into(), HostTensor::from_f64(DType::F32, &[w.len()], &w));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let out = with_float!(p.dtype, T => {
            let mut out = vec![T::default(); p.tokens * p.width];
            self.run_cpu::<T>(&host(i, "y")?.to_vec()?, &host(i, "inverse")?.to_i32(),
                &host(i, "weights")?.to_vec()?, &mut out, &st)?;
            Ok(to_f64(&out))
        })?;
        let mut e = Expected::with("out", out);
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            y: ro T, inverse: ro i32, weights: ro f32, out: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "inverse")?.to_i32())
    }
    fn flops(&self) -> f64 {
        (2 * self.params.tokens * (self.params.topk + 1) * self.params.width) as f64
    }
}

/// A layer-shaped case: `lens` tokens per sequence, M memories, top-k, H heads of K and V.
#[allow(clippy::too_many_arguments)]
fn layer_case(
    label: &str,
    lens: &[usize],
    m: usize,
    k: usize,
    h: usize,
    kd: usize,
    vd: usize,
    extra: Value,
) -> (String, Value) {
    let p = json!({"tokens": lens.iter().sum::<usize>().max(1), "seqs": lens.len(), "memories": m, "topk": k,
        "heads": h, "head_k": kd, "head_v": vd, "slots": lens.len() + 2, "fixture": {"lens": lens}});
    (label.to_string(), with_extra(p, &extra))
}

/// Routing and its streams through the CPU permutation (what the layer feeds the kernel).
fn streams(p: &ShortConv, fx: &Fixture, rng: &mut Rng) -> Result<(Vec<i32>, Vec<i32>)> {
    let q = &p.params;
    let perm = Permute::new(PermuteParams {
        tokens: q.tokens,
        seqs: q.seqs,
        memories: q.memories,
        topk: q.topk,
        shared: q.shared,
    })?;
    let idx = routing(rng, q.tokens, q.memories, q.topk, fx);
    let mut cu = offsets(fx, q.seqs);
    cu[q.seqs] = q.tokens as i32;
    let (mut order, mut inverse) = (vec![0; perm.rows()], vec![0; perm.rows()]);
    let (mut cu_mem, mut counts) = (vec![0; perm.streams() + 1], vec![0; perm.streams()]);
    perm.run_cpu(&idx, &cu, &mut order, &mut inverse, &mut cu_mem, &mut counts, &Status::new(&Backend::Cpu)?)?;
    Ok((order, cu_mem))
}

impl Registered for ShortConv {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        owned_cases(&[
            layer_case("1 token M4 top2 H1 K8 V8", &[1], 4, 2, 1, 8, 8, json!({})),
            layer_case("2 seqs 9/30 M4 top2 H2 K16 V24", &[9, 30], 4, 2, 2, 16, 24, json!({})),
            layer_case("3 seqs M3 top1 W3 no shared", &[4, 0, 11], 3, 1, 3, 8, 16, json!({"conv": 3, "shared": false})),
            layer_case("all to one memory", &[12, 5], 4, 2, 1, 16, 16, json!({"fixture.one_memory": true})),
            // A 6000-row stream: WGSL walks it in two windows of rows, two dispatches.
            layer_case("6000 tokens to one memory", &[6000], 4, 2, 1, 8, 8, json!({"fixture.one_memory": true})),
            layer_case("bad slot", &[3, 4, 2], 4, 2, 1, 8, 8, json!({"fixture.bad_slot": true})),
            layer_case("repeated slot", &[3, 4, 2], 4, 2, 1, 8, 8, json!({"fixture.repeat_slot": true})),
        ])
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let (p, d) = (&self.params, &self.dims);
        let (order, cu_mem) = streams(self, fx, rng)?;
        let mut m = TensorMap::new();
        normals(&mut m, rng, "x", p.dtype, p.tokens * d.proj_width(), 1.0);
        normals(&mut m, rng, "conv_w", p.dtype, d.channels() * p.conv, 0.5);
        let gp = gate_params(rng, p.heads);
        m.insert("gate_params".into(), HostTensor::from_f64(DType::F32, &[gp.len()], &gp));
        normals(&mut m, rng, "conv_state", DType::F32, Plan::spec(self, "conv_state")?.len, 1.0);
        ints(&mut m, "order", &order);
        ints(&mut m, "cu_mem", &cu_mem);
        ints(&mut m, "slot_ids", &slot_ids(rng, p.seqs, p.slots, fx));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let mut cs: Vec<f32> = host(i, "conv_state")?.to_vec()?;
        let mut gb = vec![f32::NAN; Plan::spec(self, "gb")?.len];
        let qkv = with_float!(p.dtype, T => {
            let mut qkv = gaps::<T>(Plan::spec(self, "qkv")?.len);
            self.run_cpu::<T>(&host(i, "x")?.to_vec()?, &host(i, "order")?.to_i32(), &host(i, "cu_mem")?.to_i32(),
                &host(i, "slot_ids")?.to_i32(), &host(i, "conv_w")?.to_vec()?, &host(i, "gate_params")?.to_vec()?,
                &mut cs, &mut qkv, &mut gb, &st)?;
            Ok(to_f64(&qkv))
        })?;
        let mut e = Expected::with("qkv", qkv).and("gb", to_f64(&gb)).and("conv_state", to_f64(&cs));
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            x: ro T, order: ro i32, cu_mem: ro i32, slot_ids: ro i32, conv_w: ro T, gate_params: ro f32,
            conv_state: rw f32, qkv: rw T, gb: rw f32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "order")?.to_i32(), &host(i, "cu_mem")?.to_i32(), &host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        (2 * self.rows() * self.dims.channels() * self.params.conv) as f64
    }
}

/// A chunk case: stream lengths `lens` (streams = lens.len(), over `seqs` sequences).
fn chunk_case(
    label: &str,
    lens: &[usize],
    seqs: usize,
    h: usize,
    kd: usize,
    vd: usize,
    extra: Value,
) -> (String, Value) {
    let p = json!({"streams": lens.len(), "seqs": seqs, "rows": lens.iter().sum::<usize>().max(1) + 3, "heads": h,
        "head_k": kd, "head_v": vd, "slots": seqs + 1, "fixture": {"lens": lens}});
    (label.to_string(), with_extra(p, &extra))
}

impl Registered for GatedDeltaChunk {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        owned_cases(&[
            chunk_case("1 stream T1 K8 V8", &[1], 1, 1, 8, 8, json!({})),
            chunk_case("lengths 63/64/65/1 K32 V16", &[63, 64, 65, 1], 2, 1, 32, 16, json!({})),
            chunk_case("empty streams, H3 K24 V72 chunk 16", &[0, 20, 0, 37, 5, 0], 2, 3, 24, 72, json!({"chunk": 16})),
            chunk_case("long 300, chunk 32, v_first", &[300, 40], 1, 1, 16, 8, json!({"chunk": 32, "v_first": true})),
            chunk_case("strong decay g <= -20", &[70, 9], 2, 2, 16, 16, json!({"fixture.strong": true})),
            chunk_case("linear attention rule", &[45, 3], 2, 1, 16, 16, json!({"rule": "linear"})),
            chunk_case("bad and repeated slots", &[5, 6, 7, 8], 4, 1, 8, 8, json!({"fixture.repeat_slot": true})),
            chunk_case("bad cu", &[5, 6, 7], 3, 1, 8, 8, json!({"fixture.bad_cu": true})),
        ])
        .into_iter()
        .chain([{
            // An 8k-token chunked prefill: the stream's tiles go over several dispatches.
            let (l, p) = chunk_case("8k-token prefill H1 K128 V64", &[8192], 1, 1, 128, 64, json!({}));
            Case::realistic(&l, DType::BF16, true, p)
        }])
        .collect()
    }
    fn bench_cases() -> Vec<Case> {
        let lens = |t: usize| vec![t; 1];
        bf16_cases([2048usize, 8192, 32768].map(|t| {
            let (l, p) = chunk_case(&format!("T{t} H4 K256 V256"), &lens(t), 1, 4, 256, 256, json!({}));
            (l, p)
        }))
    }
    fn counter_cases() -> Vec<Case> {
        bf16_cases([(128usize, 1usize)].map(|(t, h)| {
            chunk_case(&format!("T{t} H{h} K256 V256 (bench T2048+ H4)"), &[t], 1, h, 256, 256, json!({}))
        }))
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = TensorMap::new();
        normals(&mut m, rng, "qkv", p.dtype, Plan::spec(self, "qkv")?.len, 1.0);
        let mut gb = Vec::with_capacity(p.rows * 2 * p.heads);
        for _ in 0..p.rows {
            let g: Vec<f64> =
                (0..p.heads)
                    .map(|_| {
                        if fx.is("strong") && rng.below(2) == 0 {
                            -rng.range(20.0, 60.0)
                        } else {
                            -rng.range(0.0, 1.5)
                        }
                    })
                    .collect();
            gb.extend(g);
            gb.extend((0..p.heads).map(|_| rng.range(0.0, 1.0)));
        }
        m.insert("gb".into(), HostTensor::from_f64(DType::F32, &[gb.len()], &gb));
        let mut cu = offsets(fx, p.streams);
        if fx.is("repeat_slot") {
            let mut ids = slot_ids(rng, p.seqs, p.slots, fx);
            ids[0] = p.slots as i32 + 1;
            ints(&mut m, "slot_ids", &ids);
        } else {
            ints(&mut m, "slot_ids", &slot_ids(rng, p.seqs, p.slots, fx));
        }
        cu.truncate(p.streams + 1);
        ints(&mut m, "cu", &cu);
        normals(&mut m, rng, "state", DType::F32, Plan::spec(self, "state")?.len, 0.5);
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let mut state: Vec<f32> = host(i, "state")?.to_vec()?;
        let o = with_float!(p.dtype, T => {
            let mut o = gaps::<T>(Plan::spec(self, "o")?.len);
            self.run_cpu::<T>(&host(i, "qkv")?.to_vec()?, &host(i, "gb")?.to_vec()?, &host(i, "cu")?.to_i32(),
                &host(i, "slot_ids")?.to_i32(), &mut state, &mut o, &st)?;
            Ok(to_f64(&o))
        })?;
        let mut e = Expected::with("o", o).and("state", to_f64(&state));
        recurrent_tolerance(&mut e, if p.dtype == DType::F32 { &["o", "state"] } else { &["state"] });
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            qkv: ro T, gb: ro f32, cu: ro i32, slot_ids: ro i32, state: rw f32, o: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "cu")?.to_i32(), &host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        // Per row and head: k.S, the update and q.S over K x V, plus the chunk's Gram products.
        let p = &self.params;
        (p.rows * p.heads) as f64 * (6.0 * (p.head_k * p.head_v) as f64 + 4.0 * (p.chunk * p.head_k) as f64)
    }
}

#[allow(clippy::too_many_arguments)]
fn step_case(
    label: &str,
    batch: usize,
    m: usize,
    k: usize,
    h: usize,
    kd: usize,
    vd: usize,
    extra: Value,
) -> (String, Value) {
    let p = json!({"batch": batch, "memories": m, "topk": k, "heads": h, "head_k": kd, "head_v": vd,
        "slots": batch + 3});
    (label.to_string(), with_extra(p, &extra))
}

impl Registered for GatedDeltaStep {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        owned_cases(&[
            step_case("B1 M4 top2 H1 K8 V8", 1, 4, 2, 1, 8, 8, json!({})),
            step_case("B5 M4 top2 H2 K32 V48", 5, 4, 2, 2, 32, 48, json!({})),
            step_case("B3 M3 top3 H1 K256 V256", 3, 3, 3, 1, 256, 256, json!({})),
            step_case(
                "B4 no shared, v_first, W2",
                4,
                5,
                1,
                3,
                16,
                24,
                json!({"shared": false, "v_first": true, "conv": 2}),
            ),
            step_case("B3 linear rule", 3, 4, 2, 1, 16, 16, json!({"rule": "linear"})),
            step_case("all to one memory", 6, 4, 2, 1, 16, 16, json!({"fixture.one_memory": true})),
            step_case("bad choices", 4, 4, 2, 1, 8, 8, json!({"fixture.bad_idx": true})),
            step_case(
                "bad and repeated slots",
                4,
                4,
                2,
                1,
                8,
                8,
                json!({"fixture.bad_slot": true, "fixture.repeat_slot": true}),
            ),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        bf16_cases(
            [1usize, 64, 256]
                .map(|b| step_case(&format!("B{b} M4 top2 H4 K256 V256"), b, 4, 2, 4, 256, 256, json!({}))),
        )
    }
    fn counter_cases() -> Vec<Case> {
        bf16_cases(
            [(1usize, ""), (4, " (bench B64, B256)")]
                .map(|(b, l)| step_case(&format!("B{b} M4 top2 H4 K256 V256{l}"), b, 4, 2, 4, 256, 256, json!({}))),
        )
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let (p, d) = (&self.params, &self.dims);
        let mut m = TensorMap::new();
        normals(&mut m, rng, "x", p.dtype, p.batch * d.proj_width(), 1.0);
        normals(&mut m, rng, "conv_w", p.dtype, d.channels() * p.conv, 0.5);
        let gp = gate_params(rng, p.heads);
        m.insert("gate_params".into(), HostTensor::from_f64(DType::F32, &[gp.len()], &gp));
        ints(&mut m, "idx", &routing(rng, p.batch, p.memories, p.topk, fx));
        let w: Vec<f64> = (0..p.batch * p.topk).map(|_| rng.range(0.0, 1.0)).collect();
        m.insert("weights".into(), HostTensor::from_f64(DType::F32, &[w.len()], &w));
        ints(&mut m, "slot_ids", &slot_ids(rng, p.batch, p.slots, fx));
        normals(&mut m, rng, "state", DType::F32, Plan::spec(self, "state")?.len, 0.5);
        normals(&mut m, rng, "conv_state", DType::F32, Plan::spec(self, "conv_state")?.len, 1.0);
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let mut state: Vec<f32> = host(i, "state")?.to_vec()?;
        let mut cs: Vec<f32> = host(i, "conv_state")?.to_vec()?;
        let o = with_float!(p.dtype, T => {
            let mut o = vec![T::default(); Plan::spec(self, "o")?.len];
            self.run_cpu::<T>(&host(i, "x")?.to_vec()?, &host(i, "conv_w")?.to_vec()?,
                &host(i, "gate_params")?.to_vec()?, &host(i, "idx")?.to_i32(), &host(i, "weights")?.to_vec()?,
                &host(i, "slot_ids")?.to_i32(), &mut state, &mut cs, &mut o, &st)?;
            Ok(to_f64(&o))
        })?;
        let mut e = Expected::with("o", o).and("state", to_f64(&state)).and("conv_state", to_f64(&cs));
        recurrent_tolerance(&mut e, if p.dtype == DType::F32 { &["o", "state"] } else { &["state"] });
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            x: ro T, conv_w: ro T, gate_params: ro f32, idx: ro i32, weights: ro f32, slot_ids: ro i32,
            state: rw f32, conv_state: rw f32, o: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "idx")?.to_i32(), &host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        let mems = p.topk + usize::from(p.shared);
        (p.batch * mems * p.heads) as f64 * 6.0 * (p.head_k * p.head_v) as f64
    }
}

impl Registered for GatedNorm {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1 token H1 V8", json!({"tokens": 1, "heads": 1, "head_v": 8})),
            ("13 tokens H4 V256", json!({"tokens": 13, "heads": 4, "head_v": 256})),
            ("5 tokens H3 V40 eps 1e-5", json!({"tokens": 5, "heads": 3, "head_v": 40, "eps": 1e-5})),
        ])
    }
    fn inputs(&self, _: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let n = p.tokens * p.heads * p.head_v;
        let mut m = TensorMap::new();
        normals(&mut m, rng, "o", p.dtype, n, 1.0);
        normals(&mut m, rng, "gate", p.dtype, n, 1.0);
        normals(&mut m, rng, "w", p.dtype, p.head_v, 1.0);
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let y = with_float!(p.dtype, T => {
            let mut y = vec![T::default(); p.tokens * p.heads * p.head_v];
            self.run_cpu::<T>(&host(i, "o")?.to_vec()?, &host(i, "gate")?.to_vec()?, &host(i, "w")?.to_vec()?, &mut y)?;
            Ok(to_f64(&y))
        })?;
        Ok(Expected::with("y", y))
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype; o: ro T, gate: ro T, w: ro T, y: rw T)
    }
    fn flops(&self) -> f64 {
        (8 * self.params.tokens * self.params.heads * self.params.head_v) as f64
    }
}

/// The layer cases' random inputs (`tokens` rows); `one_memory` makes every token's router
/// prefer memories 0 and 1 (many sequences feeding one memory at once).
fn layer_inputs(
    plan: &impl Plan,
    d: &super::Dims,
    dt: DType,
    tokens: usize,
    fx: &Fixture,
    rng: &mut Rng,
) -> Result<TensorMap> {
    let mut m = TensorMap::new();
    let mut logits = rng.normals(tokens * d.memories, 1.5);
    if fx.is("one_memory") {
        for t in 0..tokens {
            (logits[t * d.memories], logits[t * d.memories + 1]) = (9.0, 8.0);
        }
    }
    m.insert("logits".into(), HostTensor::from_f64(dt, &[logits.len()], &logits));
    normals(&mut m, rng, "x", dt, tokens * d.proj_width(), 1.0);
    normals(&mut m, rng, "gate", dt, tokens * d.hv(), 1.0);
    normals(&mut m, rng, "conv_w", dt, d.channels() * d.conv, 0.5);
    let gp = gate_params(rng, d.heads);
    m.insert("gate_params".into(), HostTensor::from_f64(DType::F32, &[gp.len()], &gp));
    normals(&mut m, rng, "norm_w", dt, d.head_v, 1.0);
    normals(&mut m, rng, "state", DType::F32, plan.spec("state")?.len, 0.5);
    normals(&mut m, rng, "conv_state", DType::F32, plan.spec("conv_state")?.len, 1.0);
    Ok(m)
}

/// The status bits the kernels raise for the first `seqs` slot ids.
fn slot_bits(i: &TensorMap, seqs: usize, pool: usize) -> Result<u32> {
    let ids = host(i, "slot_ids")?.to_i32();
    Ok((0..seqs).fold(0, |bits, b| bits | crate::layout::slot_of(&ids[..seqs], b, pool).err().unwrap_or(0)))
}

/// Each `[rows, cols]` block of `v` transposed to `[cols, rows]`.
fn transpose_blocks(v: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let n = rows * cols;
    let mut out = vec![0.0; v.len()];
    for (b, blk) in v.chunks(n).enumerate() {
        for (e, &x) in blk.iter().enumerate() {
            out[b * n + (e % cols) * rows + e / cols] = x;
        }
    }
    out
}

/// The whole-layer oracle over `cu` (one token per sequence for the step); `stored`: the
/// intermediates are stored in the dtype (prefill) rather than kept in f32 (the fused step).
#[allow(clippy::too_many_arguments)]
fn layer_expected(
    d: &super::Dims,
    dt: DType,
    eps: f32,
    pool: usize,
    seqs: usize,
    cu: &[usize],
    stored: bool,
    v_first: bool,
    i: &TensorMap,
) -> Result<Expected> {
    let f = |name: &str| -> Result<Vec<f64>> { Ok(host(i, name)?.to_f64()) };
    let gp = f("gate_params")?;
    let w = super::oracle::LayerWeights {
        conv_w: &f("conv_w")?,
        a_log: &gp[..d.heads],
        dt_bias: &gp[d.heads..],
        norm_w: &f("norm_w")?,
    };
    let ids = host(i, "slot_ids")?.to_i32();
    let mut bits = 0;
    let slots: Vec<Option<usize>> =
        (0..seqs).map(|b| crate::layout::slot_of(&ids[..seqs], b, pool).map_err(|bit| bits |= bit).ok()).collect();
    let (mut state, mut conv) = (f("state")?, f("conv_state")?);
    // The oracle keeps [K, V] per head; fla's [V, K] pools go through it transposed.
    if v_first {
        state = transpose_blocks(&state, d.head_v, d.head_k);
    }
    let round = |v: f64| dt.round_f64(&[v])[0];
    let keep = |v: f64| v;
    let inner: &dyn Fn(f64) -> f64 = if stored { &round } else { &keep };
    let scale = 1.0 / (d.head_k as f64).sqrt();
    let (logits, x, gate) = (f("logits")?, f("x")?, f("gate")?);
    // The router flags a row it cannot rank (see `Route`), whatever the rest of the layer does.
    if logits.iter().any(|v| !v.is_finite()) {
        bits |= crate::backend::StatusBits::VALUE_OUT_OF_RANGE;
    }
    let y = super::oracle::layer(
        d,
        &w,
        (scale, f64::from(eps), pool),
        (inner, &round),
        &logits,
        &x,
        &gate,
        cu,
        &slots,
        &mut state,
        &mut conv,
    );
    if v_first {
        state = transpose_blocks(&state, d.head_k, d.head_v);
    }
    let mut e = Expected::with("y", y).and("state", state).and("conv_state", conv);
    recurrent_tolerance(&mut e, if dt == DType::F32 { &["y", "state"] } else { &["state"] });
    if dt != DType::F32 && stored {
        // The prefill stores q, k, v in the dtype: a value within f32 rounding of a 16-bit tie
        // may round the other way on the device, a one-ulp step (2^-8 for bf16) in one input of
        // the recurrence, which the f32 state carries.
        e.rtol.insert("state".into(), 5e-3);
        e.atol.insert("state".into(), 4e-3);
    }
    e.status = bits;
    Ok(e)
}

impl Registered for MomLayer {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        owned_cases(&[
            layer_case("2 seqs 9/30 M4 top2 H2 K16 V16", &[9, 30], 4, 2, 2, 16, 16, json!({})),
            layer_case("3 seqs 1/0/70 chunk 16 K32 V8", &[1, 0, 70], 4, 2, 1, 32, 8, json!({"chunk": 16})),
            layer_case("M3 top1 no shared W3", &[12, 5], 3, 1, 2, 8, 16, json!({"shared": false, "conv": 3})),
            // fla's [V, K] pools (K != V, so a transposed read cannot pass).
            layer_case("v_first (fla's layout) K16 V8", &[7, 20], 4, 2, 2, 16, 8, json!({"v_first": true})),
            layer_case(
                "8 seqs all on memories 0 and 1",
                &[3, 9, 1, 4, 6, 2, 7, 5],
                4,
                2,
                1,
                8,
                8,
                json!({"fixture.one_memory": true}),
            ),
            layer_case(
                "bad and repeated slots",
                &[4, 6, 3, 5],
                4,
                2,
                1,
                8,
                8,
                json!({"fixture.bad_slot": true, "fixture.repeat_slot": true}),
            ),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        bf16_cases([layer_case("4 seqs T512 M4 top2 H4 K256 V256", &[512; 4], 4, 2, 4, 256, 256, json!({}))])
    }
    fn counter_cases() -> Vec<Case> {
        bf16_cases([layer_case(
            "1 seq T64 M4 top2 H4 K256 V256 (bench 4 seqs T512)",
            &[64],
            4,
            2,
            4,
            256,
            256,
            json!({}),
        )])
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = layer_inputs(self, &self.dims, p.dtype, p.tokens, fx, rng)?;
        ints(&mut m, "cu_seqlens", &offsets(fx, p.seqs));
        ints(&mut m, "slot_ids", &slot_ids(rng, p.seqs, p.slots, fx));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        // Offsets the permutation refuses leave every stream empty: no state moves, y is the
        // norm of a zero mix, and INDEX_OUT_OF_RANGE is raised.
        match crate::layout::offsets(&host(i, "cu_seqlens")?.to_i32(), p.seqs, p.tokens, true) {
            Some(cu) => layer_expected(&self.dims, p.dtype, p.eps, p.slots, p.seqs, &cu, true, p.v_first, i),
            None => {
                let cu: Vec<usize> = (0..=p.seqs).map(|b| if b == 0 { 0 } else { p.tokens }).collect();
                let mut e = layer_expected(&self.dims, p.dtype, p.eps, p.slots, 0, &cu, true, p.v_first, i)?;
                e.status |= StatusBits::INDEX_OUT_OF_RANGE | slot_bits(i, p.seqs, p.slots)?;
                Ok(e)
            }
        }
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            logits: ro T, x: ro T, gate: ro T, conv_w: ro T, gate_params: ro f32, norm_w: ro T, cu_seqlens: ro i32,
            slot_ids: ro i32, state: rw f32, conv_state: rw f32, y: rw T, idx: rw i32, weights: rw f32,
            order: rw i32, inverse: rw i32, cu_mem: rw i32, counts: rw i32, qkv: rw T, gb: rw f32, o_rows: rw T,
            o_mix: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "cu_seqlens")?.to_i32(), &host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        let rows = (p.tokens * (p.topk + usize::from(p.shared))) as f64;
        rows * p.heads as f64 * (6.0 * (p.head_k * p.head_v) as f64 + 4.0 * (p.chunk * p.head_k) as f64)
    }
}

impl Registered for MomLayerStep {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        owned_cases(&[
            step_case("B1 M4 top2 H1 K8 V8", 1, 4, 2, 1, 8, 8, json!({})),
            step_case("B5 M4 top2 H2 K16 V24", 5, 4, 2, 2, 16, 24, json!({})),
            step_case("B7 M3 top1 no shared", 7, 3, 1, 1, 16, 16, json!({"shared": false})),
            step_case("B3 v_first (fla's layout) K8 V24", 3, 4, 2, 2, 8, 24, json!({"v_first": true})),
            step_case("B8 all on memories 0 and 1", 8, 4, 2, 1, 8, 8, json!({"fixture.one_memory": true})),
            step_case(
                "bad and repeated slots",
                4,
                4,
                2,
                1,
                8,
                8,
                json!({"fixture.bad_slot": true, "fixture.repeat_slot": true}),
            ),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        bf16_cases(
            [64usize, 256].map(|b| step_case(&format!("B{b} M4 top2 H4 K256 V256"), b, 4, 2, 4, 256, 256, json!({}))),
        )
    }
    fn counter_cases() -> Vec<Case> {
        bf16_cases([step_case("B4 M4 top2 H4 K256 V256 (bench B64, B256)", 4, 4, 2, 4, 256, 256, json!({}))])
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = layer_inputs(self, &self.dims, p.dtype, p.batch, fx, rng)?;
        ints(&mut m, "slot_ids", &slot_ids(rng, p.batch, p.slots, fx));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let cu: Vec<usize> = (0..=p.batch).collect();
        layer_expected(&self.dims, p.dtype, p.eps, p.slots, p.batch, &cu, false, p.v_first, i)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            logits: ro T, x: ro T, gate: ro T, conv_w: ro T, gate_params: ro f32, norm_w: ro T, slot_ids: ro i32,
            state: rw f32, conv_state: rw f32, y: rw T, idx: rw i32, weights: rw f32, o_mix: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        let mems = p.topk + usize::from(p.shared);
        (p.batch * mems * p.heads) as f64 * 6.0 * (p.head_k * p.head_v) as f64
    }
}

/// Random `gb` rows: `g` in (-1.5, 0], `beta` in [0, 1).
fn gates(rng: &mut Rng, rows: usize, heads: usize) -> Vec<f64> {
    (0..rows)
        .flat_map(|_| {
            let g: Vec<f64> = (0..heads).map(|_| -rng.range(0.0, 1.5)).collect();
            g.into_iter().chain((0..heads).map(|_| rng.range(0.0, 1.0))).collect::<Vec<_>>()
        })
        .collect()
}

fn piece_cases() -> Vec<Case> {
    owned_cases(&[
        chunk_case("1 stream T1 K8 V8", &[1], 1, 1, 8, 8, json!({})),
        chunk_case("3 pieces 17/0/40 H2 K24 V16", &[17, 0, 40], 3, 2, 24, 16, json!({})),
        chunk_case("2 pieces K72 V8 v_first", &[9, 30], 1, 1, 72, 8, json!({"v_first": true})),
        chunk_case("linear rule", &[12, 5], 2, 1, 16, 16, json!({"rule": "linear"})),
        // 300 rows at K128: WGSL walks the piece in three windows of rows, three dispatches.
        chunk_case("300-row piece K128 V16", &[300, 20], 2, 1, 128, 16, json!({})),
        chunk_case("bad and repeated slots", &[5, 6, 7, 8], 4, 1, 8, 8, json!({"fixture.repeat_slot": true})),
    ])
}

fn piece_inputs(p: &super::PieceParams, fx: &Fixture, rng: &mut Rng, m: &mut TensorMap) {
    ints(m, "cu", &offsets(fx, p.streams)[..=p.streams]);
    let mut ids = slot_ids(rng, p.seqs, p.slots, fx);
    if fx.is("repeat_slot") {
        ids[0] = p.slots as i32 + 1;
    }
    ints(m, "slot_ids", &ids);
}

impl Registered for Transport {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        piece_cases()
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = TensorMap::new();
        normals(&mut m, rng, "qkv", p.dtype, Plan::spec(self, "qkv")?.len, 1.0);
        let gb = gates(rng, p.rows, p.heads);
        m.insert("gb".into(), HostTensor::from_f64(DType::F32, &[gb.len()], &gb));
        normals(&mut m, rng, "trans", DType::F32, Plan::spec(self, "trans")?.len, 1.0);
        piece_inputs(p, fx, rng, &mut m);
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let mut trans: Vec<f32> = host(i, "trans")?.to_vec()?;
        let qt = with_float!(p.dtype, T => {
            let mut qt = gaps::<T>(Plan::spec(self, "qt")?.len);
            self.run_cpu::<T>(&host(i, "qkv")?.to_vec()?, &host(i, "gb")?.to_vec()?, &host(i, "cu")?.to_i32(),
                &host(i, "slot_ids")?.to_i32(), &mut trans, &mut qt, &st)?;
            Ok(to_f64(&qt))
        })?;
        let mut e = Expected::with("qt", qt).and("trans", to_f64(&trans));
        recurrent_tolerance(&mut e, if p.dtype == DType::F32 { &["qt", "trans"] } else { &["trans"] });
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            qkv: ro T, gb: ro f32, cu: ro i32, slot_ids: ro i32, trans: rw f32, qt: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "cu")?.to_i32(), &host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        (p.rows * p.heads) as f64 * 6.0 * (p.head_k * p.head_k) as f64
    }
}

impl Registered for ApplyState {
    const FAMILY: &'static str = "mom";
    fn cases() -> Vec<Case> {
        piece_cases()
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = TensorMap::new();
        for (name, dt, scale) in [("s_in", DType::F32, 1.0), ("trans", DType::F32, 0.3), ("qt", p.dtype, 1.0)] {
            normals(&mut m, rng, name, dt, Plan::spec(self, name)?.len, scale);
        }
        normals(&mut m, rng, "state", DType::F32, Plan::spec(self, "state")?.len, 1.0);
        normals(&mut m, rng, "o", p.dtype, Plan::spec(self, "o")?.len, 1.0);
        piece_inputs(p, fx, rng, &mut m);
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let mut st = Status::new(&Backend::Cpu)?;
        let mut state: Vec<f32> = host(i, "state")?.to_vec()?;
        let o = with_float!(p.dtype, T => {
            let mut o: Vec<T> = host(i, "o")?.to_vec()?;
            self.run_cpu::<T>(&host(i, "s_in")?.to_vec()?, &host(i, "trans")?.to_vec()?, &host(i, "qt")?.to_vec()?,
                &host(i, "cu")?.to_i32(), &host(i, "slot_ids")?.to_i32(), &mut state, &mut o, &st)?;
            Ok(to_f64(&o))
        })?;
        let mut e = Expected::with("o", o).and("state", to_f64(&state));
        recurrent_tolerance(&mut e, if p.dtype == DType::F32 { &["o", "state"] } else { &["state"] });
        e.status = st.take_bits(&Backend::Cpu)?;
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            s_in: ro f32, trans: ro f32, qt: ro T, cu: ro i32, slot_ids: ro i32, state: rw f32, o: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate(&host(i, "cu")?.to_i32(), &host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        2.0 * (p.streams * p.heads * p.head_k * p.head_k * p.head_v + p.rows * p.heads * p.head_k * p.head_v) as f64
    }
}
