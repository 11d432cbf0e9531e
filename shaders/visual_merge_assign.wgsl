// Merge, pass 1: one workgroup per (sequence b, candidate j) finds j's kept slot: its own when
// kept (binary search of the ascending selection), else the kept candidate of highest cosine
// similarity (ties to the lower slot; a zero vector has similarity 0); -1 past the segment,
// when nothing is kept, or for a bad sequence. The kept tokens are split over the workgroup, so
// no invocation loops over all of them (a CPU adapter stops loops at 65,535 iterations).
// Params (binding 0) is MergeUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{E}}>;
@group(0) @binding(2) var<storage, read> cu: array<i32>;
@group(0) @binding(3) var<storage, read> seg: array<i32>;
@group(0) @binding(4) var<storage, read> idx: array<i32>;
@group(0) @binding(5) var<storage, read> count: array<i32>;
@group(0) @binding(6) var<storage, read_write> assign: array<i32>;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> c_w: i32;
var<workgroup> best_v: array<f32, 64>;
var<workgroup> best_e: array<i32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.n * p.seqs) { return; }
    let b = id / p.n;
    let j = id % p.n;
    let a = p.assign_off + b * p.n;
    if (tid == 0u) {
        var c = -1;
        if (offsets_ok()) { c = kept(b); }
        if (c < 0) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
        c_w = c;
    }
    let c = workgroupUniformLoad(&c_w);
    if (c < 0 || i32(j) >= seg[p.seg_off + 2u * b + 1u] || c == 0) {
        if (tid == 0u) { assign[a + j] = -1; }
        return;
    }
    let kb = p.idx_off + b * p.n;
    var lo = 0u;
    var hi = u32(c);
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (idx[kb + mid] < i32(j)) { lo = mid + 1u; } else { hi = mid; }
    }
    if (lo < u32(c) && idx[kb + lo] == i32(j)) {
        if (tid == 0u) { assign[a + j] = i32(lo); }
        return;
    }
    let base = u32(cu[p.cu_off + b] + seg[p.seg_off + 2u * b]);
    let xj = p.x_off + (base + j) * p.dim;
    var nj = 0.0;
    for (var d = 0u; d < p.dim; d++) { nj += ld_x(xj + d) * ld_x(xj + d); }
    // Each invocation takes every 64th kept token, ascending, and keeps its first best; the
    // tree below prefers the higher similarity, then the lower slot: the first best overall.
    var best = -1;
    var bv = 0.0;
    for (var e = tid; e < u32(c); e += 64u) {
        let xe = p.x_off + (base + u32(idx[kb + e])) * p.dim;
        var dot = 0.0;
        var ne = 0.0;
        for (var d = 0u; d < p.dim; d++) {
            let u = ld_x(xe + d);
            dot += ld_x(xj + d) * u;
            ne += u * u;
        }
        var cs = 0.0;
        if (nj != 0.0 && ne != 0.0) { cs = dot / sqrt(nj * ne); }
        if (best < 0 || cs > bv) {
            best = i32(e);
            bv = cs;
        }
    }
    best_v[tid] = bv;
    best_e[tid] = best;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (tid < w) {
            let oe = best_e[tid + w];
            let ov = best_v[tid + w];
            let me = best_e[tid];
            if (oe >= 0 && (me < 0 || ov > best_v[tid] || (ov == best_v[tid] && oe < me))) {
                best_e[tid] = oe;
                best_v[tid] = ov;
            }
        }
        workgroupBarrier();
    }
    if (tid == 0u) { assign[a + j] = best_e[0]; }
}

//! include visual_common.wgsli
//! include visual_kept.wgsli
