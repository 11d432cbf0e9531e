//! What every kernel plan declares once: its tensors. A plan (`RmsNorm`, `BitLinear`, ...) is
//! built from its params by `new`, which validates them; [`Plan::tensors`] then lists every
//! buffer a run touches with its dtype, the elements it must hold and its role. The size checks
//! of `run_cpu` (slices), `run_cuda` (device views) and `run_wgpu` (bindings), and the harness's
//! allocation and poisoning of outputs and scratch, all read this one list.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dtype::DType;
use crate::error::{ensure_len, Error, Result};

/// What a run does with a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read only.
    In,
    /// Written (every element of the span that the kernel owns; gaps of strided views untouched).
    Out,
    /// Read and updated in place (a state pool, a residual stream, `+=` outputs).
    InOut,
    /// Workspace the caller provides; its contents before and after mean nothing.
    Scratch,
}

/// One tensor of a plan: a name the docs, errors and the harness use, its dtype, the elements it
/// must hold (a strided view's span), and its role. A tensor the params switch off (no lower
/// bound, no `acc` output) is absent from the list rather than marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name, as in the `run_*` argument names and in error messages (`x`, `w`, ...).
    pub name: &'static str,
    /// Its storage dtype.
    pub dtype: DType,
    /// The elements a buffer for it must hold at least (a strided view's span, not rows*cols).
    pub len: usize,
    /// What a run does with it.
    pub role: Role,
}

impl TensorSpec {
    /// A [`Role::In`] tensor.
    pub fn input(name: &'static str, dtype: DType, len: usize) -> Self {
        TensorSpec { name, dtype, len, role: Role::In }
    }
    /// A [`Role::Out`] tensor.
    pub fn output(name: &'static str, dtype: DType, len: usize) -> Self {
        TensorSpec { name, dtype, len, role: Role::Out }
    }
    /// A [`Role::InOut`] tensor.
    pub fn in_out(name: &'static str, dtype: DType, len: usize) -> Self {
        TensorSpec { name, dtype, len, role: Role::InOut }
    }
    /// A [`Role::Scratch`] tensor.
    pub fn scratch(name: &'static str, dtype: DType, len: usize) -> Self {
        TensorSpec { name, dtype, len, role: Role::Scratch }
    }
}

/// A validated kernel launch shape. `NAME` prefixes every error about its tensors.
pub trait Plan: Sized + Sync + Send + 'static {
    /// The params struct the plan is built from (serde, so the harness can read cases as JSON).
    type Params: Serialize + DeserializeOwned + Clone;
    /// The kernel's name (`rmsnorm`, ...), the prefix of every error about its tensors.
    const NAME: &'static str;

    /// Validates `params` (the inherent `new`).
    fn build(params: Self::Params) -> Result<Self>;
    /// The params the plan was built from.
    fn params(&self) -> &Self::Params;
    /// Every tensor a run touches, in the order of the `run_*` arguments.
    fn tensors(&self) -> Vec<TensorSpec>;

    /// The scratch tensors a run needs from the caller (workspace, intermediates), with sizes.
    fn scratch(&self) -> Vec<TensorSpec> {
        self.tensors().into_iter().filter(|t| t.role == Role::Scratch).collect()
    }

    /// The tensor `name`.
    fn spec(&self, name: &str) -> Result<TensorSpec> {
        self.tensors()
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::InvalidParams(format!("{} has no tensor `{name}`", Self::NAME)))
    }

    /// A buffer of `len` elements is large enough for tensor `name`.
    fn check_len(&self, name: &str, len: usize) -> Result<()> {
        ensure_len(&format!("{} {name}", Self::NAME), self.spec(name)?.len, len)
    }

    /// Buffers of the given lengths, by tensor name, are large enough, and every tensor of the
    /// plan is among them (a buffer the params call for but the call left out is an error too).
    fn check_lens(&self, given: &[(&str, usize)]) -> Result<()> {
        let specs = self.tensors();
        for &(name, len) in given {
            let s = specs.iter().find(|s| s.name == name);
            let s = s.ok_or_else(|| Error::InvalidParams(format!("{} takes no `{name}`", Self::NAME)))?;
            ensure_len(&format!("{} {name}", Self::NAME), s.len, len)?;
        }
        match specs.iter().find(|s| !given.iter().any(|g| g.0 == s.name)) {
            Some(s) => Err(Error::InvalidParams(format!("{}: no `{}` buffer was given", Self::NAME, s.name))),
            None => Ok(()),
        }
    }

    /// The wgpu binding `t` holds tensor `name` (dtype, size, alignment, the device's binding
    /// limit); returns its offset in elements for the uniform.
    #[cfg(feature = "wgpu")]
    fn bind(&self, t: &crate::backend::wgpu::WgpuTensor, name: &str, max_binding: u64) -> Result<u32> {
        let s = self.spec(name)?;
        t.check(&format!("{} {name}", Self::NAME), s.dtype, s.len, max_binding)
    }

    /// Every wgpu binding of a composite plan, checked under the plan's own tensor names before
    /// any child records a dispatch (so a bad buffer never leaves half a layer in the encoder),
    /// and every tensor of the plan given.
    #[cfg(feature = "wgpu")]
    fn bind_all(
        &self,
        gpu: &crate::backend::wgpu::WgpuBackend,
        given: &[(&str, Option<&crate::backend::wgpu::WgpuTensor>)],
    ) -> Result<()> {
        for &(name, t) in given {
            if let Some(t) = t {
                self.bind(t, name, gpu.max_binding())?;
            }
        }
        match self.tensors().iter().find(|s| !given.iter().any(|g| g.0 == s.name && g.1.is_some())) {
            Some(s) => Err(Error::InvalidParams(format!("{}: no `{}` buffer was given", Self::NAME, s.name))),
            None => Ok(()),
        }
    }
}
