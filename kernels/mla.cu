// MLA latent attention: paged absorbed decode into split-KV partial states, and their combine.
#include "common.cuh"
#include "attention_tc.cuh"

// Keys per tile = threads per block; a thread owns latent dims tid, tid + TILE, ... (L <= 2048).
#define MLA_TILE 128
#define MLA_MAX_PER_THREAD 16

// One block per (query row, split, sequence). The block loads its query row, walks its split's
// keys a tile at a time (thread k scores key k of the tile), keeps an online softmax, and writes
// the split's normalized output and log-sum-exp (f32) to the workspace. Keys past the row's
// causal position, and tokens on a page id outside [0, pages), get no weight; a seq_len outside
// [0, max_pages * P] is clamped. Both raise ST_INDEX_OUT_OF_RANGE.
//
// Prefill (cu != null): the grid is one "sequence" of `sq` = all new tokens; row j * H + h finds
// its sequence b in cu_seqlens (the first range holding j) and sits at position
// len_b - (cu[b+1] - cu[b]) + (j - cu[b]). A token in no range gets no key and raises the status.
//
// C is the cache's storage: T, or e4m3 with the per-token scales `cs` (null for a float cache):
// a key's score and its weight in P V both carry its scale, the softmax sum does not.
template <typename T, typename C>
__device__ void mla_decode(const T* __restrict__ q, const C* __restrict__ kv, const C* __restrict__ pe,
                           const float* __restrict__ cs, const int* __restrict__ table,
                           const int* __restrict__ seq_lens, const int* __restrict__ cu, float* __restrict__ ws,
                           unsigned int* status, int batch, int sq, int heads, int L, int R, int P, int pages,
                           int max_pages, int splits, i64 kv_stride, i64 pe_stride, float scale) {
    __shared__ float qs[2048 + 128];
    __shared__ float wt[MLA_TILE];
    __shared__ i64 rows[MLA_TILE];
    const int row = blockIdx.x, j = blockIdx.y, tid = threadIdx.x;
    const int W = L + R, nrows = sq * heads;
    int b = blockIdx.z, i = row / heads, sq_b = sq;
    bool found = true;
    if (cu) {
        // A cu_seqlens that does not run from 0 to the token count without decreasing gives every
        // row no key (the tensor-core kernel cannot lay its groups on it).
        bool bad_cu = cu[0] != 0 || cu[batch] != sq;
        for (int s = 0; s < batch; ++s) bad_cu |= cu[s + 1] < cu[s];
        found = false;
        for (int s = 0; s < batch && !found && !bad_cu; ++s) {
            if (i >= cu[s] && i < cu[s + 1]) {
                found = true;
                b = s;
            }
        }
        if (found) {
            sq_b = cu[b + 1] - cu[b];
            i -= cu[b];
        } else {
            b = 0;  // only with a bad cu_seqlens, which block (0, 0) reports
        }
        if (tid == 0 && row == 0 && j == 0) {
            bool bad = bad_cu;
            // Every sequence's length, not only those some row reads: a sequence with no new
            // tokens (or one no row finds) still has its bad length reported.
            for (int s = 0; s < batch; ++s) bad |= seq_lens[s] < 0 || seq_lens[s] > max_pages * P;
            if (bad) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        }
    }
    const T* qr = q + ((i64)blockIdx.z * nrows + row) * W;
    for (int d = tid; d < W; d += MLA_TILE) qs[d] = to_f32(qr[d]);
    const int cap = max_pages * P;
    int len = seq_lens[b];
    if (len < 0 || len > cap) {
        if (tid == 0 && row == 0 && j == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        len = len < 0 ? 0 : cap;
    }
    const int visible = found ? min(len - sq_b + i + 1, len) : 0;  // keys t < visible
    const int chunk = (len + splits - 1) / splits;
    const int t0 = j * chunk, t1 = min(t0 + chunk, visible);
    float m = NEG_INF, l = 0.f, acc[MLA_MAX_PER_THREAD];
#pragma unroll
    for (int k = 0; k < MLA_MAX_PER_THREAD; ++k) acc[k] = 0.f;
    __syncthreads();
    for (int base = t0; base < t1; base += MLA_TILE) {
        const int t = base + tid;
        float s = NEG_INF, ks = 1.f;
        i64 crow = -1;
        if (t < t1) {
            const int page = table[(i64)b * max_pages + t / P];
            if (page >= 0 && page < pages) {
                crow = (i64)page * P + t % P;
                const C* c = kv + crow * kv_stride;
                const C* r = pe + crow * pe_stride;
                float dot = 0.f;
                for (int d = 0; d < L; ++d) dot += qs[d] * to_f32(c[d]);
                for (int d = 0; d < R; ++d) dot += qs[L + d] * to_f32(r[d]);
                if (cs) ks = cs[crow];
                s = scale * (dot * ks);
            } else {
                raise_status(status, ST_INDEX_OUT_OF_RANGE);
            }
        }
        const float mnew = fmaxf(m, block_max(s));
        // With every key so far hidden, mnew is -inf: weights and the rescale stay 0, never NaN.
        const float alpha = m == NEG_INF ? 0.f : expf(m - mnew);
        const float w = s == NEG_INF ? 0.f : expf(s - mnew);
        wt[tid] = w * ks;
        rows[tid] = crow;
        l = l * alpha + block_sum(w);
        m = mnew;
        const int n = min(MLA_TILE, t1 - base);
#pragma unroll
        for (int k = 0; k < MLA_MAX_PER_THREAD; ++k) acc[k] *= alpha;
        for (int kk = 0; kk < n; ++kk) {
            const float wk = wt[kk];
            if (wk == 0.f) continue;
            const C* c = kv + rows[kk] * kv_stride;
#pragma unroll
            for (int k = 0; k < MLA_MAX_PER_THREAD; ++k) {
                const int d = tid + k * MLA_TILE;
                if (d < L) acc[k] += wk * to_f32(c[d]);
            }
        }
        __syncthreads();  // the next tile overwrites wt and rows
    }
    const i64 total = (i64)gridDim.z * nrows;
    const i64 prow = (i64)j * total + (i64)blockIdx.z * nrows + row;
    float* po = ws + prow * L;
    // A NaN score reached l as a NaN weight: the split is NaN (the NaN policy).
    const bool nan = nan_bits(l);
    const float inv = nan ? NAN_F : l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int k = 0; k < MLA_MAX_PER_THREAD; ++k) {
        const int d = tid + k * MLA_TILE;
        if (d < L) po[d] = acc[k] * inv;
    }
    if (tid == 0) ws[(i64)splits * total * L + prow] = nan ? NAN_F : l > 0.f ? m + logf(l) : NEG_INF;
}

// ---- tensor-core decode and prefill (f16, bf16) ----------------------------------------------
//
// One block (8 warps) per (group of up to G query rows of one sequence, split, sequence), run by
// the shared core attn_tc_group (attention_tc.cuh). A row is a (new token, head) pair,
// r = i * H + h, so a group holds 64 heads of one token at H = 128, or every head of 4 tokens at
// H = 16; each cache tile (latent and rope rows through the block table, any page size) is read
// once for the whole group, so the cache is read ceil(H * Sq / G) times instead of H * Sq. V is
// the latent part of the same tile. Each (group, split) writes its rows' normalized partials and
// log-sum-exps to the workspace, as mla_decode does.
template <typename T, typename C>
struct MlaTcProblem {
    static constexpr bool F8 = sizeof(C) == 1;  // an fp8 cache: bytes plus a scale per token
    const T* q;
    const C *kv, *pe;
    const float* cs;
    const int* table;
    float* ws;
    unsigned* status;
    int qw, vw;  // L + R, L
    int b, n_b, r0, heads, len, P, pages, max_pages, splits, j;
    bool bad_cu;
    i64 grow0, kv_stride, pe_stride, total;

    __device__ const T* q_row(int r) const { return q + (grow0 + r) * qw; }
    __device__ i64 key_row(int t, int, int*) const {
        const int page = table[(i64)b * max_pages + t / P];
        if (page >= 0 && page < pages) return (i64)page * P + t % P;
        raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return -1;
    }
    // 16-byte chunk c of a key row: 8 elements of a 16-bit cache, 16 of an fp8 one.
    __device__ const C* k_src(i64 row, int c) const {
        constexpr int per = 16 / sizeof(C);
        const int lc = vw / per;
        return c < lc ? kv + row * kv_stride + c * per : pe + row * pe_stride + (c - lc) * per;
    }
    __device__ float k_scale(i64 row) const { return cs[row]; }
    __device__ const C* v_src(i64, int) const { return kv; }  // V is the key tile's latent part
    // Keys t < vis(i) are visible to token i of the sequence's n_b new ones.
    __device__ int vis(int r) const { return bad_cu ? 0 : max(0, min(len - n_b + (r0 + r) / heads + 1, len)); }
    __device__ bool visible(int r, int t, int) const { return t < vis(r); }
    __device__ bool v_zero(int, int, int) const { return false; }
    __device__ void store(int r, int c, float o0, float o1) const {
        float* po = ws + ((i64)j * total + grow0 + r) * vw + c;  // c and vw even: 8-byte aligned
        *reinterpret_cast<float2*>(po) = make_float2(o0, o1);
    }
    __device__ void store_lse(int r, float lse) const { ws[(i64)splits * total * vw + (i64)j * total + grow0 + r] = lse; }
};

template <typename T, typename C, int G, int TK>
__device__ void mla_attn_tc(const T* __restrict__ q, const C* __restrict__ kv, const C* __restrict__ pe,
                            const float* __restrict__ cs, const int* __restrict__ table, const int* __restrict__ seq_lens, const int* __restrict__ cu,
                            float* __restrict__ ws, unsigned int* status, int batch, int sq, int heads, int L, int R,
                            int P, int pages, int max_pages, int splits, i64 kv_stride, i64 pe_stride, float scale,
                            i64 total) {
    const int tid = threadIdx.x, j = blockIdx.y;
    // The block's sequence b, its new tokens n_b, the first of them (row_base) and its group.
    int b = blockIdx.z, n_b = sq, row_base = blockIdx.z * sq, grp = blockIdx.x;
    bool bad_cu = false;
    if (cu) {
        // A cu_seqlens that does not run from 0 to the token count without decreasing gives
        // every row no key (o = 0, lse = -inf): groups are then laid over the flat rows.
        bad_cu = cu[0] != 0 || cu[batch] != sq;
        for (int s = 0; s < batch; ++s) bad_cu |= cu[s + 1] < cu[s];
        if (tid == 0 && blockIdx.x == 0 && j == 0) {
            bool bad = bad_cu;
            for (int s = 0; s < batch; ++s) bad |= seq_lens[s] < 0 || seq_lens[s] > max_pages * P;
            if (bad) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        }
        if (bad_cu) {
            b = 0;
            n_b = sq;
            row_base = 0;
        } else {
            b = attn_tc_group_seq<G>(cu, batch, heads, grp);
            if (b < 0) return;  // past the last group
            n_b = cu[b + 1] - cu[b];
            row_base = cu[b];
        }
    }
    const int r0 = grp * G;
    const int rows = (int)min((i64)G, (i64)n_b * heads - r0);
    if (rows <= 0) return;
    const int cap = max_pages * P;
    int len = seq_lens[b];
    if (len < 0 || len > cap) {
        if (!cu && tid == 0 && blockIdx.x == 0 && j == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        len = len < 0 ? 0 : cap;
    }
    MlaTcProblem<T, C> pb{q, kv, pe, cs, table, ws, status, L + R, L, b, n_b, r0, heads, len, P, pages, max_pages, splits, j,
                       bad_cu, (i64)row_base * heads + r0, kv_stride, pe_stride, total};
    const int chunk = (len + splits - 1) / splits;
    const int t0 = j * chunk, t1 = min(t0 + chunk, pb.vis(rows - 1));  // the last row sees the most
    attn_tc_group<T, G, TK, 32, false, MlaTcProblem<T, C>::F8>(pb, rows, t0, t1, scale);  // G * L <= 32768
}

// Merges a row's split partials into o (dtype) and lse, written [B, H, Sq]. A split with no key
// has lse = -inf and weight 0; a row with none at all gets o = 0, lse = -inf.
template <typename T>
__device__ void mla_combine(const float* __restrict__ ws, T* __restrict__ o, float* __restrict__ lse, int sq,
                            int heads, int L, int splits, i64 total) {
    const i64 r = blockIdx.x + (i64)blockIdx.y * gridDim.x;
    if (r >= total) return;
    const float* part_lse = ws + (i64)splits * total * L;
    float m = NEG_INF;
    bool nan = false;  // a NaN split makes the row NaN (the NaN policy); fmaxf would skip it
    for (int j = 0; j < splits; ++j) {
        m = fmaxf(m, part_lse[(i64)j * total + r]);
        nan = nan || nan_bits(part_lse[(i64)j * total + r]);
    }
    float sum = 0.f;
    for (int j = 0; j < splits; ++j) {
        const float v = part_lse[(i64)j * total + r];
        sum += v == NEG_INF ? 0.f : expf(v - m);
    }
    for (int d = threadIdx.x; d < L; d += blockDim.x) {
        float v = 0.f;
        for (int j = 0; j < splits; ++j) {
            const float lj = part_lse[(i64)j * total + r];
            if (lj != NEG_INF) v += expf(lj - m) * ws[((i64)j * total + r) * L + d];
        }
        o[r * L + d] = from_f32<T>(nan ? NAN_F : m == NEG_INF ? 0.f : v / sum);
    }
    if (threadIdx.x == 0) {
        const i64 nrows = (i64)sq * heads, b = r / nrows, rem = r % nrows, i = rem / heads, h = rem % heads;
        lse[(b * heads + h) * sq + i] = nan ? NAN_F : m == NEG_INF ? NEG_INF : m + logf(sum);
    }
}

// One block per new token: it checks its slot against every other token's (all tokens on a
// shared slot are skipped, so no two blocks ever write one cache row), then copies its latent
// row and rope key into the cache. An fp8 cache (C = e4m3) takes the row over its power-of-two
// scale, written to cs[slot]: the row's largest magnitude (latent and rope together) sets it, a
// non-finite value makes it NaN and the bytes zero.
template <typename T, typename C>
__device__ void mla_append(const T* __restrict__ kv_new, const T* __restrict__ pe_new, const int* __restrict__ slots,
                           C* kv_dst, C* pe_dst, float* cs, unsigned int* status, int tokens, int L, int R,
                           int n_slots, i64 kv_stride, i64 pe_stride) {
    const i64 t = blockIdx.x + (i64)blockIdx.y * gridDim.x;
    if (t >= tokens) return;
    const int id = slots[t];
    int dup = 0;
    for (int u = threadIdx.x; u < tokens; u += blockDim.x) dup |= (u != t && slots[u] == id);
    const bool shared = __syncthreads_or(dup) != 0;
    const bool in_range = id >= 0 && id < n_slots;
    if (!in_range || shared) {
        if (threadIdx.x == 0) raise_status(status, in_range ? ST_SLOT_REPEATED : ST_SLOT_OUT_OF_RANGE);
        return;
    }
    if constexpr (sizeof(C) == 1) {
        float amax = 0.f;
        int bad = 0;
        for (int d = threadIdx.x; d < L + R; d += blockDim.x) {
            const float x = to_f32(d < L ? kv_new[t * L + d] : pe_new[t * R + d - L]);
            bad |= !finite_bits(x);
            amax = fmaxf(amax, fabsf(x));
        }
        const bool nonfinite = __syncthreads_or(bad) != 0;
        const float sc = nonfinite ? NAN_F : e4m3_scale(block_max(amax));
        const float inv = nonfinite ? 0.f : 1.f / sc;  // exact: sc is a power of two
        if (threadIdx.x == 0) cs[id] = sc;
        for (int d = threadIdx.x; d < L; d += blockDim.x)
            kv_dst[(i64)id * kv_stride + d] = C{(unsigned char)(nonfinite ? 0u : f32_e4m3_bits(to_f32(kv_new[t * L + d]) * inv))};
        for (int d = threadIdx.x; d < R; d += blockDim.x)
            pe_dst[(i64)id * pe_stride + d] = C{(unsigned char)(nonfinite ? 0u : f32_e4m3_bits(to_f32(pe_new[t * R + d]) * inv))};
    } else {
        for (int d = threadIdx.x; d < L; d += blockDim.x) kv_dst[(i64)id * kv_stride + d] = kv_new[t * L + d];
        for (int d = threadIdx.x; d < R; d += blockDim.x) pe_dst[(i64)id * pe_stride + d] = pe_new[t * R + d];
    }
}

// Rotary embedding in place, one block per token; a thread rotates pairs (a, b) to
// (a cos - b sin, a sin + b cos). Pairs are (2i, 2i+1) when interleaved, else (i, i + dim/2).
template <typename T>
__device__ void mla_rope(T* x, const float* __restrict__ cos_t, const float* __restrict__ sin_t, int heads, int dim,
                         int interleaved, i64 head_stride, i64 token_stride) {
    const i64 t = blockIdx.x + (i64)blockIdx.y * gridDim.x;
    const int half = dim / 2;
    for (int k = threadIdx.x; k < heads * half; k += blockDim.x) {
        const int h = k / half, i = k % half;
        T* base = x + t * token_stride + h * head_stride;
        const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
        const float a = to_f32(base[ia]), b = to_f32(base[ib]);
        const float c = cos_t[t * half + i], s = sin_t[t * half + i];
        base[ia] = from_f32<T>(a * c - b * s);
        base[ib] = from_f32<T>(a * s + b * c);
    }
}

// out[t, h, j] = sum_k a[t, h, k] w[h, k, j], one block per (token, head) with the a row staged
// in shared memory (k <= 4096); every stride is explicit (absorb_q reads W_UK row-major,
// project_out reads W_UV transposed).
template <typename T>
__device__ void mla_head_product(const T* __restrict__ a, const T* __restrict__ w, T* __restrict__ out, int tokens,
                                 int heads, int K, int N, i64 a_ts, i64 a_hs, i64 o_ts, i64 o_hs, i64 w_hs,
                                 i64 w_ks, i64 w_js) {
    __shared__ float as[4096];
    const i64 g = blockIdx.x + (i64)blockIdx.y * gridDim.x;
    if (g >= (i64)tokens * heads) return;
    const i64 t = g / heads, h = g % heads;
    const T* ar = a + t * a_ts + h * a_hs;
    for (int k = threadIdx.x; k < K; k += blockDim.x) as[k] = to_f32(ar[k]);
    __syncthreads();
    const T* wh = w + h * w_hs;
    T* orow = out + t * o_ts + h * o_hs;
    for (int j = threadIdx.x; j < N; j += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < K; ++k) s += as[k] * to_f32(wh[k * w_ks + j * w_js]);
        orow[j] = from_f32<T>(s);
    }
}

// The same product on tensor cores (f16, bf16), one block per (64 tokens, 64 output columns,
// head): 4 warps, each 16 tokens x 64 columns; k in steps of 32 staged by cp.async, double-
// buffered. `WT` false: w[h] is [k][j] with j contiguous (absorb_q's W_UK); true: [j][k] with k
// contiguous (project_out's W_UV, read transposed). The host checks what cp.async needs: the
// contiguous strides 1, K and N multiples of 8, the other strides multiples of 8 elements and
// 16-byte-aligned bases; anything else takes mla_head_product.
#define MLA_HP_BM 64
#define MLA_HP_BN 64
#define MLA_HP_BK 32
template <typename T, bool WT>
__device__ void mla_head_product_tc(const T* __restrict__ a, const T* __restrict__ w, T* __restrict__ out, int tokens,
                                    int K, int N, i64 a_ts, i64 a_hs, i64 o_ts, i64 o_hs, i64 w_hs, i64 w_ks,
                                    i64 w_js) {
    constexpr int AW = MLA_HP_BK + 8;                      // padded row of the A tile
    constexpr int BW = WT ? MLA_HP_BK + 8 : MLA_HP_BN + 8;  // padded row of the B tile
    constexpr int BROWS = WT ? MLA_HP_BN : MLA_HP_BK;
    __shared__ __align__(16) T As[2][MLA_HP_BM * AW];
    __shared__ __align__(16) T Bs[2][BROWS * BW];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int j0 = blockIdx.x * MLA_HP_BN, m0 = blockIdx.y * MLA_HP_BM;
    const i64 h = blockIdx.z;
    const T* wh = w + h * w_hs;
    auto load = [&](int stage, int k0) {
        for (int c = tid; c < MLA_HP_BM * (MLA_HP_BK / 8); c += blockDim.x) {
            const int r = c / (MLA_HP_BK / 8), kc = (c % (MLA_HP_BK / 8)) * 8;
            const bool ok = m0 + r < tokens && k0 + kc < K;
            const T* src = ok ? a + (i64)(m0 + r) * a_ts + h * a_hs + k0 + kc : a;
            cp_async16(&As[stage][r * AW + kc], src, ok);
        }
        constexpr int RC = (WT ? MLA_HP_BK : MLA_HP_BN) / 8;  // 16-byte chunks per B row
        for (int c = tid; c < BROWS * RC; c += blockDim.x) {
            const int r = c / RC, cc = (c % RC) * 8;
            // WT: row r is output column j0 + r, chunk cc is k0 + cc; else row r is k0 + r.
            const int kk = WT ? k0 + cc : k0 + r, jj = WT ? j0 + r : j0 + cc;
            const bool ok = kk < K && jj < N;
            const T* src = ok ? wh + (i64)kk * w_ks + (i64)jj * w_js : w;
            cp_async16(&Bs[stage][r * BW + cc], src, ok);
        }
    };
    float acc[MLA_HP_BN / 8][4];
#pragma unroll
    for (int n = 0; n < MLA_HP_BN / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    const int nk = (K + MLA_HP_BK - 1) / MLA_HP_BK;
    load(0, 0);
    cp_async_commit();
    for (int kt = 0; kt < nk; ++kt) {
        const int st = kt & 1;
        if (kt + 1 < nk) {
            load(st ^ 1, (kt + 1) * MLA_HP_BK);  // that stage's last reader finished before the barrier below
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
#pragma unroll
        for (int k0 = 0; k0 < MLA_HP_BK; k0 += 16) {
            unsigned af[4];
            ldsm_x4(af, &As[st][(warp * 16 + (lane & 15)) * AW + k0 + (lane >> 4) * 8]);
#pragma unroll
            for (int n = 0; n < MLA_HP_BN / 8; n += 2) {
                unsigned bf[4];
                if (WT) ldsm_x4(bf, &Bs[st][(n * 8 + (lane & 7) + (lane >> 4) * 8) * BW + k0 + ((lane >> 3) & 1) * 8]);
                else ldsm_x4_trans(bf, &Bs[st][(k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * BW + n * 8 + (lane >> 4) * 8]);
                mma16816<T>(acc[n], af, bf[0], bf[1]);
                mma16816<T>(acc[n + 1], af, bf[2], bf[3]);
            }
        }
        __syncthreads();  // the stage is reloaded next iteration
    }
    // The tile goes out through shared memory (the A stages, free after the last barrier), so
    // each thread stores whole 16-byte pieces of output rows.
    constexpr int CW = MLA_HP_BN + 8;
    static_assert(MLA_HP_BM * CW <= 2 * MLA_HP_BM * AW, "the output tile fits the A stages");
    T* Cs = &As[0][0];
#pragma unroll
    for (int n = 0; n < MLA_HP_BN / 8; ++n) {
        const int r = warp * 16 + g, c = n * 8 + 2 * t4;
        *reinterpret_cast<unsigned*>(Cs + r * CW + c) = pack2<T>(acc[n][0], acc[n][1]);
        *reinterpret_cast<unsigned*>(Cs + (r + 8) * CW + c) = pack2<T>(acc[n][2], acc[n][3]);
    }
    __syncthreads();
    const bool vec = reinterpret_cast<unsigned long long>(out) % 16 == 0 && o_ts % 8 == 0 && o_hs % 8 == 0;
    for (int c = tid; c < MLA_HP_BM * (MLA_HP_BN / 8); c += blockDim.x) {
        const int r = c / (MLA_HP_BN / 8), cc = (c % (MLA_HP_BN / 8)) * 8;
        const int m = m0 + r, j = j0 + cc;
        if (m >= tokens || j >= N) continue;  // N is a multiple of 8: a piece is all in or all out
        T* dst = out + (i64)m * o_ts + h * o_hs + j;
        if (vec) {
            *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(Cs + r * CW + cc);
        } else {
            for (int e = 0; e < 8; ++e) dst[e] = Cs[r * CW + cc + e];
        }
    }
}

#define MLA_HP_TC(SUF, T)                                                                                          \
    extern "C" __global__ void __launch_bounds__(128)                                                             \
        mla_head_product_tc_##SUF(const T* a, const T* w, T* out, int tokens, int K, int N, i64 a_ts, i64 a_hs,   \
                                  i64 o_ts, i64 o_hs, i64 w_hs, i64 w_ks, i64 w_js) {                            \
        mla_head_product_tc<T, false>(a, w, out, tokens, K, N, a_ts, a_hs, o_ts, o_hs, w_hs, w_ks, w_js);         \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128)                                                             \
        mla_head_product_tc_wt_##SUF(const T* a, const T* w, T* out, int tokens, int K, int N, i64 a_ts,          \
                                     i64 a_hs, i64 o_ts, i64 o_hs, i64 w_hs, i64 w_ks, i64 w_js) {               \
        mla_head_product_tc<T, true>(a, w, out, tokens, K, N, a_ts, a_hs, o_ts, o_hs, w_hs, w_ks, w_js);          \
    }
MLA_HP_TC(f16, __half)
MLA_HP_TC(bf16, __nv_bfloat16)

#define MLA_DECODE_ENTRY(NAME, T, C)                                                                             \
    extern "C" __global__ void __launch_bounds__(MLA_TILE)                                                       \
        NAME(const T* q, const C* kv, const C* pe, const float* cs, const int* table, const int* lens,           \
             const int* cu, float* ws, unsigned int* status, int batch, int sq, int heads, int L, int R, int P,  \
             int pages, int max_pages, int splits, i64 kv_stride, i64 pe_stride, float scale) {                  \
        mla_decode<T, C>(q, kv, pe, cs, table, lens, cu, ws, status, batch, sq, heads, L, R, P, pages,          \
                         max_pages, splits, kv_stride, pe_stride, scale);                                        \
    }
#define MLA_APPEND_ENTRY(NAME, T, C)                                                                             \
    extern "C" __global__ void __launch_bounds__(128)                                                            \
        NAME(const T* kv_new, const T* pe_new, const int* slots, C* kv_dst, C* pe_dst, float* cs,                \
             unsigned int* status, int tokens, int L, int R, int n_slots, i64 kvs, i64 pes) {                    \
        mla_append<T, C>(kv_new, pe_new, slots, kv_dst, pe_dst, cs, status, tokens, L, R, n_slots, kvs, pes);   \
    }
#define MLA_ENTRIES(SUF, T)                                                                                      \
    MLA_DECODE_ENTRY(mla_decode_##SUF, T, T)                                                                     \
    MLA_DECODE_ENTRY(mla_decode_e4m3_##SUF, T, e4m3)                                                             \
    extern "C" __global__ void __launch_bounds__(128)                                                            \
        mla_combine_##SUF(const float* ws, T* o, float* lse, int sq, int heads, int L, int splits, i64 total) { \
        mla_combine<T>(ws, o, lse, sq, heads, L, splits, total);                                                 \
    }                                                                                                            \
    MLA_APPEND_ENTRY(mla_append_##SUF, T, T)                                                                     \
    MLA_APPEND_ENTRY(mla_append_e4m3_##SUF, T, e4m3)                                                             \
    extern "C" __global__ void __launch_bounds__(128) mla_rope_##SUF(T* x, const float* c, const float* s,       \
                                                                     int heads, int dim, int inter, i64 hs,      \
                                                                     i64 ts) {                                    \
        mla_rope<T>(x, c, s, heads, dim, inter, hs, ts);                                                         \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(128)                                                            \
        mla_head_product_##SUF(const T* a, const T* w, T* out, int tokens, int heads, int K, int N, i64 a_ts,    \
                               i64 a_hs, i64 o_ts, i64 o_hs, i64 w_hs, i64 w_ks, i64 w_js) {                     \
        mla_head_product<T>(a, w, out, tokens, heads, K, N, a_ts, a_hs, o_ts, o_hs, w_hs, w_ks, w_js);           \
    }

FOR_EACH_FLOAT(MLA_ENTRIES)

// The tensor-core attention per (group rows G, keys per tile TK); the host picks the largest G
// (fewest cache reads) and then TK that fit the device's shared memory.
// `_e4m3` entries read an fp8 cache with per-token scales.
#define MLA_TC_ENTRY(NAME, T, C, G, TK)                                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        NAME(const T* q, const C* kv, const C* pe, const float* cs, const int* table, const int* lens,             \
             const int* cu, float* ws, unsigned int* status, int batch, int sq, int heads, int L, int R, int P,    \
             int pages, int max_pages, int splits, i64 kv_stride, i64 pe_stride, float scale, i64 total) {         \
        mla_attn_tc<T, C, G, TK>(q, kv, pe, cs, table, lens, cu, ws, status, batch, sq, heads, L, R, P, pages,     \
                                 max_pages, splits, kv_stride, pe_stride, scale, total);                           \
    }
#define MLA_TC_BOTH(SUF, T, G, TK)                                                                             \
    MLA_TC_ENTRY(mla_decode_tc_g##G##_k##TK##_##SUF, T, T, G, TK)                                              \
    MLA_TC_ENTRY(mla_decode_tc_g##G##_k##TK##_e4m3_##SUF, T, e4m3, G, TK)
#define MLA_TC_TILES(SUF, T)                                                                                 \
    MLA_TC_BOTH(SUF, T, 64, 16) MLA_TC_BOTH(SUF, T, 64, 32) MLA_TC_BOTH(SUF, T, 32, 16)                      \
    MLA_TC_BOTH(SUF, T, 32, 32) MLA_TC_BOTH(SUF, T, 16, 16) MLA_TC_BOTH(SUF, T, 16, 32)
MLA_TC_TILES(f16, __half)
MLA_TC_TILES(bf16, __nv_bfloat16)
