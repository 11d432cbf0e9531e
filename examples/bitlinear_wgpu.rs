//! A BitLinear layer in an engine's own wgpu buffers: ternarize the weights on the device at
//! load time, then run the fused norm + int8 quant + ternary GEMV for one decode token.
//!
//! `cargo run --example bitlinear_wgpu`

use mllm_kernels::ternary::{BitLinear, BitLinearParams, QuantizeWeights, QuantizeWeightsParams};
use mllm_kernels::{DType, Plan, Status, WgpuBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = match WgpuBackend::new() {
        Ok(g) => std::sync::Arc::new(g),
        Err(e) => {
            println!("{e}");
            return Ok(());
        }
    };
    // The status word lives on a backend handle; the plans take the WgpuBackend itself.
    let backend = mllm_kernels::Backend::Wgpu(gpu.clone());
    let gpu = &*gpu;
    let (n, k) = (96usize, 200usize);

    // Load time: dense f32 weights -> packed ternary + gamma, on the device.
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let quant = QuantizeWeights::new(QuantizeWeightsParams { n, k, partitions: 1, dtype: DType::F32 })?;
    let wb = gpu.upload(bytemuck::cast_slice(&w))?;
    let ws = gpu.upload(&vec![0u8; 4 * quant.spec("ws")?.len])?;
    let packed = gpu.upload(&vec![0u8; 4 * quant.packed_len()])?;
    let gamma = gpu.upload(&[0u8; 4])?;
    let mut status = Status::new(&backend)?;
    gpu.run_blocking(|enc| {
        quant.run_wgpu(gpu, enc, (&wb).into(), (&ws).into(), (&packed).into(), (&gamma).into(), &status)
    })?;
    status.check(&backend)?;

    // Decode: one token through the fused BitLinear, scratch allocated once by the engine.
    let layer = BitLinear::new(BitLinearParams {
        m: 1,
        n,
        k,
        projections: 1,
        partitions: 1,
        eps: mllm_kernels::ternary::MODEL_EPS,
        dtype: DType::F32,
        glu: false,
        x_stride: None,
        out_stride: None,
        accumulate: false,
        fuse: mllm_kernels::ternary::Fuse::Auto,
    })?;
    // Scratch sizes come from the plan's tensor list (`Plan::scratch`).
    let (q_len, s_len) = (layer.spec("q")?.len, layer.spec("s")?.len);
    let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.13).sin()).collect();
    let norm_w = vec![1.0f32; k];
    let (xb, nb) = (gpu.upload(bytemuck::cast_slice(&x))?, gpu.upload(bytemuck::cast_slice(&norm_w))?);
    let (qb, sb, ob) =
        (gpu.upload(&vec![0u8; q_len])?, gpu.upload(&vec![0u8; 4 * s_len])?, gpu.upload(&vec![0u8; 4 * n])?);
    gpu.run_blocking(|enc| {
        layer.run_wgpu(
            gpu,
            enc,
            (&xb).into(),
            (&nb).into(),
            (&packed).into(),
            (&gamma).into(),
            (&qb).into(),
            (&sb).into(),
            (&ob).into(),
        )
    })?;
    let y: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.download(&ob)?);

    // The same layer on the CPU oracle, from the same packed weights.
    let packed_host: Vec<u32> = bytemuck::pod_collect_to_vec(&gpu.download(&packed)?);
    let gamma_host: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.download(&gamma)?);
    let (mut q, mut s, mut want) = (vec![0i8; q_len], vec![0f32; s_len], vec![0f32; n]);
    layer.run_cpu(&x, &norm_w, &packed_host, &gamma_host[..1], &mut q, &mut s, &mut want)?;
    let err = y[..n].iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("BitLinear {n}x{k} on {}: gamma {:.4}, max |gpu - oracle| = {err:.2e}", gpu.info().name, gamma_host[0]);
    Ok(())
}
