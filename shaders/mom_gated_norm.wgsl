// The gated output norm, one workgroup per (token, head) row: y = o * rsqrt(mean(o^2) + eps)
// * w * silu(gate). Params (binding 0) is GatedNormUniform in src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> o: array<{{E}}>;
@group(0) @binding(2) var<storage, read> gate: array<{{E}}>;
@group(0) @binding(3) var<storage, read> w: array<{{E}}>;
@group(0) @binding(4) var<storage, read_write> y: array<{{E}}>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let base = r * p.head_v;
    var ss = 0.0;
    for (var c = tid; c < p.head_v; c += 64u) {
        let v = ld_o(p.o_off + base + c);
        ss += v * v;
    }
    red[tid] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (tid < s) { red[tid] += red[tid + s]; }
        workgroupBarrier();
    }
    let inv = inverseSqrt(red[0] / f32(p.head_v) + p.eps);
    for (var c = tid; c < p.head_v; c += 64u) {
        let gv = ld_gate(p.gate_off + base + c);
        let v = ld_o(p.o_off + base + c) * inv * ld_w(p.w_off + c) * gv / (1.0 + exp(-gv));
        let e = p.y_off + base + c;
        stw_y(e / EPW, 1u << (e % EPW), v, v);
    }
}
