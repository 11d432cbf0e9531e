// Compact, one workgroup per sequence: the kept tokens' source rows and original positions
// (text before the segment, the kept candidates, text after), at an offset that is the sum of
// the new lengths before it. Params (binding 0) is CompactUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cu: array<i32>;
@group(0) @binding(2) var<storage, read> seg: array<i32>;
@group(0) @binding(3) var<storage, read> idx: array<i32>;
@group(0) @binding(4) var<storage, read> count: array<i32>;
@group(0) @binding(5) var<storage, read_write> rows: array<i32>;
@group(0) @binding(6) var<storage, read_write> pos: array<i32>;
@group(0) @binding(7) var<storage, read_write> cu_out: array<i32>;
@group(0) @binding(8) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> acc: atomic<u32>;
var<workgroup> ok_w: u32;
var<workgroup> base_w: u32;


fn new_len(b: u32) -> u32 {
    let c = kept(b);
    let l = cu[p.cu_off + b + 1u] - cu[p.cu_off + b];
    if (c == -2) { return u32(l); }
    return u32(l - seg[p.seg_off + 2u * b + 1u] + max(c, 0));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= p.seqs) { return; }
    if (tid == 0u) { ok_w = select(0u, 1u, offsets_ok()); }
    if (workgroupUniformLoad(&ok_w) == 0u) {
        if (tid == 0u) {
            atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
            cu_out[p.out_cu_off + b] = 0;
            if (b == p.seqs - 1u) { cu_out[p.out_cu_off + p.seqs] = 0; }
        }
        for (var r = b * 256u + tid; r < p.tokens; r += p.seqs * 256u) {
            rows[p.rows_off + r] = -1;
            pos[p.pos_off + r] = -1;
        }
        return;
    }
    var s = 0u;
    for (var o = tid; o < b; o += 256u) { s += new_len(o); }
    atomicAdd(&acc, s);
    workgroupBarrier();
    if (tid == 0u) { base_w = atomicLoad(&acc); }
    let base = workgroupUniformLoad(&base_w);
    let c = kept(b);
    if (c < 0 && tid == 0u) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
    let c0 = cu[p.cu_off + b];
    let l = u32(cu[p.cu_off + b + 1u] - c0);
    var st = l;
    var len = 0u;
    if (c != -2) {
        st = u32(seg[p.seg_off + 2u * b]);
        len = u32(seg[p.seg_off + 2u * b + 1u]);
    }
    let kc = u32(max(c, 0));
    let nl = l - len + kc;
    if (tid == 0u) {
        cu_out[p.out_cu_off + b] = i32(base);
        if (b == p.seqs - 1u) { cu_out[p.out_cu_off + p.seqs] = i32(base + nl); }
    }
    for (var e = tid; e < nl; e += 256u) {
        var q = e;
        if (e >= st && e < st + kc) { q = st + u32(idx[p.idx_off + b * p.n + (e - st)]); }
        else if (e >= st + kc) { q = st + len + (e - st - kc); }
        rows[p.rows_off + base + e] = c0 + i32(q);
        pos[p.pos_off + base + e] = i32(q);
    }
    if (b == p.seqs - 1u) {
        for (var r = base + nl + tid; r < p.tokens; r += 256u) {
            rows[p.rows_off + r] = -1;
            pos[p.pos_off + r] = -1;
        }
    }
}
//! include visual_common.wgsli
//! include visual_kept.wgsli
