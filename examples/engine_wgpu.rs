//! Linking into an engine that owns its wgpu device: raw `wgpu::Buffer`s, the engine's own
//! command encoder, one submit for the whole forward pass.
//!
//! `cargo run --example engine_wgpu`

use mllm_kernels::backend::wgpu::wgpu;
use mllm_kernels::core::{RmsNorm, RmsNormParams};
use mllm_kernels::{DType, WgpuBackend, WgpuTensor};
use wgpu::util::DeviceExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The engine's device (here made the usual way; any adapter works, lavapipe included).
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = match pollster::block_on(instance.request_adapter(&Default::default())) {
        Ok(a) => a,
        Err(e) => {
            println!("no wgpu adapter ({e}); install mesa-vulkan-drivers for lavapipe");
            return Ok(());
        }
    };
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))?;
    let kernels = WgpuBackend::from_device(device, queue, info);
    let (device, queue) = (kernels.device(), kernels.queue());

    // A hidden-state buffer of 4 rows x 6 f32, normalized in place into rows 2.. of a larger
    // output buffer: views and offsets, no copies.
    let (rows, cols) = (4usize, 6usize);
    let x: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let w = vec![1.0f32; cols];
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let xb = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&x),
        usage,
    });
    let wb = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&w),
        usage,
    });
    let yb = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: ((rows + 2) * cols * 4) as u64,
        usage,
        mapped_at_creation: false,
    });
    let read = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: yb.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let plan =
        RmsNorm::new(RmsNormParams { rows, cols, eps: 1e-6, dtype: DType::F32, x_stride: None, y_stride: None })?;
    let mut enc = device.create_command_encoder(&Default::default());
    plan.run_wgpu(&kernels, &mut enc, (&xb).into(), (&wb).into(), WgpuTensor { buffer: &yb, offset: 2 * cols })?;
    enc.copy_buffer_to_buffer(&yb, 0, &read, 0, yb.size());
    queue.submit([enc.finish()]);
    read.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::wait_indefinitely())?;
    let y: Vec<f32> = bytemuck::cast_slice(&read.slice(..).get_mapped_range()?).to_vec();

    let mut want = vec![0f32; rows * cols];
    plan.run_cpu(&x, &w, &mut want)?;
    let err = y[2 * cols..].iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("rmsnorm on {}: max |gpu - oracle| = {err:.2e}", kernels.info().name);
    Ok(())
}
