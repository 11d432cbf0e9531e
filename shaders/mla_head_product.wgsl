// out[t, h, j] = sum_k a[t, h, k] w[h, k, j], one workgroup per (token, head) with the a row in
// workgroup memory (k <= 4096); every stride is explicit (absorb_q reads W_UK row-major,
// project_out reads W_UV transposed). Output rows of different heads and tokens never overlap
// (the plan checks), but a 16-bit row may share its edge words with a neighbour: stw_ updates
// those halves atomically. Params (binding 0) is HeadProductUniform in src/mla/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<{{E}}>;
@group(0) @binding(2) var<storage, read> w: array<{{E}}>;
@group(0) @binding(3) var<storage, read_write> out: array<{{E}}>;

const WG: u32 = 64u;

var<workgroup> as_: array<f32, 4096>;

fn dot(h: u32, j: u32) -> f32 {
    var s = 0.0;
    for (var k = 0u; k < p.k; k++) { s += as_[k] * ld_w(p.w_off + h * p.w_hs + k * p.w_ks + j * p.w_js); }
    return s;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.tokens * p.heads) { return; }
    let t = g / p.heads;
    let h = g % p.heads;
    let ab = p.a_off + t * p.a_ts + h * p.a_hs;
    for (var k = tid; k < p.k; k += WG) { as_[k] = ld_a(ab + k); }
    workgroupBarrier();
    let e0 = p.o_off + t * p.o_ts + h * p.o_hs;
    let e1 = e0 + p.n;
    for (var wd = e0 / EPW + tid; wd <= (e1 - 1u) / EPW; wd += WG) {
        var v = array<f32, 2>(0.0, 0.0);
        var m = 0u;
        for (var ln = 0u; ln < EPW; ln++) {
            let e = wd * EPW + ln;
            if (e >= e0 && e < e1) {
                v[ln] = dot(h, e - e0);
                m |= 1u << ln;
            }
        }
        stw_out(wd, m, v[0], v[1]);
    }
}
