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
    /// fp8 E4M3 (`float8_e4m3fn`: 4 exponent bits, bias 7, 3 mantissa bits, no infinity,
    /// `S.1111.111` NaN, largest 448); 1 byte, four to a u32 word in wgpu buffers. A storage type
    /// for the MLA latent cache, scaled per token (see [`E4M3`]); no kernel computes in it.
    #[serde(rename = "e4m3")]
    F8E4M3,
}

impl DType {
    /// The three float storage types every float kernel takes.
    pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Bytes per element: 4, 2 or 1.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::F8E4M3 => 1,
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
            DType::F8E4M3 => "e4m3",
        }
    }

    /// The dtype named `s` (`f32`, `bf16`, `e4m3`, ..., case-insensitive; `float32` is also
    /// `F32`, `float8_e4m3fn` `F8E4M3`), or `None` for any other name.
    pub fn parse(s: &str) -> Option<DType> {
        let alias = |d: DType| match d {
            DType::F32 => "float32",
            DType::F8E4M3 => "float8_e4m3fn",
            _ => "",
        };
        [DType::F32, DType::F16, DType::BF16, DType::I8, DType::I32, DType::U32, DType::F8E4M3]
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s) || alias(*d).eq_ignore_ascii_case(s))
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
            DType::F8E4M3 => v.iter().map(|&x| f64::from(e4m3_to_f32(e4m3_from_f32(x as f32)))).collect(),
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

/// A float storage element: f32, f16 or bf16 (and [`E4M3`], the MLA cache's storage: plans
/// computing in a float dtype reject it, since no plan's `dtype` can be e4m3).
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

/// One fp8 E4M3 value (its bits). The MLA cache stores `x / s` in it with one f32 scale `s` per
/// token, `s` = [`e4m3_scale`] of the token's largest magnitude.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct E4M3(pub u8);

impl Float for E4M3 {
    const DTYPE: DType = DType::F8E4M3;
    fn to_f32(self) -> f32 {
        e4m3_to_f32(self.0)
    }
    fn from_f32(v: f32) -> Self {
        E4M3(e4m3_from_f32(v))
    }
}

// SAFETY: E4M3 is repr(transparent) over one u8, so the device sees exactly the byte the host
// wrote, and every bit pattern (all zeros included) is a valid value.
#[cfg(feature = "cuda")]
unsafe impl cudarc::driver::DeviceRepr for E4M3 {}
// SAFETY: as above: all-zero bits are the value +0.
#[cfg(feature = "cuda")]
unsafe impl cudarc::driver::ValidAsZeroBits for E4M3 {}

/// The value of E4M3 bits `b`: `(-1)^s 2^(e-7) (1 + m/8)`, subnormals `(-1)^s 2^-6 m/8`, NaN for
/// `S.1111.111`.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let (e, m) = (i32::from((b >> 3) & 15), f32::from(b & 7));
    let mag = match (e, m) {
        (15, 7.0) => f32::NAN,
        (0, _) => m * 2f32.powi(-9),
        _ => (8.0 + m) * 2f32.powi(e - 10),
    };
    if b & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// `v` rounded to E4M3, to nearest with ties to even; magnitudes past 448 saturate to 448 (the
/// format has no infinity) and NaN becomes `0x7f`. The kernels encode the same way.
pub fn e4m3_from_f32(v: f32) -> u8 {
    if v.is_nan() {
        return 0x7f;
    }
    let sign = if v.is_sign_negative() { 0x80u8 } else { 0 };
    let a = v.abs().min(448.0);
    let code = if a < 2f32.powi(-6) {
        // Subnormal: a multiple of 2^-9 (rounding up to 8 lands on the smallest normal, 0x08).
        (a * 512.0).round_ties_even() as u8
    } else {
        // a = 2^e (1 + f), e in [-6, 8]: the exponent field e + 7, the mantissa f rounded to
        // eighths; a carry out of the mantissa moves into the exponent field by itself.
        let bits = a.to_bits();
        let e = ((bits >> 23) & 0xff) as i32 - 127;
        let q = ((bits & 0x7f_ffff) as f32 / 8_388_608.0 * 8.0).round_ties_even() as i32;
        (((e + 7) << 3) + q).min(0x7e) as u8
    };
    sign | code
}

/// The per-token scale of an fp8 cache row whose largest magnitude is `amax`: the smallest power
/// of two `s` with `amax / s <= 448`, so dividing by it and multiplying back are exact in f32,
/// f16 and bf16 (1 for an all-zero row; NaN for a row holding a non-finite value, whose bytes
/// are then zero: the NaN policy, ARCHITECTURE.md).
pub fn e4m3_scale(amax: f32) -> f32 {
    if !amax.is_finite() {
        return f32::NAN;
    }
    if amax == 0.0 {
        return 1.0;
    }
    // amax = 2^E (1 + f): 448 * 2^(E-8) = 1.75 * 2^E holds amax when f <= 0.75, else
    // 2^(E-7) does; no smaller power does (448 * 2^(E-9) < 2^E). The kernels decide the same way.
    let e = ((amax.to_bits() >> 23) & 0xff) as i32 - 127;
    let k = (e - 8).max(-126);
    let s = f32::from_bits(((k + 127) as u32) << 23);
    if amax > 448.0 * s {
        2.0 * s
    } else {
        s
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
