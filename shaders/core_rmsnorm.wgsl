// y = x / sqrt(mean(x^2) + eps) * w, one workgroup per row; rows are strided views.
// Templated over the storage dtype: `ld_*` / `stw_*` and EPW come from build.rs.
// Params (binding 0) is RmsNormUniform in src/core/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> w: array<{{E}}>;
@group(0) @binding(3) var<storage, read_write> y: array<{{E}}>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    // Rows past 65535 go to the y dimension of the grid.
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let xb = p.x_off + row * p.x_stride;
    var acc = 0.0;
    for (var c = tid; c < p.cols; c += WG) {
        let v = ld_x(xb + c);
        acc += v * v;
    }
    red[tid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) { red[tid] += red[tid + s]; }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(red[0] / f32(p.cols) + p.eps);

    // Walk the output row by storage word; lanes outside the row are left to their owner.
    let e0 = p.y_off + row * p.y_stride;
    let e1 = e0 + p.cols;
    for (var wd = e0 / EPW + tid; wd <= (e1 - 1u) / EPW; wd += WG) {
        var v = array<f32, 2>(0.0, 0.0);
        var m = 0u;
        for (var l = 0u; l < EPW; l++) {
            let e = wd * EPW + l;
            if (e >= e0 && e < e1) {
                let c = e - e0;
                v[l] = ld_x(xb + c) * inv * ld_w(p.w_off + c);
                m |= 1u << l;
            }
        }
        stw_y(wd, m, v[0], v[1]);
    }
}
