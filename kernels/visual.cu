// Sparse visual-token attention: selection, the kept tokens' layout, attention mass, and
// attention over the kept tokens. Every output element has one owning thread (ranks and prefix
// sums instead of atomics), so the results do not depend on scheduling.
#include "common.cuh"
#include "attention_tc.cuh"

#define VIS_TILE 128

// Candidate j's ranking key: s[j], or +inf where `force` (the scores, when ranking by a separate
// order) holds +inf: a forced candidate ranks first whatever its order value.
__device__ __forceinline__ float vis_key(const float* s, const float* force, int j) {
    return force && force[j] == POS_INF ? POS_INF : s[j];
}

// Rank of candidate j by descending key, ties to the lower index.
__device__ int vis_rank(const float* s, const float* force, int n, int j) {
    const float v = vis_key(s, force, j);
    int r = 0;
    for (int i = 0; i < n; ++i) {
        const float u = vis_key(s, force, i);
        r += (u > v || (u == v && i < j)) ? 1 : 0;
    }
    return r;
}

__device__ bool vis_offsets_ok(const int* cu, int n, int end) {
    if (cu[0] != 0) return false;
    for (int i = 0; i < n; ++i)
        if (cu[i + 1] < cu[i]) return false;
    return cu[n] == end;
}

// Block-wide exclusive prefix sum of 0/1 flags over 256 threads; returns the total.
__device__ int vis_scan256(int flag, int* scan, int& prefix) {
    scan[threadIdx.x] = flag;
    __syncthreads();
    for (int off = 1; off < 256; off <<= 1) {
        const int v = threadIdx.x >= off ? scan[threadIdx.x - off] : 0;
        __syncthreads();
        scan[threadIdx.x] += v;
        __syncthreads();
    }
    prefix = scan[threadIdx.x] - flag;
    const int total = scan[255];
    __syncthreads();
    return total;
}

// Sorts v[0..l) descending, ties to the lower index, into sk / si (N = a power of two >= l,
// 256 threads): a bitonic network over (value, index) pairs in shared memory, the padding
// (-inf, INT_MAX) sorting last. O(N log^2 N) work in log^2 N barrier steps, where ranking each
// candidate against every other is O(l^2) reads.
__device__ void vis_sort_desc(const float* v, const float* force, int l, float* sk, int* si, int N) {
    for (int j = threadIdx.x; j < N; j += blockDim.x) {
        sk[j] = j < l ? vis_key(v, force, j) : NEG_INF;
        si[j] = j < l ? j : 0x7fffffff;
    }
    __syncthreads();
    for (int size = 2; size <= N; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < N / 2; t += blockDim.x) {
                const int lo = 2 * t - (t & (stride - 1)), hi = lo + stride;
                const bool up = (lo & size) == 0;  // this run sorts into the final (descending) order
                const bool before = sk[hi] > sk[lo] || (sk[hi] == sk[lo] && si[hi] < si[lo]);
                if (before == up) {
                    const float kv = sk[lo];
                    const int ki = si[lo];
                    sk[lo] = sk[hi], si[lo] = si[hi];
                    sk[hi] = kv, si[hi] = ki;
                }
            }
            __syncthreads();
        }
    }
}

// Select: one block of 256 threads per sequence. mode 0 top-k, 1 cumulative mass, 2 above mean.
// sort_n > 0 (a power of two >= n, dynamic shared memory of 9 sort_n bytes): ranks come from a
// block-wide sort; sort_n = 0: each candidate is ranked against every other (O(n^2), for rows
// too long to sort in shared memory). Either way ties go to the lower index, and the masses are
// summed by one thread in descending order, so every backend keeps the same set.
// `keep` (top-k, null: `k` for every sequence): sequence b's own count; a negative one is bad.
extern "C" __global__ void __launch_bounds__(256, 1) visual_select(const float* score, const int* lens, const float* order,
                                                     const int* keep, int* idx, int* count, unsigned* status, int n,
                                                     int mode, int k, float tau, int has_order, int sort_n) {
    extern __shared__ __align__(16) unsigned char sel_smem[];
    __shared__ int scan[256];
    __shared__ int keep_n, forced;
    __shared__ float total;
    float* sk = reinterpret_cast<float*>(sel_smem);
    int* si = reinterpret_cast<int*>(sk + sort_n);
    unsigned char* kept = reinterpret_cast<unsigned char*>(si + sort_n);
    const int b = blockIdx.x;
    const float* s = score + (i64)b * n;
    const float* ord = has_order ? order + (i64)b * n : s;
    int* out = idx + (i64)b * n;
    const int l = lens[b];
    // The verdict comes through the barrier's reduction: no thread reads a flag others may still
    // be setting (the emulated device's ThreadSanitizer build caught that race here).
    const int kb = keep ? keep[b] : k;
    const bool len_bad = l < 0 || l > n || kb < 0;
    int nonfinite = 0;
    // A +inf score is "always keep" (LOOK-M's forced tokens); NaN, -inf and a non-finite order
    // are bad.
    if (!len_bad)
        for (int j = threadIdx.x; j < l; j += 256)
            nonfinite |= (!isfinite(s[j]) && s[j] != POS_INF) || (has_order && !isfinite(ord[j]));
    const bool any_nonfinite = __syncthreads_or(nonfinite) != 0;
    const unsigned bad = len_bad ? ST_INDEX_OUT_OF_RANGE : any_nonfinite ? ST_VALUE_OUT_OF_RANGE : 0u;
    if (bad) {
        if (threadIdx.x == 0) {
            raise_status(status, bad);
            count[b] = 0;
        }
        for (int j = threadIdx.x; j < n; j += 256) out[j] = -1;
        return;
    }
    if (threadIdx.x == 0) {
        // The finite scores' total, in index order; the forced ones counted apart.
        float t = 0.f;
        int f = 0;
        for (int j = 0; j < l; ++j) {
            if (s[j] == POS_INF) ++f;
            else t += s[j];
        }
        total = t;
        forced = f;
    }
    __syncthreads();
    const bool sorted = sort_n > 0 && mode != 2;
    if (mode == 1) {
        // Masses in descending order, summed in order by one thread.
        if (sorted) {
            vis_sort_desc(s, nullptr, l, sk, si, sort_n);
        } else {
            // As float bits in idx, overwritten below.
            for (int j = threadIdx.x; j < l; j += 256) out[vis_rank(s, nullptr, l, j)] = __float_as_int(s[j]);
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            const float need = tau * total;
            float cum = 0.f;
            int p = l;
            for (int r = 0; r < l; ++r) {  // the forced (+inf) ones lead and add nothing
                const float v = sorted ? sk[r] : __int_as_float(out[r]);
                if (v == POS_INF) continue;
                cum += v;
                if (cum >= need) {
                    p = r + 1;
                    break;
                }
            }
            keep_n = p;
        }
    } else if (threadIdx.x == 0) {
        keep_n = max(kb, forced);  // every forced candidate, then the best of the rest
    }
    __syncthreads();
    if (sorted) {
        // The kept candidates are the first keep_n of `ord` in rank order.
        // Mass mode without order: sorted above. By order, the forced candidates still lead.
        if (mode == 0 || has_order) vis_sort_desc(ord, has_order ? s : nullptr, l, sk, si, sort_n);
        for (int j = threadIdx.x; j < l; j += 256) kept[j] = 0;
        __syncthreads();
        for (int r = threadIdx.x; r < min(keep_n, l); r += 256) kept[si[r]] = 1;
        __syncthreads();
    }
    const float mean = total / (float)(l - forced);  // over the finite ones (NaN if none: only the forced)
    int running = 0;
    for (int j0 = 0; j0 < n; j0 += 256) {
        const int j = j0 + threadIdx.x;
        int flag = 0;
        if (j < l)
            flag = mode == 2 ? (s[j] == POS_INF || s[j] > mean)
                 : sorted    ? kept[j]
                             : (vis_rank(ord, has_order ? s : nullptr, l, j) < keep_n);
        int prefix;
        const int tile = vis_scan256(flag, scan, prefix);
        if (flag) out[running + prefix] = j;
        running += tile;
    }
    __syncthreads();
    for (int j = running + threadIdx.x; j < n; j += 256) out[j] = -1;
    if (threadIdx.x == 0) count[b] = running;
}

// Sequence b's kept visual count, or -1 when its segment or selection is bad.
__device__ int vis_kept(const int* cu, const int* seg, const int* idx, const int* count, int b, int n) {
    const int s = seg[2 * b], len = seg[2 * b + 1], L = cu[b + 1] - cu[b];
    if (s < 0 || len < 0 || (i64)s + len > L || len > n) return -2;  // i64: s + len may overflow int
    const int c = count[b];
    if (c < 0 || c > len) return -1;
    for (int e = 0; e < c; ++e) {
        const int j = idx[(i64)b * n + e];
        if (j < 0 || j >= len || (e > 0 && j <= idx[(i64)b * n + e - 1])) return -1;
    }
    return c;
}

// The kept tokens of sequence b: before the segment, the kept candidates, after the segment.
__device__ int vis_new_len(const int* cu, const int* seg, const int* idx, const int* count, int b, int n) {
    const int c = vis_kept(cu, seg, idx, count, b, n), L = cu[b + 1] - cu[b];
    if (c == -2) return L;  // a bad segment counts as none: every token is text
    return L - seg[2 * b + 1] + (c < 0 ? 0 : c);
}

// Compact: one block of 256 threads per sequence; its output offset is the sum of the new
// lengths before it.
extern "C" __global__ void __launch_bounds__(256) visual_compact(const int* cu, const int* seg, const int* idx, const int* count,
                                                      int* rows, int* pos, int* cu_out, unsigned* status, int tokens,
                                                      int n) {
    __shared__ int part[8];
    const int b = blockIdx.x, seqs = gridDim.x;
    if (!vis_offsets_ok(cu, seqs, tokens)) {
        if (threadIdx.x == 0) {
            raise_status(status, ST_INDEX_OUT_OF_RANGE);
            cu_out[b] = 0;
            if (b == seqs - 1) cu_out[seqs] = 0;
        }
        for (i64 r = (i64)b * 256 + threadIdx.x; r < tokens; r += (i64)seqs * 256) rows[r] = -1, pos[r] = -1;
        return;
    }
    int sum = 0;
    for (int o = threadIdx.x; o < b; o += 256) sum += vis_new_len(cu, seg, idx, count, o, n);
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = sum;
    __syncthreads();
    int base = 0;
    for (int w = 0; w < 8; ++w) base += part[w];
    const int c = vis_kept(cu, seg, idx, count, b, n), L = cu[b + 1] - cu[b];
    if (c < 0 && threadIdx.x == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
    // A bad segment counts as none: every token is text.
    const int s = c == -2 ? L : seg[2 * b], len = c == -2 ? 0 : seg[2 * b + 1], kept = c < 0 ? 0 : c;
    const int nl = L - len + kept;
    if (threadIdx.x == 0) {
        cu_out[b] = base;
        if (b == seqs - 1) cu_out[seqs] = base + nl;
    }
    for (int e = threadIdx.x; e < nl; e += 256) {
        int p;
        if (e < s) p = e;
        else if (e < s + kept) p = s + idx[(i64)b * n + (e - s)];
        else p = s + len + (e - s - kept);
        rows[base + e] = cu[b] + p;
        pos[base + e] = p;
    }
    if (b == seqs - 1)
        for (int r = base + nl + threadIdx.x; r < tokens; r += 256) rows[r] = -1, pos[r] = -1;
}

// The sequence holding token t (cu already validated).
__device__ int vis_seq_of(const int* cu, int seqs, int t) {
    int b = 0;
    while (b + 1 < seqs && t >= cu[b + 1]) ++b;
    return b;
}

// Attention mass, pass 1: the LSE of row r, head h over every key it sees. grid (R, H).
template <typename T>
__device__ void vis_row_lse(const T* q, const int* qpos, const T* k, const int* cu, float* ws, int seqs, int tokens,
                            int H, int Hkv, int D, float scale) {
    __shared__ float qs[256];
    const int r = blockIdx.x, h = blockIdx.y, g = H / Hkv;
    const int t = qpos[r];
    if (t < 0 || t >= tokens || !vis_offsets_ok(cu, seqs, tokens)) return;  // ignored in pass 2
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = to_f32(q[((i64)r * H + h) * D + d]);
    __syncthreads();
    const int b = vis_seq_of(cu, seqs, t);
    float m = NEG_INF, l = 0.f;
    for (int j = cu[b] + threadIdx.x; j <= t; j += blockDim.x) {
        const T* kr = k + ((i64)j * Hkv + h / g) * D;
        float s = 0.f;
        for (int d = 0; d < D; ++d) s += qs[d] * to_f32(kr[d]);
        s *= scale;
        const float mn = fmaxf(m, s);
        l = l * __expf(m - mn) + __expf(s - mn);
        m = mn;
    }
    const float M = block_max(m);
    const float L = block_sum(m == NEG_INF ? 0.f : l * __expf(m - M));
    if (threadIdx.x == 0) ws[(i64)r * H + h] = M + logf(L);
}

// Attention mass, pass 2: grid (ceil(n / 128), B); thread j owns mass[b][*][j] and loops over
// the sequence's rows (and heads), so the sums need no atomics. Output head ho sums the `hpo`
// query heads ho * hpo .. (1: none reduced; H / Hkv: per KV group; H: all).
template <typename T>
__device__ void vis_mass(const T* q, const int* qpos, const float* qw, const T* k, const int* cu, const int* seg,
                         const float* lse, float* mass, unsigned* status, int seqs, int tokens, int rows, int H,
                         int Hkv, int D, int n, float scale, int hpo) {
    const int b = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x, g = H / Hkv, Ho = H / hpo;
    if (j >= n) return;
    if (!vis_offsets_ok(cu, seqs, tokens)) {
        raise_status(status, ST_INDEX_OUT_OF_RANGE);
        for (int h = 0; h < Ho; ++h) mass[((i64)b * Ho + h) * n + j] = 0.f;
        return;
    }
    const int s0 = seg[2 * b], len = seg[2 * b + 1], L = cu[b + 1] - cu[b];
    const bool seg_ok = s0 >= 0 && len >= 0 && (i64)s0 + len <= L && len <= n;
    if (!seg_ok) raise_status(status, ST_INDEX_OUT_OF_RANGE);
    if (threadIdx.x == 0)
        for (int r = 0; r < rows; ++r)
            if (qpos[r] < 0 || qpos[r] >= tokens) raise_status(status, ST_INDEX_OUT_OF_RANGE);
    const i64 key = (i64)cu[b] + s0 + j;  // i64: a bad segment start may be near INT_MAX
    for (int ho = 0; ho < Ho; ++ho) {
        float acc = 0.f;
        if (seg_ok && j < len)
            for (int r = 0; r < rows; ++r) {
                const int t = qpos[r];
                if (t < 0 || t >= tokens || t < cu[b] || t >= cu[b + 1] || key > t) continue;
                for (int h = ho * hpo; h < (ho + 1) * hpo; ++h) {
                    const T* qr = q + ((i64)r * H + h) * D;
                    const T* kr = k + ((i64)key * Hkv + h / g) * D;
                    float s = 0.f;
                    for (int d = 0; d < D; ++d) s += to_f32(qr[d]) * to_f32(kr[d]);
                    acc += qw[r] * __expf(s * scale - lse[(i64)r * H + h]);
                }
            }
        mass[((i64)b * Ho + ho) * n + j] = acc;
    }
}

// Visibility of key j to the query row: by original position (sparse attention).
struct PosVis {
    const int* pos;
    int pi;
    __device__ bool see(int j) const { return pos[j] <= pi; }
    __device__ bool masked(int) const { return false; }
};

// YOPO: a visual query sees the tokens before the image and its (2r+1)^2 window of the image
// (optionally raster-causal); a text query sees everything before it. `kmask` zeroes visual
// values after the softmax.
struct GridVis {
    int i, s, n, wg, r, causal, kmask;
    __device__ bool visual(int j) const { return j >= s && j < s + n; }
    __device__ bool see(int j) const {
        if (!visual(i)) return j <= i;
        if (j < s) return true;
        if (!visual(j)) return false;
        const int yi = (i - s) / wg, xi = (i - s) % wg, yj = (j - s) / wg, xj = (j - s) % wg;
        return abs(yi - yj) <= r && abs(xi - xj) <= r && (!causal || j <= i);
    }
    __device__ bool masked(int j) const { return kmask && visual(j); }
};

// One query row i, head h over keys lo..hi in tiles of 128 with an online softmax, 128 threads.
template <typename T, typename V>
__device__ void vis_attend(const T* q, const T* k, const T* v, T* o, float* lse, int lo, int hi, int i, int h, int H,
                           int Hkv, int D, float scale, const V& vis, bool zero_out) {
    __shared__ float qs[256];
    __shared__ float p[VIS_TILE];
    const int g = H / Hkv, tid = threadIdx.x;
    for (int d = tid; d < D; d += blockDim.x) qs[d] = to_f32(q[((i64)i * H + h) * D + d]);
    __syncthreads();
    float m = NEG_INF, l = 0.f, acc[2] = {0.f, 0.f};
    for (int j0 = lo; j0 < hi; j0 += VIS_TILE) {
        const int j = j0 + tid;
        float s = NEG_INF;
        if (j < hi && vis.see(j)) {
            const T* kr = k + ((i64)j * Hkv + h / g) * D;
            s = 0.f;
            for (int d = 0; d < D; ++d) s += qs[d] * to_f32(kr[d]);
            s *= scale;
        }
        const float mn = fmaxf(m, block_max(s));
        const float pj = s == NEG_INF ? 0.f : __expf(s - mn);
        const float corr = m == NEG_INF ? 0.f : __expf(m - mn);
        p[tid] = (j < hi && vis.masked(j)) ? 0.f : pj;  // masked values count as zero
        l = l * corr + block_sum(pj);                    // block_sum's barriers also publish p
        m = mn;
        const int nt = min(VIS_TILE, hi - j0);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int d = tid + e * 128;
            if (d >= D) break;
            float a = acc[e] * corr;
            for (int t = 0; t < nt; ++t) a += p[t] * to_f32(v[((i64)(j0 + t) * Hkv + h / g) * D + d]);
            acc[e] = a;
        }
        __syncthreads();  // p is rewritten by the next tile
    }
    // A NaN score reached l as a NaN weight: the row is NaN (the NaN policy).
    const bool nan = nan_bits(l);
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        const int d = tid + e * 128;
        if (d < D) o[((i64)i * H + h) * D + d] = from_f32<T>(zero_out ? 0.f : nan ? NAN_F : l > 0.f ? acc[e] / l : 0.f);
    }
    if (tid == 0) lse[(i64)i * H + h] = nan ? NAN_F : l > 0.f ? m + logf(l) : NEG_INF;
}

// Attention over the kept tokens: grid (Tq, H), 128 threads; query row i of sequence b (rows
// cu_q[b] .. cu_q[b + 1]) sees key j of b (rows cu[b] .. cu[b + 1]) iff pos[j] <= pos_q[i].
// Prefill passes the keys' own cu and pos as the queries'; decode over a pruned cache passes the
// new tokens'.
template <typename T>
__device__ void vis_sparse_attention(const T* q, const T* k, const T* v, const int* cu, const int* pos,
                                     const int* cu_q, const int* pos_q, T* o, float* lse, unsigned* status, int seqs,
                                     int tokens, int tq, int H, int Hkv, int D, float scale) {
    const int i = blockIdx.x, h = blockIdx.y;
    if (!vis_offsets_ok(cu, seqs, tokens) || !vis_offsets_ok(cu_q, seqs, tq)) {
        if (threadIdx.x == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return;
    }
    const int b = vis_seq_of(cu_q, seqs, i);
    vis_attend(q, k, v, o, lse, cu[b], cu[b + 1], i, h, H, Hkv, D, scale, PosVis{pos, pos_q[i]}, false);
}

// Neighbour attention: grid (T, H), 128 threads. An image that does not fit its sequence makes
// it all text (and raises the status).
template <typename T>
__device__ void vis_neighbor_attention(const T* q, const T* k, const T* v, const int* cu, const int* img,
                                       const int* head_mask, T* o, float* lse, unsigned* status, int seqs, int tokens,
                                       int H, int Hkv, int D, float scale, int radius, int causal) {
    const int i = blockIdx.x, h = blockIdx.y;
    if (!vis_offsets_ok(cu, seqs, tokens)) {
        if (threadIdx.x == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return;
    }
    const int b = vis_seq_of(cu, seqs, i);
    const int s = img[3 * b], hg = img[3 * b + 1], wg = img[3 * b + 2], L = cu[b + 1] - cu[b];
    const bool ok = s >= 0 && hg >= 0 && wg >= 0 && (i64)s + (i64)hg * wg <= L;
    if (!ok && threadIdx.x == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
    const int mask = head_mask ? head_mask[h] : 0;
    GridVis vis{i, cu[b] + (ok ? s : 0), ok ? hg * wg : 0, ok && wg > 0 ? wg : 1, radius, causal, mask & 1};
    vis_attend(q, k, v, o, lse, cu[b], cu[b + 1], i, h, H, Hkv, D, scale, vis, (mask & 2) && vis.visual(i));
}

// ---- sparse and neighbour attention on tensor cores (f16, bf16) --------------------------------
//
// One block (8 warps) per (group of up to G query rows of one sequence, KV head), run by the
// shared core attn_tc_group (attention_tc.cuh). A row is a (token, head of the KV head's GQA
// group) pair, r = (i - cu[b]) * g + h % g, so the g query heads of one KV head share every K and
// V tile, which is read once per group instead of once per query row and head. Keys run over
// the sequence up to the last one any row of the group can see; visibility is decided per
// (row, key) by original position (sparse) or by the YOPO window (neighbour).
template <typename T>
struct VisTcProblem {
    const T *q, *k, *v;
    T* o;
    float* lse;
    const int* pos;        // sparse: the keys' original positions; null for neighbour attention
    const int* qpos;       // sparse: the query rows' positions (the keys' own in prefill)
    const int* row_tok;    // shared: each group row's query token
    const int* row_mask;   // shared: each group row's head mask (neighbour)
    int qw, vw, H, Hkv, g, kh, r0;
    int s, n, wg, radius, causal;  // neighbour: the sequence's image (absolute first row) and window
    __device__ int head(int r) const { return kh * g + (r0 + r) % g; }
    __device__ const T* q_row(int r) const { return q + ((i64)row_tok[r] * H + head(r)) * qw; }
    __device__ i64 key_row(int t, int, int* aux) const {
        if (pos) *aux = pos[t];
        return (i64)t * Hkv + kh;
    }
    __device__ const T* k_src(i64 row, int c) const { return k + row * qw + c * 8; }
    __device__ const T* v_src(i64 row, int c) const { return v + row * vw + c * 8; }
    __device__ bool img(int j) const { return j >= s && j < s + n; }
    __device__ bool visible(int r, int j, int aux) const {
        const int i = row_tok[r];
        if (pos) return aux <= qpos[i];
        if (!img(i)) return j <= i;
        if (j < s) return true;
        if (!img(j)) return false;
        const int yi = (i - s) / wg, xi = (i - s) % wg, yj = (j - s) / wg, xj = (j - s) % wg;
        return abs(yi - yj) <= radius && abs(xi - xj) <= radius && (!causal || j <= i);
    }
    __device__ bool v_zero(int r, int j, int) const { return (row_mask[r] & 1) && img(j); }
    __device__ void store(int r, int c, float o0, float o1) const {
        const bool zero = (row_mask[r] & 2) && img(row_tok[r]);
        T* dst = o + ((i64)row_tok[r] * H + head(r)) * vw + c;
        const float a = zero ? 0.f : o0, bb = zero ? 0.f : o1;
        if (reinterpret_cast<unsigned long long>(dst) % 4 == 0) {  // one 4-byte store for the pair
            *reinterpret_cast<unsigned*>(dst) = pack2<T>(a, bb);
        } else {
            dst[0] = from_f32<T>(a);
            dst[1] = from_f32<T>(bb);
        }
    }
    __device__ void store_lse(int r, float l) const { lse[(i64)row_tok[r] * H + head(r)] = l; }
};

#define MAX_DIM_TC 256  // the visual family's MAX_DIM
// pos != null: sparse attention (query rows by cu_q / pos_q, keys by cu / pos); else neighbour
// attention (img, head_mask, radius, causal; cu_q is cu).
template <typename T, int G, int TK>
__device__ void vis_attn_tc(const T* q, const T* k, const T* v, const int* cu, const int* pos, const int* cu_q,
                            const int* pos_q, const int* img, const int* head_mask, T* o, float* lse, unsigned* status,
                            int seqs, int tokens, int tq, int H, int Hkv, int D, float scale, int radius, int causal) {
    __shared__ int row_tok[G], row_mask[G], reach;
    if (!vis_offsets_ok(cu, seqs, tokens) || !vis_offsets_ok(cu_q, seqs, tq)) {
        if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return;
    }
    const int g = H / Hkv, kh = blockIdx.y;
    int grp = blockIdx.x;
    const int b = attn_tc_group_seq<G>(cu_q, seqs, g, grp);
    if (b < 0) return;  // past the last group
    const int n_b = cu_q[b + 1] - cu_q[b], r0 = grp * G;
    const int rows = (int)min((i64)G, (i64)n_b * g - r0);
    int s = 0, n = 0, wg = 1;
    if (!pos) {
        const int is = img[3 * b], hg = img[3 * b + 1], iw = img[3 * b + 2];
        const bool ok = is >= 0 && hg >= 0 && iw >= 0 && (i64)is + (i64)hg * iw <= n_b;
        if (!ok && threadIdx.x == 0 && grp == 0 && kh == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        if (ok) s = cu[b] + is, n = hg * iw, wg = iw > 0 ? iw : 1;
    }
    if (threadIdx.x == 0) reach = cu[b];
    for (int r = threadIdx.x; r < G; r += blockDim.x) {
        row_tok[r] = r < rows ? cu_q[b] + (r0 + r) / g : cu_q[b];
        row_mask[r] = r < rows && head_mask ? head_mask[kh * g + (r0 + r) % g] : 0;
    }
    __syncthreads();
    // The keys any row can see end before `reach`: by position, the last key at or before the
    // group's latest position; by window, a visual row's window reaches radius rows on.
    if (pos) {
        int pmax = pos_q[row_tok[0]];
        for (int r = 1; r < rows; ++r) pmax = max(pmax, pos_q[row_tok[r]]);
        for (int j = cu[b] + (int)threadIdx.x; j < cu[b + 1]; j += blockDim.x)
            if (pos[j] <= pmax) atomicMax(&reach, j + 1);
    } else if (threadIdx.x < rows) {
        const int i = row_tok[threadIdx.x];
        const bool vi = i >= s && i < s + n;
        const i64 far = vi && !causal ? (i64)i + (i64)radius * wg + radius + 1 : (i64)i + 1;
        atomicMax(&reach, (int)min(far, (i64)cu[b + 1]));
    }
    __syncthreads();
    VisTcProblem<T> pb{q, k, v, o, lse, pos, pos_q, row_tok, row_mask, D, D, H, Hkv, g, kh, r0, s, n, wg, radius, causal};
    attn_tc_group<T, G, TK, MAX_DIM_TC / (8 * attn_tc_wps(G)), true>(pb, rows, cu[b], reach, scale);
}

// ---- attention mass on tensor cores (f16, bf16) -------------------------------------------------
//
// Pass 1, each chosen row's LSE, is the shared core with no output columns: one block per group
// of up to G (row, GQA head) pairs of a KV head, each key tile read once per group; a row sees
// the keys of its own sequence up to its position.
template <typename T>
struct VisLseProblem {
    const T *q, *k;
    float* ws;
    const int* row_t;   // shared: each pair's token, -1 when its row is ignored
    const int* row_lo;  // shared: the first key of its sequence
    int qw, vw, H, Hkv, g, kh, p0;
    __device__ int row(int r) const { return (p0 + r) / g; }
    __device__ int head(int r) const { return kh * g + (p0 + r) % g; }
    __device__ const T* q_row(int r) const { return q + ((i64)row(r) * H + head(r)) * qw; }
    __device__ i64 key_row(int t, int, int*) const { return (i64)t * Hkv + kh; }
    __device__ const T* k_src(i64 row, int c) const { return k + row * qw + c * 8; }
    __device__ const T* v_src(i64, int) const { return k; }
    __device__ bool visible(int r, int j, int) const { return row_t[r] >= 0 && j >= row_lo[r] && j <= row_t[r]; }
    __device__ bool v_zero(int, int, int) const { return false; }
    __device__ void store(int, int, float, float) const {}
    __device__ void store_lse(int r, float l) const { ws[(i64)row(r) * H + head(r)] = l; }
};

template <typename T, int G, int TK>
__device__ void vis_row_lse_tc(const T* q, const int* qpos, const T* k, const int* cu, float* ws, int seqs, int tokens,
                               int R, int H, int Hkv, int D, float scale) {
    __shared__ int row_t[G], row_lo[G], lo, hi;
    if (!vis_offsets_ok(cu, seqs, tokens)) return;  // pass 2 raises the status and zeroes the masses
    const int g = H / Hkv, kh = blockIdx.y, p0 = blockIdx.x * G;
    const int rows = min(G, R * g - p0);
    if (threadIdx.x == 0) lo = tokens, hi = 0;
    __syncthreads();
    for (int r = threadIdx.x; r < G; r += blockDim.x) {
        const int t = r < rows ? qpos[(p0 + r) / g] : -1;
        const bool ok = t >= 0 && t < tokens;
        row_t[r] = ok ? t : -1;
        row_lo[r] = ok ? cu[vis_seq_of(cu, seqs, t)] : 0;
        if (ok) {
            atomicMin(&lo, row_lo[r]);
            atomicMax(&hi, t + 1);
        }
    }
    __syncthreads();
    VisLseProblem<T> pb{q, k, ws, row_t, row_lo, D, 0, H, Hkv, g, kh, p0};
    attn_tc_group<T, G, TK, 1, false>(pb, rows, lo, hi, scale);
}

// Pass 2: one block (4 warps) per (64 keys of a sequence's segment, sequence). For each head
// (the KV head's key tile staged once per g heads) and each chunk of 64 rows, S = Q K^T runs on
// mma; each warp sums w_r exp(s - lse) down its 16 rows for every key with shuffles and keeps
// the column sums in registers, and the 4 warps' sums meet in shared memory in a fixed order:
// every mass has one owner, no atomics, the same bits on every run.
#define VIS_MASS_KEYS 64
template <typename T>
__device__ void vis_mass_tc(const T* q, const int* qpos, const float* qw, const T* k, const int* cu, const int* seg,
                            const float* lse, float* mass, unsigned* status, int seqs, int tokens, int R, int H,
                            int Hkv, int D, int n, float scale, int hpo) {
    constexpr int TK = VIS_MASS_KEYS;
    extern __shared__ __align__(16) unsigned char mass_smem[];
    __shared__ int row_t[64];
    __shared__ float row_w[64], row_l[64], red[4][TK];
    const int QW = D + 8;
    T* Qs = reinterpret_cast<T*>(mass_smem);
    T* Ks = Qs + 64 * QW;
    const int b = blockIdx.y, j0 = blockIdx.x * TK, g = H / Hkv, Ho = H / hpo;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gq = lane >> 2, t4 = lane & 3;
    auto write = [&](int ho, bool zero) {  // the tile's masses of output head ho from red
        __syncthreads();
        for (int c = tid; c < TK; c += blockDim.x)
            if (j0 + c < n) mass[((i64)b * Ho + ho) * n + j0 + c] = zero ? 0.f : red[0][c] + red[1][c] + red[2][c] + red[3][c];
        __syncthreads();
    };
    if (!vis_offsets_ok(cu, seqs, tokens)) {
        if (tid == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        for (int ho = 0; ho < Ho; ++ho) write(ho, true);
        return;
    }
    const int s0 = seg[2 * b], len = seg[2 * b + 1], L = cu[b + 1] - cu[b];
    const bool seg_ok = s0 >= 0 && len >= 0 && (i64)s0 + len <= L && len <= n;
    if (!seg_ok && tid == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
    if (tid == 0)
        for (int r = 0; r < R; ++r)
            if (qpos[r] < 0 || qpos[r] >= tokens) raise_status(status, ST_INDEX_OUT_OF_RANGE);
    if (!seg_ok || j0 >= len) {
        for (int ho = 0; ho < Ho; ++ho) write(ho, true);
        return;
    }
    const i64 key0 = (i64)cu[b] + s0 + j0;  // the tile's first key row (inside the sequence)
    const int nkeys = min(TK, len - j0);
    const float sl2 = scale * 1.4426950408889634f;
    float acc[TK / 8][2];
    auto reset = [&] {
#pragma unroll
        for (int kt = 0; kt < TK / 8; ++kt) acc[kt][0] = acc[kt][1] = 0.f;
    };
    reset();
    for (int h = 0; h < H; ++h) {
        if (h % g == 0) {  // this KV head's key tile
            __syncthreads();
            for (int c = tid; c < TK * (D / 8); c += blockDim.x) {
                const int kk = c / (D / 8), cc = c % (D / 8);
                const bool ok = kk < nkeys;
                cp_async16(Ks + kk * QW + cc * 8, ok ? k + ((key0 + kk) * Hkv + h / g) * D + cc * 8 : k, ok);
            }
            cp_async_commit();
        }
        for (int rc = 0; rc < R; rc += 64) {
            __syncthreads();  // the previous chunk's rows and Q are no longer read
            for (int r = tid; r < 64; r += blockDim.x) {
                const int t = rc + r < R ? qpos[rc + r] : -1;
                const bool ok = t >= cu[b] && t < cu[b + 1] && t >= 0 && t < tokens;
                row_t[r] = ok ? t : -1;
                row_w[r] = ok ? qw[rc + r] : 0.f;
                row_l[r] = ok ? lse[(i64)(rc + r) * H + h] * 1.4426950408889634f : 0.f;
            }
            // A chunk whose rows all lie in other sequences (or see none of the tile) is skipped.
            const int any = __syncthreads_or(tid < 64 && row_t[tid] >= key0);
            if (!any) continue;
            for (int c = tid; c < 64 * (D / 8); c += blockDim.x) {
                const int r = c / (D / 8), cc = c % (D / 8);
                const bool ok = rc + r < R;
                cp_async16(Qs + r * QW + cc * 8, ok ? q + ((i64)(rc + r) * H + h) * D + cc * 8 : q, ok);
            }
            cp_async_commit();
            cp_async_wait<0>();
            __syncthreads();
            float s[TK / 8][4];
#pragma unroll
            for (int kt = 0; kt < TK / 8; ++kt) s[kt][0] = s[kt][1] = s[kt][2] = s[kt][3] = 0.f;
            for (int d0 = 0; d0 < D; d0 += 16) {
                unsigned a[4];
                ldsm_x4(a, Qs + (warp * 16 + (lane & 15)) * QW + d0 + (lane >> 4) * 8);
#pragma unroll
                for (int kt = 0; kt < TK / 8; kt += 2) {
                    unsigned bb[4];
                    ldsm_x4(bb, Ks + (kt * 8 + (lane & 7) + (lane >> 4) * 8) * QW + d0 + ((lane >> 3) & 1) * 8);
                    mma16816<T>(s[kt], a, bb[0], bb[1]);
                    mma16816<T>(s[kt + 1], a, bb[2], bb[3]);
                }
            }
            // w_r exp(s - lse) for visible (row, key) pairs, summed down the warp's 16 rows.
#pragma unroll
            for (int kt = 0; kt < TK / 8; ++kt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int kk = kt * 8 + 2 * t4 + e;
                    float v = 0.f;
#pragma unroll
                    for (int hr = 0; hr < 2; ++hr) {
                        const int r = warp * 16 + gq + 8 * hr, t = row_t[r];
                        if (t >= 0 && kk < nkeys && key0 + kk <= t) v += row_w[r] * exp2f(s[kt][2 * hr + e] * sl2 - row_l[r]);
                    }
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 8);
                    v += __shfl_xor_sync(0xffffffffu, v, 16);
                    acc[kt][e] += v;
                }
            }
        }
        if ((h + 1) % hpo == 0) {  // the last head of output head h / hpo
            if (gq == 0)
#pragma unroll
                for (int kt = 0; kt < TK / 8; ++kt) {
                    red[warp][kt * 8 + 2 * t4] = acc[kt][0];
                    red[warp][kt * 8 + 2 * t4 + 1] = acc[kt][1];
                }
            write(h / hpo, false);
            reset();
        }
    }
    cp_async_wait<0>();
}

#define VIS_MASS_TC(SUF, T)                                                                                       \
    extern "C" __global__ void __launch_bounds__(128) visual_mass_tc_##SUF(                                       \
        const T* q, const int* qpos, const float* qw, const T* k, const int* cu, const int* seg, const float* lse, \
        float* mass, unsigned* status, int seqs, int tokens, int R, int H, int Hkv, int D, int n, float scale,      \
        int hpo) {                                                                                                 \
        vis_mass_tc<T>(q, qpos, qw, k, cu, seg, lse, mass, status, seqs, tokens, R, H, Hkv, D, n, scale, hpo);    \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256) visual_row_lse_tc_##SUF(                                    \
        const T* q, const int* qpos, const T* k, const int* cu, float* ws, int seqs, int tokens, int R, int H,     \
        int Hkv, int D, float scale) {                                                                             \
        vis_row_lse_tc<T, 64, 64>(q, qpos, k, cu, ws, seqs, tokens, R, H, Hkv, D, scale);                          \
    }
VIS_MASS_TC(f16, __half)
VIS_MASS_TC(bf16, __nv_bfloat16)

#define VIS_TC_ENTRY(SUF, T, G, TK)                                                                              \
    extern "C" __global__ void __launch_bounds__(256) visual_attention_tc_g##G##_k##TK##_##SUF(                  \
        const T* q, const T* k, const T* v, const int* cu, const int* pos, const int* cu_q, const int* pos_q,     \
        const int* img, const int* head_mask, T* o, float* lse, unsigned* status, int seqs, int tokens, int tq,   \
        int H, int Hkv, int D, float scale, int radius, int causal) {                                             \
        vis_attn_tc<T, G, TK>(q, k, v, cu, pos, cu_q, pos_q, img, head_mask, o, lse, status, seqs, tokens, tq, H,  \
                              Hkv, D, scale, radius, causal);                                                     \
    }
#define VIS_TC_TILES(SUF, T)                                                                                  \
    VIS_TC_ENTRY(SUF, T, 64, 32) VIS_TC_ENTRY(SUF, T, 64, 64) VIS_TC_ENTRY(SUF, T, 32, 32)                    \
    VIS_TC_ENTRY(SUF, T, 32, 64) VIS_TC_ENTRY(SUF, T, 16, 32) VIS_TC_ENTRY(SUF, T, 16, 64)
VIS_TC_TILES(f16, __half)
VIS_TC_TILES(bf16, __nv_bfloat16)

// Merge, pass 1: grid (ceil(n / 128), B); thread j finds candidate j's kept slot (its own when
// kept, else the kept candidate of highest cosine similarity, ties to the lower slot).
template <typename T>
__device__ void vis_merge_assign(const T* x, const int* cu, const int* seg, const int* idx, const int* count,
                                 int* assign, unsigned* status, int seqs, int tokens, int n, int D) {
    const int b = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    int* a = assign + (i64)b * n;
    const int c = vis_offsets_ok(cu, seqs, tokens) ? vis_kept(cu, seg, idx, count, b, n) : -1;
    if (c < 0) {
        raise_status(status, ST_INDEX_OUT_OF_RANGE);
        a[j] = -1;
        return;
    }
    if (j >= seg[2 * b + 1] || c == 0) {
        a[j] = -1;
        return;
    }
    const int* kept = idx + (i64)b * n;
    int lo = 0, hi = c;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (kept[mid] < j) lo = mid + 1;
        else hi = mid;
    }
    if (lo < c && kept[lo] == j) {
        a[j] = lo;
        return;
    }
    const i64 base = (i64)cu[b] + seg[2 * b];
    const T* xj = x + (base + j) * D;
    float nj = 0.f;
    for (int d = 0; d < D; ++d) nj += to_f32(xj[d]) * to_f32(xj[d]);
    int best = 0;
    float bv = 0.f;
    for (int e = 0; e < c; ++e) {
        const T* xe = x + (base + kept[e]) * D;
        float dot = 0.f, ne = 0.f;
        for (int d = 0; d < D; ++d) {
            const float u = to_f32(xe[d]);
            dot += to_f32(xj[d]) * u;
            ne += u * u;
        }
        const float cs = (nj == 0.f || ne == 0.f) ? 0.f : dot / sqrtf(nj * ne);
        if (e == 0 || cs > bv) best = e, bv = cs;
    }
    a[j] = best;
}

// Merge, pass 2: grid (n, B), 128 threads over D: slot e's mean over the candidates assigned to
// it, summed in index order (one owner per output, so no atomics and no order dependence).
template <typename T>
__device__ void vis_merge_mean(const T* x, const int* cu, const int* seg, const int* idx, const int* count,
                               const int* assign, T* merged, int seqs, int tokens, int n, int D) {
    const int e = blockIdx.x, b = blockIdx.y;
    T* out = merged + ((i64)b * n + e) * D;
    const int c = vis_offsets_ok(cu, seqs, tokens) ? vis_kept(cu, seg, idx, count, b, n) : -1;
    if (c <= 0 || e >= c) {
        for (int d = threadIdx.x; d < D; d += blockDim.x) out[d] = from_f32<T>(0.f);
        return;
    }
    const int len = seg[2 * b + 1];
    const i64 base = (i64)cu[b] + seg[2 * b];
    const int* a = assign + (i64)b * n;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float sum = 0.f;
        int cnt = 0;
        for (int j = 0; j < len; ++j)
            if (a[j] == e) sum += to_f32(x[(base + j) * D + d]), ++cnt;
        out[d] = from_f32<T>(sum / (float)cnt);
    }
}

#define VISUAL_ENTRIES(SUF, T)                                                                                    \
    extern "C" __global__ void __launch_bounds__(128)                                                             \
        visual_row_lse_##SUF(const T* q, const int* qpos, const T* k, const int* cu, float* ws, int seqs,         \
                             int tokens, int H, int Hkv, int D, float scale) {                                    \
        vis_row_lse<T>(q, qpos, k, cu, ws, seqs, tokens, H, Hkv, D, scale);                                       \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) visual_mass_##SUF(                                          \
        const T* q, const int* qpos, const float* qw, const T* k, const int* cu, const int* seg, const float* lse, \
        float* mass, unsigned* status, int seqs, int tokens, int rows, int H, int Hkv, int D, int n, float scale, \
        int hpo) {                                                                                                \
        vis_mass<T>(q, qpos, qw, k, cu, seg, lse, mass, status, seqs, tokens, rows, H, Hkv, D, n, scale, hpo);    \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) visual_sparse_attention_##SUF(                              \
        const T* q, const T* k, const T* v, const int* cu, const int* pos, const int* cu_q, const int* pos_q,     \
        T* o, float* lse, unsigned* status, int seqs, int tokens, int tq, int H, int Hkv, int D, float scale) {   \
        vis_sparse_attention<T>(q, k, v, cu, pos, cu_q, pos_q, o, lse, status, seqs, tokens, tq, H, Hkv, D,       \
                                scale);                                                                           \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) visual_neighbor_attention_##SUF(                            \
        const T* q, const T* k, const T* v, const int* cu, const int* img, const int* head_mask, T* o,            \
        float* lse, unsigned* status, int seqs, int tokens, int H, int Hkv, int D, float scale, int radius,       \
        int causal) {                                                                                             \
        vis_neighbor_attention<T>(q, k, v, cu, img, head_mask, o, lse, status, seqs, tokens, H, Hkv, D, scale,    \
                                  radius, causal);                                                                \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) visual_merge_assign_##SUF(                                  \
        const T* x, const int* cu, const int* seg, const int* idx, const int* count, int* assign,                 \
        unsigned* status, int seqs, int tokens, int n, int D) {                                                   \
        vis_merge_assign<T>(x, cu, seg, idx, count, assign, status, seqs, tokens, n, D);                          \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) visual_merge_mean_##SUF(                                    \
        const T* x, const int* cu, const int* seg, const int* idx, const int* count, const int* assign,           \
        T* merged, int seqs, int tokens, int n, int D) {                                                          \
        vis_merge_mean<T>(x, cu, seg, idx, count, assign, merged, seqs, tokens, n, D);                            \
    }

FOR_EACH_FLOAT(VISUAL_ENTRIES)
