//! The status word: kernels that meet a bad index clamp it and raise a bit here instead of
//! reading out of bounds. `run` leaves the word on the device (no sync); `check` reads it.

use crate::error::{Error, Result};

use super::Backend;

/// Bits a kernel may raise. Each names the input that was bad.
pub struct StatusBits;

#[allow(dead_code)]
mod bits {
    include!("status_bits.rs");
}

impl StatusBits {
    /// An index list held a value outside its range (`core.gather_rows` `idx`, bad `cu_seqlens`).
    pub const INDEX_OUT_OF_RANGE: u32 = bits::INDEX_OUT_OF_RANGE;
    /// Packed ternary weights held the invalid code 3 (read as 0).
    pub const BAD_TERNARY_CODE: u32 = bits::BAD_TERNARY_CODE;
    /// A slot id outside the state pool (recurrent states).
    pub const SLOT_OUT_OF_RANGE: u32 = bits::SLOT_OUT_OF_RANGE;
    /// A value was non-finite or outside its range (weights to ternarize, ternary values to pack).
    pub const VALUE_OUT_OF_RANGE: u32 = bits::VALUE_OUT_OF_RANGE;
    /// Two rows of one step or scan named the same state slot: those rows are skipped.
    pub const SLOT_REPEATED: u32 = bits::SLOT_REPEATED;

    /// Bits from text: a number (`0`, `24`, `0x18`) or names joined by `|` (`SLOT_REPEATED|
    /// INDEX_OUT_OF_RANGE`).
    pub fn parse(s: &str) -> Option<u32> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix("0x") {
            return u32::from_str_radix(hex, 16).ok();
        }
        if let Ok(v) = s.parse::<u32>() {
            return Some(v);
        }
        s.split('|').try_fold(0, |acc, name| {
            bits::STATUS_TABLE.iter().find(|(n, _, _)| *n == name.trim()).map(|(_, b, _)| acc | b)
        })
    }

    /// What the raised bits mean, in words.
    pub fn describe(bits: u32) -> String {
        let mut v: Vec<&str> =
            bits::STATUS_TABLE.iter().filter(|(_, b, _)| bits & b != 0).map(|(_, _, d)| *d).collect();
        let known = bits::STATUS_TABLE.iter().fold(0, |a, (_, b, _)| a | b);
        if bits & !known != 0 || v.is_empty() {
            v.push("unknown status bits");
        }
        format!("{} (status 0x{bits:x})", v.join("; "))
    }
}

/// A status word on one backend. Create it once beside the plan and pass it to each `run`.
pub enum Status {
    /// The word on the host, raised by the CPU runs through [`Status::raise`].
    Cpu(std::cell::Cell<u32>),
    /// One `u32` in device memory, zero when clear; [`Status::new`] allocates it zeroed.
    #[cfg(feature = "cuda")]
    Cuda(cudarc::driver::CudaSlice<u32>),
    /// A buffer whose first 4 bytes are the word, zero when clear. Kernels bind it as storage;
    /// [`Status::check`] copies it out and rewrites it, so a buffer made by the caller needs
    /// `STORAGE | COPY_SRC | COPY_DST` usage ([`Status::new`] makes one so).
    #[cfg(feature = "wgpu")]
    Wgpu(::wgpu::Buffer),
}

impl Status {
    /// The word's wgpu buffer, for binding; `what` names the kernel in the error when the word
    /// lives on another backend.
    #[cfg(feature = "wgpu")]
    pub(crate) fn wgpu_buffer(&self, what: &str) -> Result<&::wgpu::Buffer> {
        match self {
            Status::Wgpu(b) => Ok(b),
            _ => Err(crate::error::Error::InvalidParams(format!("{what}: the status word is not a wgpu one"))),
        }
    }

    /// The word's CUDA slice, for a launch argument; as [`Status::wgpu_buffer`].
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_slice(&mut self, what: &str) -> Result<&mut cudarc::driver::CudaSlice<u32>> {
        match self {
            Status::Cuda(s) => Ok(s),
            _ => Err(crate::error::Error::InvalidParams(format!("{what}: the status word is not a CUDA one"))),
        }
    }

    /// A cleared status word on `backend` (one small allocation, at setup time).
    pub fn new(backend: &Backend) -> Result<Status> {
        match backend {
            Backend::Cpu => Ok(Status::Cpu(std::cell::Cell::new(0))),
            #[cfg(feature = "cuda")]
            Backend::Cuda(c) => Ok(Status::Cuda(c.stream().alloc_zeros::<u32>(1).map_err(super::cuda::cuda_err)?)),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(w) => Ok(Status::Wgpu(w.upload(&[0u8; 4])?)),
        }
    }

    /// Raises bits from host code (the CPU backend's kernels).
    pub fn raise(&self, bits: u32) -> Result<()> {
        match self {
            Status::Cpu(c) => {
                c.set(c.get() | bits);
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(Error::InvalidParams("a device status word was passed to a CPU run".into())),
        }
    }

    /// Reads the word (this synchronizes), clears it, and returns an `Error` naming what was bad.
    pub fn check(&mut self, backend: &Backend) -> Result<()> {
        let bits = self.take_bits(backend)?;
        if bits == 0 {
            Ok(())
        } else {
            Err(Error::InvalidInput(StatusBits::describe(bits)))
        }
    }

    /// Reads the raw bits (this synchronizes) and clears them.
    pub fn take_bits(&mut self, backend: &Backend) -> Result<u32> {
        match (self, backend) {
            (Status::Cpu(c), _) => Ok(c.replace(0)),
            #[cfg(feature = "cuda")]
            (Status::Cuda(s), Backend::Cuda(c)) => {
                let v = c.stream().clone_dtoh(s).map_err(super::cuda::cuda_err)?;
                c.stream().memset_zeros(s).map_err(super::cuda::cuda_err)?;
                Ok(v.first().copied().unwrap_or(0))
            }
            #[cfg(feature = "wgpu")]
            (Status::Wgpu(b), Backend::Wgpu(w)) => {
                let v = w.download(b)?;
                w.queue().write_buffer(b, 0, &[0u8; 4]);
                let word: [u8; 4] = v
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| Error::Wgpu("short status read".into()))?;
                Ok(u32::from_le_bytes(word))
            }
            #[allow(unreachable_patterns)]
            _ => Err(Error::InvalidParams("status word belongs to another backend".into())),
        }
    }
}
