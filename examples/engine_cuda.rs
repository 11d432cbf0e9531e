//! Linking into an engine that owns its CUDA context and stream: cudarc buffers in, nothing
//! allocated or synchronized by the kernel crate.
//!
//! `cargo run --example engine_cuda` (where there is no CUDA device it says why and exits with
//! status 2, a skip, not a success)

use half::bf16;
use mllm_kernels::backend::cuda::probe;
use mllm_kernels::core::{MergeStates, MergeStatesParams};
use mllm_kernels::{CudaBackend, DType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Err(why) = probe() {
        eprintln!("SKIPPED, nothing ran: no CUDA here: {why}");
        std::process::exit(2);
    }
    // The engine's context and its own stream.
    let ctx = cudarc::driver::CudaContext::new(0)?;
    let stream = ctx.new_stream()?;
    let kernels = CudaBackend::from_context(ctx)?;

    // Two split-KV halves of 8 heads x 512 latent dims, merged as MLA decode does.
    let (states, dim) = (8usize, 512usize);
    let o1: Vec<bf16> = (0..states * dim).map(|i| bf16::from_f32((i as f32 * 0.01).cos())).collect();
    let o2: Vec<bf16> = (0..states * dim).map(|i| bf16::from_f32((i as f32 * 0.02).sin())).collect();
    let l1: Vec<f32> = (0..states).map(|i| i as f32 * 0.5).collect();
    let l2: Vec<f32> = (0..states).map(|i| if i == 0 { f32::NEG_INFINITY } else { 1.0 }).collect();
    let (do1, do2) = (stream.clone_htod(&o1)?, stream.clone_htod(&o2)?);
    let (dl1, dl2) = (stream.clone_htod(&l1)?, stream.clone_htod(&l2)?);
    let mut out = stream.alloc_zeros::<bf16>(states * dim)?;
    let mut lse = stream.alloc_zeros::<f32>(states)?;

    let plan = MergeStates::new(MergeStatesParams {
        states,
        dim,
        dtype: DType::BF16,
        o1_stride: None,
        o2_stride: None,
        o_stride: None,
    })?;
    plan.run_cuda(&kernels, &stream, &do1, &dl1, &do2, &dl2, &mut out, &mut lse)?;
    let got: Vec<f32> = stream.clone_dtoh(&lse)?;

    let mut want_o = vec![bf16::ZERO; states * dim];
    let mut want_l = vec![0f32; states];
    plan.run_cpu(&o1, &l1, &o2, &l2, &mut want_o, &mut want_l)?;
    let err = got.iter().zip(&want_l).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("merge_states on {}: max |lse - oracle| = {err:.2e}", kernels.name());
    Ok(())
}
