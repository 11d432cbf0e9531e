//! Every registered kernel: the one place that lists the families. The harness knows no
//! family; the tool, the tests and the benches hand it this list.

use crate::harness::Kernel;

/// Every registered kernel, family by family.
pub fn kernels() -> Vec<&'static dyn Kernel> {
    let mut v: Vec<&'static dyn Kernel> = Vec::new();
    v.extend(crate::core::registry::kernels());
    v.extend(crate::ternary::registry::kernels());
    v.extend(crate::mla::registry::kernels());
    v.extend(crate::mom::registry::kernels());
    v.extend(crate::visual::registry::kernels());
    v
}

/// The families, in registry order.
pub fn families() -> Vec<&'static str> {
    crate::harness::families(&kernels())
}

/// The kernel `family.name`.
pub fn find(id: &str) -> Option<&'static dyn Kernel> {
    kernels().into_iter().find(|k| k.id() == id)
}
