//! Ternary family: oracle agreement on every backend, BitLinear semantics against a dense
//! matmul, the chunked scan against T device steps, packed sizes, and bad input.

use mllm_kernels::harness::{fresh_seed, random_inputs, run_kernel, Fixture, HostTensor, Kernel, Rng, TensorMap};
use mllm_kernels::ternary::{
    oracle, padded_k, MlgruScanParams, Pack, PackParams, QuantizeWeights, QuantizeWeightsParams, TernaryMatmul,
    TernaryMatmulParams, Unpack,
};
use mllm_kernels::{Backend, BackendKind, DType, Error, Status};
use serde_json::json;

use crate::common::{backend, backends, verify_family};

fn kernel(id: &str) -> &'static dyn Kernel {
    mllm_kernels::registry::kernels().into_iter().find(|k| k.id() == id).expect("registered")
}

#[test]
fn ternary_matches_oracle_on_cpu() {
    verify_family("ternary", &Backend::Cpu);
}

#[test]
fn ternary_matches_oracle_on_wgpu() {
    if let Some(b) = backend(BackendKind::Wgpu) {
        verify_family("ternary", &b);
    }
}

#[test]
fn ternary_matches_oracle_on_cuda() {
    if let Some(b) = backend(BackendKind::Cuda) {
        verify_family("ternary", &b);
    }
}

#[test]
fn packed_weights_are_a_sixteenth_of_f32_and_an_eighth_of_bf16() {
    let (n, k) = (64usize, 2048usize);
    for (dtype, ratio) in [(DType::F32, 16), (DType::BF16, 8)] {
        let plan = QuantizeWeights::new(QuantizeWeightsParams { n, k, partitions: 1, dtype }).unwrap();
        let w = Rng::new(1).normals(n * k, 0.1);
        let mut packed = vec![0u32; plan.packed_len()];
        let mut gamma = [0f32];
        if dtype == DType::F32 {
            let w: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            plan.run_cpu(&w, &mut vec![0.0; n], &mut packed, &mut gamma, &Status::new(&Backend::Cpu).unwrap()).unwrap();
        } else {
            let w: Vec<half::bf16> = w.iter().map(|&v| half::bf16::from_f64(v)).collect();
            plan.run_cpu(&w, &mut vec![0.0; n], &mut packed, &mut gamma, &Status::new(&Backend::Cpu).unwrap()).unwrap();
        }
        assert_eq!(n * k * dtype.size(), ratio * packed.len() * 4, "{dtype}");
    }
}

/// `ternary_matmul` is BitLinear: the same as a dense product of the dequantized activations
/// `q / s` and dequantized weights `t * gamma`.
#[test]
fn ternary_matmul_equals_dense_matmul_of_dequantized_operands() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let k = kernel("ternary.matmul");
    for (m, n, kk, parts) in [(1usize, 17usize, 45usize, 1usize), (6, 32, 100, 2), (20, 24, 33, 4)] {
        let params = json!({"m": m, "n": n, "k": kk, "partitions": parts, "dtype": "f32"});
        let inputs = random_inputs(k, &params, &Fixture::default(), seed).unwrap();
        let q = inputs["q"].to_i8();
        let s = inputs["s"].to_f64();
        let g = inputs["gamma"].to_f64();
        let (t, _) = oracle::unpack(&inputs["packed"].to_u32(), n, kk);
        let kp = padded_k(kk);
        let mut dense = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                dense[i * n + j] = (0..kk)
                    .map(|c| (f64::from(q[i * kp + c]) / s[i]) * (f64::from(t[j * kp + c]) * g[j / (n / parts)]))
                    .sum();
            }
        }
        for b in backends() {
            let (outs, _) = run_kernel(k, &b, &params, &inputs).unwrap();
            let got = outs["out"].to_f64();
            let num: f64 = got.iter().zip(&dense).map(|(a, b)| (a - b).powi(2)).sum();
            let den: f64 = dense.iter().map(|v| v * v).sum();
            assert!((num / den).sqrt() < 1e-5, "{m}x{n}x{kk} on {}: rel L2 {}", b.describe(), (num / den).sqrt());
        }
    }
}

/// The chunked scan on a device equals the decode step run token by token on the same device,
/// for random lengths (1, non-multiples of the chunk) and strong decay.
#[test]
fn chunked_scan_equals_t_steps_on_every_backend() {
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let mut rng = Rng::new(seed);
    let (scan, step) = (kernel("ternary.mlgru_scan"), kernel("ternary.mlgru_step"));
    let d = 19;
    let lens: Vec<usize> = vec![1, 1 + rng.below(9) as usize, 10 + rng.below(40) as usize];
    for b in backends() {
        for dtype in ["f32", "bf16"] {
            let (tokens, max_len) = (lens.iter().sum::<usize>(), lens.iter().max().copied().unwrap_or(1));
            let params = json!({"seqs": 3, "tokens": tokens, "max_len": max_len, "d": d, "slots": 4, "chunk": 8,
                "lower_bound": true, "dtype": dtype});
            let inputs = random_inputs(scan, &params, &Fixture(json!({"lens": lens})), seed).unwrap();
            let (outs, bits) = run_kernel(scan, &b, &params, &inputs).unwrap();
            assert_eq!(bits, 0);
            let cu = inputs["cu_seqlens"].to_i32();
            let ids = inputs["slot_ids"].to_i32();
            let dt = DType::parse(dtype).unwrap();
            let fcg = inputs["fcg"].to_f64();
            let mut state = inputs["state"].clone();
            let mut o_steps = vec![0.0; cu[3] as usize * d];
            for s in 0..3 {
                for t in cu[s] as usize..cu[s + 1] as usize {
                    let sp = json!({"batch": 1, "d": d, "slots": 4, "lower_bound": true, "dtype": dtype});
                    let mut si = TensorMap::new();
                    si.insert("fcg".into(), HostTensor::from_f64(dt, &[3 * d], &fcg[t * 3 * d..(t + 1) * 3 * d]));
                    si.insert("state".into(), state.clone());
                    si.insert("slot_ids".into(), HostTensor::from_i32(&[1], &ids[s..s + 1]));
                    si.insert("lb".into(), inputs["lb"].clone());
                    si.insert("w".into(), inputs["w"].clone());
                    let (so, _) = run_kernel(step, &b, &sp, &si).unwrap();
                    state = so["state"].clone();
                    o_steps[t * d..(t + 1) * d].copy_from_slice(&so["o"].to_f64());
                }
            }
            let rel = |a: &[f64], b: &[f64]| {
                let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
                let den: f64 = b.iter().map(|y| y * y).sum::<f64>().max(1e-30);
                (num / den).sqrt()
            };
            let tol = if dtype == "f32" { 1e-5 } else { 1e-2 };
            let (eo, es) = (rel(&outs["o"].to_f64(), &o_steps), rel(&outs["state"].to_f64(), &state.to_f64()));
            assert!(eo < tol && es < 1e-5, "{} {dtype} lens {lens:?}: o {eo:.2e}, state {es:.2e}", b.describe());
        }
    }
}

#[test]
fn bad_ternary_input_is_an_error() {
    // Plans.
    let mm = |m: usize, n: usize, k: usize| TernaryMatmulParams {
        m,
        n,
        k,
        projections: 1,
        partitions: 1,
        dtype: DType::F32,
        out_stride: None,
        accumulate: false,
        write_acc: false,
        tensor_cores: None,
    };
    assert!(matches!(TernaryMatmul::new(mm(0, 4, 4)), Err(Error::InvalidParams(_))));
    assert!(matches!(
        TernaryMatmul::new(TernaryMatmulParams { partitions: 3, ..mm(1, 4, 4) }),
        Err(Error::InvalidParams(_))
    ));
    assert!(matches!(TernaryMatmul::new(mm(1, 4, 1 << 18)), Err(Error::InvalidParams(_))));
    assert!(matches!(
        QuantizeWeights::new(QuantizeWeightsParams { n: 4, k: 4, partitions: 1, dtype: DType::I8 }),
        Err(Error::DType(_))
    ));
    let scan = MlgruScanParams {
        seqs: 2,
        tokens: 5,
        max_len: 3,
        d: 4,
        slots: 2,
        dtype: DType::F32,
        chunk: 64,
        lower_bound: false,
        eps: 1e-5,
        fcg_stride: None,
    };
    let plan = mllm_kernels::ternary::MlgruScan::new(scan).unwrap();
    assert!(plan.validate_cu_seqlens(&[0, 2, 5]).is_ok());
    assert!(plan.validate_cu_seqlens(&[0, 1, 5]).is_err(), "a sequence over max_len");
    assert!(plan.validate_cu_seqlens(&[0, 3, 4]).is_err(), "does not end at tokens");
    assert!(plan.validate_cu_seqlens(&[0, 3]).is_err(), "too short");

    // Mismatched K: activations quantized for K = 40 given to a plan with K = 100.
    let plan = TernaryMatmul::new(mm(2, 8, 100)).unwrap();
    let q = vec![0i8; 2 * padded_k(40)];
    let (s, pk, g) = (vec![1f32; 2], vec![0x5555_5555u32; 8 * 7], vec![1f32]);
    let mut out = vec![0f32; 16];
    assert!(matches!(plan.run_cpu(&q, &s, &pk, &g, &mut out, None), Err(Error::Shape { .. })), "K mismatch");
    let q = vec![0i8; 2 * padded_k(100)];
    assert!(
        matches!(plan.run_cpu(&q, &s, &pk[..50], &g, &mut out, None), Err(Error::Shape { .. })),
        "packed too small"
    );
    assert!(plan.run_cpu(&q, &s, &pk, &g, &mut out, None).is_ok());

    // Code 3: rejected by validate_packed, read as 0 and flagged by unpack.
    let pack = Pack::new(PackParams { n: 1, k: 20 }).unwrap();
    let unpack = Unpack::new(PackParams { n: 1, k: 20 }).unwrap();
    let mut words = oracle::pack(&[0i8; 32], 1, 20);
    assert!(pack.validate_packed(&words).is_ok());
    words[0] |= 3 << 4;
    assert!(matches!(pack.validate_packed(&words), Err(Error::InvalidInput(_))));
    let bad_pad = vec![words[0] & !(3 << 4), 0u32];
    assert!(pack.validate_packed(&bad_pad).is_err(), "padding must be code 1");
    let mut st = Status::new(&Backend::Cpu).unwrap();
    let mut t = vec![9i8; 32];
    unpack.run_cpu(&words, &mut t, &st).unwrap();
    assert_eq!(t[2], 0);
    assert!(st.check(&Backend::Cpu).unwrap_err().to_string().contains("code 3"));

    // Non-finite weights.
    let qw = QuantizeWeights::new(QuantizeWeightsParams { n: 2, k: 3, partitions: 1, dtype: DType::F32 }).unwrap();
    let mut packed = vec![0u32; 2];
    let mut gamma = [0f32];
    let bad = [1.0, f32::NAN, 0.0, 1.0, 1.0, 1.0];
    assert!(matches!(qw.validate_weights(&bad), Err(Error::InvalidInput(_))));
    qw.run_cpu(&bad, &mut [0.0; 2], &mut packed, &mut gamma, &st).unwrap();
    assert!(st.check(&Backend::Cpu).unwrap_err().to_string().contains("non-finite"), "the status names it");
    qw.run_cpu(&[0.0f32; 6], &mut [0.0; 2], &mut packed, &mut gamma, &st).unwrap();
    assert_eq!(gamma[0], 1e-5, "all-zero weights: gamma is the floor, not NaN");
    assert!(packed.iter().all(|&w| w == 0x5555_5555));
}

#[test]
fn bad_ternary_buffers_are_errors_on_gpu_backends() {
    for b in backends().into_iter().filter(|b| b.kind() != BackendKind::Cpu) {
        let k = kernel("ternary.matmul");
        let params = json!({"m": 2, "n": 8, "k": 100, "dtype": "f32"});
        let mut inputs = random_inputs(k, &params, &Fixture::default(), 5).unwrap();
        // q quantized for a shorter K.
        inputs.insert("q".into(), HostTensor { dtype: DType::I8, shape: vec![2 * 48], bytes: vec![0; 2 * 48] });
        let r = run_kernel(k, &b, &params, &inputs);
        assert!(matches!(r, Err(Error::Shape { .. })), "{}: {:?}", b.describe(), r.err());
        let mut inputs = random_inputs(k, &params, &Fixture::default(), 5).unwrap();
        inputs.insert("packed".into(), HostTensor::from_u32(&[3], &[0x5555_5555; 3]));
        assert!(matches!(run_kernel(k, &b, &params, &inputs), Err(Error::Shape { .. })), "{}", b.describe());
    }
}

/// Random shapes beyond the registered cases: every tail of every tile, stacked projections,
/// partitions, strides, accumulation, on every backend.
#[test]
fn random_shapes_match_the_oracle() {
    use mllm_kernels::harness::verify_case;
    use mllm_kernels::harness::Case;
    let seed = fresh_seed();
    eprintln!("seed {seed}");
    let mut rng = Rng::new(seed);
    let dtypes = [DType::F32, DType::F16, DType::BF16];
    let mut cases = Vec::new();
    for i in 0..12 {
        let dt = dtypes[i % 3];
        let m = 1 + rng.below(if i % 2 == 0 { 8 } else { 90 }) as usize;
        let parts = 1 + rng.below(3) as usize;
        let n = parts * (1 + rng.below(40) as usize);
        let k = 1 + rng.below(400) as usize;
        let projections = 1 + rng.below(3) as usize;
        let stride = projections * n + rng.below(3) as usize;
        let acc = rng.below(2) == 1;
        cases.push((
            "ternary.matmul",
            json!({"m": m, "n": n, "k": k, "projections": projections, "partitions": parts, "dtype": dt,
                   "out_stride": stride, "accumulate": acc, "write_acc": true}),
            dt,
        ));
        let m = 1 + rng.below(9) as usize;
        cases.push((
            "ternary.bitlinear",
            json!({"m": m, "n": n, "k": k, "projections": projections, "partitions": parts, "dtype": dt,
                   "x_stride": k + rng.below(3) as usize, "accumulate": acc}),
            dt,
        ));
    }
    for b in backends() {
        for (id, params, dt) in &cases {
            let case = Case::new("random", *dt, params.clone());
            let r = verify_case(kernel(id), &b, &case, seed ^ 0x5a5a);
            assert!(r.ok, "{id} {params} on {}: {}", b.describe(), r.note);
        }
    }
}

/// Rows on a shared state slot are bad input: on every backend they raise `SLOT_REPEATED`, are
/// skipped (the slot keeps its old state) and every other row stays exact. On a GPU the rows
/// would otherwise race; lavapipe runs workgroups one by one, so only the status and the
/// skipped slot can show the handling here, and the same case catches a race on a real GPU.
#[test]
fn repeated_slot_ids_raise_the_status_on_every_backend() {
    use mllm_kernels::harness::{verify_case, Case};
    use mllm_kernels::StatusBits;
    let cases = [
        ("ternary.mlgru_step", json!({"batch": 7, "d": 40, "slots": 9, "fixture": "repeat"})),
        (
            "ternary.mlgru_scan",
            json!({"seqs": 4, "tokens": 20, "max_len": 9, "d": 20, "slots": 5, "chunk": 4,
                "fixture": {"lens": [6, 9, 0, 5], "repeat_slot": true}}),
        ),
    ];
    for b in backends() {
        for (id, params) in &cases {
            for dt in DType::FLOATS {
                let mut p = params.clone();
                p["dtype"] = json!(dt);
                let k = kernel(id);
                let case = Case::new("repeated", dt, p);
                let seed = fresh_seed();
                let inputs = random_inputs(k, &case.params, &case.fixture, seed).unwrap();
                let (outs, bits) = run_kernel(k, &b, &case.params, &inputs).unwrap();
                assert_eq!(
                    bits & StatusBits::SLOT_REPEATED,
                    StatusBits::SLOT_REPEATED,
                    "{id} {dt} on {}",
                    b.describe()
                );
                // The shared slot is untouched.
                let ids = inputs["slot_ids"].to_i32();
                let d = case.params["d"].as_u64().unwrap() as usize;
                let shared = ids[0] as usize;
                let before = &inputs["state"].to_f64()[shared * d..(shared + 1) * d];
                let after = &outs["state"].to_f64()[shared * d..(shared + 1) * d];
                assert_eq!(before, after, "{id} {dt} on {}: the shared slot was written", b.describe());
                let r = verify_case(k, &b, &case, seed);
                assert!(r.ok, "{id} {dt} on {}: {} (seed {seed})", b.describe(), r.note);
            }
        }
    }
}
