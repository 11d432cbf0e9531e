// Tiled GEMM: a 16 x 16 workgroup computes a 16 (m) x 16 (n) tile, one packed word (16 k) of
// both operands staged in workgroup memory per step. Exact i32 sums, out = acc * gamma / s.
// Params (binding 0) is MatmulUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read> packed: array<u32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<{{E}}>;
@group(0) @binding(6) var<storage, read_write> acc_out: array<i32>;

var<workgroup> at: array<u32, 64>;
var<workgroup> bt: array<u32, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.n_tiles * p.m_tiles * p.projections) { return; }
    let pr = g / (p.n_tiles * p.m_tiles);
    let rem = g % (p.n_tiles * p.m_tiles);
    let m0 = (rem / p.n_tiles) * 16u;
    let j0 = (rem % p.n_tiles) * 16u;
    let qrow = p.kw * 4u;
    let mm = m0 + lid.y;
    let jl = j0 + lid.x;
    var acc = 0i;
    for (var kt = 0u; kt < p.kw; kt++) {
        if (li < 64u) {
            let r = m0 + li / 4u;
            var v = 0u;
            if (r < p.m) { v = q[(pr * p.m + r) * qrow + kt * 4u + li % 4u]; }
            at[li] = v;
        } else if (li < 80u) {
            let r = j0 + li - 64u;
            var v = 0x55555555u;  // code 1 everywhere: weight 0
            if (r < p.n) { v = packed[(pr * p.n + r) * p.kw + kt]; }
            bt[li - 64u] = v;
        }
        workgroupBarrier();
        acc += dot16(bt[lid.x], at[lid.y * 4u], at[lid.y * 4u + 1u], at[lid.y * 4u + 2u], at[lid.y * 4u + 3u]);
        workgroupBarrier();
    }
    if (mm < p.m && jl < p.n) {
        let j = pr * p.n + jl;
        let gm = gamma[pr * p.parts + jl / (p.n / p.parts)];
        var v = f32(acc) * gm / s[pr * p.m + mm];
        let e = p.out_off + mm * p.out_stride + j;
        if (p.accumulate != 0u) { v += ld_out(e); }
        stw_out(e / EPW, 1u << (e % EPW), v, v);
        if (p.write_acc != 0u) { acc_out[mm * p.projections * p.n + j] = acc; }
    }
}

//! include ternary_common.wgsli
