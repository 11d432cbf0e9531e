// Permute, pass 2: each stream's workgroup sums the counts before it (its first row), writes
// its offset, and places its pairs in token order with a workgroup prefix sum per tile of 256
// pairs, so the grouping is stable and needs no atomics on rows. The last stream's workgroup
// also writes the end offset and fills the unused rows of `order` with -1.
// Params (binding 0) is PermuteUniform in src/mom/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> idx: array<i32>;
@group(0) @binding(2) var<storage, read> cu: array<i32>;
@group(0) @binding(3) var<storage, read> counts: array<i32>;
@group(0) @binding(4) var<storage, read_write> order: array<i32>;
@group(0) @binding(5) var<storage, read_write> inverse: array<i32>;
@group(0) @binding(6) var<storage, read_write> cu_mem: array<i32>;

var<workgroup> acc: atomic<u32>;
var<workgroup> base_w: u32;
var<workgroup> count_w: u32;
var<workgroup> t0_w: u32;
var<workgroup> t1_w: u32;
var<workgroup> scan: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let g = wid.x + wid.y * nwg.x;
    if (g >= p.groups) { return; }
    let m = g / p.seqs;
    let b = g % p.seqs;
    let n = p.topk + p.has_shared;
    var s = 0u;
    for (var i = tid; i < g; i += 256u) { s += u32(counts[p.counts_off + i]); }
    atomicAdd(&acc, s);
    workgroupBarrier();
    if (tid == 0u) {
        base_w = atomicLoad(&acc);
        count_w = u32(counts[p.counts_off + g]);
        // Read only when the count is nonzero, which pass 1 allowed only for valid cu_seqlens.
        t0_w = 0u;
        t1_w = 0u;
        if (count_w != 0u) {
            t0_w = u32(cu[p.cu_off + b]);
            t1_w = u32(cu[p.cu_off + b + 1u]);
        }
    }
    let base = workgroupUniformLoad(&base_w);
    let count = workgroupUniformLoad(&count_w);
    let t0 = workgroupUniformLoad(&t0_w);
    let t1 = workgroupUniformLoad(&t1_w);
    if (tid == 0u) {
        cu_mem[p.cu_mem_off + g] = i32(base);
        if (g == p.groups - 1u) { cu_mem[p.cu_mem_off + p.groups] = i32(base + count); }
    }
    if (g == p.groups - 1u) {
        for (var r = base + count + tid; r < p.tokens * n; r += 256u) { order[p.order_off + r] = -1; }
    }
    if (count == 0u) { return; }
    if (m == p.memories) {
        for (var t = t0 + tid; t < t1; t += 256u) {
            let r = base + (t - t0);
            order[p.order_off + r] = i32(t);
            inverse[p.inv_off + t * n + p.topk] = i32(r);
        }
        return;
    }
    var running = 0u;
    for (var q0 = t0 * p.topk; q0 < t1 * p.topk; q0 += 256u) {
        let q = q0 + tid;
        var flag = 0u;
        if (q < t1 * p.topk && choice(q / p.topk, q % p.topk) == i32(m)) { flag = 1u; }
        scan[tid] = flag;
        workgroupBarrier();
        for (var off = 1u; off < 256u; off <<= 1u) {
            var v = 0u;
            if (tid >= off) { v = scan[tid - off]; }
            workgroupBarrier();
            scan[tid] += v;
            workgroupBarrier();
        }
        if (flag == 1u) {
            let r = base + running + scan[tid] - 1u;
            order[p.order_off + r] = i32(q / p.topk);
            inverse[p.inv_off + (q / p.topk) * n + q % p.topk] = i32(r);
        }
        running += scan[255];
        workgroupBarrier();
    }
}

fn choice(t: u32, j: u32) -> i32 {
    let m = idx[p.idx_off + t * p.topk + j];
    if (m < 0 || u32(m) >= p.memories) { return -1; }
    for (var i = 0u; i < j; i++) {
        if (idx[p.idx_off + t * p.topk + i] == m) { return -1; }
    }
    return m;
}
