// Select, one workgroup per sequence: mode 0 top-k, 1 cumulative mass (ZipVL), 2 above mean.
// Modes 0 and 1 sort the candidates' indices in place in `idx` (a bitonic network run by the
// whole workgroup, descending by score or order, ties to the lower index), take the first
// `keep`, and sort those ascending; mode 2 flags candidates above the mean and places them by a
// workgroup prefix sum. No atomics decide the output, and no invocation loops over all pairs of
// candidates (a CPU adapter stops loops at 65,535 iterations).
// Params (binding 0) is SelectUniform in src/visual/uniforms.rs.

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> score: array<f32>;
@group(0) @binding(2) var<storage, read> lens: array<i32>;
@group(0) @binding(3) var<storage, read> order: array<f32>;
@group(0) @binding(4) var<storage, read_write> idx: array<i32>;
@group(0) @binding(5) var<storage, read_write> count: array<i32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read> keep_in: array<i32>;  // per-sequence counts (per_seq_k)

const WG: u32 = 256u;

var<workgroup> bad: atomic<u32>;
var<workgroup> bad_w: u32;
var<workgroup> len_w: u32;
var<workgroup> total_w: f32;
var<workgroup> keep_w: u32;
var<workgroup> forced_w: u32;
var<workgroup> scan: array<u32, 256>;

fn s_at(b: u32, j: u32) -> f32 { return score[p.score_off + b * p.n + j]; }

// +inf built at run time: a constant infinity is a WGSL creation error.
fn pos_inf() -> f32 { return bitcast<f32>(0x7f800000u | (p.n & 0u)); }

fn forced(b: u32, j: u32) -> bool { return s_at(b, j) == pos_inf(); }

// The ranking key: the order, except that a forced (+inf score) candidate ranks first.
fn o_at(b: u32, j: u32) -> f32 {
    if (p.has_order != 0u) {
        if (forced(b, j)) { return pos_inf(); }
        return order[p.order_off + b * p.n + j];
    }
    return s_at(b, j);
}

// Whether candidate `i` sorts before `j`: by key (0 score, 1 order) descending, ties to the lower
// index; key 2 is the index itself, ascending.
fn before(b: u32, i: u32, j: u32, key: u32) -> bool {
    if (key == 2u) { return i < j; }
    var vi = s_at(b, i);
    var vj = s_at(b, j);
    if (key == 1u) {
        vi = o_at(b, i);
        vj = o_at(b, j);
    }
    return vi > vj || (vi == vj && i < j);
}

// Sorts idx[ob .. ob + len) by `before`, every invocation of the workgroup taking part (len is
// workgroup-uniform). The network is bitonic over the next power of two with every comparator
// pointing the same way, so positions past `len` act as trailing padding and are skipped.
fn sort(b: u32, ob: u32, len: u32, key: u32, tid: u32) {
    var n2 = 1u;
    while (n2 < len) { n2 <<= 1u; }
    for (var k = 2u; k <= n2; k <<= 1u) {
        // The first step of a merge compares mirrored positions of each k-block.
        for (var i = tid; i < n2 / 2u; i += WG) {
            let h = k / 2u;
            let lo = (i / h) * k + i % h;
            let hi = (i / h) * k + k - 1u - i % h;
            exchange(b, ob, lo, hi, len, key);
        }
        storageBarrier();
        for (var j = k / 4u; j > 0u; j >>= 1u) {
            for (var i = tid; i < n2 / 2u; i += WG) {
                let lo = (i / j) * 2u * j + i % j;
                exchange(b, ob, lo, lo + j, len, key);
            }
            storageBarrier();
        }
    }
}

fn exchange(b: u32, ob: u32, lo: u32, hi: u32, len: u32, key: u32) {
    if (hi >= len) { return; }
    let x = u32(idx[ob + lo]);
    let y = u32(idx[ob + hi]);
    if (before(b, y, x, key)) {
        idx[ob + lo] = i32(y);
        idx[ob + hi] = i32(x);
    }
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
        // A negative count is as bad as a bad length (and, like it, skips the finiteness scan).
        if (p.per_seq_k != 0u && keep_in[p.keep_off + b] < 0) { atomicOr(&bad, ST_INDEX_OUT_OF_RANGE); len_w = 0u; }
    }
    let l = workgroupUniformLoad(&len_w);
    // A +inf score is "always keep" (LOOK-M); NaN, -inf and a non-finite order are bad.
    for (var j = tid; j < l; j += WG) {
        let sv = s_at(b, j);
        var ok = finite_bits(sv) || sv == pos_inf();
        if (p.has_order != 0u) { ok = ok && finite_bits(order[p.order_off + b * p.n + j]); }
        if (!ok) { atomicOr(&bad, ST_VALUE_OUT_OF_RANGE); }
    }
    workgroupBarrier();
    if (tid == 0u) {
        bad_w = atomicLoad(&bad);
        // The finite scores in index order, as the oracle sums; the forced ones counted apart.
        var t = 0.0;
        var f = 0u;
        for (var j = 0u; j < l; j++) {
            if (forced(b, j)) { f += 1u; } else { t += s_at(b, j); }
        }
        total_w = t;
        forced_w = f;
    }
    let fault = workgroupUniformLoad(&bad_w);
    if (fault != 0u) {
        if (tid == 0u) {
            atomicOr(&status[0], fault);
            count[p.count_off + b] = 0;
        }
        for (var j = tid; j < p.n; j += WG) { idx[ob + j] = -1; }
        return;
    }
    let total = workgroupUniformLoad(&total_w);
    let nf = workgroupUniformLoad(&forced_w);
    var keep = 0u;
    if (p.mode == 2u) {
        // Above the mean: flags placed by a prefix sum, in index order.
        let mean = total / f32(l - nf);  // over the finite ones (NaN if none: only the forced)
        var running = 0u;
        for (var j0 = 0u; j0 < l; j0 += WG) {
            let j = j0 + tid;
            var flag = 0u;
            if (j < l) { flag = select(0u, 1u, forced(b, j) || s_at(b, j) > mean); }
            scan[tid] = flag;
            workgroupBarrier();
            for (var off = 1u; off < WG; off <<= 1u) {
                var v = 0u;
                if (tid >= off) { v = scan[tid - off]; }
                workgroupBarrier();
                scan[tid] += v;
                workgroupBarrier();
            }
            if (flag == 1u) { idx[ob + running + scan[tid] - 1u] = i32(j); }
            running += scan[WG - 1u];
            workgroupBarrier();
        }
        keep = running;
    } else {
        for (var j = tid; j < l; j += WG) { idx[ob + j] = i32(j); }
        storageBarrier();
        if (p.mode == 1u) {
            // The fewest largest raw masses that reach tau of the total, summed in sorted order.
            sort(b, ob, l, 0u, tid);
            if (tid == 0u) {
                let need = p.tau * total;
                var cum = 0.0;
                keep_w = l;
                for (var r = 0u; r < l; r++) {
                    let v = s_at(b, u32(idx[ob + r]));
                    if (v == pos_inf()) { continue; }  // the forced lead and add nothing
                    cum += v;
                    if (cum >= need) {
                        keep_w = r + 1u;
                        break;
                    }
                }
            }
            keep = workgroupUniformLoad(&keep_w);
            // The kept set is ranked by `order`; without one the score order stands.
            if (p.has_order != 0u) { sort(b, ob, l, 1u, tid); }
        } else {
            var kb = p.k;
            if (p.per_seq_k != 0u) { kb = u32(keep_in[p.keep_off + b]); }  // checked >= 0 above
            keep = min(max(kb, nf), l);  // every forced candidate, then the best of the rest
            sort(b, ob, l, 1u, tid);
        }
        sort(b, ob, keep, 2u, tid);
    }
    storageBarrier();
    for (var j = keep + tid; j < p.n; j += WG) { idx[ob + j] = -1; }
    if (tid == 0u) { count[p.count_off + b] = i32(keep); }
}
