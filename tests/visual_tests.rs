//! Visual family: oracle agreement on every backend; the FastV pipeline (attention mass ->
//! top-k -> compact -> gather -> sparse attention) on LLaVA-shaped input matches the CPU chain
//! on every backend; with every token kept, sparse attention is dense causal attention.

use mllm_kernels::harness::{run_kernel, HostTensor, Rng, TensorMap};
use mllm_kernels::visual::oracle::keep_count;
use mllm_kernels::{Backend, BackendKind, DType};
use serde_json::{json, Value};

use crate::common::{backend, backends, verify_family};

#[test]
fn visual_matches_oracle_on_cpu() {
    verify_family("visual", &Backend::Cpu);
}

#[test]
fn visual_matches_oracle_on_wgpu() {
    if let Some(b) = backend(BackendKind::Wgpu) {
        verify_family("visual", &b);
    }
}

#[test]
fn visual_matches_oracle_on_cuda() {
    if let Some(b) = backend(BackendKind::Cuda) {
        verify_family("visual", &b);
    }
}

fn run(id: &str, b: &Backend, params: &Value, inputs: &TensorMap) -> TensorMap {
    let k = mllm_kernels::registry::find(id).unwrap();
    let (out, bits) = run_kernel(k, b, params, inputs).unwrap_or_else(|e| panic!("{id} on {}: {e}", b.describe()));
    assert_eq!(bits, 0, "{id} on {} raised {bits:#x}", b.describe());
    out
}

fn t(v: &[f64]) -> HostTensor {
    HostTensor::from_f64(DType::F32, &[v.len()], v)
}

fn i(v: &[i32]) -> HostTensor {
    HostTensor::from_i32(&[v.len()], v)
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (num / b.iter().map(|y| y * y).sum::<f64>().max(1e-30)).sqrt()
}

/// FastV at layer K on two LLaVA-shaped sequences (35 text tokens, 576 visual, then text):
/// every step on the backend; kept indices equal the CPU chain's, outputs within f32 rounding.
fn fastv(b: &Backend) -> (Vec<i32>, Vec<f64>) {
    let (lens, h, hkv, d) = ([35 + 576 + 60, 35 + 576 + 12], 4usize, 2usize, 32usize);
    let (seqs, tokens, n) = (2usize, lens.iter().sum::<usize>(), 576usize);
    let cu = [0, lens[0] as i32, tokens as i32];
    let seg = [35, 576, 35, 576];
    let mut rng = Rng::new(5);
    let q = rng.normals(tokens * h * d, 1.0);
    let k = rng.normals(tokens * hkv * d, 1.0);
    let v = rng.normals(tokens * hkv * d, 1.0);
    let scale = 1.0 / (d as f64).sqrt();
    // Attention mass from each sequence's last token (its q row), summed over heads.
    let last = [cu[1] - 1, cu[2] - 1];
    let qrows: Vec<f64> = last.iter().flat_map(|&r| q[r as usize * h * d..(r as usize + 1) * h * d].to_vec()).collect();
    let mut m = TensorMap::new();
    m.insert("q".into(), t(&qrows));
    m.insert("qpos".into(), i(&last));
    m.insert("qw".into(), t(&[1.0, 1.0]));
    m.insert("k".into(), t(&k));
    m.insert("cu_seqlens".into(), i(&cu));
    m.insert("seg".into(), i(&seg));
    let mp = json!({"seqs": seqs, "tokens": tokens, "rows": 2, "heads": h, "kv_heads": hkv, "dim": d, "n": n,
        "scale": scale, "dtype": "f32"});
    let mass = run("visual.attn_mass", b, &mp, &m)["mass"].clone();
    // Keep half the image (FastV's R = 50%).
    let kk = keep_count(n, 0.5);
    let mut m = TensorMap::new();
    m.insert("score".into(), mass);
    m.insert("lens".into(), i(&[576, 576]));
    let sel = run("visual.select", b, &json!({"seqs": seqs, "n": n, "k": kk}), &m);
    let mut m = TensorMap::new();
    m.insert("cu_seqlens".into(), i(&cu));
    m.insert("seg".into(), i(&seg));
    m.insert("idx".into(), sel["idx"].clone());
    m.insert("count".into(), sel["count"].clone());
    let lay = run("visual.compact", b, &json!({"seqs": seqs, "tokens": tokens, "n": n}), &m);
    let cu_out = lay["cu_out"].to_i32();
    let kept = cu_out[seqs] as usize;
    assert_eq!(kept, tokens - 2 * (n - kk), "{}", b.describe());
    let rows: Vec<i32> = lay["rows"].to_i32()[..kept].to_vec();
    let gather = |src: &[f64], heads: usize| -> HostTensor {
        let mut m = TensorMap::new();
        m.insert("src".into(), t(src));
        m.insert("idx".into(), i(&rows));
        let p = json!({"rows": kept, "src_rows": tokens, "cols": heads * d, "dtype": "f32"});
        run("core.gather_rows", b, &p, &m)["out"].clone()
    };
    let mut m = TensorMap::new();
    m.insert("q".into(), gather(&q, h));
    m.insert("k".into(), gather(&k, hkv));
    m.insert("v".into(), gather(&v, hkv));
    m.insert("cu_seqlens".into(), i(&cu_out));
    m.insert("pos".into(), i(&lay["pos"].to_i32()[..kept]));
    let ap =
        json!({"seqs": seqs, "tokens": kept, "heads": h, "kv_heads": hkv, "dim": d, "scale": scale, "dtype": "f32"});
    let o = run("visual.sparse_attention", b, &ap, &m)["o"].to_f64();
    (sel["idx"].to_i32(), o)
}

#[test]
fn fastv_pipeline_matches_the_cpu_chain_on_every_backend() {
    let (want_idx, want_o) = fastv(&Backend::Cpu);
    for b in backends() {
        let (idx, o) = fastv(&b);
        assert_eq!(idx, want_idx, "{}: kept tokens differ", b.describe());
        assert!(rel(&o, &want_o) < 1e-5, "{}: rel L2 {:.2e}", b.describe(), rel(&o, &want_o));
    }
}

/// With every token kept at its own position, sparse attention is plain causal attention,
/// computed here directly.
#[test]
fn sparse_attention_with_every_token_kept_is_dense_causal() {
    let (n, h, d) = (37usize, 2usize, 16usize);
    let mut rng = Rng::new(9);
    let (q, k, v) = (rng.normals(n * h * d, 1.0), rng.normals(n * h * d, 1.0), rng.normals(n * h * d, 1.0));
    let scale = 0.25;
    let mut want = vec![0.0; n * h * d];
    for r in 0..n {
        for hh in 0..h {
            let qr = &q[(r * h + hh) * d..(r * h + hh + 1) * d];
            let s: Vec<f64> = (0..=r)
                .map(|j| scale * qr.iter().zip(&k[(j * h + hh) * d..]).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
            for (j, x) in s.iter().enumerate() {
                for c in 0..d {
                    want[(r * h + hh) * d + c] += (x - mx).exp() / z * v[(j * h + hh) * d + c];
                }
            }
        }
    }
    let f32r = |x: &[f64]| x.iter().map(|&y| f64::from(y as f32)).collect::<Vec<_>>();
    for b in backends() {
        let mut m = TensorMap::new();
        m.insert("q".into(), t(&q));
        m.insert("k".into(), t(&k));
        m.insert("v".into(), t(&v));
        m.insert("cu_seqlens".into(), i(&[0, n as i32]));
        m.insert("pos".into(), i(&(0..n as i32).collect::<Vec<_>>()));
        let p = json!({"seqs": 1, "tokens": n, "heads": h, "kv_heads": h, "dim": d, "scale": scale, "dtype": "f32"});
        let o = run("visual.sparse_attention", &b, &p, &m)["o"].to_f64();
        assert!(rel(&o, &f32r(&want)) < 1e-5, "{}: rel L2 {:.2e}", b.describe(), rel(&o, &want));
    }
}

#[test]
fn keep_count_rounds_half_to_even() {
    assert_eq!(keep_count(576, 0.5), 288);
    assert_eq!(keep_count(5, 0.5), 2); // 2.5 -> 2
    assert_eq!(keep_count(7, 0.5), 4); // 3.5 -> 4
    assert_eq!(keep_count(576, 0.75), 144);
    assert_eq!(keep_count(10, 0.0), 10);
    assert_eq!(keep_count(10, 1.0), 0);
}

/// A raster-causal window that covers the whole grid is plain causal attention: neighbour
/// attention then equals sparse attention with every token kept, on every backend.
#[test]
fn a_causal_window_covering_the_grid_is_dense_causal() {
    let (n, h, d) = (7 + 5 * 6 + 4, 2usize, 16usize);
    let mut rng = Rng::new(13);
    let (q, k, v) = (rng.normals(n * h * d, 1.0), rng.normals(n * h * d, 1.0), rng.normals(n * h * d, 1.0));
    for b in backends() {
        let mut m = TensorMap::new();
        m.insert("q".into(), t(&q));
        m.insert("k".into(), t(&k));
        m.insert("v".into(), t(&v));
        m.insert("cu_seqlens".into(), i(&[0, n as i32]));
        let mut dense = m.clone();
        dense.insert("pos".into(), i(&(0..n as i32).collect::<Vec<_>>()));
        let p = json!({"seqs": 1, "tokens": n, "heads": h, "kv_heads": h, "dim": d, "scale": 0.25, "dtype": "f32"});
        let want = run("visual.sparse_attention", &b, &p, &dense);
        m.insert("img".into(), i(&[7, 5, 6]));
        let mut np = p.clone();
        np["radius"] = json!(6);
        np["causal_window"] = json!(true);
        let got = run("visual.neighbor_attention", &b, &np, &m);
        for name in ["o", "lse"] {
            let (g, w) = (got[name].to_f64(), want[name].to_f64());
            assert!(rel(&g, &w) < 1e-6, "{} {name}: rel L2 {:.2e}", b.describe(), rel(&g, &w));
        }
        // Without the flag, the symmetric window lets a visual query see later image tokens.
        np["causal_window"] = json!(false);
        let sym = run("visual.neighbor_attention", &b, &np, &m)["o"].to_f64();
        assert!(rel(&sym, &want["o"].to_f64()) > 1e-3, "{}: the symmetric window changed nothing", b.describe());
    }
}

/// LOOK-M's forced tokens: a +inf score is kept in every mode, ahead of the rule, even when a
/// separate ranking score would put it last.
#[test]
fn an_infinite_score_is_always_kept() {
    use mllm_kernels::visual::oracle::{select, Keep};
    let inf = f32::INFINITY;
    let s = [0.5, inf, 0.1, 0.9, inf, 0.2];
    // Top-k: the forced two, then the best of the rest up to k; k below the forced count keeps them.
    assert_eq!(select(&s, &s, Keep::TopK(3)), vec![1, 3, 4]);
    assert_eq!(select(&s, &s, Keep::TopK(1)), vec![1, 4]);
    // Mass over the finite total 1.7: 0.9 reaches half of it; ranked by an order that puts the
    // forced ones last, they are still kept.
    let order = [3.0, -9.0, 2.0, 1.0, -9.0, 0.0];
    assert_eq!(select(&s, &order, Keep::Mass(0.5)), vec![0, 1, 4]);
    // Above the finite mean (0.425).
    assert_eq!(select(&s, &s, Keep::AboveMean), vec![0, 1, 3, 4]);
    assert_eq!(select(&[inf, inf], &[inf, inf], Keep::AboveMean), vec![0, 1]);
}

/// Decode over a pruned cache split over the keys: each sequence's kept keys in two parts (their
/// own `cu_seqlens`), each part decoded, the parts merged by `core.merge_states`, equals the
/// decode over all the keys, on every backend.
#[test]
fn pruned_decode_split_over_keys_merges_to_the_whole() {
    let find = |id: &str| mllm_kernels::registry::find(id).unwrap();
    let (sparse, merge) = (find("visual.sparse_attention"), find("core.merge_states"));
    let (h, hkv, d) = (4usize, 2usize, 32usize);
    let lens = [40usize, 23];
    let tokens: usize = lens.iter().sum();
    let mut rng = Rng::new(11);
    let mut pos = vec![];
    for &n in &lens {
        pos.extend((0..n as i32).map(|i| 2 * i));
    }
    // Two new tokens a sequence, after its kept ones.
    let pos_q: Vec<i32> = lens.iter().flat_map(|&n| [2 * n as i32, 2 * n as i32 + 1]).collect();
    let tq = pos_q.len();
    let f = |v: Vec<f64>| HostTensor::from_f64(DType::F32, &[v.len()], &v);
    let (q, k, v) =
        (f(rng.normals(tq * h * d, 1.0)), f(rng.normals(tokens * hkv * d, 1.0)), f(rng.normals(tokens * hkv * d, 1.0)));
    let params = |toks: usize| {
        json!({"seqs": 2, "tokens": toks, "heads": h, "kv_heads": hkv, "dim": d, "scale": 0.2, "dtype": "f32",
            "queries": tq})
    };
    let inputs = |rows: &[Vec<usize>]| -> TensorMap {
        // The keys in `rows` of each sequence, in order.
        let idx: Vec<usize> = rows.iter().flatten().copied().collect();
        let pick = |t: &HostTensor, w: usize| {
            let x = t.to_f64();
            f(idx.iter().flat_map(|&r| x[r * w..(r + 1) * w].to_vec()).collect())
        };
        let mut cu = vec![0i32];
        for r in rows {
            cu.push(cu[cu.len() - 1] + r.len() as i32);
        }
        let mut m = TensorMap::new();
        m.insert("q".into(), q.clone());
        m.insert("k".into(), pick(&k, hkv * d));
        m.insert("v".into(), pick(&v, hkv * d));
        m.insert("cu_seqlens".into(), HostTensor::from_i32(&[3], &cu));
        m.insert("pos".into(), HostTensor::from_i32(&[idx.len()], &idx.iter().map(|&r| pos[r]).collect::<Vec<_>>()));
        m.insert("cu_seqlens_q".into(), HostTensor::from_i32(&[3], &[0, 2, 4]));
        m.insert("pos_q".into(), HostTensor::from_i32(&[tq], &pos_q));
        m
    };
    let seq = |b: usize, lo: usize, hi: usize| -> Vec<usize> {
        let s = if b == 0 { 0 } else { lens[0] };
        (s + lo..s + hi).collect()
    };
    let whole = inputs(&[seq(0, 0, 40), seq(1, 0, 23)]);
    let (part1, part2) = (inputs(&[seq(0, 0, 17), seq(1, 0, 9)]), inputs(&[seq(0, 17, 40), seq(1, 9, 23)]));
    for b in backends() {
        let (want, _) = run_kernel(sparse, &b, &params(tokens), &whole).unwrap();
        let (a, _) = run_kernel(sparse, &b, &params(26), &part1).unwrap();
        let (c, _) = run_kernel(sparse, &b, &params(tokens - 26), &part2).unwrap();
        let mut m = TensorMap::new();
        m.insert("o1".into(), a["o"].clone());
        m.insert("lse1".into(), a["lse"].clone());
        m.insert("o2".into(), c["o"].clone());
        m.insert("lse2".into(), c["lse"].clone());
        let mp = json!({"states": tq * h, "dim": d, "dtype": "f32"});
        let (got, _) = run_kernel(merge, &b, &mp, &m).unwrap();
        for name in ["o", "lse"] {
            let (g, w) = (got[name].to_f64(), want[name].to_f64());
            let err = g.iter().zip(&w).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
            assert!(err < 1e-4, "{:?} {name}: {err:.2e}", b.kind());
        }
    }
}
