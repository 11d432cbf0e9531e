//! `bench --counters`: what makes a kernel slow, counted on the emulated CUDA device instead of
//! timed on a GPU. Its counters build (`scripts/cuda-cpu.sh --counters`, see
//! `cuda-cpu/counters.h`) sees every load and store of every launch; this reads them back per
//! launch and sets them against the plan's own useful bytes (the compulsory traffic).
//!
//! Per case: global load and store efficiency (bytes requested / 32-byte sectors touched),
//! requested and modelled DRAM traffic (through a cold 50 MB L2) over the compulsory bytes,
//! shared-memory wavefronts over the conflict-free ideal, registers and occupancy from the sm_90
//! cubin, waves on 132 SMs, the share of multiply-adds on `mma`, and the memory-bound floor
//! (compulsory bytes at the H100's measured copy bandwidth). None of it is a time.

use serde::Serialize;

use super::{launch_once, stage, Case, Kernel, Rng};
use crate::backend::{Backend, Status};
use crate::error::{Error, Result};

/// Copy bandwidth of the H100 the floors assume (`../shared/measurements/h100-2026-11-26.md`).
pub const H100_COPY_GBPS: f64 = 2978.0;

/// One launch's counters, exactly as `cuda-cpu/counters.h` lays out `CudaCpuLaunch`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Zeroable)]
struct RawLaunch {
    kernel: [u8; 64],
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared: u64,
    static_shared: u64,
    registers: i32,
    blocks_per_sm: i32,
    waves: f64,
    load_bytes: u64,
    store_bytes: u64,
    load_requests: u64,
    load_sectors: u64,
    store_requests: u64,
    store_sectors: u64,
    unique_sectors: u64,
    dram_read_bytes: u64,
    dram_write_bytes: u64,
    shared_requests: u64,
    shared_wavefronts: u64,
    shared_ideal_wavefronts: u64,
    mma_macs: u64,
}

/// One launch of a case, as the report and `--json` give it.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchCounters {
    /// The CUDA entry point.
    pub kernel: String,
    /// Grid and block dimensions.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
    /// Registers per thread in the sm_90 cubin (0: unknown, no cubin was built).
    pub registers: i32,
    /// Static plus dynamic shared memory per block, bytes.
    pub shared_bytes: u64,
    /// Resident blocks per SM on the modelled card (0: unknown).
    pub blocks_per_sm: i32,
    /// Blocks over (blocks per SM x 132 SMs).
    pub waves: f64,
    /// Global bytes requested by loads and by stores.
    pub load_bytes: u64,
    /// See `load_bytes`.
    pub store_bytes: u64,
    /// Warp-level global load requests and the sectors they touched.
    pub load_requests: u64,
    /// See `load_requests`.
    pub load_sectors: u64,
    /// Warp-level global store requests and the sectors they touched.
    pub store_requests: u64,
    /// See `store_requests`.
    pub store_sectors: u64,
    /// Distinct sectors touched.
    pub unique_sectors: u64,
    /// DRAM traffic through the L2 model, read and written.
    pub dram_bytes: u64,
    /// Shared-memory requests, the wavefronts they took and the conflict-free ideal.
    pub shared_requests: u64,
    /// See `shared_requests`.
    pub shared_wavefronts: u64,
    /// See `shared_requests`.
    pub shared_ideal_wavefronts: u64,
    /// Multiply-adds of warp-wide `mma.sync` instructions.
    pub mma_macs: u64,
}

/// One case's counters: its launches and the figures a reader compares.
#[derive(Debug, Clone, Serialize)]
pub struct CounterRow {
    /// `family.kernel`.
    pub kernel: String,
    /// The case's dtype tag.
    pub dtype: String,
    /// The case's label (says so when it is a scaled-down bench shape).
    pub shape: String,
    /// The plan's useful bytes: every tensor read or written once (scratch excluded).
    pub compulsory_bytes: f64,
    /// The plan's flops.
    pub flops: f64,
    /// Global load efficiency: bytes requested / (sectors x 32), over every launch.
    pub load_efficiency: f64,
    /// Global store efficiency, likewise.
    pub store_efficiency: f64,
    /// Sector bytes requested (loads and stores) / compulsory bytes.
    pub requested_amplification: f64,
    /// Modelled DRAM bytes / compulsory bytes: the traffic amplification.
    pub traffic_amplification: f64,
    /// Shared wavefronts / conflict-free wavefronts (1 = no bank conflicts; 0 = no shared use).
    pub bank_conflict_factor: f64,
    /// Fewest and most waves among the case's launches.
    pub waves: (f64, f64),
    /// Share of the plan's multiply-adds that ran on `mma` (flops counted as 2 per multiply-add).
    pub mma_share: f64,
    /// Compulsory bytes at the H100's copy bandwidth, microseconds.
    pub floor_us: f64,
    /// Every launch of the case.
    pub launches: Vec<LaunchCounters>,
    /// Why the case could not be counted.
    pub error: Option<String>,
}

type ReadFn = unsafe extern "C" fn(*mut RawLaunch, i32) -> i32;
type ResetFn = unsafe extern "C" fn();
type LayoutFn = unsafe extern "C" fn() -> i32;

/// The counters build's entry points, from the libcuda already loaded (cudarc loaded it first).
struct Reader {
    _lib: libloading::Library,
    read: ReadFn,
    reset: ResetFn,
}

impl Reader {
    fn open() -> Result<Reader> {
        let not_here = || {
            Error::BackendUnavailable(
                "counters come from the emulated CUDA device's counters build: run under \
                 `scripts/cuda-cpu.sh --counters -- ...`"
                    .into(),
            )
        };
        // SAFETY: cudarc already loaded this library (the emulated device), so dlopen returns the
        // same handle and runs no initialiser again.
        let lib =
            unsafe { libloading::Library::new("libcuda.so").or_else(|_| libloading::Library::new("libcuda.so.1")) }
                .map_err(|_| not_here())?;
        // SAFETY: the three symbols are the counters build's, with these C signatures
        // (cuda-cpu/counters.cpp); the function pointers are used only while `_lib` lives.
        let (read, reset, layout) = unsafe {
            let read: ReadFn = *lib.get::<ReadFn>(b"cuda_cpu_counters_read\0").map_err(|_| not_here())?;
            let reset: ResetFn = *lib.get::<ResetFn>(b"cuda_cpu_counters_reset\0").map_err(|_| not_here())?;
            let layout: LayoutFn = *lib.get::<LayoutFn>(b"cuda_cpu_counters_layout\0").map_err(|_| not_here())?;
            (read, reset, layout)
        };
        // SAFETY: a plain call of a C function without arguments.
        let size = unsafe { layout() };
        if size as usize != std::mem::size_of::<RawLaunch>() {
            return Err(Error::Cuda(format!(
                "the counters build lays out a launch in {size} bytes, this crate in {}: rebuild both",
                std::mem::size_of::<RawLaunch>()
            )));
        }
        Ok(Reader { _lib: lib, read, reset })
    }

    fn take(&self) -> Vec<RawLaunch> {
        // SAFETY: read copies at most `max` records into the buffer it is given, and returns how
        // many there are; a zero-sized first call only counts them.
        let n = unsafe { (self.read)(std::ptr::null_mut(), 0) }.max(0) as usize;
        let mut v = vec![<RawLaunch as bytemuck::Zeroable>::zeroed(); n];
        // SAFETY: `v` holds `n` records of the layout checked in `open`.
        let got = unsafe { (self.read)(v.as_mut_ptr(), n as i32) }.max(0) as usize;
        v.truncate(got.min(n));
        // SAFETY: a plain call of a C function without arguments.
        unsafe { (self.reset)() };
        v
    }
}

fn launch_of(r: &RawLaunch) -> LaunchCounters {
    let end = r.kernel.iter().position(|&b| b == 0).unwrap_or(r.kernel.len());
    LaunchCounters {
        kernel: String::from_utf8_lossy(&r.kernel[..end]).into_owned(),
        grid: r.grid,
        block: r.block,
        registers: r.registers,
        shared_bytes: r.static_shared + r.dynamic_shared,
        blocks_per_sm: r.blocks_per_sm,
        waves: r.waves,
        load_bytes: r.load_bytes,
        store_bytes: r.store_bytes,
        load_requests: r.load_requests,
        load_sectors: r.load_sectors,
        store_requests: r.store_requests,
        store_sectors: r.store_sectors,
        unique_sectors: r.unique_sectors,
        dram_bytes: r.dram_read_bytes + r.dram_write_bytes,
        shared_requests: r.shared_requests,
        shared_wavefronts: r.shared_wavefronts,
        shared_ideal_wavefronts: r.shared_ideal_wavefronts,
        mma_macs: r.mma_macs,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Counts one launch of each case on `backend`, which must be the emulated device's counters
/// build. A case that cannot run gets a row with its error.
///
/// On a real CUDA GPU nothing is counted: each case is launched once, untimed, so a profiler
/// (`scripts/gpu-check.sh ncu`) sees exactly the launches the emulated device counted.
pub fn count_cases(cases: &[(&dyn Kernel, Case)], backend: &Backend) -> Result<Vec<CounterRow>> {
    let mut rows = Vec::new();
    count_each(cases, backend, |r| rows.push(r.clone()))?;
    Ok(rows)
}

/// [`count_cases`], handing each row to `each` as soon as it is counted (a long run shows its
/// progress).
pub fn count_each(cases: &[(&dyn Kernel, Case)], backend: &Backend, mut each: impl FnMut(&CounterRow)) -> Result<()> {
    match backend {
        b if b.is_emulated() => {
            let reader = Reader::open()?;
            cases.iter().for_each(|(k, case)| each(&count_case(*k, backend, case, Some(&reader))));
            Ok(())
        }
        Backend::Cuda(_) => {
            cases.iter().for_each(|(k, case)| each(&count_case(*k, backend, case, None)));
            Ok(())
        }
        _ => Err(Error::BackendUnavailable(
            "counters are counted on the emulated CUDA device (scripts/cuda-cpu.sh --counters), or profiled \
             with ncu on a CUDA GPU (scripts/gpu-check.sh ncu)"
                .into(),
        )),
    }
}

fn count_case(kernel: &dyn Kernel, backend: &Backend, case: &Case, reader: Option<&Reader>) -> CounterRow {
    let mut row = CounterRow {
        kernel: kernel.id(),
        dtype: case.dtype.name().into(),
        shape: case.label.clone(),
        compulsory_bytes: 0.0,
        flops: 0.0,
        load_efficiency: 0.0,
        store_efficiency: 0.0,
        requested_amplification: 0.0,
        traffic_amplification: 0.0,
        bank_conflict_factor: 0.0,
        waves: (0.0, 0.0),
        mma_share: 0.0,
        floor_us: 0.0,
        launches: vec![],
        error: None,
    };
    let run = || -> Result<(Vec<RawLaunch>, f64, f64)> {
        let plan = kernel.prepare(&case.params)?;
        let cost = plan.cost();
        let inputs = plan.inputs(&case.fixture, &mut Rng::new(0x5eed))?;
        let mut dev = stage(&*plan, backend, &inputs)?;
        let mut status = Status::new(backend)?;
        if let Some(r) = reader {
            r.take(); // whatever staging launched is not the kernel's
        }
        launch_once(&*plan, backend, &mut dev, &mut status)?;
        backend.synchronize()?;
        Ok((reader.map(Reader::take).unwrap_or_default(), cost.bytes, cost.flops))
    };
    match run() {
        Err(e) => row.error = Some(e.to_string()),
        Ok((raw, bytes, flops)) => {
            row.compulsory_bytes = bytes;
            row.flops = flops;
            let l: Vec<LaunchCounters> = raw.iter().map(launch_of).collect();
            let sum = |f: fn(&LaunchCounters) -> u64| l.iter().map(f).sum::<u64>() as f64;
            row.load_efficiency = ratio(sum(|x| x.load_bytes), 32.0 * sum(|x| x.load_sectors));
            row.store_efficiency = ratio(sum(|x| x.store_bytes), 32.0 * sum(|x| x.store_sectors));
            let requested = 32.0 * (sum(|x| x.load_sectors) + sum(|x| x.store_sectors));
            row.requested_amplification = ratio(requested, row.compulsory_bytes);
            row.traffic_amplification = ratio(sum(|x| x.dram_bytes), row.compulsory_bytes);
            row.bank_conflict_factor = ratio(sum(|x| x.shared_wavefronts), sum(|x| x.shared_ideal_wavefronts));
            if !l.is_empty() {
                let waves = l.iter().map(|x| x.waves);
                row.waves = (waves.clone().fold(f64::INFINITY, f64::min), waves.fold(0.0, f64::max));
            }
            row.mma_share = ratio(2.0 * sum(|x| x.mma_macs), row.flops);
            row.floor_us = row.compulsory_bytes / (H100_COPY_GBPS * 1e3);
            row.launches = l;
        }
    }
    row
}
