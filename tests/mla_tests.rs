//! MLA family: oracle agreement on every backend, split-KV invariance, guard values around
//! every output, and bad paged-cache input.

use mllm_kernels::harness::{random_inputs, run_kernel, Fixture};
use mllm_kernels::mla::{tc_tile, MlaDecode, MlaDecodeParams};
use mllm_kernels::{Backend, BackendKind, DType, Plan};
use serde_json::json;

use crate::common::{backend, backends, verify_family};

#[test]
fn mla_matches_oracle_on_cpu() {
    verify_family("mla", &Backend::Cpu);
}

#[test]
fn mla_matches_oracle_on_wgpu() {
    if let Some(b) = backend(BackendKind::Wgpu) {
        verify_family("mla", &b);
    }
}

#[test]
fn mla_matches_oracle_on_cuda() {
    if let Some(b) = backend(BackendKind::Cuda) {
        verify_family("mla", &b);
    }
}

fn params(splits: usize, dtype: DType) -> serde_json::Value {
    json!({"batch": 3, "sq": 2, "heads": 5, "latent": 128, "rope": 32, "page_size": 7, "pages": 40,
        "max_pages": 12, "scale": 0.09, "dtype": dtype, "splits": splits})
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).filter(|(x, y)| x.is_finite() || y.is_finite()).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().filter(|y| y.is_finite()).map(|y| y * y).sum::<f64>().max(1e-30);
    (num / den).sqrt()
}

/// The split count is a scheduling choice: 1, 3 and 7 parts give the same o and lse (the combine
/// is exact up to f32 rounding), with -inf rows in the same places.
#[test]
fn split_kv_does_not_change_the_result_on_every_backend() {
    let k = mllm_kernels::registry::find("mla.mla_decode").unwrap();
    let fx = Fixture(json!({"lens": [80, 1, 33]}));
    let inputs = random_inputs(k, &params(1, DType::F32), &fx, 21).unwrap();
    for b in backends() {
        let (base, _) = run_kernel(k, &b, &params(1, DType::F32), &inputs).unwrap();
        for splits in [3, 7] {
            let (got, bits) = run_kernel(k, &b, &params(splits, DType::F32), &inputs).unwrap();
            assert_eq!(bits, 0);
            for name in ["o", "lse"] {
                let (g, w) = (got[name].to_f64(), base[name].to_f64());
                assert!(g.iter().zip(&w).all(|(x, y)| x.is_infinite() == y.is_infinite()), "{name}: -inf rows moved");
                assert!(rel(&g, &w) < 1e-5, "{} splits {splits} {name}: {:.2e}", b.describe(), rel(&g, &w));
            }
        }
    }
}

#[test]
fn the_scheduler_fills_the_device_without_reading_lengths() {
    // Groups of up to 64 rows: 128 sequences of 128 heads are 256 blocks, two waves need 264.
    assert_eq!(MlaDecode::schedule(128, 1, 128, 8192, 132), 2);
    assert_eq!(MlaDecode::schedule(512, 1, 128, 8192, 132), 1, "1024 groups already fill 132 SMs twice");
    assert_eq!(MlaDecode::schedule(1, 1, 16, 8192, 132), 32, "one group: as many parts as 256-key pieces allow");
    assert_eq!(MlaDecode::schedule(1, 1, 16, 300, 132), 1, "no part shorter than 256 keys");
    // FlashMLA's bench shapes: at least one wave of groups x splits on 132 SMs.
    for (b, sq, h, len) in [(64, 1, 16, 4096), (64, 1, 128, 4096), (128, 2, 64, 8192), (128, 1, 32, 8192)] {
        let rows: usize = sq * h;
        let groups = b * rows.div_ceil([16, 32, 64].into_iter().find(|&g| g >= rows).unwrap_or(64));
        let blocks = groups * MlaDecode::schedule(b, sq, h, len, 132);
        assert!(blocks >= 132, "B{b} Sq{sq} H{h}: {blocks} blocks");
    }
}

#[test]
fn the_tensor_core_tile_fits_registers_and_shared_memory() {
    const H100: usize = 227 * 1024;
    const A100: usize = 163 * 1024;
    const ADA: usize = 99 * 1024;
    // DeepSeek's L 512 + R 64: 64 rows and 32 keys on an H100 and an A100 alike.
    let t = tc_tile(512, 64, 128, false, H100).expect("a tile");
    assert_eq!((t.rows, t.keys), (64, 32));
    assert!(t.shared <= A100, "{} bytes", t.shared);
    // Few rows take the smallest group that holds them.
    assert_eq!(tc_tile(512, 64, 16, false, H100).map(|t| t.rows), Some(16));
    assert_eq!(tc_tile(512, 64, 17, false, H100).map(|t| t.rows), Some(32));
    // Ada's 99 KiB: a smaller group and tile, still within the limit.
    let t = tc_tile(512, 64, 128, false, ADA).expect("a tile on sm_89");
    assert!(t.shared <= ADA && t.rows < 64, "{t:?}");
    // The output must fit a warp's registers: G * L <= 32768.
    assert_eq!(tc_tile(1024, 0, 128, false, H100).map(|t| t.rows), Some(32));
    let t = tc_tile(2048, 128, 128, false, H100).expect("L 2048");
    assert_eq!((t.rows, t.keys), (16, 16));
    assert!(t.shared <= H100);
    assert_eq!(tc_tile(2048, 128, 128, false, 64 * 1024), None, "nothing fits 64 KiB at L 2048");
    // The fp8 cache: byte stages and one decoded tile take less than two 16-bit stages.
    let (f, b) = (tc_tile(512, 64, 128, true, H100).expect("fp8"), tc_tile(512, 64, 128, false, H100).expect("bf16"));
    assert_eq!((f.rows, f.keys), (64, 32));
    assert!(f.shared < b.shared && f.shared <= A100, "{f:?} vs {b:?}");
}

/// Outputs bound at an offset inside larger buffers: the words before and after stay as they
/// were (a kernel writing past its view would change them).
#[test]
fn decode_writes_nothing_outside_its_outputs_on_wgpu() {
    let Some(Backend::Wgpu(w)) = backend(BackendKind::Wgpu) else { return };
    use mllm_kernels::WgpuTensor;
    let k = mllm_kernels::registry::find("mla.mla_decode").unwrap();
    let p = params(3, DType::F32);
    let inputs = random_inputs(k, &p, &Fixture(json!({"lens": [50, 0, 84]})), 4).unwrap();
    let plan = MlaDecode::new(serde_json::from_value::<MlaDecodeParams>(p.clone()).unwrap()).unwrap();
    let want = k.prepare(&p).unwrap().oracle(&inputs).unwrap();
    const G: usize = 6;
    let guard = 12345.0f32;
    let framed = |n: usize| {
        let mut v = vec![guard; n + 2 * G];
        v[G..G + n].fill(f32::NAN);
        w.upload(bytemuck::cast_slice(&v)).unwrap()
    };
    let (o, lse, ws) = (
        framed(plan.spec("o").unwrap().len),
        framed(plan.spec("lse").unwrap().len),
        framed(plan.spec("ws").unwrap().len),
    );
    let up = |name: &str| w.upload(&inputs[name].bytes).unwrap();
    let (q, cache, table, lens) = (up("q"), up("cache"), up("block_table"), up("seq_lens"));
    let status = mllm_kernels::Status::new(&Backend::Wgpu(w.clone())).unwrap();
    let at = |b| WgpuTensor { buffer: b, offset: G };
    w.run_blocking(|enc| {
        plan.run_wgpu(
            &w,
            enc,
            (&q).into(),
            (&cache).into(),
            None,
            None,
            (&table).into(),
            (&lens).into(),
            at(&o),
            at(&lse),
            at(&ws),
            &status,
        )
    })
    .unwrap();
    for (name, buf) in [("o", &o), ("lse", &lse), ("ws", &ws)] {
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(&w.download(buf).unwrap());
        let n = v.len() - 2 * G;
        assert!(v[..G].iter().chain(&v[G + n..]).all(|&g| g == guard), "{name}: a guard word changed");
        if let Some(e) = want.outputs.get(name) {
            let got: Vec<f64> = v[G..G + n].iter().map(|&x| f64::from(x)).collect();
            assert!(rel(&got, e) < 1e-5, "{name} at an offset: {:.2e}", rel(&got, e));
        }
    }
}

#[test]
fn bad_tables_are_named_and_bad_params_refused() {
    let plan = MlaDecode::new(serde_json::from_value::<MlaDecodeParams>(params(1, DType::F32)).unwrap()).unwrap();
    let mut table = vec![0i32; 3 * 12];
    let lens = [14, 0, 84];
    let e = plan.validate_table(&table, &[14, 0, 85]).unwrap_err();
    assert!(e.to_string().contains("seq_lens[2] = 85"), "{e}");
    table[12 + 12 + 11] = 40;
    let e = plan.validate_table(&table, &lens).unwrap_err();
    assert!(e.to_string().contains("block_table[35] = 40"), "{e}");
    // Entries past a sequence's pages are never read, so never judged.
    table[35] = 0;
    table[2] = -9;
    assert!(plan.validate_table(&table, &lens).is_ok());
    for (key, v) in [
        ("latent", json!(96)),
        ("latent", json!(4096)),
        ("rope", json!(8)),
        ("heads", json!(129)),
        ("scale", json!(0.0)),
        ("splits", json!(100000)),
        ("page_size", json!(0)),
    ] {
        let mut p = params(1, DType::F32);
        p[key] = v.clone();
        let r = serde_json::from_value::<MlaDecodeParams>(p)
            .map_err(|e| e.to_string())
            .and_then(|p| MlaDecode::new(p).map_err(|e| e.to_string()));
        assert!(r.is_err(), "{key} = {v} accepted");
    }
    let mut p = params(1, DType::F32);
    p.as_object_mut().unwrap().remove("scale");
    assert!(serde_json::from_value::<MlaDecodeParams>(p).is_err(), "scale is required");
}

/// A GQA layer with RoPE and four query heads per kv group, converted to MLA form (TransMLA's
/// rope repeat), gives GQA attention's outputs through the whole MLA path on every backend:
/// `absorb_q`, `append_cache` into shuffled pages, `decode`, `project_out`.
#[test]
fn a_converted_gqa_layer_decodes_to_gqa_attention_on_every_backend() {
    use mllm_kernels::harness::{fresh_seed, HostTensor, Rng, TensorMap};
    use mllm_kernels::mla::GqaAsMla;
    let (heads, kv, d, ctx, page) = (8usize, 2usize, 64usize, 37usize, 8usize);
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    let conv = GqaAsMla::new(heads, kv, d).unwrap();
    let l = conv.latent;
    // Half-split RoPE at position `pos` (the keys at 0..ctx, the query at the last position).
    let rot = |x: &mut [f64], pos: usize| {
        for i in 0..d / 2 {
            let ang = pos as f64 * 10000f64.powf(-2.0 * i as f64 / d as f64);
            let (a, b) = (x[i], x[i + d / 2]);
            (x[i], x[i + d / 2]) = (a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos());
        }
    };
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut k = f32s(&rng.normals(ctx * kv * d, 1.0)).iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    for (i, row) in k.chunks_mut(d).enumerate() {
        rot(row, i / kv);
    }
    let (k, v) = (f32s(&k), f32s(&rng.normals(ctx * kv * d, 1.0)));
    let mut q = rng.normals(heads * d, 1.0);
    for row in q.chunks_mut(d) {
        rot(row, ctx - 1);
    }
    let q = f32s(&q);
    // GQA attention in f64 on the same (f32) values.
    let mut want = vec![0.0f64; heads * d];
    for h in 0..heads {
        let g = h / (heads / kv);
        let s: Vec<f64> = (0..ctx)
            .map(|t| {
                (0..d).map(|i| f64::from(q[h * d + i]) * f64::from(k[(t * kv + g) * d + i])).sum::<f64>()
                    / (d as f64).sqrt()
            })
            .collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        for t in 0..ctx {
            for i in 0..d {
                want[h * d + i] += (s[t] - m).exp() / z * f64::from(v[(t * kv + g) * d + i]);
            }
        }
    }
    let find = |id: &str| mllm_kernels::registry::find(id).unwrap();
    let t32 =
        |v: &[f32]| HostTensor::from_f64(DType::F32, &[v.len()], &v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
    let pages = ctx.div_ceil(page) + 2;
    let mut order: Vec<i32> = (0..pages as i32).collect();
    order.reverse();
    let table: Vec<i32> = order[..ctx.div_ceil(page)].to_vec();
    let slots: Vec<i32> = (0..ctx).map(|t| table[t / page] * page as i32 + (t % page) as i32).collect();
    for b in backends() {
        let what = format!("{} (seed {seed})", b.describe());
        let p = json!({"tokens": 1, "heads": heads, "nope": d, "latent": l, "dtype": "f32"});
        let i: TensorMap = [("q_nope".into(), t32(&q)), ("w_uk".into(), t32(&conv.w_uk))].into();
        let (out, _) = run_kernel(find("mla.absorb_q"), &b, &p, &i).unwrap();
        let q_lat = out["q"].clone();
        let p = json!({"tokens": ctx, "latent": l, "rope": 0, "page_size": page, "pages": pages, "dtype": "f32"});
        let i: TensorMap = [
            ("kv_new".into(), t32(&conv.latents(&k, &v).unwrap())),
            ("slots".into(), HostTensor::from_i32(&[ctx], &slots)),
            ("cache".into(), t32(&vec![0.0; pages * page * l])),
        ]
        .into();
        let (out, bits) = run_kernel(find("mla.append_cache"), &b, &p, &i).unwrap();
        assert_eq!(bits, 0, "{what}");
        let p = json!({"batch": 1, "sq": 1, "heads": heads, "latent": l, "rope": 0, "page_size": page, "pages": pages,
            "max_pages": table.len(), "scale": conv.scale, "dtype": "f32", "splits": 2});
        let i: TensorMap = [
            ("q".into(), q_lat),
            ("cache".into(), out["cache"].clone()),
            ("block_table".into(), HostTensor::from_i32(&[table.len()], &table)),
            ("seq_lens".into(), HostTensor::from_i32(&[1], &[ctx as i32])),
        ]
        .into();
        let (out, bits) = run_kernel(find("mla.mla_decode"), &b, &p, &i).unwrap();
        assert_eq!(bits, 0, "{what}");
        let p = json!({"tokens": 1, "heads": heads, "latent": l, "v_dim": d, "dtype": "f32"});
        let i: TensorMap = [("o".into(), out["o"].clone()), ("w_uv".into(), t32(&conv.w_uv))].into();
        let (out, _) = run_kernel(find("mla.project_out"), &b, &p, &i).unwrap();
        let got = out["out"].to_f64();
        assert!(rel(&got, &want) < 1e-5, "{what}: MLA vs GQA rel L2 {:.2e}", rel(&got, &want));
    }
}

/// FlashMLA's own dense-decode test reference (`ref_mla` of its tests/test_flash_mla.py),
/// transcribed by `scripts/flashmla_reference.py` into a check file: bf16, P = 64, L = 512,
/// R = 64, causal Sq = 2, varlen, and the cache past every seq_len filled with NaN, so a kernel
/// that reads past a sequence's length fails.
#[test]
fn flashmla_reference_file_passes_on_every_backend() {
    use mllm_kernels::harness::check;
    let bytes = std::fs::read(crate::common::repo_file("tests/data/flashmla_decode.safetensors")).unwrap();
    let file = check::parse_file(&bytes).unwrap();
    assert!(file.inputs["cache"].to_f64().iter().any(|v| v.is_nan()), "the file poisons the cache past seq_len");
    for b in backends() {
        let cmps = check::run_check(&mllm_kernels::registry::kernels(), &file, &b).unwrap();
        assert_eq!(cmps.len(), 3);
        assert!(cmps.iter().all(|c| c.ok), "{}: {cmps:?}", b.describe());
    }
}

/// E4M3 as the fp8 cache stores it: every finite code decodes and encodes back to itself, a
/// value halfway between two neighbours rounds to the even code, magnitudes past 448 saturate,
/// and the per-token scale is the smallest power of two that brings the row within 448.
#[test]
fn e4m3_round_trips_and_rounds_to_even() {
    use mllm_kernels::{e4m3_from_f32, e4m3_scale, e4m3_to_f32};
    let finite: Vec<u8> = (0..=255u8).filter(|b| b & 0x7f != 0x7f).collect();
    assert_eq!(finite.len(), 254);
    for &b in &finite {
        let v = e4m3_to_f32(b);
        assert!(v.is_finite(), "{b:#04x}");
        // -0 encodes as 0x80, +0 as 0x00: both round-trip.
        assert_eq!(e4m3_from_f32(v), b, "{b:#04x} = {v}");
    }
    assert!(e4m3_to_f32(0x7f).is_nan() && e4m3_to_f32(0xff).is_nan());
    assert_eq!((e4m3_to_f32(0x7e), e4m3_to_f32(0x08), e4m3_to_f32(0x01)), (448.0, 2f32.powi(-6), 2f32.powi(-9)));
    // Ties between adjacent positive codes go to the even one.
    for b in 0..0x7eu8 {
        let mid = (e4m3_to_f32(b) + e4m3_to_f32(b + 1)) / 2.0;
        let even = if b % 2 == 0 { b } else { b + 1 };
        assert_eq!(e4m3_from_f32(mid), even, "midpoint of {b:#04x} and {:#04x}", b + 1);
        assert_eq!(e4m3_from_f32(-mid), 0x80 | even);
    }
    assert_eq!(e4m3_from_f32(1e9), 0x7e);
    assert_eq!(e4m3_from_f32(-500.0), 0xfe);
    assert_eq!(e4m3_from_f32(f32::NAN), 0x7f);
    // The scale: a power of two, amax / s within 448, and half of it would not be.
    for amax in [1e-30f32, 0.001, 0.5, 1.0, 1.75, 1.76, 3.0, 448.0, 449.0, 896.0, 1e30] {
        let s = e4m3_scale(amax);
        assert_eq!(s.to_bits() & 0x7f_ffff, 0, "{amax}: {s} is a power of two");
        assert!(amax / s <= 448.0 && (s <= f32::MIN_POSITIVE || amax / (s / 2.0) > 448.0), "{amax}: {s}");
    }
    assert_eq!(e4m3_scale(0.0), 1.0);
    assert!(e4m3_scale(f32::INFINITY).is_nan() && e4m3_scale(f32::NAN).is_nan());
}

/// A decode over an fp8 cache on every backend against the oracle's decode over the cache's
/// dequantized values held as an f32 cache: they agree to f32 rounding, so each token's scale is
/// applied once, to its score and its value alike.
#[test]
fn fp8_decode_equals_decode_over_dequantized_cache() {
    let k = mllm_kernels::registry::find("mla.mla_decode").unwrap();
    let p8 = json!({"batch": 2, "sq": 2, "heads": 4, "latent": 64, "rope": 16, "page_size": 8, "pages": 6,
        "max_pages": 3, "scale": 0.1, "dtype": "f32", "cache_dtype": "e4m3"});
    let mut pf = p8.clone();
    pf.as_object_mut().unwrap().remove("cache_dtype");
    let inputs = random_inputs(k, &p8, &Fixture(json!({"lens": [20, 13]})), 7).unwrap();
    let (cache, scales) = (inputs["cache"].to_f64(), inputs["cache_scale"].to_f64());
    assert!(scales.iter().any(|&s| s != scales[0]), "the fixture gives tokens different scales");
    let deq: Vec<f64> = cache.iter().enumerate().map(|(i, &c)| c * scales[i / 80]).collect();
    let mut fin = inputs.clone();
    fin.remove("cache_scale");
    fin.insert("cache".into(), mllm_kernels::harness::HostTensor::f32s(&deq));
    let (want, _) = run_kernel(k, &Backend::Cpu, &pf, &fin).unwrap();
    for b in backends() {
        let (got, bits) = run_kernel(k, &b, &p8, &inputs).unwrap();
        assert_eq!(bits, 0);
        for name in ["o", "lse"] {
            let e = rel(&got[name].to_f64(), &want[name].to_f64());
            assert!(e < 1e-5, "{:?} {name}: {e:.2e}", b.kind());
        }
    }
}
