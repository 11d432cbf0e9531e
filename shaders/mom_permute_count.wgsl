// Permute, pass 1: one workgroup per stream g = m * seqs + b counts its (token, choice) pairs;
// the memory-0 workgroup of each sequence marks the sequence's dropped pairs (choice outside
// [0, M) or repeating an earlier one) with -1 in `inverse`. Bad cu_seqlens: every count is 0,
// every pair is dropped. Params (binding 0) is PermuteUniform in src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read> cu: array<i32>;
@group(0) @binding(3) var<storage, read_write> counts: array<i32>;
@group(0) @binding(4) var<storage, read_write> inverse: array<i32>;
@group(0) @binding(5) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> cnt: atomic<u32>;
var<workgroup> ok_w: u32;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.groups) { return; }
    let m = g / p.seqs;
    let b = g % p.seqs;
    let n = p.topk + p.has_shared;
    if (tid == 0u) { ok_w = select(0u, 1u, offsets_ok()); }
    let ok = workgroupUniformLoad(&ok_w);
    if (ok == 0u) {
        if (tid == 0u) {
            atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
            counts[p.counts_off + g] = 0;
        }
        for (var q = g * 256u + tid; q < p.tokens * n; q += p.groups * 256u) {
            inverse[p.inv_off + q] = -1;
        }
        return;
    }
    let t0 = u32(cu[p.cu_off + b]);
    let t1 = u32(cu[p.cu_off + b + 1u]);
    if (m == p.memories) {
        if (tid == 0u) { atomicStore(&cnt, t1 - t0); }
    } else {
        for (var q = t0 * p.topk + tid; q < t1 * p.topk; q += 256u) {
            let ch = choice(q / p.topk, q % p.topk);
            if (ch == i32(m)) { atomicAdd(&cnt, 1u); }
            if (m == 0u && ch < 0) {
                atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
                inverse[p.inv_off + (q / p.topk) * n + q % p.topk] = -1;
            }
        }
    }
    workgroupBarrier();
    if (tid == 0u) { counts[p.counts_off + g] = i32(atomicLoad(&cnt)); }
}

// cu_seqlens runs from 0 to tokens without decreasing.
fn offsets_ok() -> bool {
    if (cu[p.cu_off] != 0) { return false; }
    for (var i = 0u; i < p.seqs; i++) {
        if (cu[p.cu_off + i + 1u] < cu[p.cu_off + i]) { return false; }
    }
    return cu[p.cu_off + p.seqs] == i32(p.tokens);
}

// Token t's j-th memory, or -1 when it is outside [0, M) or repeats an earlier choice.
fn choice(t: u32, j: u32) -> i32 {
    let m = idx[p.idx_off + t * p.topk + j];
    if (m < 0 || u32(m) >= p.memories) { return -1; }
    for (var i = 0u; i < j; i++) {
        if (idx[p.idx_off + t * p.topk + i] == m) { return -1; }
    }
    return m;
}
