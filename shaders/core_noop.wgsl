// Empty dispatch: the bench's launch floor.
struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) tid: u32) {
    if (tid > p.n) { return; }
}
