//! Storage dtypes and the element trait that ties host types to them.

use half::{bf16, f16};

/// A tensor's storage type. Kernels accumulate in f32 whatever the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE binary32 (4 bytes).
    F32,
    /// IEEE binary16 (2 bytes); packed two to a u32 word in wgpu buffers.
    F16,
    /// bfloat16 (2 bytes); packed two to a u32 word in wgpu buffers.
    BF16,
    /// Signed 8-bit integer (1 byte); packed four to a u32 word in wgpu buffers.
    I8,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 32-bit integer (indices, status words).
    U32,
}

impl DType {
    /// The three float storage types every float kernel takes.
    pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Bytes per element: 4, 2 or 1.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 => 1,
        }
    }

    /// The suffix of kernel entry points and shader modules: `f32`, `f16`, `bf16`, ...
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::U32 => "u32",
        }
    }

    /// The dtype named `s` (`f32`, `bf16`, ..., case-insensitive; `float32` is also `F32`),
    /// or `None` for any other name.
    pub fn parse(s: &str) -> Option<DType> {
        [DType::F32, DType::F16, DType::BF16, DType::I8, DType::I32, DType::U32]
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s) || (s.eq_ignore_ascii_case("float32") && *d == DType::F32))
    }

    /// F32, F16 or BF16 (the dtypes float kernels take; see [`DType::FLOATS`]).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// f64 values rounded to this float storage type and widened back, as a device stores an
    /// intermediate (round to nearest even); other dtypes leave them alone.
    pub fn round_f64(self, v: &[f64]) -> Vec<f64> {
        match self {
            DType::F32 => v.iter().map(|&x| f64::from(x as f32)).collect(),
            DType::F16 => v.iter().map(|&x| f16::from_f64(x).to_f64()).collect(),
            DType::BF16 => v.iter().map(|&x| bf16::from_f64(x).to_f64()).collect(),
            _ => v.to_vec(),
        }
    }

    /// Bytes a 16-bit or 8-bit tensor of `n` elements takes in a wgpu buffer (whole u32 words).
    pub fn padded_bytes(self, n: usize) -> usize {
        (n * self.size()).div_ceil(4) * 4
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A float storage element: f32, f16 or bf16.
pub trait Float: bytemuck::Pod + Copy + Send + Sync + Default + std::fmt::Debug + 'static {
    /// The storage dtype of this host type; a plan's `run_*` rejects buffers of another one
    /// with `Error::DType`.
    const DTYPE: DType;
    /// Widens the element to f32 (exact for all three types).
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (round to nearest even for f16 and bf16).
    fn from_f32(v: f32) -> Self;
}

impl Float for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Float for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Float for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// `dtype` if it is a float storage type, else the error every plan gives.
pub(crate) fn float_dtype(dtype: DType) -> crate::error::Result<DType> {
    if dtype.is_float() {
        Ok(dtype)
    } else {
        Err(crate::error::Error::DType(format!("{dtype} is not a float storage type (f32, f16, bf16)")))
    }
}

/// Buffers of `T` for a plan of dtype `want`.
pub(crate) fn same_dtype<T: Float>(want: DType) -> crate::error::Result<()> {
    if T::DTYPE == want {
        Ok(())
    } else {
        Err(crate::error::Error::DType(format!("plan is {want}, buffers are {}", T::DTYPE)))
    }
}

/// Host values widened to f64 (the oracles' precision).
pub(crate) fn to_f64<T: Float>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| f64::from(x.to_f32())).collect()
}

/// f64 results rounded to the storage type (through f32, as the devices round).
pub(crate) fn from_f64<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f32(x as f32)).collect()
}
