// Select, one workgroup per sequence: a candidate is kept by its rank (descending, ties to the
// lower index) or by the mean; kept indices are placed ascending by a workgroup prefix sum, so
// no atomics decide the output. Mode 0 top-k, 1 cumulative mass (ZipVL), 2 above mean.
// Params (binding 0) is SelectUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> score: array<f32>;
@group(0) @binding(2) var<storage, read> lens: array<i32>;
@group(0) @binding(3) var<storage, read> order: array<f32>;
@group(0) @binding(4) var<storage, read_write> idx: array<i32>;
@group(0) @binding(5) var<storage, read_write> count: array<i32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> bad: atomic<u32>;
var<workgroup> bad_w: u32;
var<workgroup> len_w: u32;
var<workgroup> total_w: f32;
var<workgroup> keep_w: u32;
var<workgroup> scan: array<u32, 256>;

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

fn s_at(b: u32, j: u32) -> f32 { return score[p.score_off + b * p.n + j]; }

fn o_at(b: u32, j: u32) -> f32 {
    if (p.has_order != 0u) { return order[p.order_off + b * p.n + j]; }
    return s_at(b, j);
}

// Rank of j among the first l candidates by descending value, ties to the lower index.
fn rank_of(b: u32, l: u32, j: u32, by_order: bool) -> u32 {
    var v = s_at(b, j);
    if (by_order) { v = o_at(b, j); }
    var r = 0u;
    for (var i = 0u; i < l; i++) {
        var w = s_at(b, i);
        if (by_order) { w = o_at(b, i); }
        if (w > v || (w == v && i < j)) { r++; }
    }
    return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let b = wid.x + wid.y * nwg.x;
    if (b >= p.seqs) { return; }
    let ob = p.idx_off + b * p.n;
    if (tid == 0u) {
        let l = lens[p.lens_off + b];
        len_w = u32(max(l, 0));
        if (l < 0 || u32(l) > p.n) { atomicOr(&bad, ST_INDEX_OUT_OF_RANGE); len_w = 0u; }
    }
    let l = workgroupUniformLoad(&len_w);
    for (var j = tid; j < l; j += 256u) {
        if (!finite(s_at(b, j)) || !finite(o_at(b, j))) { atomicOr(&bad, ST_VALUE_OUT_OF_RANGE); }
    }
    workgroupBarrier();
    if (tid == 0u) {
        bad_w = atomicLoad(&bad);
        var t = 0.0;
        for (var j = 0u; j < l; j++) { t += s_at(b, j); }
        total_w = t;
    }
    let fault = workgroupUniformLoad(&bad_w);
    if (fault != 0u) {
        if (tid == 0u) {
            atomicOr(&status[0], fault);
            count[p.count_off + b] = 0;
        }
        for (var j = tid; j < p.n; j += 256u) { idx[ob + j] = -1; }
        return;
    }
    let total = workgroupUniformLoad(&total_w);
    if (p.mode == 1u) {
        // The masses in descending order (float bits in idx, overwritten below), summed in order.
        for (var j = tid; j < l; j += 256u) { idx[ob + rank_of(b, l, j, false)] = bitcast<i32>(s_at(b, j)); }
        workgroupBarrier();
        if (tid == 0u) {
            let need = p.tau * total;
            var cum = 0.0;
            keep_w = l;
            for (var r = 0u; r < l; r++) {
                cum += bitcast<f32>(idx[ob + r]);
                if (cum >= need) {
                    keep_w = r + 1u;
                    break;
                }
            }
        }
    } else if (tid == 0u) {
        keep_w = p.k;
    }
    let keep = workgroupUniformLoad(&keep_w);
    let mean = total / f32(l);
    var running = 0u;
    for (var j0 = 0u; j0 < p.n; j0 += 256u) {
        let j = j0 + tid;
        var flag = 0u;
        if (j < l) {
            if (p.mode == 2u) {
                flag = select(0u, 1u, s_at(b, j) > mean);
            } else {
                flag = select(0u, 1u, rank_of(b, l, j, true) < keep);
            }
        }
        scan[tid] = flag;
        workgroupBarrier();
        for (var off = 1u; off < 256u; off <<= 1u) {
            var v = 0u;
            if (tid >= off) { v = scan[tid - off]; }
            workgroupBarrier();
            scan[tid] += v;
            workgroupBarrier();
        }
        if (flag == 1u) { idx[ob + running + scan[tid] - 1u] = i32(j); }
        running += scan[255];
        workgroupBarrier();
    }
    for (var j = running + tid; j < p.n; j += 256u) { idx[ob + j] = -1; }
    if (tid == 0u) { count[p.count_off + b] = i32(running); }
}
