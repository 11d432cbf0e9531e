//! wgpu backend: device, queue and pipeline cache; dispatch helpers that record into the
//! caller's `CommandEncoder`. Every call that touches the device runs inside error scopes
//! (validation, out of memory, internal), so a bad call or a lost device comes back as an
//! `Error` instead of reaching wgpu's uncaptured-error handler, which panics by default.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::sources;

use super::loops;
pub use super::loops::CPU_LOOP_LIMIT;
pub use wgpu;

/// One dispatch's loop budget against what its invocations ran ([`WgpuBackend::loop_counts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopCount {
    /// The WGSL module (`visual_mass_f32`, ...).
    pub module: String,
    /// The budget the kernel declared for its params.
    pub declared: u64,
    /// The most loop iterations any one invocation ran.
    pub measured: u64,
}

struct LoopRecord {
    module: String,
    declared: u64,
    counter: wgpu::Buffer,
}

/// A view into a caller's buffer: the tensor starts `offset` elements in.
/// Offsets travel to the shader in a uniform, so any element offset works.
#[derive(Debug, Clone, Copy)]
pub struct WgpuTensor<'a> {
    /// The caller's buffer. It needs `STORAGE` usage and must hold `offset + len` elements of
    /// the tensor's dtype, rounded up to whole 4-byte words; a run checks both and returns
    /// `Error::Shape` (too small) or `Error::InvalidParams` (no `STORAGE`, too large to bind).
    pub buffer: &'a wgpu::Buffer,
    /// Where the tensor starts, in elements of its dtype (not bytes); for i8 a multiple of 4.
    pub offset: usize,
}

impl<'a> From<&'a wgpu::Buffer> for WgpuTensor<'a> {
    fn from(buffer: &'a wgpu::Buffer) -> Self {
        Self { buffer, offset: 0 }
    }
}

impl WgpuTensor<'_> {
    /// Checks the buffer holds `offset + len` elements of `dtype` (as whole words) and that the
    /// shader can address it, and returns the offset as the shader's u32.
    pub(crate) fn check(&self, what: &str, dtype: DType, len: usize, max_binding: u64) -> Result<u32> {
        let end =
            self.offset.checked_add(len).ok_or_else(|| Error::InvalidParams(format!("{what}: offset overflow")))?;
        let need = dtype.padded_bytes(end) as u64;
        if self.buffer.size() < need {
            return Err(Error::Shape {
                what: format!("{what} buffer (bytes, at least)"),
                expected: need as usize,
                got: self.buffer.size() as usize,
            });
        }
        if need > max_binding {
            return Err(Error::InvalidParams(format!(
                "{what}: {need} bytes exceed the device's max_storage_buffer_binding_size ({max_binding})"
            )));
        }
        if !self.buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::InvalidParams(format!("{what}: buffer lacks STORAGE usage")));
        }
        if dtype.size() == 1 && !self.offset.is_multiple_of(4) {
            return Err(Error::InvalidParams(format!("{what}: a {dtype} tensor must start on a 4-byte boundary")));
        }
        u32::try_from(end.max(1) - 1)
            .map(|_| self.offset as u32)
            .map_err(|_| Error::InvalidParams(format!("{what}: {end} elements exceed u32 indexing")))
    }
}

/// Why no adapter is usable, or the adapter's description.
pub fn probe() -> std::result::Result<wgpu::AdapterInfo, String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| format!("no wgpu adapter ({e}); on Linux without a GPU install Mesa's lavapipe: apt-get install mesa-vulkan-drivers"))?;
    Ok(adapter.get_info())
}

/// A wgpu device with its pipeline cache. Engines that own a device use [`WgpuBackend::from_device`].
///
/// Every tensor buffer a `run_wgpu` takes needs `BufferUsages::STORAGE` (checked, an
/// `Error::InvalidParams` otherwise); [`WgpuBackend::download`] also needs `COPY_SRC` on the
/// buffer it reads. [`WgpuBackend::upload`] makes buffers with `STORAGE | COPY_SRC | COPY_DST`.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// While loop counting is on (`count_loops`), each dispatch's declared budget and counter.
    loop_counts: Mutex<Option<Vec<LoopRecord>>>,
    dummy: Mutex<Option<wgpu::Buffer>>,
    /// Why the device was lost, where this backend created it (an engine's device keeps the
    /// engine's own lost callback).
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBackend({} via {:?})", self.info.name, self.info.backend)
    }
}

impl WgpuBackend {
    /// The first high-performance adapter, with wgpu's default limits (except up to 16 storage
    /// buffers per stage where the adapter offers them: the MoM conv and step shaders bind 10)
    /// and no optional features.
    pub fn new() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| {
            Error::BackendUnavailable(format!(
                "no wgpu adapter ({e}); on Linux without a GPU install Mesa's lavapipe: apt-get install mesa-vulkan-drivers"
            ))
        })?;
        let info = adapter.get_info();
        // Kernels need no optional feature; GPU timestamps (for `bench`) are taken where offered.
        let timing = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let (device, queue) = pollster::block_on(
            adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("mllm-kernels"),
                required_features: adapter.features() & timing,
                required_limits: wgpu::Limits {
                    max_storage_buffers_per_shader_stage: adapter
                        .limits()
                        .max_storage_buffers_per_shader_stage
                        .clamp(wgpu::Limits::default().max_storage_buffers_per_shader_stage, 16),
                    ..wgpu::Limits::default()
                },
                ..Default::default()
            }),
        )
        .map_err(|e| Error::Wgpu(format!("request_device: {e}")))?;
        let backend = Self::from_device(device, queue, info);
        let lost = backend.lost.clone();
        backend.device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost.lock() {
                *l = Some(format!("{reason:?}{}", if msg.is_empty() { String::new() } else { format!(", {msg}") }));
            }
        });
        Ok(backend)
    }

    /// Wraps an engine's device and queue; pipelines are created on first use and cached.
    /// Kernels work within wgpu's default limits, except that some MoM and visual kernels bind
    /// 9 or 10 storage buffers per stage: on a device created with fewer their runs return
    /// `Error::InvalidParams` naming `max_storage_buffers_per_shader_stage`. Tensor buffers
    /// need `STORAGE` usage (see [`WgpuBackend`]).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        Self {
            device,
            queue,
            info,
            pipelines: Mutex::new(HashMap::new()),
            dummy: Mutex::new(None),
            loop_counts: Mutex::new(None),
            lost: Arc::new(Mutex::new(None)),
        }
    }

    /// The wrapped device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wrapped queue (`run_blocking`, `upload` and `download` submit to it).
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's description (name, API, device type), as given to `from_device`.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// A small storage buffer bound where a kernel's optional input or output is absent
    /// (created once; the shader never touches it then).
    pub(crate) fn dummy(&self) -> Result<wgpu::Buffer> {
        let mut d = self.dummy.lock().map_err(|_| Error::Wgpu("dummy buffer lock poisoned".into()))?;
        if d.is_none() {
            *d = Some(self.upload(&[0u8; 16])?);
        }
        d.clone().ok_or_else(|| Error::Wgpu("dummy buffer missing".into()))
    }

    /// An error naming `what` unless the device allows `n` storage buffers per shader stage.
    pub(crate) fn require_storage_buffers(&self, n: u32, what: &str) -> Result<()> {
        let have = self.device.limits().max_storage_buffers_per_shader_stage;
        if have < n {
            return Err(Error::InvalidParams(format!(
                "{what} binds {n} storage buffers but the device allows {have}; create it with \
                 max_storage_buffers_per_shader_stage >= {n}"
            )));
        }
        Ok(())
    }

    pub(crate) fn max_binding(&self) -> u64 {
        self.device.limits().max_storage_buffer_binding_size
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes; the first error
    /// any of them caught becomes `Error::Wgpu` naming `what`.
    fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let out = f();
        // Scopes are a stack: popped in reverse.
        let errors = [internal, memory, validation].map(|s| pollster::block_on(s.pop()));
        match errors.into_iter().flatten().next() {
            Some(e) => {
                // The lost callback runs from a poll: give it the chance before asking.
                let _ = self.device.poll(wgpu::PollType::Poll);
                let lost = self.lost.lock().ok().and_then(|l| l.clone());
                let lost = lost.map(|r| format!("the device was lost ({r}); ")).unwrap_or_default();
                Err(Error::Wgpu(format!("{lost}{what}: {}", chain(&e))))
            }
            None => Ok(out),
        }
    }

    /// A buffer of `usage | COPY_DST` holding `bytes`, written through the queue (wgpu's
    /// `create_buffer_init` panics when the device is lost; this returns an error).
    fn buffer_with(&self, label: &str, bytes: &[u8], usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        self.scoped(label, || {
            let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.len() as u64,
                usage: usage | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.queue.write_buffer(&b, 0, bytes);
            b
        })
    }

    fn pipeline(&self, module: &str, counted: bool) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = if counted { format!("{module} (loops counted)") } else { module.to_string() };
        let mut cache = self.pipelines.lock().map_err(|_| Error::Wgpu("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let entry = sources::WGSL_MODULES
            .iter()
            .find(|m| m.name == module)
            .ok_or_else(|| Error::Wgpu(format!("no WGSL module `{module}`")))?;
        let source = if counted { loops::instrument(entry.source) } else { entry.source.to_string() };
        let p = self.scoped(&format!("pipeline `{key}`"), || {
            let sm = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(entry.name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry.name),
                layout: None,
                module: &sm,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        })?;
        let p = Arc::new(p);
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// An error when `module`'s loop budget is over [`CPU_LOOP_LIMIT`] and this is a CPU
    /// adapter: llvmpipe would cut the loops short and give a wrong answer without a word.
    /// `fix` says what the caller can change (computed only when refusing).
    pub(crate) fn refuse_loops(&self, module: &str, loops: u64, fix: impl FnOnce() -> String) -> Result<()> {
        if self.is_cpu_adapter() && loops >= CPU_LOOP_LIMIT {
            return Err(Error::InvalidParams(format!(
                "`{module}` would run up to {loops} loop iterations in one invocation, and this CPU \
                 adapter ({}) silently stops every loop of an invocation at {CPU_LOOP_LIMIT}, which \
                 would give a wrong answer: {}, or run it on the cpu or cuda backend",
                self.info.name,
                fix()
            )));
        }
        Ok(())
    }

    /// Whether this adapter runs shaders on the CPU (Mesa's lavapipe), where loops are cut short
    /// past [`CPU_LOOP_LIMIT`] iterations per invocation.
    pub fn is_cpu_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    fn loop_records(&self) -> Result<std::sync::MutexGuard<'_, Option<Vec<LoopRecord>>>> {
        self.loop_counts.lock().map_err(|_| Error::Wgpu("loop counts lock poisoned".into()))
    }

    /// Turns loop counting on or off (a debugging and testing aid). While on, every dispatch
    /// runs a copy of its shader that counts each invocation's loop iterations, and
    /// [`WgpuBackend::loop_counts`] returns, per dispatch, the budget the kernel declared and
    /// the most any invocation ran. Turning it off drops the records.
    pub fn count_loops(&self, on: bool) -> Result<()> {
        let mut c = self.loop_records()?;
        *c = on.then(Vec::new);
        Ok(())
    }

    /// The dispatches recorded since loop counting was turned on or last read, in order (waits
    /// for the queue; the work must have been submitted). Empty while counting is off.
    pub fn loop_counts(&self) -> Result<Vec<LoopCount>> {
        let records = {
            let mut c = self.loop_records()?;
            c.as_mut().map(std::mem::take).unwrap_or_default()
        };
        records
            .into_iter()
            .map(|r| {
                let raw = self.download(&r.counter)?;
                let measured = raw
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes)
                    .ok_or_else(|| Error::Wgpu("short loop counter read".into()))?;
                Ok(LoopCount { module: r.module, declared: r.declared, measured: u64::from(measured) })
            })
            .collect()
    }

    /// Records one empty dispatch (`core_noop`, one workgroup, no buffers): what `bench` times
    /// as the launch floor.
    pub(crate) fn dispatch_noop(&self, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        // The shader's uniform is one u32 that only keeps the binding alive.
        self.dispatch(enc, "core_noop", &0u32.to_le_bytes(), &[], 1, 0)
    }

    /// Records one dispatch of `module` into `enc`: binding 0 is the uniform `params`, bindings
    /// 1.. are `buffers` (whole buffers, clipped to the binding limit; offsets are in `params`).
    /// Rows past 65535 workgroups spill into the grid's y dimension; shaders fold them back.
    /// `loops` is the dispatch's loop budget (most loop iterations of one invocation, see
    /// [`super::loops`]): over [`CPU_LOOP_LIMIT`] on a CPU adapter the dispatch is refused,
    /// because llvmpipe would cut the loops short and give a wrong answer without a word.
    pub(crate) fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        module: &str,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        groups: u32,
        loops: u64,
    ) -> Result<()> {
        self.refuse_loops(module, loops, || "split the work (fewer tokens per sequence, smaller sizes)".into())?;
        let counter = {
            let c = self.loop_records()?;
            c.is_some()
        };
        let pipeline = self.pipeline(module, counter)?;
        let counter = if counter { Some(self.upload(&[0u8; 4])?) } else { None };
        let max = self.max_binding();
        let mut padded = params.to_vec();
        padded.resize(params.len().div_ceil(16).max(1) * 16, 0);
        let uniform = self.buffer_with("mllm params", &padded, wgpu::BufferUsages::UNIFORM)?;
        let (gx, gy) = split_groups(groups, self.device.limits().max_compute_workgroups_per_dimension)?;
        self.scoped(&format!("dispatch `{module}`"), || {
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
            for (i, b) in buffers.iter().enumerate() {
                let size = b.size().min(max) & !3;
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b,
                        offset: 0,
                        size: wgpu::BufferSize::new(size),
                    }),
                });
            }
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(module),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            {
                let mut pass = enc
                    .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(module), timestamp_writes: None });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind, &[]);
                if let Some(c) = &counter {
                    let counted = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("mllm loop counter"),
                        layout: &pipeline.get_bind_group_layout(loops::COUNTER_GROUP),
                        entries: &[wgpu::BindGroupEntry { binding: 0, resource: c.as_entire_binding() }],
                    });
                    pass.set_bind_group(loops::COUNTER_GROUP, &counted, &[]);
                }
                pass.dispatch_workgroups(gx, gy, 1);
            }
        })?;
        if let Some(counter) = counter {
            let mut c = self.loop_records()?;
            if let Some(v) = c.as_mut() {
                v.push(LoopRecord { module: module.to_string(), declared: loops, counter });
            }
        }
        Ok(())
    }

    /// Dispatches `module` over `units` (rows or tiles of a stream) in windows `w0..w1`, one
    /// dispatch each with the uniform `uniform(w0, w1)`, so no invocation runs past
    /// [`loops::TARGET_LOOPS`] whatever the lengths on the device: an invocation's loop budget is
    /// `fixed + per_unit` for each unit of its window. At least one dispatch runs; where one unit
    /// alone is over the limit on a CPU adapter the error says `fix`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch_windows(
        &self,
        enc: &mut wgpu::CommandEncoder,
        module: &str,
        buffers: &[&wgpu::Buffer],
        groups: u32,
        units: usize,
        (fixed, per_unit): (u64, u64),
        fix: &str,
        uniform: impl Fn(u32, u32) -> Vec<u8>,
    ) -> Result<()> {
        self.refuse_loops(module, fixed + per_unit, || fix.to_string())?;
        let per = (loops::TARGET_LOOPS.saturating_sub(fixed) / per_unit.max(1)).max(1) as usize;
        let window =
            |w: usize| u32::try_from(w).map_err(|_| Error::InvalidParams(format!("{module}: {w} exceeds u32")));
        let mut w0 = 0;
        loop {
            let w1 = (w0 + per).min(units);
            let bytes = uniform(window(w0)?, window(w1)?);
            self.dispatch(enc, module, &bytes, buffers, groups, fixed + (w1 - w0) as u64 * per_unit)?;
            w0 = w1;
            if w0 >= units {
                return Ok(());
            }
        }
    }

    /// Whether the device can time work inside a command encoder with GPU timestamps
    /// (`TIMESTAMP_QUERY` and `TIMESTAMP_QUERY_INSIDE_ENCODERS` were both enabled).
    pub fn has_encoder_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    }

    /// Records with `f` between two GPU timestamps, submits, waits, and returns the GPU time of
    /// what `f` recorded in microseconds; `None` when the device has no encoder timestamps.
    pub fn time_gpu(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<Option<f64>> {
        if !self.has_encoder_timestamps() {
            return Ok(None);
        }
        let (queries, resolve) = self.scoped("timing queries", || {
            let q = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("mllm timing"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let r = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("mllm timing resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (q, r)
        })?;
        self.run_blocking(|enc| {
            enc.write_timestamp(&queries, 0);
            f(enc)?;
            enc.write_timestamp(&queries, 1);
            enc.resolve_query_set(&queries, 0..2, &resolve, 0);
            Ok(())
        })?;
        let raw = self.download(&resolve)?;
        let tick = |i: usize| -> Result<u64> {
            raw.get(8 * i..8 * i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| Error::Wgpu("short timestamp read".into()))
        };
        let ticks = tick(1)?.saturating_sub(tick(0)?);
        Ok(Some(ticks as f64 * f64::from(self.queue.get_timestamp_period()) * 1e-3))
    }

    /// Records with `f`, submits and waits: for tests, the tool and simple callers.
    pub fn run_blocking(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<()> {
        let mut enc = self.scoped("encoder", || {
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("mllm") })
        })?;
        f(&mut enc)?;
        self.scoped("submit", || self.queue.submit([enc.finish()]))?;
        self.wait()
    }

    /// Blocks until the queue is idle.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Wgpu(format!("poll: {e}")))?;
        Ok(())
    }

    /// A storage buffer holding `bytes` (padded to whole words). Larger than the device's
    /// `max_buffer_size` is an error naming the limit, not a wgpu validation panic.
    pub fn upload(&self, bytes: &[u8]) -> Result<wgpu::Buffer> {
        let size = bytes.len().div_ceil(4).max(1) * 4;
        let limit = self.device.limits().max_buffer_size;
        if size as u64 > limit {
            return Err(Error::Wgpu(format!(
                "a {size}-byte buffer exceeds this device's max_buffer_size ({limit} bytes); split the tensor"
            )));
        }
        let mut padded = bytes.to_vec();
        padded.resize(size, 0);
        self.buffer_with("mllm tensor", &padded, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC)
    }

    /// Copies a buffer back to the host (submits and waits).
    pub fn download(&self, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
        let staging = self.scoped("readback buffer", || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("mllm readback"),
                size: buf.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        self.run_blocking(|enc| {
            enc.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
            Ok(())
        })?;
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv().map_err(|e| Error::Wgpu(format!("map: {e}")))?.map_err(|e| Error::Wgpu(format!("map: {e}")))?;
        let data = slice.get_mapped_range().map_err(|e| Error::Wgpu(format!("mapped range: {e}")))?.to_vec();
        staging.unmap();
        Ok(data)
    }
}

/// An error and its causes on one line (wgpu's own message is often just "Validation Error",
/// with the reason, such as a lost device, in its source chain).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string().lines().next().unwrap_or_default().to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let line = c.to_string();
        let line = line.trim();
        if !line.is_empty() && !out.contains(line) {
            out.push_str(": ");
            out.push_str(line);
        }
        cause = c.source();
    }
    out
}

/// `n` workgroups as an (x, y) grid within the per-dimension limit.
pub(crate) fn split_groups(n: u32, max_dim: u32) -> Result<(u32, u32)> {
    if n == 0 {
        return Err(Error::InvalidParams("zero workgroups".into()));
    }
    if n <= max_dim {
        return Ok((n, 1));
    }
    let y = n.div_ceil(max_dim);
    if y > max_dim {
        return Err(Error::InvalidParams(format!("{n} workgroups exceed the device's grid")));
    }
    Ok((max_dim, y))
}
