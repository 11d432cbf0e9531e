// Attention over the kept tokens, one workgroup per (query row i, head h): the keys of i's
// sequence in tiles of 64 with an online softmax; key j is visible iff pos[j] <= pos_q[i]. The
// query rows are the kept tokens themselves (prefill: cu_q and pos_q bound to cu and pos) or new
// tokens over the pruned cache (decode). A row that sees nothing gets o = 0, lse = -inf. Params
// (binding 0) is SparseUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{E}}>;
@group(0) @binding(2) var<storage, read> k: array<{{E}}>;
@group(0) @binding(3) var<storage, read> v: array<{{E}}>;
@group(0) @binding(4) var<storage, read> cu: array<i32>;
@group(0) @binding(5) var<storage, read> pos: array<i32>;
@group(0) @binding(6) var<storage, read_write> o: array<{{E}}>;
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;
@group(0) @binding(8) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read> cu_q: array<i32>;
@group(0) @binding(10) var<storage, read> pos_q: array<i32>;

var<workgroup> ok_w: u32;
var<workgroup> b_w: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.tq * p.heads) { return; }
    let i = id / p.heads;
    let h = id % p.heads;
    if (tid == 0u) {
        ok_w = select(0u, 1u, offsets_ok() && query_offsets_ok());
        b_w = 0u;
        if (ok_w != 0u) {
            while (b_w + 1u < p.seqs && i32(i) >= cu_q[p.cuq_off + b_w + 1u]) { b_w++; }
        } else {
            atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
        }
    }
    if (workgroupUniformLoad(&ok_w) == 0u) { return; }
    let b = workgroupUniformLoad(&b_w);
    let j_lo = u32(cu[p.cu_off + b]);
    let j_hi = u32(cu[p.cu_off + b + 1u]);
    attend(tid, i, h, j_lo, j_hi, false);
}

// cu_seqlens_q from 0 to tq without decreasing.
fn query_offsets_ok() -> bool {
    if (cu_q[p.cuq_off] != 0) { return false; }
    for (var i = 0u; i < p.seqs; i++) {
        if (cu_q[p.cuq_off + i + 1u] < cu_q[p.cuq_off + i]) { return false; }
    }
    return cu_q[p.cuq_off + p.seqs] == i32(p.tq);
}

fn see(i: u32, j: u32) -> bool {
    return pos[p.pos_off + j] <= pos_q[p.posq_off + i];
}

fn masked(h: u32, j: u32) -> bool {
    return false;
}

//! include visual_common.wgsli
//! include visual_attend.wgsli
