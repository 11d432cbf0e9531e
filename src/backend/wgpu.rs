//! wgpu backend: device, queue and pipeline cache; dispatch helpers that record into the
//! caller's `CommandEncoder` and turn wgpu validation errors into `Error` with error scopes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::sources;

pub use wgpu;

/// A view into a caller's buffer: the tensor starts `offset` elements in.
/// Offsets travel to the shader in a uniform, so any element offset works.
#[derive(Debug, Clone, Copy)]
pub struct WgpuTensor<'a> {
    pub buffer: &'a wgpu::Buffer,
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
        if dtype == DType::I8 && !self.offset.is_multiple_of(4) {
            return Err(Error::InvalidParams(format!("{what}: an i8 tensor must start on a 4-byte boundary")));
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
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pipelines: Mutex<HashMap<&'static str, Arc<wgpu::ComputePipeline>>>,
    dummy: Mutex<Option<wgpu::Buffer>>,
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
        Ok(Self::from_device(device, queue, info))
    }

    /// Wraps an engine's device and queue; pipelines are created on first use and cached.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        Self { device, queue, info, pipelines: Mutex::new(HashMap::new()), dummy: Mutex::new(None) }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

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

    fn pipeline(&self, module: &str) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self.pipelines.lock().map_err(|_| Error::Wgpu("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(module) {
            return Ok(p.clone());
        }
        let entry = sources::WGSL_MODULES
            .iter()
            .find(|m| m.name == module)
            .ok_or_else(|| Error::Wgpu(format!("no WGSL module `{module}`")))?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let sm = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(entry.name),
            source: wgpu::ShaderSource::Wgsl(entry.source.into()),
        });
        let p = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry.name),
            layout: None,
            module: &sm,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Wgpu(format!("pipeline `{module}`: {e}")));
        }
        let p = Arc::new(p);
        cache.insert(entry.name, p.clone());
        Ok(p)
    }

    /// Records one dispatch of `module` into `enc`: binding 0 is the uniform `params`, bindings
    /// 1.. are `buffers` (whole buffers, clipped to the binding limit; offsets are in `params`).
    /// Rows past 65535 workgroups spill into the grid's y dimension; shaders fold them back.
    pub(crate) fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        module: &str,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        groups: u32,
    ) -> Result<()> {
        let pipeline = self.pipeline(module)?;
        let max = self.max_binding();
        let mut padded = params.to_vec();
        padded.resize(params.len().div_ceil(16).max(1) * 16, 0);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("mllm params"),
            contents: &padded,
            usage: wgpu::BufferUsages::UNIFORM,
        });
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
        let (gx, gy) = split_groups(groups, self.device.limits().max_compute_workgroups_per_dimension)?;
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(module), timestamp_writes: None });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Wgpu(format!("dispatch `{module}`: {e}")));
        }
        Ok(())
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
        let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("mllm timing"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("mllm timing resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
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
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("mllm") });
        f(&mut enc)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Wgpu(format!("submit: {e}")));
        }
        self.wait()
    }

    /// Blocks until the queue is idle.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Wgpu(format!("poll: {e}")))?;
        Ok(())
    }

    /// A storage buffer holding `bytes` (padded to whole words).
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
        Ok(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("mllm tensor"),
            contents: &padded,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        }))
    }

    /// Copies a buffer back to the host (submits and waits).
    pub fn download(&self, buf: &wgpu::Buffer) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("mllm readback"),
            size: buf.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
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
