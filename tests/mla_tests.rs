//! MLA family: oracle agreement on every backend, split-KV invariance, guard values around
//! every output, and bad paged-cache input.

use mllm_kernels::harness::{random_inputs, run_kernel, Fixture};
use mllm_kernels::mla::{MlaDecode, MlaDecodeParams};
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
    assert_eq!(MlaDecode::schedule(128, 1, 128, 8192, 132), 1, "16384 rows already fill 132 SMs");
    assert_eq!(MlaDecode::schedule(1, 1, 16, 8192, 132), 17);
    assert_eq!(MlaDecode::schedule(1, 1, 16, 300, 132), 1, "no part shorter than 256 keys");
    assert!(MlaDecode::schedule(64, 2, 16, 4096, 132) >= 1);
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
