// One invocation per packed word: t = clamp(round(w / gamma), -1, 1), code t + 1, padding code 1.
// Params (binding 0) is QuantPackUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<{{E}}>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> packed: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 64u + tid;
    if (i >= p.n * p.kw) { return; }
    let r = i / p.kw;
    let c0 = (i % p.kw) * 16u;
    let g = gamma[r / p.rows_per_part];
    var word = 0u;
    for (var j = 0u; j < 16u; j++) {
        var code = 1u;
        if (c0 + j < p.k) {
            let t = clamp(round(ld_w(r * p.k + c0 + j) / g), -1.0, 1.0);
            code = u32(i32(t) + 1i);
        }
        word |= code << (2u * j);
    }
    packed[i] = word;
}
