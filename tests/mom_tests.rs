//! MoM family: oracle agreement on every backend; the prefill path (permute, short conv,
//! chunked delta rule, unpermute) equals the decode step run token by token; permute then
//! unpermute is the identity; routing ties; bad input.

use mllm_kernels::harness::{run_kernel, HostTensor, Rng, TensorMap};
use mllm_kernels::mom::{Dims, GatedDeltaChunk, GatedDeltaChunkParams, GatedDeltaStep, GatedDeltaStepParams};
use mllm_kernels::{Backend, BackendKind, DType, Plan, Status};
use serde_json::{json, Value};

use crate::common::{backend, backends, verify_family};

#[test]
fn mom_matches_oracle_on_cpu() {
    verify_family("mom", &Backend::Cpu);
}

#[test]
fn mom_matches_oracle_on_wgpu() {
    if let Some(b) = backend(BackendKind::Wgpu) {
        verify_family("mom", &b);
    }
}

#[test]
fn mom_matches_oracle_on_cuda() {
    if let Some(b) = backend(BackendKind::Cuda) {
        verify_family("mom", &b);
    }
}

fn run(id: &str, b: &Backend, params: &Value, inputs: &TensorMap) -> TensorMap {
    let k = mllm_kernels::registry::find(id).unwrap();
    let (out, bits) = run_kernel(k, b, params, inputs).unwrap_or_else(|e| panic!("{id} on {}: {e}", b.describe()));
    assert_eq!(bits, 0, "{id} on {} raised {bits:#x}", b.describe());
    out
}

fn f32s(v: &[f64]) -> HostTensor {
    HostTensor::from_f64(DType::F32, &[v.len()], v)
}

fn i32s(v: &[i32]) -> HostTensor {
    HostTensor::from_i32(&[v.len()], v)
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().max(1e-30);
    (num / den).sqrt()
}

/// One prefill scenario: `lens` tokens per sequence through M = 4 memories (top-2, shared),
/// H = 2 heads of K = V = 16, from random states; `route` picks each token's choices.
fn prefill_vs_step(b: &Backend, lens: &[usize], route: &dyn Fn(&mut Rng) -> Vec<i32>, strong: bool, seed: u64) {
    let (m, k, h, kd, vd, w) = (4usize, 2usize, 2usize, 16usize, 16usize, 4usize);
    let d = Dims::new(m, k, true, h, kd, vd, w).unwrap();
    let (seqs, tokens, slots) = (lens.len(), lens.iter().sum::<usize>(), lens.len() + 2);
    let mut rng = Rng::new(seed);
    let pw = d.proj_width();
    let mut x = rng.normals(tokens * pw, 1.0);
    let mut gp: Vec<f64> = (0..h).map(|_| rng.range(1.0, 16.0).ln()).collect();
    gp.extend((0..h).map(|_| rng.range(-4.0, -1.0)));
    if strong {
        // A_log = 3 and large a: g = -e^3 softplus(a + dt) <= -20 for every token.
        gp[..h].fill(3.0);
        for t in 0..tokens {
            for mm in 0..d.mems() {
                for hh in 0..h {
                    x[t * pw + d.gate_col(mm, hh, false)] = rng.range(3.0, 6.0);
                }
            }
        }
    }
    let conv_w = rng.normals(d.channels() * w, 0.5);
    let idx: Vec<i32> = (0..tokens).flat_map(|_| route(&mut rng)).collect();
    let weights: Vec<f64> = (0..tokens * k).map(|_| rng.range(0.0, 1.0)).collect();
    let mut cu = vec![0i32];
    lens.iter().for_each(|&l| cu.push(cu[cu.len() - 1] + l as i32));
    let slot_ids: Vec<i32> = (0..seqs as i32).map(|s| slots as i32 - 1 - s).collect();
    let state0 = rng.normals(d.mems() * slots * h * kd * vd, 0.5);
    let conv0 = rng.normals(d.mems() * slots * d.channels() * w, 1.0);
    let dims =
        json!({"memories": m, "topk": k, "heads": h, "head_k": kd, "head_v": vd, "slots": slots, "dtype": "f32"});
    let with = |extra: Value| {
        let mut p = dims.clone();
        extra.as_object().unwrap().iter().for_each(|(key, v)| p[key] = v.clone());
        p
    };

    // Prefill: permute, short conv, chunked rule, unpermute.
    let mut i = TensorMap::new();
    i.insert("idx".into(), i32s(&idx));
    i.insert("cu_seqlens".into(), i32s(&cu));
    let perm = run("mom.permute", b, &json!({"tokens": tokens, "seqs": seqs, "memories": m, "topk": k}), &i);
    let rows = tokens * (k + 1);
    let mut i = TensorMap::new();
    i.insert("x".into(), f32s(&x));
    i.insert("order".into(), perm["order"].clone());
    i.insert("cu_mem".into(), perm["cu_mem"].clone());
    i.insert("slot_ids".into(), i32s(&slot_ids));
    i.insert("conv_w".into(), f32s(&conv_w));
    i.insert("gate_params".into(), f32s(&gp));
    i.insert("conv_state".into(), f32s(&conv0));
    let conv = run("mom.short_conv", b, &with(json!({"tokens": tokens, "seqs": seqs})), &i);
    let mut i = TensorMap::new();
    i.insert("qkv".into(), conv["qkv"].clone());
    i.insert("gb".into(), conv["gb"].clone());
    i.insert("cu".into(), perm["cu_mem"].clone());
    i.insert("slot_ids".into(), i32s(&slot_ids));
    i.insert("state".into(), f32s(&state0));
    let chunk_p = json!({"streams": d.mems() * seqs, "seqs": seqs, "rows": rows, "heads": h, "head_k": kd,
        "head_v": vd, "slots": slots, "dtype": "f32"});
    let chunk = run("mom.gated_delta_chunk", b, &chunk_p, &i);
    let mut i = TensorMap::new();
    i.insert("y".into(), chunk["o"].clone());
    i.insert("inverse".into(), perm["inverse"].clone());
    i.insert("weights".into(), f32s(&weights));
    let un_p = json!({"tokens": tokens, "topk": k, "width": d.hv(), "rows": rows, "dtype": "f32"});
    let out = run("mom.unpermute", b, &un_p, &i)["out"].to_f64();

    // Decode: step t runs the sequences that have a token t.
    let (mut state, mut cs) = (state0, conv0);
    let mut want = vec![0.0; tokens * d.hv()];
    for t in 0..lens.iter().copied().max().unwrap_or(0) {
        let live: Vec<usize> = (0..seqs).filter(|&s| t < lens[s]).collect();
        let toks: Vec<usize> = live.iter().map(|&s| cu[s] as usize + t).collect();
        let mut i = TensorMap::new();
        i.insert("x".into(), f32s(&toks.iter().flat_map(|&tk| x[tk * pw..(tk + 1) * pw].to_vec()).collect::<Vec<_>>()));
        i.insert("conv_w".into(), f32s(&conv_w));
        i.insert("gate_params".into(), f32s(&gp));
        i.insert(
            "idx".into(),
            i32s(&toks.iter().flat_map(|&tk| idx[tk * k..(tk + 1) * k].to_vec()).collect::<Vec<_>>()),
        );
        i.insert(
            "weights".into(),
            f32s(&toks.iter().flat_map(|&tk| weights[tk * k..(tk + 1) * k].to_vec()).collect::<Vec<_>>()),
        );
        i.insert("slot_ids".into(), i32s(&live.iter().map(|&s| slot_ids[s]).collect::<Vec<_>>()));
        i.insert("state".into(), f32s(&state));
        i.insert("conv_state".into(), f32s(&cs));
        let o = run("mom.gated_delta_step", b, &with(json!({"batch": live.len()})), &i);
        state = o["state"].to_f64();
        cs = o["conv_state"].to_f64();
        let ov = o["o"].to_f64();
        for (n, &tk) in toks.iter().enumerate() {
            want[tk * d.hv()..(tk + 1) * d.hv()].copy_from_slice(&ov[n * d.hv()..(n + 1) * d.hv()]);
        }
    }
    let what = format!("{} lens {lens:?} strong {strong}", b.describe());
    assert!(rel(&out, &want) < 2e-4, "{what}: outputs differ, rel L2 {:.2e}", rel(&out, &want));
    assert!(rel(&chunk["state"].to_f64(), &state) < 2e-4, "{what}: states differ");
    assert!(rel(&conv["conv_state"].to_f64(), &cs) < 1e-6, "{what}: conv states differ");
}

fn top2(rng: &mut Rng) -> Vec<i32> {
    let a = rng.below(4) as i32;
    vec![a, (a + 1 + rng.below(3) as i32) % 4]
}

/// The lengths (1, 63, 64, 65, long), a memory that receives no tokens, every token on
/// one memory, and strong decay: the chunked prefill equals the step token by token.
#[test]
fn prefill_equals_step_token_by_token_on_every_backend() {
    for b in backends() {
        prefill_vs_step(&b, &[1, 63, 64, 65], &top2, false, 1);
        prefill_vs_step(&b, &[150, 2], &top2, false, 2);
        prefill_vs_step(&b, &[20, 33], &|r| vec![r.below(2) as i32, 2], false, 3);
        prefill_vs_step(&b, &[40, 7], &|_| vec![1, 3], false, 4);
        prefill_vs_step(&b, &[70, 5], &top2, true, 5);
    }
}

/// Gathering rows into streams and mixing them back with weights 1/k returns the input.
#[test]
fn permute_then_unpermute_is_the_identity_on_every_backend() {
    let (tokens, k, width) = (37usize, 2usize, 8usize);
    let mut rng = Rng::new(7);
    let idx: Vec<i32> = (0..tokens).flat_map(|_| top2(&mut rng)).collect();
    let x: Vec<f64> = rng.normals(tokens * width, 1.0).iter().map(|&v| f64::from(v as f32)).collect();
    for b in backends() {
        let mut i = TensorMap::new();
        i.insert("idx".into(), i32s(&idx));
        i.insert("cu_seqlens".into(), i32s(&[0, 10, 10, 37]));
        let perm = run(
            "mom.permute",
            &b,
            &json!({"tokens": tokens, "seqs": 3, "memories": 4, "topk": k, "shared": false}),
            &i,
        );
        let order = perm["order"].to_i32();
        let y: Vec<f64> =
            order.iter().flat_map(|&t| x[t as usize * width..(t as usize + 1) * width].to_vec()).collect();
        let mut i = TensorMap::new();
        i.insert("y".into(), f32s(&y));
        i.insert("inverse".into(), perm["inverse"].clone());
        i.insert("weights".into(), f32s(&vec![0.5; tokens * k]));
        let p =
            json!({"tokens": tokens, "topk": k, "shared": false, "width": width, "rows": tokens * k, "dtype": "f32"});
        let out = run("mom.unpermute", &b, &p, &i)["out"].to_f64();
        assert_eq!(out, x, "{}: out != x", b.describe());
        // Within each stream, tokens keep their time order.
        let cu = perm["cu_mem"].to_i32();
        for g in 0..cu.len() - 1 {
            let s = &order[cu[g] as usize..cu[g + 1] as usize];
            assert!(s.windows(2).all(|w| w[0] < w[1]), "{}: stream {g} out of order", b.describe());
        }
    }
}

/// Equal logits route to the lowest memories with equal weights, on every backend.
#[test]
fn routing_ties_go_to_the_lower_index() {
    for b in backends() {
        let mut i = TensorMap::new();
        i.insert("logits".into(), f32s(&[0.25; 12]));
        let o = run("mom.route", &b, &json!({"tokens": 2, "memories": 6, "topk": 3, "dtype": "f32"}), &i);
        assert_eq!(o["idx"].to_i32(), vec![0, 1, 2, 0, 1, 2], "{}", b.describe());
        assert!(o["weights"].to_f64().iter().all(|&w| (w - 1.0 / 3.0).abs() < 1e-6));
    }
}

#[test]
fn bad_shapes_and_buffers_are_errors() {
    let step = |f: &dyn Fn(&mut Value)| {
        let mut p = json!({"batch": 2, "memories": 4, "topk": 2, "heads": 1, "head_k": 16, "head_v": 16,
            "slots": 3, "dtype": "f32"});
        f(&mut p);
        GatedDeltaStep::new(serde_json::from_value::<GatedDeltaStepParams>(p).unwrap())
    };
    assert!(step(&|_| {}).is_ok());
    assert!(step(&|p| p["head_k"] = json!(12)).is_err(), "head size not a multiple of 8");
    assert!(step(&|p| p["head_v"] = json!(264)).is_err(), "head size above 256");
    assert!(step(&|p| p["topk"] = json!(5)).is_err(), "top-k above the memories");
    assert!(step(&|p| p["conv"] = json!(9)).is_err(), "conv wider than 8");
    assert!(step(&|p| p["slots"] = json!(usize::MAX / 2)).is_err(), "pool overflows 32-bit indexing");
    let chunk = |c: usize, streams: usize| {
        GatedDeltaChunk::new(GatedDeltaChunkParams {
            streams,
            seqs: 2,
            rows: 10,
            heads: 1,
            head_k: 8,
            head_v: 8,
            slots: 2,
            dtype: DType::F32,
            chunk: c,
            rule: Default::default(),
            v_first: false,
            scale: None,
        })
    };
    assert!(chunk(48, 4).is_err(), "chunk 48");
    assert!(chunk(64, 3).is_err(), "streams not a multiple of seqs");
    let plan = chunk(64, 4).unwrap();
    // A state pool too small is an error naming the buffer, never an out-of-bounds access.
    let (qkv, gb) = (vec![0f32; 10 * 24], vec![0f32; 20]);
    let mut st = vec![0f32; 2 * 2 * 64 - 1];
    let mut o = vec![0f32; 80];
    let status = Status::new(&Backend::Cpu).unwrap();
    let e = plan.run_cpu(&qkv, &gb, &[0, 2, 4, 6, 8], &[0, 1], &mut st, &mut o, &status).unwrap_err();
    assert!(e.to_string().contains("state"), "{e}");
    assert!(plan.validate(&[0, 2, 4, 6, 11], &[0, 1]).is_err(), "cu past the rows");
    assert!(plan.validate(&[0, 2, 1, 6, 8], &[0, 1]).is_err(), "decreasing cu");
    assert!(plan.validate(&[0, 2, 4, 6, 8], &[1, 1]).is_err(), "repeated slot");
    assert!(plan.validate(&[0, 2, 4, 6, 8], &[0, 2]).is_err(), "slot outside the pool");
    assert_eq!(plan.tensors().len(), 6);
}

/// One sequence cut into 2 and 4 pieces: each piece runs from a zero state (`gated_delta_chunk`
/// on a zeroed pool) with its transition (`transport`); the host chains the incoming states
/// `S_in(j+1) = P_j S_in(j) + S0_j` (what an all-gather across GPUs would exchange) and
/// `apply_state` adds them: outputs and the final state equal one pass.
#[test]
fn a_sequence_in_pieces_equals_one_pass_on_every_backend() {
    let (t, h, kd, vd) = (130usize, 2usize, 16usize, 24usize);
    let w = h * (2 * kd + vd);
    let mut rng = Rng::new(11);
    let qkv = rng.normals(t * w, 1.0);
    let gb: Vec<f64> = (0..t)
        .flat_map(|_| [-rng.range(0.0, 0.5), -rng.range(0.0, 0.5), rng.range(0.0, 1.0), rng.range(0.0, 1.0)])
        .collect();
    let s0 = rng.normals(h * kd * vd, 0.5);
    let piece = |n: usize| {
        json!({"streams": n, "seqs": n, "rows": t, "heads": h, "head_k": kd, "head_v": vd,
        "slots": n, "dtype": "f32"})
    };
    for b in backends() {
        let mut i = TensorMap::new();
        i.insert("qkv".into(), f32s(&qkv));
        i.insert("gb".into(), f32s(&gb));
        i.insert("cu".into(), i32s(&[0, t as i32]));
        i.insert("slot_ids".into(), i32s(&[0]));
        i.insert("state".into(), f32s(&s0));
        let full = run("mom.gated_delta_chunk", &b, &piece(1), &i);
        for cu in [vec![0i32, 61, 130], vec![0, 1, 64, 65, 130]] {
            let n = cu.len() - 1;
            let ids: Vec<i32> = (0..n as i32).collect();
            let mut i = TensorMap::new();
            i.insert("qkv".into(), f32s(&qkv));
            i.insert("gb".into(), f32s(&gb));
            i.insert("cu".into(), i32s(&cu));
            i.insert("slot_ids".into(), i32s(&ids));
            i.insert("state".into(), f32s(&vec![0.0; n * h * kd * vd]));
            let zero = run("mom.gated_delta_chunk", &b, &piece(n), &i);
            i.remove("state");
            i.insert("trans".into(), f32s(&vec![0.0; n * h * kd * kd]));
            let tr = run("mom.transport", &b, &piece(n), &i);
            let (sig, pm) = (zero["state"].to_f64(), tr["trans"].to_f64());
            // S_in(0) = s0; S_in(j+1) = P_j S_in(j) + S0_j, per head.
            let mut s_in = s0.clone();
            for j in 0..n - 1 {
                let mut next = vec![0.0; h * kd * vd];
                for hh in 0..h {
                    for a in 0..kd {
                        for c in 0..vd {
                            let e = (j * h + hh) * kd * vd + a * vd + c;
                            next[hh * kd * vd + a * vd + c] = sig[e]
                                + (0..kd)
                                    .map(|x| {
                                        pm[(j * h + hh) * kd * kd + a * kd + x]
                                            * s_in[j * h * kd * vd + hh * kd * vd + x * vd + c]
                                    })
                                    .sum::<f64>();
                        }
                    }
                }
                s_in.extend(next);
            }
            let mut a = TensorMap::new();
            a.insert("s_in".into(), f32s(&s_in));
            a.insert("trans".into(), tr["trans"].clone());
            a.insert("qt".into(), tr["qt"].clone());
            a.insert("cu".into(), i32s(&cu));
            a.insert("slot_ids".into(), i32s(&ids));
            a.insert("state".into(), zero["state"].clone());
            a.insert("o".into(), zero["o"].clone());
            let got = run("mom.apply_state", &b, &piece(n), &a);
            let (o, want) = (got["o"].to_f64(), full["o"].to_f64());
            assert!(rel(&o, &want) < 1e-4, "{} {n} pieces: o rel L2 {:.2e}", b.describe(), rel(&o, &want));
            let last = &got["state"].to_f64()[(n - 1) * h * kd * vd..];
            let sw = full["state"].to_f64();
            assert!(rel(last, &sw) < 1e-4, "{} {n} pieces: final state rel L2 {:.2e}", b.describe(), rel(last, &sw));
        }
    }
}
