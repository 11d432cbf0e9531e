//! `bench`: fixed iteration counts, inputs rotated among enough copies to exceed twice the L2
//! cache (as a model's many layers would), and the device's own ceilings measured in the same
//! run: copy bandwidth and the launch floor.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::{launch_once, stage, Case, DevMap, Kernel, Launch, Rng};
use crate::backend::{Backend, Status};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// What the device can do, measured by the tool on that device.
#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// The device, as [`Backend::describe`] words it.
    pub device: String,
    /// Device-to-device copy, counting read and write bytes.
    pub copy_gbps: f64,
    /// An empty launch, in microseconds.
    pub launch_floor_us: f64,
    /// L2 size the rotation had to beat (bytes; 0 where unknown or not a GPU).
    pub l2_bytes: usize,
    /// How times were taken: every row of this backend (the ceilings too) used the same method.
    pub timing: Timing,
}

/// How a backend's times are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// CUDA events around the launches on the stream.
    CudaEvents,
    /// GPU timestamps written into the command encoder before and after the dispatches.
    GpuTimestamps,
    /// Host wall clock around a blocking submission: includes submission latency.
    WallClock,
}

impl Timing {
    /// The method for `backend`.
    pub fn of(backend: &Backend) -> Timing {
        match backend {
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => Timing::CudaEvents,
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) if w.has_encoder_timestamps() => Timing::GpuTimestamps,
            _ => Timing::WallClock,
        }
    }

    /// The method in words, for the report's header.
    pub fn describe(self) -> &'static str {
        match self {
            Timing::CudaEvents => "CUDA events",
            Timing::GpuTimestamps => "GPU timestamps",
            Timing::WallClock => "wall clock per submission (includes submission latency)",
        }
    }
}

/// One bench row.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `family.kernel`.
    pub kernel: String,
    /// `cpu`, `cuda` or `wgpu`.
    pub backend: String,
    /// The case's dtype tag (`bf16`, ...).
    pub dtype: String,
    /// The case's label.
    pub shape: String,
    /// Timed launches (after two untimed warm-up launches).
    pub iters: usize,
    /// Copies of the tensors the launches rotate among (1 to 64, enough to exceed 2x L2).
    pub copies: usize,
    /// Mean time of one launch, in microseconds.
    pub time_us: f64,
    /// The plan's bytes (every tensor read or written once, scratch excluded) per `time_us`.
    pub gbps: f64,
    /// The plan's flops per `time_us`, in TFLOP/s (0 for kernels that declare none).
    pub tflops: f64,
    /// Share of the measured copy bandwidth.
    pub bw_share: f64,
    /// Under about 20 us: report as latency against the launch floor, not as bandwidth.
    pub latency_bound: bool,
    /// Why the case could not be timed (build, staging or first launch failed); the numbers
    /// are then 0.
    pub error: Option<String>,
}

/// Times `iters` launches after `warm` untimed ones; `f(i)` launches iteration i.
fn time_loop(backend: &Backend, iters: usize, mut f: impl FnMut(&mut Launch, usize) -> Result<()>) -> Result<f64> {
    for i in 0..2 {
        one(backend, &mut f, i)?;
    }
    backend.synchronize()?;
    match backend {
        #[cfg(feature = "cuda")]
        Backend::Cuda(c) => {
            use crate::backend::cuda::cuda_err;
            let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
            let start = c.context().new_event(flags).map_err(cuda_err)?;
            let end = c.context().new_event(flags).map_err(cuda_err)?;
            start.record(c.stream()).map_err(cuda_err)?;
            for i in 0..iters {
                one(backend, &mut f, i)?;
            }
            end.record(c.stream()).map_err(cuda_err)?;
            end.synchronize().map_err(cuda_err)?;
            Ok(f64::from(start.elapsed_ms(&end).map_err(cuda_err)?) * 1e3 / iters as f64)
        }
        #[cfg(feature = "wgpu")]
        Backend::Wgpu(w) => {
            let mut record = |enc: &mut wgpu::CommandEncoder| {
                for i in 0..iters {
                    let mut l = Launch { backend, encoder: Some(&mut *enc) };
                    f(&mut l, i)?;
                }
                Ok(())
            };
            if w.has_encoder_timestamps() {
                let us = w.time_gpu(record)?.ok_or_else(|| Error::Wgpu("timestamps vanished".into()))?;
                return Ok(us / iters as f64);
            }
            let t0 = Instant::now();
            w.run_blocking(&mut record)?;
            Ok(t0.elapsed().as_secs_f64() * 1e6 / iters as f64)
        }
        _ => {
            let t0 = Instant::now();
            for i in 0..iters {
                one(backend, &mut f, i)?;
            }
            Ok(t0.elapsed().as_secs_f64() * 1e6 / iters as f64)
        }
    }
}

fn one(backend: &Backend, f: &mut impl FnMut(&mut Launch, usize) -> Result<()>, i: usize) -> Result<()> {
    match backend {
        #[cfg(feature = "wgpu")]
        Backend::Wgpu(w) => w.run_blocking(|enc| f(&mut Launch { backend, encoder: Some(enc) }, i)),
        _ => f(
            &mut Launch {
                backend,
                #[cfg(feature = "wgpu")]
                encoder: None,
            },
            i,
        ),
    }
}

/// Copy bandwidth and launch floor of `backend`.
pub fn ceilings(backend: &Backend) -> Result<Ceilings> {
    let device = backend.describe();
    match backend {
        Backend::Cpu => {
            let n = 64 << 20;
            let src = vec![1u8; n];
            let mut dst = vec![0u8; n];
            let t0 = Instant::now();
            for _ in 0..5 {
                dst.copy_from_slice(std::hint::black_box(&src));
            }
            std::hint::black_box(&dst);
            let s = t0.elapsed().as_secs_f64() / 5.0;
            Ok(Ceilings {
                device,
                copy_gbps: 2.0 * n as f64 / s / 1e9,
                launch_floor_us: 0.0,
                l2_bytes: 0,
                timing: Timing::WallClock,
            })
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(c) if c.is_emulated() => Err(Error::BackendUnavailable(
            "the emulated CUDA device (cuda-cpu) runs on the CPU: its times say nothing about a GPU. \
             Bench a GPU, or run `verify --backend cuda` on the emulated device"
                .into(),
        )),
        #[cfg(feature = "cuda")]
        Backend::Cuda(c) => {
            use crate::backend::cuda::cuda_err;
            let n = 512usize << 20;
            let src = c.stream().alloc_zeros::<u8>(n).map_err(cuda_err)?;
            let mut dst = c.stream().alloc_zeros::<u8>(n).map_err(cuda_err)?;
            let copy_us = time_loop(backend, 10, |_, _| c.stream().memcpy_dtod(&src, &mut dst).map_err(cuda_err))?;
            let floor = time_loop(backend, 200, |_, _| c.launch_noop())?;
            let l2 = c
                .context()
                .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
                .map_err(cuda_err)?;
            Ok(Ceilings {
                device,
                copy_gbps: 2.0 * n as f64 / (copy_us * 1e-6) / 1e9,
                launch_floor_us: floor,
                l2_bytes: l2.max(0) as usize,
                timing: Timing::CudaEvents,
            })
        }
        #[cfg(feature = "wgpu")]
        Backend::Wgpu(w) => {
            let is_cpu = w.info().device_type == wgpu::DeviceType::Cpu;
            let n: u64 = if is_cpu { 16 << 20 } else { 128 << 20 };
            let mk = || {
                w.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench copy"),
                    size: n,
                    usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            };
            let (src, dst) = (mk(), mk());
            let copy_us = time_loop(backend, 5, |l, _| {
                l.encoder()?.copy_buffer_to_buffer(&src, 0, &dst, 0, n);
                Ok(())
            })?;
            let floor = time_loop(backend, 50, |l, _| w.dispatch_noop(l.encoder()?))?;
            Ok(Ceilings {
                device,
                copy_gbps: 2.0 * n as f64 / (copy_us * 1e-6) / 1e9,
                launch_floor_us: floor,
                // wgpu cannot ask; a GPU's L2 is assumed to be at most 64 MiB.
                l2_bytes: if is_cpu { 0 } else { 64 << 20 },
                timing: Timing::of(backend),
            })
        }
    }
}

/// Benches one case: uploads enough copies of its tensors to rotate past 2x L2, then times.
pub fn bench_case(kernel: &dyn Kernel, backend: &Backend, case: &Case, iters: usize, ceil: &Ceilings) -> BenchRow {
    let mut row = BenchRow {
        kernel: kernel.id(),
        backend: backend.kind().name().into(),
        dtype: case.dtype.name().into(),
        shape: case.label.clone(),
        iters,
        copies: 1,
        time_us: 0.0,
        gbps: 0.0,
        tflops: 0.0,
        bw_share: 0.0,
        latency_bound: false,
        error: None,
    };
    match bench_inner(kernel, backend, case, iters, ceil, &mut row) {
        Ok(()) => row,
        Err(e) => {
            row.error = Some(e.to_string());
            row
        }
    }
}

fn bench_inner(
    kernel: &dyn Kernel,
    backend: &Backend,
    case: &Case,
    iters: usize,
    ceil: &Ceilings,
    row: &mut BenchRow,
) -> Result<()> {
    let plan = kernel.prepare(&case.params)?;
    let cost = plan.cost();
    let inputs = plan.inputs(&case.fixture, &mut Rng::new(0x5eed))?;
    let want = 2 * ceil.l2_bytes;
    let copies = if cost.bytes > 0.0 { ((want as f64 / cost.bytes).ceil() as usize).clamp(1, 64) } else { 1 };
    row.copies = copies;
    let mut sets: Vec<DevMap> = Vec::with_capacity(copies);
    for _ in 0..copies {
        sets.push(stage(&*plan, backend, &inputs)?);
    }
    let mut status = Status::new(backend)?;
    // One checked launch first, so a failing kernel reports its error instead of a time.
    launch_once(&*plan, backend, &mut sets[0], &mut status)?;
    backend.synchronize()?;
    let us = time_loop(backend, iters, |l, i| plan.launch(l, &mut sets[i % copies], &mut status))?;
    if us <= 0.0 {
        return Err(Error::InvalidParams("timer returned zero".into()));
    }
    row.time_us = us;
    row.gbps = cost.bytes / (us * 1e-6) / 1e9;
    row.tflops = cost.flops / (us * 1e-6) / 1e12;
    row.bw_share = if ceil.copy_gbps > 0.0 { row.gbps / ceil.copy_gbps } else { 0.0 };
    row.latency_bound = us < 20.0;
    Ok(())
}

/// Every bench case of every kernel in `kernels` (of `family`, if given).
pub fn bench(
    kernels: &[&'static dyn Kernel],
    backend: &Backend,
    family: Option<&str>,
    iters: usize,
) -> Result<(Ceilings, Vec<BenchRow>)> {
    let cases: Vec<(&dyn Kernel, Case)> = kernels
        .iter()
        .filter(|k| family.is_none_or(|f| f == k.family()))
        .flat_map(|&k| k.bench_cases().into_iter().map(move |c| (k, c)))
        .collect();
    bench_cases(&cases, backend, iters)
}

/// Times the given cases (a user's own shapes: `bench --kernel K --params JSON` or
/// `--cases FILE`) after measuring the device's ceilings, as [`bench()`] does.
pub fn bench_cases(
    cases: &[(&dyn Kernel, Case)],
    backend: &Backend,
    iters: usize,
) -> Result<(Ceilings, Vec<BenchRow>)> {
    let ceil = ceilings(backend)?;
    let rows = cases.iter().map(|(k, case)| bench_case(*k, backend, case, iters, &ceil)).collect();
    Ok((ceil, rows))
}

/// A bench case from a user's params: the label shows them (without the dtype) and the dtype
/// tag is the params' own (a kernel that takes a dtype needs it there; the table shows f32 for
/// one that takes none).
pub fn user_case(params: Value) -> Result<Case> {
    if !params.is_object() {
        return Err(Error::InvalidParams(format!("bench params must be a JSON object, got {params}")));
    }
    // `fixture` shapes the registered cases' random inputs (bad slots, ties, lengths): test data,
    // refused here as `check` refuses it, so no input generator meets knobs it was not built for.
    if let Some(k) = params.as_object().into_iter().flatten().map(|(k, _)| k).find(|k| k.starts_with("fixture")) {
        return Err(Error::InvalidParams(format!(
            "`{k}` is a test-only knob of the registered cases, not a kernel parameter"
        )));
    }
    let dtype = match params.get("dtype") {
        None => DType::F32,
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| Error::InvalidParams(format!("dtype: {e}")))?,
    };
    let label: Vec<String> = params
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "dtype")
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
        .collect();
    Ok(Case::new(label.join(" "), dtype, params))
}

/// A case with its tensors on the device, for external timers (criterion).
pub struct Staged<'a> {
    plan: Box<dyn super::Prepared>,
    backend: &'a Backend,
    dev: DevMap,
    status: Status,
}

impl<'a> Staged<'a> {
    /// Builds `kernel`'s plan for `case`, draws its inputs from a fixed seed and stages them
    /// on `backend` (outputs and scratch allocated and poisoned), with a cleared status word.
    pub fn new(kernel: &dyn Kernel, backend: &'a Backend, case: &Case) -> Result<Self> {
        let plan = kernel.prepare(&case.params)?;
        let inputs = plan.inputs(&case.fixture, &mut Rng::new(0x5eed))?;
        let dev = stage(&*plan, backend, &inputs)?;
        Ok(Self { plan, backend, dev, status: Status::new(backend)? })
    }

    /// One launch, waited for.
    pub fn run(&mut self) -> Result<()> {
        launch_once(&*self.plan, self.backend, &mut self.dev, &mut self.status)?;
        self.backend.synchronize()
    }
}
