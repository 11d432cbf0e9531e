// Paged absorbed MLA decode into split-KV partial states: one workgroup per (query row, split,
// sequence). The workgroup holds its query row, scores a tile of 64 keys at a time (invocation k
// scores key k), keeps an online softmax, and writes the split's normalized output and
// log-sum-exp to the f32 workspace. Keys past the row's causal position and tokens on a page id
// outside [0, pages) get no weight; a seq_len outside [0, max_pages * P] is clamped; both raise
// ST_INDEX_OUT_OF_RANGE. Params (binding 0) is DecodeUniform in src/mla/uniforms.rs.
//
// The cache is `{{K}}`: the float dtype, or (the `mla_decode_e4m3_*` modules, CACHE_FP8) E4M3
// bytes four to a word with one f32 scale per cache row in `cscale`; a key's score and its
// weight in the output carry its scale, the softmax sum does not.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<{{E}}>;
@group(0) @binding(2) var<storage, read> kv: array<{{K}}>;
@group(0) @binding(3) var<storage, read> pe: array<{{K}}>;
@group(0) @binding(4) var<storage, read> table: array<i32>;
@group(0) @binding(5) var<storage, read> lens: array<i32>;
@group(0) @binding(6) var<storage, read_write> ws: array<f32>;
@group(0) @binding(7) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(8) var<storage, read> cu: array<i32>;
@group(0) @binding(9) var<storage, read> cscale: array<f32>;

const WG: u32 = 64u;
const PER: u32 = 32u;  // latent dims an invocation owns: L <= 2048 = 32 * 64

var<workgroup> qs: array<f32, 2176>;
var<workgroup> wt: array<f32, 64>;
var<workgroup> crow: array<u32, 64>;
var<workgroup> red: array<f32, 64>;
var<workgroup> len_w: i32;
var<workgroup> vis_w: i32;
var<workgroup> seq_w: u32;
var<workgroup> nan_w: atomic<u32>;  // a NaN score in this split (the NaN policy, ARCHITECTURE.md)

fn wg_max(v: f32, tid: u32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (tid < s) { red[tid] = max(red[tid], red[tid + s]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_sum(v: f32, tid: u32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (tid < s) { red[tid] = red[tid] + red[tid + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let nrows = p.sq * p.heads;
    let total = p.batch * nrows;
    let g = wid.x + wid.y * nwg.x;
    if (g >= total * p.splits) { return; }
    let j = g / total;
    let gb = (g % total) / nrows;
    let row = g % nrows;
    let w = p.latent + p.rope;
    // Latent dims per invocation: loops stop at what L needs (the CPU adapter's loop budget).
    let np = (p.latent + WG - 1u) / WG;
    let qb = p.q_off + (gb * nrows + row) * w;
    for (var d = tid; d < w; d += WG) { qs[d] = ld_q(qb + d); }
    // -inf built at run time: a constant infinity is a WGSL creation error.
    let neg_inf = bitcast<f32>(0xff800000u | (p.batch & 0u));
    let cap = i32(p.max_pages * p.page_size);
    if (tid == 0u) {
        // Decode: the grid's sequence and row. Prefill: the first cu_seqlens range holding the
        // token (none: no key, and the status is raised).
        var b = gb;
        var i = i32(row / p.heads);
        var sq_b = i32(p.sq);
        var found = true;
        if (p.prefill != 0u) {
            // A cu_seqlens that does not run from 0 to the token count without decreasing gives
            // every row no key.
            var bad_cu = cu[p.cu_off] != 0 || cu[p.cu_off + p.nseq] != i32(p.sq);
            for (var s = 0u; s < p.nseq; s++) {
                bad_cu = bad_cu || cu[p.cu_off + s + 1u] < cu[p.cu_off + s];
            }
            found = false;
            for (var s = 0u; s < p.nseq; s++) {
                if (!found && !bad_cu && i >= cu[p.cu_off + s] && i < cu[p.cu_off + s + 1u]) {
                    found = true;
                    b = s;
                }
            }
            if (found) {
                sq_b = cu[p.cu_off + b + 1u] - cu[p.cu_off + b];
                i = i - cu[p.cu_off + b];
            } else {
                b = 0u;  // only with a bad cu_seqlens, which row 0 reports
            }
            if (row == 0u && j == 0u) {
                var bad = bad_cu;
                // Every sequence's length, not only those some row reads.
                for (var s = 0u; s < p.nseq; s++) {
                    let n = lens[p.lens_off + s];
                    bad = bad || n < 0 || n > cap;
                }
                if (bad) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
            }
        }
        var n = lens[p.lens_off + b];
        if (n < 0 || n > cap) {
            if (row == 0u && j == 0u) { atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE); }
            n = select(cap, 0, n < 0);
        }
        len_w = n;
        vis_w = select(0, min(n - sq_b + i + 1, n), found);
        seq_w = b;
    }
    let len = workgroupUniformLoad(&len_w);
    let visible = workgroupUniformLoad(&vis_w);
    let b = workgroupUniformLoad(&seq_w);
    let chunk = (len + i32(p.splits) - 1) / i32(p.splits);
    let t0 = i32(j) * chunk;
    let t1 = min(t0 + chunk, visible);
    var m = neg_inf;
    var l = 0.0;
    var acc: array<f32, 32>;
    for (var k = 0u; k < np; k++) { acc[k] = 0.0; }
    for (var base = t0; base < t1; base += i32(WG)) {
        let t = base + i32(tid);
        var s = neg_inf;
        var ks = 1.0;
        var cr = 0u;
        if (t < t1) {
            let page = table[p.table_off + b * p.max_pages + u32(t) / p.page_size];
            if (page >= 0 && u32(page) < p.pages) {
                cr = u32(page) * p.page_size + u32(t) % p.page_size;
                let cb = p.kv_off + cr * p.kv_stride;
                let rb = p.pe_off + cr * p.pe_stride;
                var dot = 0.0;
                for (var d = 0u; d < p.latent; d++) { dot += qs[d] * ld_kv(cb + d); }
                for (var d = 0u; d < p.rope; d++) { dot += qs[p.latent + d] * ld_pe(rb + d); }
                if (CACHE_FP8) { ks = cscale[p.cs_off + cr]; }
                s = p.scale * (dot * ks);
                if (nan_bits(s)) { atomicOr(&nan_w, 1u); }
            } else {
                atomicOr(&status[0], ST_INDEX_OUT_OF_RANGE);
            }
        }
        let mnew = max(m, wg_max(s, tid));
        // With every key so far hidden, mnew is -inf: weights and the rescale stay 0, never NaN.
        let alpha = select(exp(m - mnew), 0.0, m == neg_inf);
        let wk = select(exp(s - mnew), 0.0, s == neg_inf);
        wt[tid] = wk * ks;
        crow[tid] = cr;
        l = l * alpha + wg_sum(wk, tid);
        m = mnew;
        for (var k = 0u; k < np; k++) { acc[k] = acc[k] * alpha; }
        let n = u32(min(i32(WG), t1 - base));
        for (var kk = 0u; kk < n; kk++) {
            let wv = wt[kk];
            if (wv != 0.0) {
                let cb = p.kv_off + crow[kk] * p.kv_stride;
                for (var k = 0u; k < np; k++) {
                    let d = tid + k * WG;
                    if (d < p.latent) { acc[k] += wv * ld_kv(cb + d); }
                }
            }
        }
        workgroupBarrier();
    }
    let prow = j * total + gb * nrows + row;
    let inv = select(0.0, 1.0 / l, l > 0.0);
    // A NaN score makes the split's partial NaN, by the bits (the loop's last barrier made the
    // flag visible; WGSL arithmetic need not carry a NaN that far).
    let nan = atomicLoad(&nan_w) != 0u;
    let nan_v = make_nan(p.batch & 0u);
    for (var k = 0u; k < np; k++) {
        let d = tid + k * WG;
        if (d < p.latent) { ws[p.ws_off + prow * p.latent + d] = select(acc[k] * inv, nan_v, nan); }
    }
    if (tid == 0u) {
        ws[p.ws_off + p.splits * total * p.latent + prow] = select(select(neg_inf, m + log(l), l > 0.0), nan_v, nan);
    }
}
