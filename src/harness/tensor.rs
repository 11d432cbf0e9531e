//! Host tensors and their device copies, as the harness (verify, bench, check) moves them.

use std::collections::BTreeMap;

use half::{bf16, f16};

use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A dense host tensor: raw little-endian bytes of `dtype`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The element type of `bytes`.
    pub dtype: DType,
    /// The dimensions (the harness mostly uses 1-D: a plan's tensors are flat spans).
    pub shape: Vec<usize>,
    /// The elements, little-endian, `dtype.size()` bytes each.
    pub bytes: Vec<u8>,
}

/// Tensors by name (`x`, `w`, `lse1`, ...).
pub type TensorMap = BTreeMap<String, HostTensor>;

impl HostTensor {
    /// Values rounded to `dtype` (round to nearest even for f16/bf16; integers saturate).
    pub fn from_f64(dtype: DType, shape: &[usize], v: &[f64]) -> HostTensor {
        let bytes: Vec<u8> = match dtype {
            DType::F32 => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
            DType::F16 => v.iter().flat_map(|&x| f16::from_f64(x).to_le_bytes()).collect(),
            DType::BF16 => v.iter().flat_map(|&x| bf16::from_f64(x).to_le_bytes()).collect(),
            DType::I8 => v.iter().map(|&x| (x.round().clamp(-128.0, 127.0) as i8) as u8).collect(),
            DType::I32 => v.iter().flat_map(|&x| (x.round() as i32).to_le_bytes()).collect(),
            DType::U32 => v.iter().flat_map(|&x| (x.round().max(0.0) as u32).to_le_bytes()).collect(),
            DType::F8E4M3 => v.iter().map(|&x| crate::dtype::e4m3_from_f32(x as f32)).collect(),
        };
        HostTensor { dtype, shape: shape.to_vec(), bytes }
    }

    /// A 1-D i8 tensor.
    pub fn from_i8(v: &[i8]) -> HostTensor {
        HostTensor { dtype: DType::I8, shape: vec![v.len()], bytes: bytemuck::cast_slice(v).to_vec() }
    }

    /// A 1-D f32 tensor of `v` rounded.
    pub fn f32s(v: &[f64]) -> HostTensor {
        HostTensor::from_f64(DType::F32, &[v.len()], v)
    }

    /// This float tensor with element `i` (if it has one) set to `v`: a planted NaN, say.
    pub fn with_element(&self, i: usize, v: f64) -> HostTensor {
        let mut x = self.to_f64();
        if let Some(e) = x.get_mut(i) {
            *e = v;
        }
        HostTensor::from_f64(self.dtype, &self.shape, &x)
    }

    /// An i32 tensor of `shape` holding `v`.
    pub fn from_i32(shape: &[usize], v: &[i32]) -> HostTensor {
        HostTensor { dtype: DType::I32, shape: shape.to_vec(), bytes: bytemuck::cast_slice(v).to_vec() }
    }

    /// A u32 tensor of `shape` holding `v`.
    pub fn from_u32(shape: &[usize], v: &[u32]) -> HostTensor {
        HostTensor { dtype: DType::U32, shape: shape.to_vec(), bytes: bytemuck::cast_slice(v).to_vec() }
    }

    /// An output buffer before the run: every byte 0xff, a NaN in f32, f16 and bf16 and -1 in
    /// the integer types, so an element the kernel never wrote shows up.
    pub fn poison(dtype: DType, shape: &[usize]) -> HostTensor {
        let n: usize = shape.iter().product();
        HostTensor { dtype, shape: shape.to_vec(), bytes: vec![0xff; n * dtype.size()] }
    }

    /// Every element widened to f64.
    pub fn to_f64(&self) -> Vec<f64> {
        let b = &self.bytes;
        match self.dtype {
            DType::F32 => b.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            DType::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
            DType::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
            DType::I8 => b.iter().map(|&x| f64::from(x as i8)).collect(),
            DType::I32 => b.chunks_exact(4).map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            DType::U32 => b.chunks_exact(4).map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
            DType::F8E4M3 => b.iter().map(|&x| f64::from(crate::dtype::e4m3_to_f32(x))).collect(),
        }
    }

    /// The bytes read as i32 elements (whatever `dtype` says).
    pub fn to_i32(&self) -> Vec<i32> {
        self.bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    /// The bytes read as u32 elements (whatever `dtype` says).
    pub fn to_u32(&self) -> Vec<u32> {
        self.bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    /// The bytes read as i8 elements (whatever `dtype` says).
    pub fn to_i8(&self) -> Vec<i8> {
        self.bytes.iter().map(|&x| x as i8).collect()
    }

    /// The elements as `T` (a copy, so alignment never matters).
    pub fn to_vec<T: bytemuck::Pod>(&self) -> Result<Vec<T>> {
        if self.dtype.size() != std::mem::size_of::<T>() {
            return Err(Error::DType(format!(
                "{} tensor read as a {}-byte type",
                self.dtype,
                std::mem::size_of::<T>()
            )));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.bytes))
    }
}

/// A tensor on a backend.
pub enum DevTensor {
    /// On the CPU backend: the host tensor itself.
    Host(HostTensor),
    /// A cudarc buffer of the tensor's element type.
    #[cfg(feature = "cuda")]
    Cuda(CudaTensor),
    /// A wgpu buffer; `upload` makes it with `STORAGE | COPY_SRC | COPY_DST`, padded to whole
    /// 4-byte words.
    #[cfg(feature = "wgpu")]
    Wgpu {
        /// The buffer.
        buffer: wgpu::Buffer,
        /// The element type.
        dtype: DType,
        /// The host tensor's shape (its element count trims the padding on download).
        shape: Vec<usize>,
    },
}

/// A typed cudarc buffer.
#[cfg(feature = "cuda")]
pub enum CudaTensor {
    /// f32 elements.
    F32(cudarc::driver::CudaSlice<f32>),
    /// f16 elements.
    F16(cudarc::driver::CudaSlice<f16>),
    /// bf16 elements.
    BF16(cudarc::driver::CudaSlice<bf16>),
    /// i8 elements.
    I8(cudarc::driver::CudaSlice<i8>),
    /// i32 elements.
    I32(cudarc::driver::CudaSlice<i32>),
    /// u32 elements.
    U32(cudarc::driver::CudaSlice<u32>),
    /// fp8 E4M3 elements.
    F8(cudarc::driver::CudaSlice<crate::dtype::E4M3>),
}

/// Device tensors by name.
pub type DevMap = BTreeMap<String, DevTensor>;

impl DevTensor {
    /// Copies `t` to `backend` (a clone on the CPU; on CUDA through the backend's own stream).
    pub fn upload(backend: &Backend, t: &HostTensor) -> Result<DevTensor> {
        match backend {
            Backend::Cpu => Ok(DevTensor::Host(t.clone())),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => {
                use crate::backend::cuda::cuda_err;
                let s = c.stream();
                Ok(DevTensor::Cuda(match t.dtype {
                    DType::F32 => CudaTensor::F32(s.clone_htod(&t.to_vec::<f32>()?).map_err(cuda_err)?),
                    DType::F16 => CudaTensor::F16(s.clone_htod(&t.to_vec::<f16>()?).map_err(cuda_err)?),
                    DType::BF16 => CudaTensor::BF16(s.clone_htod(&t.to_vec::<bf16>()?).map_err(cuda_err)?),
                    DType::I8 => CudaTensor::I8(s.clone_htod(&t.to_vec::<i8>()?).map_err(cuda_err)?),
                    DType::I32 => CudaTensor::I32(s.clone_htod(&t.to_vec::<i32>()?).map_err(cuda_err)?),
                    DType::U32 => CudaTensor::U32(s.clone_htod(&t.to_vec::<u32>()?).map_err(cuda_err)?),
                    DType::F8E4M3 => {
                        CudaTensor::F8(s.clone_htod(&t.to_vec::<crate::dtype::E4M3>()?).map_err(cuda_err)?)
                    }
                }))
            }
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) => {
                Ok(DevTensor::Wgpu { buffer: w.upload(&t.bytes)?, dtype: t.dtype, shape: t.shape.clone() })
            }
        }
    }

    /// Copies the tensor back (this waits). A CUDA tensor comes back 1-D; a tensor of another
    /// backend than `backend` is `Error::InvalidParams`.
    pub fn download(&self, backend: &Backend) -> Result<HostTensor> {
        match (self, backend) {
            (DevTensor::Host(t), _) => Ok(t.clone()),
            #[cfg(feature = "cuda")]
            (DevTensor::Cuda(ct), Backend::Cuda(c)) => {
                use crate::backend::cuda::cuda_err;
                let s = c.stream();
                let (dtype, bytes): (DType, Vec<u8>) = match ct {
                    CudaTensor::F32(x) => {
                        (DType::F32, bytemuck::cast_slice(&s.clone_dtoh(x).map_err(cuda_err)?).to_vec())
                    }
                    CudaTensor::F16(x) => {
                        (DType::F16, bytemuck::cast_slice(&s.clone_dtoh(x).map_err(cuda_err)?).to_vec())
                    }
                    CudaTensor::BF16(x) => {
                        (DType::BF16, bytemuck::cast_slice(&s.clone_dtoh(x).map_err(cuda_err)?).to_vec())
                    }
                    CudaTensor::I8(x) => {
                        (DType::I8, bytemuck::cast_slice(&s.clone_dtoh(x).map_err(cuda_err)?).to_vec())
                    }
                    CudaTensor::I32(x) => {
                        (DType::I32, bytemuck::cast_slice(&s.clone_dtoh(x).map_err(cuda_err)?).to_vec())
                    }
                    CudaTensor::U32(x) => {
                        (DType::U32, bytemuck::cast_slice(&s.clone_dtoh(x).map_err(cuda_err)?).to_vec())
                    }
                    CudaTensor::F8(x) => {
                        (DType::F8E4M3, bytemuck::cast_slice(&s.clone_dtoh(x).map_err(cuda_err)?).to_vec())
                    }
                };
                let n = bytes.len() / dtype.size();
                Ok(HostTensor { dtype, shape: vec![n], bytes })
            }
            #[cfg(feature = "wgpu")]
            (DevTensor::Wgpu { buffer, dtype, shape }, Backend::Wgpu(w)) => {
                let mut bytes = w.download(buffer)?;
                let n: usize = shape.iter().product();
                bytes.truncate(n * dtype.size());
                Ok(HostTensor { dtype: *dtype, shape: shape.clone(), bytes })
            }
            #[allow(unreachable_patterns)]
            _ => Err(Error::InvalidParams("tensor belongs to another backend".into())),
        }
    }
}

/// Removes `name` from the map (to borrow it mutably beside the inputs); put it back with `insert`.
pub fn take(map: &mut DevMap, name: &str) -> Result<DevTensor> {
    map.remove(name).ok_or_else(|| Error::InvalidParams(format!("missing tensor `{name}`")))
}

/// The tensor `name` of the map, or `Error::InvalidParams` naming it.
pub fn get<'a>(map: &'a DevMap, name: &str) -> Result<&'a DevTensor> {
    map.get(name).ok_or_else(|| Error::InvalidParams(format!("missing tensor `{name}`")))
}

/// The input tensor `name` of a host map, or `Error::InvalidParams` naming it.
pub fn host<'a>(map: &'a TensorMap, name: &str) -> Result<&'a HostTensor> {
    map.get(name).ok_or_else(|| Error::InvalidParams(format!("missing input tensor `{name}`")))
}
