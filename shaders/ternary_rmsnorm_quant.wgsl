// RMSNorm then per-row absmax int8 quantization, one workgroup per (row, projection).
// q rows are padded to kp (a multiple of 16) with zeros, four i8 to a u32.
// Params (binding 0) is QuantUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> nw: array<{{E}}>;
@group(0) @binding(3) var<storage, read_write> q: array<u32>;
@group(0) @binding(4) var<storage, read_write> s: array<f32>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.m * p.projections) { return; }
    let r = g % p.m;
    let pr = g / p.m;
    let xb = p.x_off + r * p.x_stride;
    let nwb = pr * p.k;
    let glu = p.glu != 0u;
    let sc = norm_scales(xb, nwb, p.k, p.eps, glu, tid);
    let qb = (pr * p.m + r) * (p.kp / 4u);
    for (var wd = tid; wd < p.kp / 4u; wd += 64u) { q[qb + wd] = quant_word(xb, nwb, p.k, glu, sc, wd); }
    if (tid == 0u) { s[pr * p.m + r] = sc.y; }
}

//! include ternary_common.wgsli
//! include ternary_normquant.wgsli
