//! FastV-style pruning at layer K on wgpu, as an engine would run it: the layer's q, k, v live
//! in the engine's buffers; one submission scores the image tokens by the attention the last
//! token pays them (`attn_mass`), keeps the top half (`select`), lays out the kept tokens
//! (`compact`), gathers their q, k, v (`core.gather_rows`) and attends over them causally by
//! original position (`sparse_attention`). The kept count is known on the host (text + k), so
//! nothing is read back between stages. Then one decode step: the next token attends over the
//! pruned cache (`sparse_attention` with `queries`, at its original position). Runs a
//! LLaVA-shaped sequence (576 image tokens) and an AnyRes-shaped one (2880), and checks each
//! against the CPU chain.
//!
//! `cargo run --release --example fastv_wgpu`

use mllm_kernels::core::{GatherRows, GatherRowsParams};
use mllm_kernels::visual::oracle::keep_count;
use mllm_kernels::visual::{
    AttnMass, AttnMassParams, Compact, CompactParams, Select, SelectMode, SelectParams, SparseAttention,
    SparseAttentionParams,
};
use mllm_kernels::{Backend, BackendKind, DType, Status, WgpuTensor};

struct Plans {
    mass: AttnMass,
    select: Select,
    compact: Compact,
    gather_q: GatherRows,
    gather_kv: GatherRows,
    attn: SparseAttention,
    decode: SparseAttention,
}

fn plans(text: (usize, usize), n: usize, heads: usize, dim: usize) -> Result<Plans, mllm_kernels::Error> {
    let tokens = text.0 + n + text.1;
    let k = keep_count(n, 0.5);
    let kept = tokens - n + k;
    let scale = 1.0 / (dim as f32).sqrt();
    let g = |cols| {
        GatherRows::new(GatherRowsParams {
            rows: kept,
            src_rows: tokens,
            cols,
            dtype: DType::F32,
            src_stride: None,
            out_stride: None,
        })
    };
    Ok(Plans {
        mass: AttnMass::new(AttnMassParams {
            seqs: 1,
            tokens,
            rows: 1,
            heads,
            kv_heads: heads,
            dim,
            n,
            scale,
            dtype: DType::F32,
            reduce_heads: Some(true),
            reduce_groups: false,
            has_lse: false,
        })?,
        select: Select::new(SelectParams {
            seqs: 1,
            n,
            mode: SelectMode::TopK,
            k,
            tau: 0.9,
            has_order: false,
            per_seq_k: false,
        })?,
        compact: Compact::new(CompactParams { seqs: 1, tokens, n })?,
        gather_q: g(heads * dim)?,
        gather_kv: g(heads * dim)?,
        attn: SparseAttention::new(SparseAttentionParams {
            seqs: 1,
            tokens: kept,
            heads,
            kv_heads: heads,
            dim,
            scale,
            dtype: DType::F32,
            queries: None,
        })?,
        // The next token over the pruned cache.
        decode: SparseAttention::new(SparseAttentionParams {
            seqs: 1,
            tokens: kept,
            heads,
            kv_heads: heads,
            dim,
            scale,
            dtype: DType::F32,
            queries: Some(1),
        })?,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(Backend::Wgpu(gpu)) = Backend::open(BackendKind::Wgpu) else {
        println!("no wgpu adapter; install mesa-vulkan-drivers for lavapipe");
        return Ok(());
    };
    let backend = Backend::Wgpu(gpu.clone());
    let (heads, dim) = (4usize, 64usize);
    for (name, text, n) in [("LLaVA-1.5", (35, 60), 576usize), ("AnyRes", (35, 60), 2880)] {
        let p = plans(text, n, heads, dim)?;
        let tokens = text.0 + n + text.1;
        let kept = p.attn.params.tokens;
        let val = |s: usize, i: usize| (((s * 7919 + i * 104729) % 1999) as f32 / 1999.0 - 0.5) * 2.0;
        let (q, k, v): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            (0..tokens * heads * dim).map(|i| val(1, i)).collect(),
            (0..tokens * heads * dim).map(|i| val(2, i)).collect(),
            (0..tokens * heads * dim).map(|i| val(3, i)).collect(),
        );
        let (cu, seg, last) = ([0i32, tokens as i32], [text.0 as i32, n as i32], [tokens as i32 - 1]);
        let up = |b: &[u8]| gpu.upload(b);
        let (qb, kb, vb) =
            (up(bytemuck::cast_slice(&q))?, up(bytemuck::cast_slice(&k))?, up(bytemuck::cast_slice(&v))?);
        let (cub, segb, lastb, wb) = (
            up(bytemuck::cast_slice(&cu))?,
            up(bytemuck::cast_slice(&seg))?,
            up(bytemuck::cast_slice(&last))?,
            up(bytemuck::cast_slice(&[1f32]))?,
        );
        let lens = up(bytemuck::cast_slice(&[n as i32]))?;
        let zeros = |elems: usize| gpu.upload(&vec![0u8; 4 * elems.max(1)]);
        let (mass, ws, idx, count) = (zeros(n)?, zeros(heads)?, zeros(n)?, zeros(1)?);
        let (rows, pos, cu_out) = (zeros(tokens)?, zeros(tokens)?, zeros(2)?);
        let (q2, k2, v2) = (zeros(kept * heads * dim)?, zeros(kept * heads * dim)?, zeros(kept * heads * dim)?);
        let (o, lse) = (zeros(kept * heads * dim)?, zeros(kept * heads)?);
        // The decode step's new token: its query, offsets and original position (after the prompt).
        let q_new: Vec<f32> = (0..heads * dim).map(|i| val(4, i)).collect();
        let (cu_new, pos_new) = ([0i32, 1], [tokens as i32]);
        let (qnb, cunb, posnb) = (
            up(bytemuck::cast_slice(&q_new))?,
            up(bytemuck::cast_slice(&cu_new))?,
            up(bytemuck::cast_slice(&pos_new))?,
        );
        let (o_new, lse_new) = (zeros(heads * dim)?, zeros(heads)?);
        let status = Status::new(&backend)?;
        let t0 = std::time::Instant::now();
        gpu.run_blocking(|enc| {
            // The last token's query row is a view into the engine's q.
            let q_last = WgpuTensor { buffer: &qb, offset: (tokens - 1) * heads * dim };
            p.mass.run_wgpu(
                &gpu,
                enc,
                q_last,
                (&lastb).into(),
                (&wb).into(),
                (&kb).into(),
                (&cub).into(),
                (&segb).into(),
                None,
                (&mass).into(),
                (&ws).into(),
                &status,
            )?;
            p.select.run_wgpu(
                &gpu,
                enc,
                (&mass).into(),
                (&lens).into(),
                None,
                None,
                (&idx).into(),
                (&count).into(),
                &status,
            )?;
            p.compact.run_wgpu(
                &gpu,
                enc,
                (&cub).into(),
                (&segb).into(),
                (&idx).into(),
                (&count).into(),
                (&rows).into(),
                (&pos).into(),
                (&cu_out).into(),
                &status,
            )?;
            p.gather_q.run_wgpu(&gpu, enc, (&qb).into(), (&rows).into(), (&q2).into(), &status)?;
            p.gather_kv.run_wgpu(&gpu, enc, (&kb).into(), (&rows).into(), (&k2).into(), &status)?;
            p.gather_kv.run_wgpu(&gpu, enc, (&vb).into(), (&rows).into(), (&v2).into(), &status)?;
            p.attn.run_wgpu(
                &gpu,
                enc,
                (&q2).into(),
                (&k2).into(),
                (&v2).into(),
                (&cu_out).into(),
                (&pos).into(),
                None,
                None,
                (&o).into(),
                (&lse).into(),
                &status,
            )?;
            p.decode.run_wgpu(
                &gpu,
                enc,
                (&qnb).into(),
                (&k2).into(),
                (&v2).into(),
                (&cu_out).into(),
                (&pos).into(),
                Some((&cunb).into()),
                Some((&posnb).into()),
                (&o_new).into(),
                (&lse_new).into(),
                &status,
            )
        })?;
        let secs = t0.elapsed().as_secs_f64();
        let mut status = status;
        status.check(&backend)?;
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.download(&o)?);
        let got_new: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.download(&o_new)?);

        // The same chain on the CPU oracle.
        let cpu = Status::new(&Backend::Cpu)?;
        let (mut m, mut w2) = (vec![0f32; n], vec![0f32; heads]);
        p.mass.run_cpu(&q[(tokens - 1) * heads * dim..], &last, &[1.0], &k, &cu, &seg, None, &mut m, &mut w2, &cpu)?;
        let (mut ix, mut c) = (vec![0i32; n], vec![0i32; 1]);
        p.select.run_cpu(&m, &[n as i32], None, None, &mut ix, &mut c, &cpu)?;
        let (mut r, mut ps, mut co) = (vec![0i32; tokens], vec![0i32; tokens], vec![0i32; 2]);
        p.compact.run_cpu(&cu, &seg, &ix, &c, &mut r, &mut ps, &mut co, &cpu)?;
        let gather = |src: &[f32]| -> Vec<f32> {
            r[..kept]
                .iter()
                .flat_map(|&t| src[t as usize * heads * dim..(t as usize + 1) * heads * dim].to_vec())
                .collect()
        };
        let (mut want, mut wl) = (vec![0f32; kept * heads * dim], vec![0f32; kept * heads]);
        let (gk, gv) = (gather(&k), gather(&v));
        p.attn.run_cpu(&gather(&q), &gk, &gv, &co, &ps[..kept], None, None, &mut want, &mut wl, &cpu)?;
        let (mut want_new, mut wl_new) = (vec![0f32; heads * dim], vec![0f32; heads]);
        let dec_q = (Some(&cu_new[..]), Some(&pos_new[..]));
        p.decode.run_cpu(&q_new, &gk, &gv, &co, &ps[..kept], dec_q.0, dec_q.1, &mut want_new, &mut wl_new, &cpu)?;
        let err = got
            .iter()
            .chain(&got_new)
            .zip(want.iter().chain(&want_new))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "{name}: {tokens} tokens ({n} image) -> {kept} kept ({} image), {heads} heads x {dim}, then a decode step: {secs:.3} s on {}, max |gpu - oracle| = {err:.2e}",
            c[0],
            gpu.info().name
        );
        if err > 1e-4 {
            return Err(format!("{name}: the pipeline differs from the oracle by {err}").into());
        }
    }
    Ok(())
}
