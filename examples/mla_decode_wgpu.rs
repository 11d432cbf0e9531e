//! An engine's MLA decode loop on wgpu: it owns a paged fp8 (E4M3) latent cache with one scale
//! per token, a block table and the sequence lengths; each step appends every sequence's new
//! latent (and rope key) at its next slot, quantized by `append_cache`, and decodes one token
//! per sequence. At the end the last step is checked against the CPU oracle, run on a host
//! mirror of the cache that the CPU append kept.
//!
//! `cargo run --example mla_decode_wgpu`

use mllm_kernels::mla::{AppendCache, AppendCacheParams, MlaDecode, MlaDecodeParams};
use mllm_kernels::{Backend, BackendKind, DType, Plan, Status, E4M3};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(Backend::Wgpu(gpu)) = Backend::open(BackendKind::Wgpu) else {
        println!("no wgpu adapter; install mesa-vulkan-drivers for lavapipe");
        return Ok(());
    };
    let backend = Backend::Wgpu(gpu.clone());
    let (batch, heads, latent, rope, page, max_pages, steps) =
        (3usize, 16usize, 512usize, 64usize, 16usize, 4usize, 40usize);
    let pages = batch * max_pages;
    // The engine's state: every sequence owns max_pages pages (any order works).
    let table: Vec<i32> = (0..pages as i32).rev().collect();
    let mut lens = vec![0i32; batch];
    let w = latent + rope;
    // One byte per cached value, one f32 scale per token.
    let cache = gpu.upload(&vec![0u8; pages * page * w])?;
    let scales = gpu.upload(&vec![0u8; 4 * pages * page])?;
    let table_b = gpu.upload(bytemuck::cast_slice(&table))?;
    let status = Status::new(&backend)?;
    let append = AppendCache::new(AppendCacheParams {
        tokens: batch,
        latent,
        rope,
        page_size: page,
        pages,
        dtype: DType::F32,
        split_cache: false,
        cache_dtype: Some(DType::F8E4M3),
    })?;
    let decode = MlaDecode::new(MlaDecodeParams {
        batch,
        sq: 1,
        heads,
        latent,
        rope,
        page_size: page,
        pages,
        max_pages,
        scale: 1.0 / (w as f32).sqrt(),
        dtype: DType::F32,
        split_cache: false,
        splits: MlaDecode::schedule(batch, 1, heads, max_pages * page, 16),
        cache_dtype: Some(DType::F8E4M3),
    })?;
    // Scratch allocated once from the plan's own list.
    let ws = gpu.upload(&vec![0u8; 4 * decode.spec("ws")?.len])?;
    let (o, lse) = (gpu.upload(&vec![0u8; 4 * batch * heads * latent])?, gpu.upload(&vec![0u8; 4 * batch * heads])?);
    let (mut host_cache, mut host_scales) = (vec![E4M3(0); pages * page * w], vec![0f32; pages * page]);
    let cpu = Status::new(&Backend::Cpu)?;
    let val = |s: usize, i: usize| ((s * 131 + i * 7) % 97) as f32 / 97.0 - 0.5;
    let mut q = vec![];
    for step in 0..steps {
        // This step's new latents, rope keys and queries (a model would produce them).
        let kv_new = (0..batch * latent).map(|i| val(step, i)).collect::<Vec<f32>>();
        let pe_new = (0..batch * rope).map(|i| val(step + 1000, i)).collect::<Vec<f32>>();
        q = (0..batch * heads * w).map(|i| val(step + 7, i)).collect::<Vec<f32>>();
        let slots: Vec<i32> = (0..batch)
            .map(|b| table[b * max_pages + lens[b] as usize / page] * page as i32 + lens[b] % page as i32)
            .collect();
        append.run_cpu(&kv_new, Some(&pe_new), &slots, &mut host_cache, None, Some(&mut host_scales), &cpu)?;
        for l in lens.iter_mut() {
            *l += 1;
        }
        let (kb, pb, sb) = (
            gpu.upload(bytemuck::cast_slice(&kv_new))?,
            gpu.upload(bytemuck::cast_slice(&pe_new))?,
            gpu.upload(bytemuck::cast_slice(&slots))?,
        );
        let (qb, lb) = (gpu.upload(bytemuck::cast_slice(&q))?, gpu.upload(bytemuck::cast_slice(&lens))?);
        // One submission per step: append, then decode (which reads the new rows).
        gpu.run_blocking(|enc| {
            append.run_wgpu(
                &gpu,
                enc,
                (&kb).into(),
                Some((&pb).into()),
                (&sb).into(),
                (&cache).into(),
                None,
                Some((&scales).into()),
                &status,
            )?;
            decode.run_wgpu(
                &gpu,
                enc,
                (&qb).into(),
                (&cache).into(),
                None,
                Some((&scales).into()),
                (&table_b).into(),
                (&lb).into(),
                (&o).into(),
                (&lse).into(),
                (&ws).into(),
                &status,
            )
        })?;
    }
    let mut status = status;
    status.check(&backend)?;
    // The last step against the oracle on the engine's host mirror of the cache.
    let got: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.download(&o)?);
    let (mut want, mut want_lse) = (vec![0f32; got.len()], vec![0f32; batch * heads]);
    let mut ws_cpu = vec![0f32; decode.spec("ws")?.len];
    let scales_cpu = Some(&host_scales[..]);
    decode.run_cpu(&q, &host_cache, None, scales_cpu, &table, &lens, &mut want, &mut want_lse, &mut ws_cpu, &cpu)?;
    let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    if err > 1e-4 {
        return Err(format!("the last step differs from the oracle by {err}").into());
    }
    println!(
        "{steps} steps of {batch} sequences x {heads} heads, L {latent} R {rope}, page {page}, fp8 cache: \
         max |gpu - oracle| = {err:.2e}"
    );
    Ok(())
}
