// Register-tiled GEMM: a 16 x 16 workgroup computes a 64 (m) x 64 (n) tile, each invocation a
// 4 x 4 block of it (rows ly + 16 i, columns lx + 16 jj, so neighbours read neighbouring words
// of workgroup memory). Per step two packed words (32 k) of both operands are staged: the
// activations as they are (8 u32 a row), the weights expanded once to signed bytes (tern4), so
// the inner loop is nothing but packed 4 x i8 dot products. Exact i32 sums; out = acc * gamma / s.
// Params (binding 0) is MatmulUniform in src/ternary/uniforms.rs; build.rs appends it.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<u32>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read> packed: array<u32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<{{E}}>;
@group(0) @binding(6) var<storage, read_write> acc_out: array<i32>;

const TILE: u32 = 64u;
const KS: u32 = 2u;       // packed words (16 k each) staged per step
const ROW: u32 = 8u;      // u32 per staged row: KS words of 16 i8 = 4 u32 each

var<workgroup> at: array<u32, 512>;   // [TILE rows of m][ROW]
var<workgroup> bt: array<u32, 512>;   // [TILE rows of n][ROW], signed-byte weights

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let g = wid.x + wid.y * nwg.x;
    // Uniform across the workgroup, so the early return keeps barriers in uniform control flow.
    if (g >= p.n_tiles * p.m_tiles * p.projections) { return; }
    let pr = g / (p.n_tiles * p.m_tiles);
    let rem = g % (p.n_tiles * p.m_tiles);
    let m0 = (rem / p.n_tiles) * TILE;
    let j0 = (rem % p.n_tiles) * TILE;
    let qrow = p.kw * 4u;
    var acc = array<vec4<i32>, 4>(vec4<i32>(0i), vec4<i32>(0i), vec4<i32>(0i), vec4<i32>(0i));
    for (var kt = 0u; kt < p.kw; kt += KS) {
        // Two staged u32 per invocation and operand: slot e = li + 256 h of a [64][8] tile.
        for (var h = 0u; h < 2u; h++) {
            let e = li + 256u * h;
            let r = e / ROW;
            let c = e % ROW;           // u32 within the staged row
            let w = kt + c / 4u;       // packed word (k / 16)
            var av = 0u;
            if (m0 + r < p.m && w < p.kw) { av = q[(pr * p.m + m0 + r) * qrow + w * 4u + c % 4u]; }
            at[e] = av;
            var bv = 0u;               // weight 0 outside the matrix
            if (j0 + r < p.n && w < p.kw) { bv = tern4(packed[(pr * p.n + j0 + r) * p.kw + w], c % 4u); }
            bt[e] = bv;
        }
        workgroupBarrier();
        // The 4 x 4 block written out: a CPU adapter counts every loop iteration against its
        // 65,535 per invocation, and these would be 29 of them per staged u32.
        for (var c = 0u; c < ROW; c++) {
            let b0 = bt[lid.x * ROW + c];
            let b1 = bt[(lid.x + 16u) * ROW + c];
            let b2 = bt[(lid.x + 32u) * ROW + c];
            let b3 = bt[(lid.x + 48u) * ROW + c];
            let a0 = at[lid.y * ROW + c];
            let a1 = at[(lid.y + 16u) * ROW + c];
            let a2 = at[(lid.y + 32u) * ROW + c];
            let a3 = at[(lid.y + 48u) * ROW + c];
            acc[0] += vec4<i32>(dot4I8Packed(b0, a0), dot4I8Packed(b1, a0), dot4I8Packed(b2, a0), dot4I8Packed(b3, a0));
            acc[1] += vec4<i32>(dot4I8Packed(b0, a1), dot4I8Packed(b1, a1), dot4I8Packed(b2, a1), dot4I8Packed(b3, a1));
            acc[2] += vec4<i32>(dot4I8Packed(b0, a2), dot4I8Packed(b1, a2), dot4I8Packed(b2, a2), dot4I8Packed(b3, a2));
            acc[3] += vec4<i32>(dot4I8Packed(b0, a3), dot4I8Packed(b1, a3), dot4I8Packed(b2, a3), dot4I8Packed(b3, a3));
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let mm = m0 + lid.y + 16u * i;
        if (mm >= p.m) { continue; }
        let sm = s[pr * p.m + mm];
        for (var jj = 0u; jj < 4u; jj++) {
            let jl = j0 + lid.x + 16u * jj;
            if (jl >= p.n) { continue; }
            let j = pr * p.n + jl;
            let gm = gamma[pr * p.parts + jl / (p.n / p.parts)];
            var v = f32(acc[i][jj]) * gm / sm;
            let e = p.out_off + mm * p.out_stride + j;
            if (p.accumulate != 0u) { v += ld_out(e); }
            stw_out(e / EPW, 1u << (e % EPW), v, v);
            if (p.write_acc != 0u) { acc_out[mm * p.projections * p.n + j] = acc[i][jj]; }
        }
    }
}

//! include ternary_common.wgsli
