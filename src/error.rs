//! The crate's one error type.

use std::fmt;

/// Everything that can go wrong, from a bad shape to a missing backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Parameters that no kernel can run with (zero sizes, overflowing strides, ...).
    InvalidParams(String),
    /// A buffer whose length or size does not match what the plan needs.
    Shape {
        /// The buffer: plan name and tensor name, with the unit (`... (elements, at least)`).
        what: String,
        /// The length the plan needs.
        expected: usize,
        /// The length that was given.
        got: usize,
    },
    /// A dtype the kernel does not take, or a buffer of another dtype.
    DType(String),
    /// Bad contents found by a kernel or a `validate_*` call (index out of range, bad code).
    InvalidInput(String),
    /// The backend is not present on this machine; the text says why and how to get it.
    BackendUnavailable(String),
    /// A CUDA driver, NVRTC or module error.
    Cuda(String),
    /// A wgpu validation or device error, caught with an error scope.
    Wgpu(String),
    /// Reading or writing a file (the `check` tool).
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidParams(s) => write!(f, "invalid parameters: {s}"),
            Error::Shape { what, expected, got } => write!(f, "{what}: expected {expected}, got {got}"),
            Error::DType(s) => write!(f, "dtype: {s}"),
            Error::InvalidInput(s) => write!(f, "invalid input: {s}"),
            Error::BackendUnavailable(s) => write!(f, "backend unavailable: {s}"),
            Error::Cuda(s) => write!(f, "CUDA: {s}"),
            Error::Wgpu(s) => write!(f, "wgpu: {s}"),
            Error::Io(s) => write!(f, "io: {s}"),
        }
    }
}

impl std::error::Error for Error {}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidParams(msg.into())
}

/// Checks that a buffer holds at least `needed` elements.
pub(crate) fn ensure_len(what: &str, needed: usize, got: usize) -> Result<()> {
    if got < needed {
        return Err(Error::Shape { what: format!("{what} (elements, at least)"), expected: needed, got });
    }
    Ok(())
}
