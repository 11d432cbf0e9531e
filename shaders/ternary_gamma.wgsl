// gamma[p] = max(mean |W| over partition p, 1e-5), one workgroup per partition.
// Params (binding 0) is GammaUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rowsum: array<f32>;
@group(0) @binding(2) var<storage, read_write> gamma: array<f32>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let part = wid.x;
    if (part >= p.parts) { return; }
    var acc = 0.0;
    for (var r = tid; r < p.rows_per_part; r += 64u) { acc += rowsum[part * p.rows_per_part + r]; }
    red[tid] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (tid < s) { red[tid] += red[tid + s]; }
        workgroupBarrier();
    }
    if (tid == 0u) { gamma[part] = max(red[0] / (f32(p.rows_per_part) * f32(p.k)), 1e-5); }
}
