// Attention mass, pass 2: one invocation per (sequence b, output head, candidate j) owns
// mass[b][head][j] (output head ho covers the p.hpo query heads from ho * hpo: 1 when none are
// reduced, H / Hkv per KV group, H for all) and sums the rater rows r0..r1 of
// this dispatch, in row order, over the heads it covers; the host splits the rows over
// dispatches so that no invocation loops longer than its budget (a CPU adapter stops loops at
// 65,535 iterations). The first dispatch (r0 = 0) writes, later ones add: no atomics, and the
// sums do not depend on scheduling. Params (binding 0) is MassUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{E}}>;
@group(0) @binding(2) var<storage, read> qpos: array<i32>;
@group(0) @binding(3) var<storage, read> qw: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<{{E}}>;
@group(0) @binding(5) var<storage, read> cu: array<i32>;
@group(0) @binding(6) var<storage, read> seg: array<i32>;
@group(0) @binding(7) var<storage, read> lse: array<f32>;
@group(0) @binding(8) var<storage, read_write> mass: array<f32>;
@group(0) @binding(9) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let tiles = (p.n + 63u) / 64u;
    let ho_n = p.heads / p.hpo;
    let id = wid.x + wid.y * nwg.x;
    if (id >= tiles * ho_n * p.seqs) { return; }
    let b = id / (tiles * ho_n);
    let ho = (id / tiles) % ho_n;
    let j = (id % tiles) * 64u + tid;
    if (j >= p.n) { return; }
    let out = p.mass_off + (b * ho_n + ho) * p.n + j;
    if (!offsets_ok()) {
        atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
        mass[out] = 0.0;
        return;
    }
    let c0 = cu[p.cu_off + b];
    let c1 = cu[p.cu_off + b + 1u];
    let s0 = seg[p.seg_off + 2u * b];
    let len = seg[p.seg_off + 2u * b + 1u];
    let seg_ok = s0 >= 0 && len >= 0 && s0 <= c1 - c0 - len && u32(len) <= p.n;
    if (!seg_ok) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
    if (id == 0u && tid == 0u) {
        for (var r = p.r0; r < p.r1; r++) {
            let t = qpos[p.qpos_off + r];
            if (t < 0 || u32(t) >= p.tokens) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
        }
    }
    let g = p.heads / p.kv_heads;
    let h0 = ho * p.hpo;
    let h1 = h0 + p.hpo;
    var acc = 0.0;
    if (p.r0 != 0u) { acc = mass[out]; }
    if (seg_ok && i32(j) < len) {
        let key = u32(c0 + s0) + j;
        for (var r = p.r0; r < p.r1; r++) {
            let t = qpos[p.qpos_off + r];
            if (t < 0 || u32(t) >= p.tokens || t < c0 || t >= c1 || key > u32(t)) { continue; }
            for (var h = h0; h < h1; h++) {
                var s = 0.0;
                for (var d = 0u; d < p.dim; d++) {
                    s += ld_q(p.q_off + (r * p.heads + h) * p.dim + d) * ld_k(p.k_off + (key * p.kv_heads + h / g) * p.dim + d);
                }
                acc += qw[p.qw_off + r] * exp(s * p.scale - lse[p.lse_off + r * p.heads + h]);
            }
        }
    }
    mass[out] = acc;
}

//! include visual_common.wgsli
