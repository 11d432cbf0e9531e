//! Core family: oracle agreement on every backend, and bad input on every backend.

use half::bf16;
use mllm_kernels::core::{GatherRows, GatherRowsParams, MergeStates, MergeStatesParams, RmsNorm, RmsNormParams};
use mllm_kernels::{Backend, BackendKind, DType, Error, Status};

use crate::common::{backend, verify_family};

#[test]
fn core_matches_oracle_on_cpu() {
    verify_family("core", &Backend::Cpu);
}

#[test]
fn core_matches_oracle_on_wgpu() {
    if let Some(b) = backend(BackendKind::Wgpu) {
        verify_family("core", &b);
    }
}

#[test]
fn core_matches_oracle_on_cuda() {
    if let Some(b) = backend(BackendKind::Cuda) {
        verify_family("core", &b);
    }
}

fn rms(rows: usize, cols: usize, dtype: DType) -> RmsNormParams {
    RmsNormParams { rows, cols, eps: 1e-6, dtype, x_stride: None, y_stride: None }
}

fn merge(states: usize, dim: usize, dtype: DType) -> MergeStatesParams {
    MergeStatesParams { states, dim, dtype, o1_stride: None, o2_stride: None, o_stride: None }
}

fn is_invalid_params<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::InvalidParams(_)) | Err(Error::DType(_)))
}

#[test]
fn bad_params_are_rejected_by_plans() {
    assert!(is_invalid_params(RmsNorm::new(rms(0, 8, DType::F32))), "zero rows");
    assert!(is_invalid_params(RmsNorm::new(rms(4, 0, DType::F32))), "zero cols");
    assert!(is_invalid_params(RmsNorm::new(rms(4, 8, DType::I8))), "integer dtype");
    assert!(is_invalid_params(RmsNorm::new(RmsNormParams { eps: -1.0, ..rms(4, 8, DType::F32) })), "negative eps");
    assert!(is_invalid_params(RmsNorm::new(RmsNormParams { eps: f32::NAN, ..rms(4, 8, DType::F32) })), "NaN eps");
    assert!(
        is_invalid_params(RmsNorm::new(RmsNormParams { x_stride: Some(7), ..rms(4, 8, DType::F32) })),
        "stride < cols"
    );
    assert!(
        is_invalid_params(RmsNorm::new(RmsNormParams { y_stride: Some(usize::MAX / 2), ..rms(4, 8, DType::F32) })),
        "overflow"
    );
    assert!(is_invalid_params(MergeStates::new(merge(0, 8, DType::F16))), "zero states");
    assert!(is_invalid_params(MergeStates::new(merge(3, 0, DType::F16))), "zero dim");
    assert!(
        is_invalid_params(MergeStates::new(MergeStatesParams { o_stride: Some(2), ..merge(3, 8, DType::F16) })),
        "o stride"
    );
    let g = GatherRowsParams { rows: 0, src_rows: 4, cols: 4, dtype: DType::F32, src_stride: None, out_stride: None };
    assert!(is_invalid_params(GatherRows::new(g.clone())), "zero rows");
    assert!(is_invalid_params(GatherRows::new(GatherRowsParams { rows: 2, src_rows: 0, ..g })), "empty source");
}

fn expect_shape<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(Error::Shape { .. }) => {}
        other => panic!("{what}: expected a Shape error, got {other:?}"),
    }
}

#[test]
fn bad_buffers_are_errors_on_cpu() {
    let p = RmsNorm::new(rms(3, 5, DType::F32)).unwrap();
    let (x, w, mut y) = (vec![1f32; 15], vec![1f32; 5], vec![0f32; 15]);
    expect_shape(p.run_cpu(&x[..14], &w, &mut y), "short x");
    expect_shape(p.run_cpu(&x, &w[..4], &mut y), "short w");
    expect_shape(p.run_cpu(&x, &w, &mut y[..10]), "short y");
    let xb = vec![bf16::ONE; 15];
    let wb = vec![bf16::ONE; 5];
    let mut yb = vec![bf16::ZERO; 15];
    assert!(matches!(p.run_cpu(&xb, &wb, &mut yb), Err(Error::DType(_))), "bf16 buffers on an f32 plan");

    let m = MergeStates::new(merge(4, 3, DType::F32)).unwrap();
    let (o1, l1) = (vec![0f32; 12], vec![0f32; 4]);
    let (mut o, mut l) = (vec![0f32; 12], vec![0f32; 4]);
    expect_shape(m.run_cpu(&o1, &l1[..3], &o1, &l1, &mut o, &mut l), "short lse1");
    expect_shape(m.run_cpu(&o1, &l1, &o1[..11], &l1, &mut o, &mut l), "short o2");
    expect_shape(m.run_cpu(&o1, &l1, &o1, &l1, &mut o, &mut l[..2]), "short lse");
}

#[test]
fn gather_rows_flags_bad_indices_and_validates() {
    let g = GatherRows::new(GatherRowsParams {
        rows: 3,
        src_rows: 4,
        cols: 2,
        dtype: DType::F32,
        src_stride: None,
        out_stride: None,
    })
    .unwrap();
    assert!(g.validate_indices(&[0, 3, 1]).is_ok());
    assert!(matches!(g.validate_indices(&[0, 4, 1]), Err(Error::InvalidInput(_))));
    assert!(matches!(g.validate_indices(&[-1, 0, 1]), Err(Error::InvalidInput(_))));
    let mut st = Status::new(&Backend::Cpu).unwrap();
    let src: Vec<f32> = (0..8).map(|v| v as f32).collect();
    let mut out = vec![f32::NAN; 6];
    g.run_cpu(&src, &[3, 9, 0], &mut out, &st).unwrap();
    assert_eq!(out, vec![6.0, 7.0, 0.0, 0.0, 0.0, 1.0]);
    let err = st.check(&Backend::Cpu).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    st.check(&Backend::Cpu).expect("check clears the word");
}

#[test]
fn bad_buffers_are_errors_on_wgpu() {
    let Some(b @ Backend::Wgpu(_)) = backend(BackendKind::Wgpu) else {
        return;
    };
    let Backend::Wgpu(w) = &b else { unreachable!() };
    let p = RmsNorm::new(rms(3, 5, DType::BF16)).unwrap();
    // 15 bf16 = 30 bytes -> 32-byte buffers; 28 bytes is one element short.
    let full = w.upload(&[0u8; 32]).unwrap();
    let short = w.upload(&[0u8; 28]).unwrap();
    let wts = w.upload(&[0u8; 12]).unwrap();
    let r = w.run_blocking(|enc| p.run_wgpu(w, enc, (&short).into(), (&wts).into(), (&full).into()));
    expect_shape(r, "short x");
    let r = w.run_blocking(|enc| p.run_wgpu(w, enc, (&full).into(), (&wts).into(), (&short).into()));
    expect_shape(r, "short y");
    let tiny_w = w.upload(&[0u8; 8]).unwrap();
    let r = w.run_blocking(|enc| p.run_wgpu(w, enc, (&full).into(), (&tiny_w).into(), (&full).into()));
    expect_shape(r, "short w");
    // An offset that pushes the view past the end.
    let r = w.run_blocking(|enc| {
        p.run_wgpu(w, enc, mllm_kernels::WgpuTensor { buffer: &full, offset: 2 }, (&wts).into(), (&full).into())
    });
    expect_shape(r, "offset past end");
    // A buffer without STORAGE usage is refused before wgpu sees it.
    let mapped = w.device().create_buffer(&mllm_kernels::backend::wgpu::wgpu::BufferDescriptor {
        label: None,
        size: 32,
        usage: mllm_kernels::backend::wgpu::wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let r = w.run_blocking(|enc| p.run_wgpu(w, enc, (&mapped).into(), (&wts).into(), (&full).into()));
    assert!(matches!(r, Err(Error::InvalidParams(_))), "{r:?}");

    let m = MergeStates::new(merge(4, 3, DType::F32)).unwrap();
    let o = w.upload(&[0u8; 48]).unwrap();
    let o_out = w.upload(&[0u8; 48]).unwrap();
    let l = w.upload(&[0u8; 16]).unwrap();
    let l_short = w.upload(&[0u8; 12]).unwrap();
    let l_out = w.upload(&[0u8; 16]).unwrap();
    let r = w.run_blocking(|enc| {
        m.run_wgpu(w, enc, (&o).into(), (&l_short).into(), (&o).into(), (&l).into(), (&o_out).into(), (&l_out).into())
    });
    expect_shape(r, "short lse1");
    let r = w.run_blocking(|enc| {
        m.run_wgpu(w, enc, (&o).into(), (&l).into(), (&o).into(), (&l).into(), (&o).into(), (&l_out).into())
    });
    assert!(matches!(r, Err(Error::InvalidParams(_))), "aliased output: {r:?}");
    // The good call works, so the errors above came from the bad buffers.
    let r = w.run_blocking(|enc| {
        m.run_wgpu(w, enc, (&o).into(), (&l).into(), (&o).into(), (&l).into(), (&o_out).into(), (&l_out).into())
    });
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn bad_buffers_are_errors_on_cuda() {
    let Some(b) = backend(BackendKind::Cuda) else {
        return;
    };
    #[cfg(feature = "cuda")]
    if let Backend::Cuda(c) = &b {
        let s = c.stream();
        let p = RmsNorm::new(rms(3, 5, DType::F32)).unwrap();
        let x = s.alloc_zeros::<f32>(15).unwrap();
        let xs = s.alloc_zeros::<f32>(14).unwrap();
        let w5 = s.alloc_zeros::<f32>(5).unwrap();
        let mut y = s.alloc_zeros::<f32>(15).unwrap();
        let mut ys = s.alloc_zeros::<f32>(10).unwrap();
        expect_shape(p.run_cuda(c, s, &xs, &w5, &mut y), "short x");
        expect_shape(p.run_cuda(c, s, &x, &w5, &mut ys), "short y");
        let xb = s.alloc_zeros::<bf16>(15).unwrap();
        let wb = s.alloc_zeros::<bf16>(5).unwrap();
        let mut yb = s.alloc_zeros::<bf16>(15).unwrap();
        assert!(matches!(p.run_cuda(c, s, &xb, &wb, &mut yb), Err(Error::DType(_))));
        p.run_cuda(c, s, &x, &w5, &mut y).expect("good call");
        let m = MergeStates::new(merge(4, 3, DType::F32)).unwrap();
        let o = s.alloc_zeros::<f32>(12).unwrap();
        let l = s.alloc_zeros::<f32>(4).unwrap();
        let ls = s.alloc_zeros::<f32>(3).unwrap();
        let mut oo = s.alloc_zeros::<f32>(12).unwrap();
        let mut lo = s.alloc_zeros::<f32>(4).unwrap();
        expect_shape(m.run_cuda(c, s, &o, &ls, &o, &l, &mut oo, &mut lo), "short lse1");
        m.run_cuda(c, s, &o, &l, &o, &l, &mut oo, &mut lo).expect("good call");
        s.synchronize().unwrap();
    }
    let _ = b;
}

/// Every f16 and bf16 bit pattern survives a device round trip (load to f32, store back) bit for
/// bit, NaNs staying NaN: the WGSL conversions are written by hand, so all 65536 are checked.
#[test]
fn every_16_bit_pattern_round_trips_on_gpu_backends() {
    use mllm_kernels::harness::{run_kernel, HostTensor, TensorMap};
    let k = mllm_kernels::registry::kernels().into_iter().find(|k| k.id() == "core.gather_rows").unwrap();
    for b in crate::common::backends().into_iter().filter(|b| b.kind() != BackendKind::Cpu) {
        for dtype in [DType::F16, DType::BF16] {
            let params = serde_json::json!({"rows": 256, "src_rows": 256, "cols": 256, "dtype": dtype});
            let bits: Vec<u16> = (0..=u16::MAX).collect();
            let mut inputs = TensorMap::new();
            inputs.insert(
                "src".into(),
                HostTensor { dtype, shape: vec![65536], bytes: bytemuck::cast_slice(&bits).to_vec() },
            );
            inputs.insert("idx".into(), HostTensor::from_i32(&[256], &(0..256).collect::<Vec<i32>>()));
            let (outs, status) = run_kernel(k, &b, &params, &inputs).unwrap();
            assert_eq!(status, 0);
            let got: Vec<u16> = bytemuck::pod_collect_to_vec(&outs["out"].bytes);
            let nan = |v: u16| match dtype {
                DType::F16 => v & 0x7c00 == 0x7c00 && v & 0x03ff != 0,
                _ => v & 0x7f80 == 0x7f80 && v & 0x007f != 0,
            };
            for (i, (&g, &w)) in got.iter().zip(&bits).enumerate() {
                assert!(
                    g == w || (nan(w) && nan(g)),
                    "{dtype} pattern {i:#06x} came back as {g:#06x} on {}",
                    b.describe()
                );
            }
        }
    }
}
