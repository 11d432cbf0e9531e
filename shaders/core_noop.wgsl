// Empty dispatch: the bench's launch floor.
// Params (binding 0) is NoopUniform in src/core/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) tid: u32) {
    if (tid > p.n) { return; }
}
