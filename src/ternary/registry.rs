//! The ternary kernels in the registry: case tables, random inputs, oracle calls, named
//! launches, and the tie-aware checks of the quantizing kernels.

use serde_json::json;

use super::fixtures::{
    bitlinear_weights, check_q_s, layer_limits, matmul_expected, mlgru_expected, mlgru_inputs, norm_inputs,
    norm_oracle, random_packed, scan_case, weight_inputs, Weights,
};
use super::oracle;
use super::{
    padded_k, BitLinear, GluMlp, MatmulFreeBlock, MlgruScan, MlgruStep, Pack, QuantizeWeights, RmsNormQuant,
    TernaryMatmul, Unpack,
};
use crate::backend::{Status, StatusBits};
use crate::dtype::{to_f64, DType};
use crate::error::Result;
use crate::harness::{
    as_f64, bf16_cases, compare, compare_ints_with_ties, float_cases, host, near_tie, random_view, tagged_cases, Case,
    Comparison, DevMap, Expected, Fixture, HostTensor, Kernel, Launch, Reg, Registered, Rng, TensorMap,
};
use crate::{launch, with_float};

pub(crate) fn kernels() -> Vec<&'static dyn Kernel> {
    vec![
        &Reg::<QuantizeWeights>::NEW,
        &Reg::<Pack>::NEW,
        &Reg::<Unpack>::NEW,
        &Reg::<RmsNormQuant>::NEW,
        &Reg::<TernaryMatmul>::NEW,
        &Reg::<BitLinear>::NEW,
        &Reg::<MlgruStep>::NEW,
        &Reg::<MlgruScan>::NEW,
        &Reg::<GluMlp>::NEW,
        &Reg::<MatmulFreeBlock>::NEW,
    ]
}

// ---------------------------------------------------------------------------------------------
// Weights

impl Registered for QuantizeWeights {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1x1", json!({"n": 1, "k": 1})),
            ("5x37", json!({"n": 5, "k": 37})),
            ("12x100 3 partitions", json!({"n": 12, "k": 100, "partitions": 3})),
            ("64x2048", json!({"n": 64, "k": 2048})),
            ("4x20 all zero", json!({"n": 4, "k": 20, "fixture": "zeros"})),
            ("3x33 non-finite", json!({"n": 3, "k": 33, "fixture": "nonfinite"})),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        bf16_cases([("5632x2048".into(), json!({"n": 5632, "k": 2048}))])
    }
    fn counter_cases() -> Vec<Case> {
        bf16_cases([("1408x2048 (bench 5632 rows)".into(), json!({"n": 1408, "k": 2048}))])
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut w = rng.normals(p.n * p.k, 0.05);
        if fx.is("zeros") {
            w.fill(0.0);
        }
        if fx.is("nonfinite") {
            (w[p.k + 3], w[2 * p.k]) = (f64::NAN, f64::INFINITY);
        }
        Ok([("w".into(), HostTensor::from_f64(p.dtype, &[w.len()], &w))].into())
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let w = host(i, "w")?.to_f64();
        if w.iter().any(|v| !v.is_finite()) {
            return Ok(Expected { status: StatusBits::VALUE_OUT_OF_RANGE, ..Expected::default() });
        }
        let g = oracle::absmean_gammas(&w, p.n, p.k, p.partitions);
        let t = oracle::ternarize(&w, p.n, p.k, &g);
        Ok(Expected::with("packed", as_f64(oracle::pack(&t, p.n, p.k))).and("gamma", g))
    }
    /// Gammas to 1e-4; ternary codes exact except at rounding ties of `w / gamma`.
    fn check(&self, i: &TensorMap, expected: &Expected, outputs: &TensorMap) -> Vec<Comparison> {
        let p = &self.params;
        let (Some(want_g), Some(got_p), Some(got_g), Ok(w)) =
            (expected.outputs.get("gamma"), outputs.get("packed"), outputs.get("gamma"), host(i, "w"))
        else {
            return vec![];
        };
        let w = w.to_f64();
        let (got_t, bad) = oracle::unpack(&got_p.to_u32(), p.n, p.k);
        let want_t = oracle::ternarize(&w, p.n, p.k, want_g);
        let kp = padded_k(p.k);
        let mut tie = vec![false; p.n * kp];
        for r in 0..p.n {
            for c in 0..p.k {
                tie[r * kp + c] = near_tie(w[r * p.k + c] / want_g[r / (p.n / p.partitions)]);
            }
        }
        let wide = |v: &[i8]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
        let mut t = compare_ints_with_ties("packed", &wide(&got_t), &wide(&want_t), &tie);
        let padding_ok = got_p.to_u32() == oracle::pack(&got_t, p.n, p.k);
        if bad || !padding_ok {
            t = Comparison::failed("packed", format!("code 3 ({bad}) or bad padding ({})", !padding_ok));
        }
        vec![compare("gamma", got_g, want_g, Some(1e-4), None), t]
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype; w: ro T, ws: rw f32, packed: rw u32, gamma: rw f32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        match host(i, "w")?.to_f64().iter().position(|v| !v.is_finite()) {
            Some(j) => Err(crate::error::Error::InvalidInput(format!("w[{j}] is not finite"))),
            None => Ok(()),
        }
    }
    fn flops(&self) -> f64 {
        3.0 * (self.params.n * self.params.k) as f64
    }
}

impl Registered for Pack {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        tagged_cases(
            DType::I8,
            &[
                ("1x1", json!({"n": 1, "k": 1})),
                ("7x45", json!({"n": 7, "k": 45})),
                ("32x512", json!({"n": 32, "k": 512})),
                ("3x20 out of range", json!({"n": 3, "k": 20, "fixture": "bad"})),
            ],
        )
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let (_, mut t) = random_packed(rng, self.params.n, self.params.k);
        if fx.is("bad") {
            (t[5], t[padded_k(self.params.k) + 1]) = (2, -7);
        }
        Ok([("t".into(), HostTensor::from_i8(&t))].into())
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let (p, t) = (&self.params, host(i, "t")?.to_i8());
        let kp = padded_k(p.k);
        let bad = (0..p.n).any(|r| t[r * kp..r * kp + p.k].iter().any(|v| !(-1..=1).contains(v)));
        let mut e = Expected::with("packed", as_f64(oracle::pack(&t, p.n, p.k)));
        e.status = if bad { StatusBits::VALUE_OUT_OF_RANGE } else { 0 };
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; any; t: ro i8, packed: rw u32; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate_values(&host(i, "t")?.to_i8())
    }
}

impl Registered for Unpack {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        tagged_cases(
            DType::U32,
            &[
                ("1x1", json!({"n": 1, "k": 1})),
                ("9x50", json!({"n": 9, "k": 50})),
                ("32x512", json!({"n": 32, "k": 512})),
                ("3x20 code 3", json!({"n": 3, "k": 20, "fixture": "bad"})),
            ],
        )
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let (mut pk, _) = random_packed(rng, self.params.n, self.params.k);
        if fx.is("bad") {
            pk[0] |= 3 << 6;
        }
        Ok([("packed".into(), HostTensor::from_u32(&[pk.len()], &pk))].into())
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let (t, bad) = oracle::unpack(&host(i, "packed")?.to_u32(), self.params.n, self.params.k);
        let mut e = Expected::with("t", as_f64(t));
        e.status = if bad { StatusBits::BAD_TERNARY_CODE } else { 0 };
        Ok(e)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; any; packed: ro u32, t: rw i8; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.pack.validate_packed(&host(i, "packed")?.to_u32())
    }
}

// ---------------------------------------------------------------------------------------------
// Activations and the product

impl Registered for RmsNormQuant {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1x1", json!({"m": 1, "k": 1})),
            ("3x17", json!({"m": 3, "k": 17})),
            ("4x100 3 projections", json!({"m": 4, "k": 100, "projections": 3})),
            ("2x64 glu", json!({"m": 2, "k": 64, "glu": true})),
            ("5x333 strided", json!({"m": 5, "k": 333, "x_stride": 340})),
            ("16x2048", json!({"m": 16, "k": 2048})),
            // The NaN policy (ARCHITECTURE.md): a non-finite row quantizes to 0 with scale NaN.
            ("3x17 NaN in row 0", json!({"m": 3, "k": 17, "fixture": "nan_row"})),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        bf16_cases([1, 4096].map(|m| (format!("{m}x2048 P3"), json!({"m": m, "k": 2048, "projections": 3}))))
    }
    fn counter_cases() -> Vec<Case> {
        bf16_cases([1, 256].map(|m| {
            (
                format!("{m}x2048 P3{}", if m > 1 { " (bench 4096 rows)" } else { "" }),
                json!({"m": m, "k": 2048, "projections": 3}),
            )
        }))
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let mut m = norm_inputs(rng, self.params.dtype, &self.x, self.params.k, self.params.projections);
        if fx.is("nan_row") {
            let x = host(&m, "x")?.with_element(0, f64::NAN);
            m.insert("x".into(), x);
        }
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let (q, _, s) = norm_oracle(self, i)?;
        Ok(Expected::with("q", as_f64(q)).and("s", s))
    }
    fn check(&self, i: &TensorMap, _: &Expected, outputs: &TensorMap) -> Vec<Comparison> {
        check_q_s(self, i, outputs)
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype; x: ro T, norm_w: ro T, q: rw i8, s: rw f32)
    }
    fn flops(&self) -> f64 {
        6.0 * (self.params.m * self.params.k * self.params.projections) as f64
    }
}

impl Registered for TernaryMatmul {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("gemv 1x1x1", json!({"m": 1, "n": 1, "k": 1, "write_acc": true})),
            ("gemv 3x37x100 P3 parts 1", json!({"m": 3, "n": 37, "k": 100, "projections": 3, "write_acc": true})),
            ("gemv 8x64x515 4 parts", json!({"m": 8, "n": 64, "k": 515, "partitions": 4, "write_acc": true})),
            (
                "gemv 2x33x40 strided +=",
                json!({"m": 2, "n": 33, "k": 40, "out_stride": 35, "accumulate": true, "write_acc": true}),
            ),
            ("gemm 9x20x33", json!({"m": 9, "n": 20, "k": 33, "write_acc": true})),
            // The CUDA GEMV's rows per block (2, 4 and 8 on 132 multiprocessors; the rest take 1)
            // with quads of words and without, and activations staged in several chunks.
            ("gemv 3x4300x100 two rows a block", json!({"m": 3, "n": 4300, "k": 100, "write_acc": true})),
            ("gemv 2x9000x64 P1 four rows a block", json!({"m": 2, "n": 9000, "k": 64, "write_acc": true})),
            ("gemv 1x17000x128 eight rows a block", json!({"m": 1, "n": 17000, "k": 128})),
            ("gemv 8x40x5000 staged in chunks", json!({"m": 8, "n": 40, "k": 5000, "write_acc": true})),
            ("gemv 5x24x8192 P2 staged in chunks", json!({"m": 5, "n": 24, "k": 8192, "projections": 2})),
            // Code 3 in the packed words reads as weight 0 on every backend.
            ("gemv 3x37x100 code 3", json!({"m": 3, "n": 37, "k": 100, "write_acc": true, "fixture": "code3"})),
            ("gemm 9x20x33 code 3", json!({"m": 9, "n": 20, "k": 33, "write_acc": true, "fixture": "code3"})),
            (
                "gemm mma 9x20x33 code 3",
                json!({"m": 9, "n": 20, "k": 33, "tensor_cores": true, "write_acc": true, "fixture": "code3"}),
            ),
            (
                "gemm dp4a 70x65x200 P2 +=",
                json!({"m": 70, "n": 65, "k": 200, "projections": 2, "accumulate": true, "write_acc": true,
                    "tensor_cores": false}),
            ),
            // From M 16 the CUDA GEMM takes tensor cores by default (sm_80 and later).
            ("gemm 16x24x72 (tensor cores by default)", json!({"m": 16, "n": 24, "k": 72, "write_acc": true})),
            ("gemm 15x24x72 (dp4a below M 16)", json!({"m": 15, "n": 24, "k": 72, "write_acc": true})),
            ("gemm 130x129x1024 strided", json!({"m": 130, "n": 129, "k": 1024, "out_stride": 131, "write_acc": true})),
            // The tensor-core GEMM (CUDA; elsewhere the same product): odd M, N and K, partial
            // tiles on every side, several projections and partitions, a strided accumulation.
            ("gemm mma 9x20x33", json!({"m": 9, "n": 20, "k": 33, "tensor_cores": true, "write_acc": true})),
            (
                "gemm mma 200x257x300 P2 strided +=",
                json!({"m": 200, "n": 257, "k": 300, "projections": 2, "partitions": 1, "accumulate": true,
                    "out_stride": 530, "tensor_cores": true, "write_acc": true}),
            ),
            (
                "gemm mma 129x128x1040 4 parts",
                json!({"m": 129, "n": 128, "k": 1040, "partitions": 4, "tensor_cores": true, "write_acc": true}),
            ),
        ])
        .into_iter()
        .chain([
            // A 4096-wide GEMV and a GEMM over LLaMA's FFN width, past what one invocation of
            // the old GEMM loop could run on a CPU adapter.
            Case::realistic("gemv 1x4096x4096", DType::F16, true, json!({"m": 1, "n": 4096, "k": 4096})),
            Case::realistic("gemm 64x256x11008 (FFN down)", DType::F16, true, json!({"m": 64, "n": 256, "k": 11008})),
        ])
        .collect()
    }
    fn bench_cases() -> Vec<Case> {
        let gemv = [(2048, 2048), (5632, 2048), (2048, 5632), (6912, 2560), (3200, 20480)]
            .map(|(n, k)| (format!("gemv M1 {n}x{k}"), json!({"m": 1, "n": n, "k": k})));
        let gemm = [512, 4096]
            .map(|m| (format!("gemm M{m} 5632x2048"), json!({"m": m, "n": 5632, "k": 2048, "tensor_cores": false})));
        let mma = [512, 4096].map(|m| (format!("gemm mma M{m} 5632x2048"), json!({"m": m, "n": 5632, "k": 2048})));
        bf16_cases(gemv.into_iter().chain(gemm).chain(mma))
    }
    /// The GEMVs at their bench shapes; the GEMMs at M64 512x1024, since one bench-sized GEMM is
    /// billions of emulated multiply-adds.
    fn counter_cases() -> Vec<Case> {
        let gemv = [(2048, 2048), (5632, 2048), (2048, 5632), (6912, 2560), (3200, 20480)]
            .map(|(n, k)| (format!("gemv M1 {n}x{k}"), json!({"m": 1, "n": n, "k": k})));
        let gemm = [false, true].map(|tc| {
            (
                format!("gemm{} M64 512x1024 (bench M512+ 5632x2048)", if tc { " mma" } else { "" }),
                json!({"m": 64, "n": 512, "k": 1024, "tensor_cores": tc}),
            )
        });
        bf16_cases(gemv.into_iter().chain(gemm))
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = weight_inputs(rng, self.total_n(), p.k, self.gamma_len(), "");
        if fx.is("code3") {
            spoil_codes(&mut m)?;
        }
        let kp = padded_k(p.k);
        let mut q = vec![0i8; self.q_len()];
        for r in 0..p.projections * p.m {
            for c in 0..p.k {
                q[r * kp + c] = (rng.below(256) as i64 - 128) as i8;
            }
        }
        m.insert("q".into(), HostTensor::from_i8(&q));
        m.insert("s".into(), HostTensor::f32s(&(0..self.s_len()).map(|_| rng.range(5.0, 200.0)).collect::<Vec<_>>()));
        if p.accumulate {
            m.insert("out".into(), random_view(rng, p.dtype, &self.out, 1.0));
        }
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let (acc, out) = matmul_expected(self, &host(i, "q")?.to_i8(), &host(i, "s")?.to_vec::<f32>()?, i)?;
        let e = Expected::with("out", out);
        Ok(if self.params.write_acc { e.and("acc", acc.iter().map(|&v| v as f64).collect()) } else { e })
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            q: ro i8, s: ro f32, packed: ro u32, gamma: ro f32, out: rw T, acc: opt_rw i32)
    }
    fn flops(&self) -> f64 {
        2.0 * (self.params.m * self.total_n() * self.params.k) as f64
    }
}

/// Code 3 (no weight) in every fifth packed word, padding included: every backend reads it as
/// weight 0, as `unpack` and the oracle do, so a file holding it gives one answer everywhere.
fn spoil_codes(m: &mut TensorMap) -> Result<()> {
    let mut w = host(m, "packed")?.to_vec::<u32>()?;
    for (i, v) in w.iter_mut().enumerate().step_by(5) {
        *v |= 3 << (2 * (i % 16));
    }
    m.insert("packed".into(), HostTensor::from_u32(&[w.len()], &w));
    Ok(())
}

impl Registered for BitLinear {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("fused 1x1x1", json!({"m": 1, "n": 1, "k": 1, "fuse": "always"})),
            ("fused 1x33x100", json!({"m": 1, "n": 33, "k": 100, "fuse": "always"})),
            ("fused 1x33x100 code 3", json!({"m": 1, "n": 33, "k": 100, "fuse": "always", "fixture": "code3"})),
            ("fused 4x40x64 P3 (f, c, g)", json!({"m": 4, "n": 40, "k": 64, "projections": 3, "fuse": "always"})),
            (
                "fused 8x50x300 strided +=",
                json!({"m": 8, "n": 50, "k": 300, "x_stride": 301, "out_stride": 52, "accumulate": true,
                    "fuse": "always"}),
            ),
            ("auto 2x33x100 P2", json!({"m": 2, "n": 33, "k": 100, "projections": 2})),
            (
                "unfused 3x40x64 strided +=",
                json!({"m": 3, "n": 40, "k": 64, "x_stride": 70, "out_stride": 41,
                "accumulate": true, "fuse": "never"}),
            ),
            ("8x20x2000 (past the fused on-chip limit)", json!({"m": 8, "n": 20, "k": 2000})),
            ("glu 3x24x40", json!({"m": 3, "n": 24, "k": 40, "glu": true})),
            ("gemm 12x30x70", json!({"m": 12, "n": 30, "k": 70, "partitions": 2})),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        // `auto` (what an engine gets) beside the fused kernel on every backend, so each run
        // shows whether the choice still holds.
        let shapes = [(2048, 2048), (5632, 2048), (6912, 2560)];
        let auto = shapes.map(|(n, k)| (format!("M1 {n}x{k}"), json!({"m": 1, "n": n, "k": k})));
        let fused =
            shapes.map(|(n, k)| (format!("fused M1 {n}x{k}"), json!({"m": 1, "n": n, "k": k, "fuse": "always"})));
        bf16_cases(auto.into_iter().chain(fused))
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = norm_inputs(rng, p.dtype, &self.quant.x, p.k, p.projections);
        m.extend(weight_inputs(rng, self.matmul.total_n(), p.k, self.matmul.gamma_len(), ""));
        if fx.is("code3") {
            spoil_codes(&mut m)?;
        }
        if p.accumulate {
            m.insert("out".into(), random_view(rng, p.dtype, &self.matmul.out, 1.0));
        }
        Ok(m)
    }
    /// The f64 pipeline end to end; `check` compares against the device's own q and s.
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let (q, _, s) = norm_oracle(&self.quant, i)?;
        let s32: Vec<f32> = s.iter().map(|&v| v as f32).collect();
        Ok(Expected::with("out", matmul_expected(&self.matmul, &q, &s32, i)?.1))
    }
    /// q and s as `rmsnorm_quant`; the product exact given the device's own q, scaled by its s.
    fn check(&self, i: &TensorMap, _: &Expected, outputs: &TensorMap) -> Vec<Comparison> {
        let mut v = check_q_s(&self.quant, i, outputs);
        let want = match (outputs.get("q"), outputs.get("s").map(|s| s.to_vec::<f32>())) {
            (Some(q), Some(Ok(s))) => matmul_expected(&self.matmul, &q.to_i8(), &s, i),
            _ => Err(crate::error::Error::InvalidInput("missing q or s".into())),
        };
        v.push(match (want, outputs.get("out")) {
            (Ok((_, want)), Some(o)) => compare("out", o, &want, None, None),
            (w, _) => Comparison::failed("out", format!("no output or oracle: {:?}", w.err())),
        });
        v
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            x: ro T, norm_w: ro T, packed: ro u32, gamma: ro f32, q: rw i8, s: rw f32, out: rw T)
    }
    fn flops(&self) -> f64 {
        2.0 * (self.params.m * self.matmul.total_n() * self.params.k) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// MLGRU

impl Registered for MlgruStep {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1x1", json!({"batch": 1, "d": 1, "slots": 1})),
            ("3x37 lb", json!({"batch": 3, "d": 37, "slots": 5, "lower_bound": true})),
            ("5x129 strided", json!({"batch": 5, "d": 129, "slots": 9, "fcg_stride": 390})),
            ("64x256 lb", json!({"batch": 64, "d": 256, "slots": 80, "lower_bound": true})),
            ("4x33 bad slot", json!({"batch": 4, "d": 33, "slots": 4, "fixture": "bad"})),
            // Several CUDA blocks a row (256 channels each), with a skipped row among them.
            ("3x600 bad slot, three blocks a row", json!({"batch": 3, "d": 600, "slots": 4, "fixture": "bad"})),
            ("4x513 lb strided", json!({"batch": 4, "d": 513, "slots": 6, "lower_bound": true, "fcg_stride": 1600})),
            ("7x40 repeated slots", json!({"batch": 7, "d": 40, "slots": 9, "fixture": "repeat"})),
        ])
    }
    fn bench_cases() -> Vec<Case> {
        bf16_cases(
            [64, 256].map(|b| (format!("B{b} d2048"), json!({"batch": b, "d": 2048, "slots": b, "lower_bound": true}))),
        )
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = mlgru_inputs(rng, p.dtype, &self.fcg, p.d, p.slots, p.lower_bound);
        // Distinct slots in shuffled order; a bad case points one row outside the pool.
        let mut ids: Vec<i32> = (0..p.slots as i32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.below(i as u64 + 1) as usize);
        }
        ids.truncate(p.batch);
        if fx.is("bad") {
            (ids[1], ids[2]) = (p.slots as i32 + 2, -1);
        }
        if fx.is("repeat") {
            // Three rows on one slot and two on another; the other rows must stay exact.
            (ids[3], ids[5], ids[4]) = (ids[0], ids[0], ids[1]);
        }
        m.insert("slot_ids".into(), HostTensor::from_i32(&[p.batch], &ids));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let ids = host(i, "slot_ids")?.to_i32();
        mlgru_expected(p.dtype, i, |state, lb, st| {
            with_float!(p.dtype, T => {
                let mut o = vec![T::default(); p.batch * p.d];
                self.run_cpu::<T>(&host(i, "fcg")?.to_vec()?, state, &ids, lb, &host(i, "w")?.to_vec()?, &mut o, st)?;
                Ok(to_f64(&o))
            })
        })
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            fcg: ro T, state: rw f32, slot_ids: ro i32, lb: opt f32, w: ro T, o: rw T; status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate_slot_ids(&host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        20.0 * (self.params.batch * self.params.d) as f64
    }
}

impl Registered for MlgruScan {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        float_cases(&[
            scan_case("1 seq T1 d1", &[1], 1, 1, json!({"chunk": 4})),
            scan_case("3 seqs T 0/5/13 chunk 4 lb", &[0, 5, 13], 37, 4, json!({"chunk": 4, "lower_bound": true})),
            scan_case("2 seqs T 64/71 chunk 16", &[64, 71], 70, 3, json!({"chunk": 16})),
            scan_case("4 seqs T 1/2/100/33 chunk 64 lb", &[1, 2, 100, 33], 129, 6, json!({"lower_bound": true})),
            scan_case("bad cu_seqlens", &[3, 4], 8, 2, json!({"chunk": 4, "fixture.bad": true})),
            scan_case("cu_seqlens not ending at tokens", &[3, 4], 8, 2, json!({"chunk": 4, "fixture.short": true})),
            scan_case("bad slot", &[2, 9, 5], 20, 3, json!({"chunk": 4, "fixture.bad_slot": true})),
            scan_case("repeated slot", &[6, 9, 0, 5], 20, 5, json!({"chunk": 4, "fixture.repeat_slot": true})),
        ])
        .into_iter()
        .chain([{
            let (l, p) = scan_case("32k tokens d256 chunk 256", &[32768], 256, 1, json!({"chunk": 256}));
            Case::realistic(l, DType::F16, true, p)
        }])
        .collect()
    }
    fn bench_cases() -> Vec<Case> {
        bf16_cases([scan_case("4 seqs T1024 d2048", &[1024; 4], 2048, 4, json!({}))].map(|(l, p)| (l.to_string(), p)))
    }
    fn counter_cases() -> Vec<Case> {
        bf16_cases(
            [scan_case("4 seqs T256 d2048 (bench T1024)", &[256; 4], 2048, 4, json!({}))]
                .map(|(l, p)| (l.to_string(), p)),
        )
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = mlgru_inputs(rng, p.dtype, &self.fcg, p.d, p.slots, p.lower_bound);
        let mut cu = vec![0i32];
        for l in fx.sizes("lens") {
            cu.push(cu[cu.len() - 1] + l as i32);
        }
        cu.resize(p.seqs + 1, p.tokens as i32);
        if fx.is("bad") {
            cu[1] = cu[2] + 1;
        }
        if fx.is("short") {
            // Every sequence is well formed, but the last token belongs to none.
            cu[p.seqs] -= 1;
        }
        m.insert("cu_seqlens".into(), HostTensor::from_i32(&[cu.len()], &cu));
        let mut ids: Vec<i32> = (0..p.slots as i32).rev().collect();
        ids.truncate(p.seqs);
        if fx.is("bad_slot") {
            ids[1] = p.slots as i32 + 5;
        }
        if fx.is("repeat_slot") {
            // Sequences 0 and 2 (empty) share a slot; 1 and 3 must stay exact.
            ids[2] = ids[0];
        }
        m.insert("slot_ids".into(), HostTensor::from_i32(&[p.seqs], &ids));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        if self.validate_cu_seqlens(&host(i, "cu_seqlens")?.to_i32()).is_err() {
            return Ok(Expected { status: StatusBits::INDEX_OUT_OF_RANGE, ..Expected::default() });
        }
        let (cu, ids) = (host(i, "cu_seqlens")?.to_i32(), host(i, "slot_ids")?.to_i32());
        mlgru_expected(p.dtype, i, |state, lb, st| {
            with_float!(p.dtype, T => {
                let mut o = vec![T::default(); p.tokens * p.d];
                let (fcg, w) = (host(i, "fcg")?.to_vec()?, host(i, "w")?.to_vec()?);
                self.run_cpu::<T>(&fcg, &cu, state, &ids, lb, &w, &mut vec![0.0; self.workspace_len()], &mut o, st)?;
                Ok(to_f64(&o))
            })
        })
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            fcg: ro T, cu_seqlens: ro i32, state: rw f32, slot_ids: ro i32, lb: opt f32, w: ro T, ws: rw f32, o: rw T;
            status)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.validate_cu_seqlens(&host(i, "cu_seqlens")?.to_i32())?;
        self.validate_slot_ids(&host(i, "slot_ids")?.to_i32())
    }
    fn flops(&self) -> f64 {
        30.0 * (self.params.tokens * self.params.d) as f64
    }
}

// ---------------------------------------------------------------------------------------------
// Layers

impl Registered for GluMlp {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("1x16x40", json!({"m": 1, "d": 16, "inner": 40})),
            ("5x70x150", json!({"m": 5, "d": 70, "inner": 150})),
            ("12x64x96", json!({"m": 12, "d": 64, "inner": 96})),
        ])
    }
    fn inputs(&self, _: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let mut m = TensorMap::new();
        m.insert("x".into(), HostTensor::from_f64(p.dtype, &[p.m * p.d], &rng.normals(p.m * p.d, 1.0)));
        m.extend(bitlinear_weights(rng, p.dtype, 2 * p.inner, p.d, 1, "up"));
        m.extend(bitlinear_weights(rng, p.dtype, p.d, p.inner, 1, "down"));
        if p.accumulate {
            m.insert("y".into(), HostTensor::from_f64(p.dtype, &[p.m * p.d], &rng.normals(p.m * p.d, 1.0)));
        }
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let (up, down) = (Weights::of(i, "up")?, Weights::of(i, "down")?);
        let x = host(i, "x")?.to_f64();
        let mut y =
            oracle::glu_mlp(&x, p.m, p.d, p.inner, &up.view(), &down.view(), f64::from(p.bitlinear_eps), p.dtype);
        if p.accumulate {
            y = p.dtype.round_f64(&y.iter().zip(host(i, "y")?.to_f64()).map(|(a, b)| a + b).collect::<Vec<_>>());
        }
        Ok(layer_limits(Expected::with("y", y), &["y"], p.dtype))
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            x: ro T, up_norm: ro T, up_packed: ro u32, up_gamma: ro f32,
            down_norm: ro T, down_packed: ro u32, down_gamma: ro f32,
            y: rw T, gu: rw T, q1: rw i8, s1: rw f32, q2: rw i8, s2: rw f32)
    }
    fn flops(&self) -> f64 {
        6.0 * (self.params.m * self.params.d * self.params.inner) as f64
    }
}

impl Registered for MatmulFreeBlock {
    const FAMILY: &'static str = "ternary";
    fn cases() -> Vec<Case> {
        float_cases(&[
            ("2 seqs d32 inner 48", json!({"m": 2, "d": 32, "inner": 48, "slots": 3})),
            ("5 seqs d96 inner 200", json!({"m": 5, "d": 96, "inner": 200, "slots": 8})),
            (
                "2 seqs d32 inner 48 no lower bound",
                json!({"m": 2, "d": 32, "inner": 48, "slots": 2, "lower_bound": false}),
            ),
        ])
        .into_iter()
        // A first token (zero state) at a high lower bound: o_proj's input is tiny, so the
        // BitLinear norm's epsilon moves x by ~20% (1e-8 instead of 1e-6 fails every seed). In
        // f16/bf16 the case is ill-conditioned (o_proj renormalizes values that carry 16-bit
        // rounding), so it runs in f32.
        .chain([Case::new(
            "3 seqs d64 inner 96 first token, lb ~0.99",
            DType::F32,
            json!({"m": 3, "d": 64, "inner": 96, "slots": 4, "dtype": "f32", "fixture": "near_zero"}),
        )])
        .collect()
    }
    fn inputs(&self, fx: &Fixture, rng: &mut Rng) -> Result<TensorMap> {
        let p = &self.params;
        let (dt, d) = (p.dtype, p.d);
        let mut m = TensorMap::new();
        m.insert("x".into(), HostTensor::from_f64(dt, &[p.m * d], &rng.normals(p.m * d, 1.0)));
        for name in ["attn_norm", "g_norm", "mlp_norm"] {
            let w: Vec<f64> = (0..d).map(|_| rng.range(0.5, 1.5)).collect();
            m.insert(name.into(), HostTensor::from_f64(dt, &[d], &w));
        }
        m.extend(bitlinear_weights(rng, dt, d, d, 3, "fcg"));
        m.extend(bitlinear_weights(rng, dt, d, d, 1, "o"));
        m.extend(bitlinear_weights(rng, dt, 2 * p.inner, d, 1, "up"));
        m.extend(bitlinear_weights(rng, dt, d, p.inner, 1, "down"));
        let near_zero = fx.is("near_zero");
        let state = if near_zero { vec![0.0; p.slots * d] } else { rng.normals(p.slots * d, 1.0) };
        m.insert("state".into(), HostTensor::f32s(&state));
        let (lo, hi) = if near_zero { (0.985, 0.995) } else { (0.0, 0.5) };
        let lb: Vec<f64> = (0..d).map(|_| rng.range(lo, hi)).collect();
        if p.lower_bound {
            m.insert("lb".into(), HostTensor::f32s(&lb));
        }
        // Distinct slots (a shared slot is bad input, tested on mlgru_step), in a scattered order.
        let ids: Vec<i32> = (0..p.m).map(|i| ((p.m - 1 - i) * p.slots / p.m) as i32).collect();
        m.insert("slot_ids".into(), HostTensor::from_i32(&[p.m], &ids));
        Ok(m)
    }
    fn oracle(&self, i: &TensorMap) -> Result<Expected> {
        let p = &self.params;
        let f = |n: &str| -> Result<Vec<f64>> { Ok(host(i, n)?.to_f64()) };
        let (attn_norm, g_norm, mlp_norm) = (f("attn_norm")?, f("g_norm")?, f("mlp_norm")?);
        let lb = if p.lower_bound { Some(f("lb")?) } else { None };
        let [fcg, o, up, down] = ["fcg", "o", "up", "down"].map(|n| Weights::of(i, n));
        let (fcg, o, up, down) = (fcg?, o?, up?, down?);
        let w = oracle::BlockWeights {
            attn_norm: &attn_norm,
            fcg: fcg.view(),
            lb: lb.as_deref(),
            g_norm: &g_norm,
            o: o.view(),
            mlp_norm: &mlp_norm,
            up: up.view(),
            down: down.view(),
        };
        let eps = oracle::BlockEps {
            norm: f64::from(p.norm_eps),
            gate: f64::from(p.gate_eps),
            bitlinear: f64::from(p.bitlinear_eps),
        };
        let (mut x, mut state) = (f("x")?, f("state")?);
        let ids = host(i, "slot_ids")?.to_i32();
        let bits = oracle::matmul_free_block(&mut x, &mut state, &ids, p.m, p.d, p.inner, &w, &eps, p.dtype);
        // The f32 state comes from intermediates rounded to the dtype and quantized, so it gets
        // the same limits as x.
        let mut e = layer_limits(Expected::with("x", x).and("state", state), &["x", "state"], p.dtype);
        e.status = bits;
        Ok(e)
    }
    fn validate_inputs(&self, i: &TensorMap) -> Result<()> {
        self.step.validate_slot_ids(&host(i, "slot_ids")?.to_i32())
    }
    fn launch(&self, l: &mut Launch, dev: &mut DevMap, status: &mut Status) -> Result<()> {
        launch!(self, l, dev, status; float self.params.dtype;
            x: rw T, attn_norm: ro T, fcg_norm: ro T, fcg_packed: ro u32, fcg_gamma: ro f32,
            state: rw f32, slot_ids: ro i32, lb: opt f32, g_norm: ro T,
            o_norm: ro T, o_packed: ro u32, o_gamma: ro f32, mlp_norm: ro T,
            up_norm: ro T, up_packed: ro u32, up_gamma: ro f32, down_norm: ro T, down_packed: ro u32, down_gamma: ro f32,
            a: rw T, fcg: rw T, o: rw T, qa: rw i8, sa: rw f32, gu: rw T, q1: rw i8, s1: rw f32, q2: rw i8, s2: rw f32;
            status)
    }
    fn flops(&self) -> f64 {
        let p = &self.params;
        2.0 * (p.m * (4 * p.d * p.d + 3 * p.d * p.inner)) as f64
    }
}
