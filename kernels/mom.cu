// Mixture-of-Memories linear attention: router, stable permutation into streams, recombination,
// short convolution, the gated delta rule (decode step and chunked prefill), gated output norm.
// States are f32 in pools indexed `m * slots + slot`; every kernel that writes a pool entry or a
// stream row owns it alone (repeated slots are skipped, streams are disjoint row ranges).
#include "common.cuh"

#define MOM_CT 64   // rows per chunk tile (the chunk parameter may be smaller)
#define MOM_KT 16   // K columns staged per pass
#define MOM_VT 64   // state columns per block (= threads) in the chunk kernel
#define MOM_MAX_CONV 8

__device__ __forceinline__ float mom_silu(float x) { return x / (1.f + __expf(-x)); }
__device__ __forceinline__ float mom_sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }
__device__ __forceinline__ float mom_softplus(float x) { return x > 20.f ? x : log1pf(__expf(x)); }

// Token t's j-th memory, or -1 when it is outside [0, M) or repeats an earlier choice.
__device__ __forceinline__ int mom_choice(const int* idx, i64 t, int j, int k, int M) {
    const int m = idx[t * k + j];
    if (m < 0 || m >= M) return -1;
    for (int i = 0; i < j; ++i)
        if (idx[t * k + i] == m) return -1;
    return m;
}

// Offsets `cu [n + 1]` from 0, never decreasing, ending at `end` (exact) or at most `end`.
__device__ bool mom_offsets_ok(const int* cu, int n, int end, bool exact) {
    if (cu[0] != 0) return false;
    for (int i = 0; i < n; ++i)
        if (cu[i + 1] < cu[i]) return false;
    return exact ? cu[n] == end : cu[n] <= end;
}

// 0, or the status bit that keeps sequence b away from the pool.
__device__ unsigned mom_slot_fault(const int* slot_ids, int b, int n, int slots) {
    const int s = slot_ids[b];
    if (s < 0 || s >= slots) return ST_SLOT_OUT_OF_RANGE;
    for (int j = 0; j < n; ++j)
        if (j != b && slot_ids[j] == s) return ST_SLOT_REPEATED;
    return 0u;
}

// The same two checks once per block: thread 0 reads the O(n) entries and the block shares its
// verdict, where every thread repeating them would cost more than the work they guard. Every
// thread of the block must call these (they hold a barrier).
__device__ bool mom_block_offsets_ok(const int* cu, int n, int end, bool exact) {
    __shared__ bool ok;
    if (threadIdx.x == 0) ok = mom_offsets_ok(cu, n, end, exact);
    __syncthreads();
    return ok;
}

__device__ unsigned mom_block_slot_fault(const int* slot_ids, int b, int n, int slots) {
    __shared__ unsigned fault;
    if (threadIdx.x == 0) fault = mom_slot_fault(slot_ids, b, n, slots);
    __syncthreads();
    return fault;
}

// Router: one thread per token. Top-k by repeated selection of the largest remaining logit
// (strictly larger wins, so ties go to the lower index); weights are the softmax over the kept
// logits, which equals the renormalized top-k of the full softmax.
template <typename T>
__device__ void mom_route(const T* logits, int* idx, float* w, unsigned* status, int tokens, int M, int k) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tokens) return;
    const T* row = logits + (i64)t * M;
    bool finite = true;
    for (int m = 0; m < M; ++m) finite &= isfinite(to_f32(row[m]));
    if (!finite) {
        raise_status(status, ST_VALUE_OUT_OF_RANGE);
        for (int j = 0; j < k; ++j) {
            idx[(i64)t * k + j] = j;
            w[(i64)t * k + j] = 1.f / k;
        }
        return;
    }
    unsigned long long taken = 0ull;
    float top = 0.f, sum = 0.f;
    for (int j = 0; j < k; ++j) {
        int best = -1;
        float bv = 0.f;
        for (int m = 0; m < M; ++m) {
            const float v = to_f32(row[m]);
            if (!((taken >> m) & 1ull) && (best < 0 || v > bv)) best = m, bv = v;
        }
        taken |= 1ull << best;
        if (j == 0) top = bv;
        idx[(i64)t * k + j] = best;
        const float e = __expf(bv - top);
        w[(i64)t * k + j] = e;
        sum += e;
    }
    for (int j = 0; j < k; ++j) w[(i64)t * k + j] /= sum;
}

// Permute, pass 1: one block per stream g = m * seqs + b counts its pairs; the memory-0 block
// of each sequence marks its dropped pairs in `inverse`. Bad cu_seqlens: every count is 0 and
// every pair dropped.
__device__ void permute_count(const int* idx, const int* cu, int* counts, int* inverse, unsigned* status,
                                  int tokens, int seqs, int M, int k, int shared) {
    const int g = blockIdx.x, m = g / seqs, b = g % seqs, n = k + shared;
    const int groups = gridDim.x;
    if (!mom_block_offsets_ok(cu, seqs, tokens, true)) {
        if (threadIdx.x == 0) {
            raise_status(status, ST_INDEX_OUT_OF_RANGE);
            counts[g] = 0;
        }
        for (i64 p = (i64)g * blockDim.x + threadIdx.x; p < (i64)tokens * n; p += (i64)groups * blockDim.x)
            inverse[p] = -1;
        return;
    }
    const int t0 = cu[b], t1 = cu[b + 1];
    int ci = 0;
    if (m == M) {
        ci = threadIdx.x == 0 ? t1 - t0 : 0;
    } else {
        for (i64 p = (i64)t0 * k + threadIdx.x; p < (i64)t1 * k; p += blockDim.x) {
            const int ch = mom_choice(idx, p / k, (int)(p % k), k, M);
            if (ch == m) ++ci;
            if (m == 0 && ch < 0) {
                raise_status(status, ST_INDEX_OUT_OF_RANGE);
                inverse[(p / k) * n + p % k] = -1;
            }
        }
    }
    __shared__ int part[32];
    for (int o = 16; o > 0; o >>= 1) ci += __shfl_xor_sync(0xffffffffu, ci, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ci;
    __syncthreads();
    if (threadIdx.x == 0) {
        int s = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) s += part[w];
        counts[g] = s;
    }
}

// Permute, pass 2: each stream's block sums the counts before it (its first row), then places
// its pairs in token order with a block-wide prefix sum per tile of 256 pairs.
__device__ void permute_place(const int* idx, const int* cu, const int* counts, int* order, int* inverse,
                                  int* cu_mem, int tokens, int seqs, int M, int k, int shared) {
    const int g = blockIdx.x, m = g / seqs, b = g % seqs, n = k + shared, groups = gridDim.x;
    __shared__ int part[32];
    __shared__ int scan[256];
    int s = 0;
    for (int i = threadIdx.x; i < g; i += blockDim.x) s += counts[i];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    int base = 0;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) base += part[w];
    const int count = counts[g];
    if (threadIdx.x == 0) {
        cu_mem[g] = base;
        if (g == groups - 1) cu_mem[groups] = base + count;
    }
    if (g == groups - 1)
        for (i64 r = (i64)base + count + threadIdx.x; r < (i64)tokens * n; r += blockDim.x) order[r] = -1;
    if (count == 0) return;  // also every stream when cu_seqlens is bad (pass 1 counted 0)
    const int t0 = cu[b], t1 = cu[b + 1];
    if (m == M) {
        for (int t = t0 + threadIdx.x; t < t1; t += blockDim.x) {
            const int r = base + (t - t0);
            order[r] = t;
            inverse[(i64)t * n + k] = r;
        }
        return;
    }
    int running = 0;
    for (i64 p0 = (i64)t0 * k; p0 < (i64)t1 * k; p0 += 256) {
        const i64 p = p0 + threadIdx.x;
        const int flag = (p < (i64)t1 * k && mom_choice(idx, p / k, (int)(p % k), k, M) == m) ? 1 : 0;
        scan[threadIdx.x] = flag;
        __syncthreads();
        for (int off = 1; off < 256; off <<= 1) {
            const int v = threadIdx.x >= off ? scan[threadIdx.x - off] : 0;
            __syncthreads();
            scan[threadIdx.x] += v;
            __syncthreads();
        }
        if (flag) {
            const int r = base + running + scan[threadIdx.x] - 1;
            order[r] = (int)(p / k);
            inverse[(p / k) * n + p % k] = r;
        }
        running += scan[255];
        __syncthreads();
    }
}

// Unpermute: one block per token gathers its rows (no scatter, so no two writers).
template <typename T>
__device__ void mom_unpermute(const T* y, const int* inverse, const float* w, T* out, unsigned* status, int tokens,
                              int k, int n, int width, int rows) {
    const i64 t = blockIdx.x + (i64)blockIdx.y * gridDim.x;
    if (t >= tokens) return;
    for (int c = threadIdx.x; c < width; c += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < n; ++j) {
            const int r = inverse[t * n + j];
            if (r == -1) continue;
            if (r < 0 || r >= rows) {
                raise_status(status, ST_INDEX_OUT_OF_RANGE);
                continue;
            }
            const float wt = j < k ? w[t * k + j] : 1.f;
            acc += wt * to_f32(y[(i64)r * width + c]);
        }
        out[t * width + c] = from_f32<T>(acc);
    }
}

// The projection column of conv channel c for memory m (q is shared by every memory).
__device__ __forceinline__ int mom_col(int m, int c, int HK, int HV, int Mp) {
    if (c < HK) return c;
    if (c < 2 * HK) return HK + m * HK + (c - HK);
    return HK + Mp * HK + m * HV + (c - 2 * HK);
}

// Short conv + gates for prefill. grid (ceil((C + 2H) / 128), streams): thread c walks its
// stream's rows in order for conv channel c (c < C) or gate column c - C.
template <typename T>
__device__ void mom_short_conv(const T* x, const int* order, const int* cu, const int* slot_ids, const T* conv_w,
                               const float* gp, float* conv_state, T* qkv, float* gb, unsigned* status, int tokens,
                               int seqs, int Mp, int H, int K, int V, int W, int slots, int rows, int P) {
    const int s = blockIdx.y, m = s / seqs, b = s % seqs, streams = gridDim.y;
    const int HK = H * K, HV = H * V, C = 2 * HK + HV;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (!mom_block_offsets_ok(cu, streams, rows, false)) {
        if (threadIdx.x == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return;
    }
    const unsigned fault = mom_block_slot_fault(slot_ids, b, seqs, slots);
    if (fault) {
        if (threadIdx.x == 0) raise_status(status, fault);
        return;
    }
    if (c >= C + 2 * H) return;
    const i64 e = (i64)m * slots + slot_ids[b];
    const int r0 = cu[s], r1 = cu[s + 1];
    if (c < C) {
        float win[MOM_MAX_CONV], taps[MOM_MAX_CONV];
        float* st = conv_state + (e * C + c) * W;
        for (int i = 0; i < W; ++i) win[i] = st[i], taps[i] = to_f32(conv_w[(i64)c * W + i]);
        const int col = mom_col(m, c, HK, HV, Mp);
        for (int r = r0; r < r1; ++r) {
            const int t = order[r];
            float xin = 0.f;
            if (t < 0 || t >= tokens) raise_status(status, ST_INDEX_OUT_OF_RANGE);
            else xin = to_f32(x[(i64)t * P + col]);
            float acc = 0.f;
            for (int i = 0; i < W; ++i) {
                win[i] = i + 1 < W ? win[i + 1] : xin;
                acc += taps[i] * win[i];
            }
            qkv[(i64)r * C + c] = from_f32<T>(mom_silu(acc));
        }
        for (int i = 0; i < W; ++i) st[i] = win[i];
    } else {
        const int gi = c - C, h = gi % H, beta = gi / H;
        const int col = HK + Mp * (HK + HV) + beta * Mp * H + m * H + h;
        for (int r = r0; r < r1; ++r) {
            const int t = order[r];
            if (t < 0 || t >= tokens) raise_status(status, ST_INDEX_OUT_OF_RANGE);
            const float a = (t < 0 || t >= tokens) ? 0.f : to_f32(x[(i64)t * P + col]);
            gb[(i64)r * 2 * H + gi] = beta ? mom_sigmoid(a) : -__expf(gp[h]) * mom_softplus(a + gp[H + h]);
        }
    }
}

__device__ __forceinline__ i64 mom_sidx(int i, int c, int K, int V, int v_first) {
    return v_first ? (i64)c * K + i : (i64)i * V + c;
}

// Decode step, fused. grid (H, B), 128 threads: the block of (b, h) runs the conv channels of
// head h, then the recurrence for every state column, for each of b's memories in turn; it
// alone touches those channels and columns of b's pool entries.
template <typename T>
__device__ void mom_step(const T* x, const T* conv_w, const float* gp, const int* idx, const float* w,
                         const int* slot_ids, float* state, float* conv_state, T* o, unsigned* status, int M, int k,
                         int shared, int H, int K, int V, int W, int slots, int rule, int v_first, float scale, int P) {
    __shared__ float qs[256], ks[256], vs[256];
    const int h = blockIdx.x, b = blockIdx.y, B = gridDim.y;
    const int HK = H * K, HV = H * V, C = 2 * HK + HV, Mp = M + shared;
    T* orow = o + (i64)b * HV + (i64)h * V;
    const unsigned fault = mom_slot_fault(slot_ids, b, B, slots);
    if (fault) {
        if (threadIdx.x == 0) raise_status(status, fault);
        for (int c = threadIdx.x; c < V; c += blockDim.x) orow[c] = from_f32<T>(0.f);
        return;
    }
    const T* xr = x + (i64)b * P;
    float acc[2] = {0.f, 0.f};
    for (int j = 0; j < k + shared; ++j) {
        const int m = j < k ? mom_choice(idx, b, j, k, M) : M;
        if (m < 0) {
            if (threadIdx.x == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
            continue;
        }
        const float wt = j < k ? w[(i64)b * k + j] : 1.f;
        const i64 e = (i64)m * slots + slot_ids[b];
        for (int i = threadIdx.x; i < 2 * K + V; i += blockDim.x) {
            const int c = i < K ? h * K + i : (i < 2 * K ? HK + h * K + (i - K) : 2 * HK + h * V + (i - 2 * K));
            float* st = conv_state + (e * C + c) * W;
            const float xin = to_f32(xr[mom_col(m, c, HK, HV, Mp)]);
            float acc_c = 0.f;
            for (int t = 0; t < W; ++t) {
                const float v = t + 1 < W ? st[t + 1] : xin;
                st[t] = v;
                acc_c += to_f32(conv_w[(i64)c * W + t]) * v;
            }
            const float y = mom_silu(acc_c);
            if (i < K) qs[i] = y;
            else if (i < 2 * K) ks[i - K] = y;
            else vs[i - 2 * K] = y;
        }
        __syncthreads();
        float sq = 0.f, sk = 0.f;
        for (int i = threadIdx.x; i < K; i += blockDim.x) sq += qs[i] * qs[i], sk += ks[i] * ks[i];
        const float rq = scale * rsqrtf(block_sum(sq) + 1e-6f);
        const float rk = rsqrtf(block_sum(sk) + 1e-6f);
        const int gcol = HK + Mp * (HK + HV) + m * H + h;
        const float g = -__expf(gp[h]) * mom_softplus(to_f32(xr[gcol]) + gp[H + h]);
        const float beta = mom_sigmoid(to_f32(xr[gcol + Mp * H]));
        const float eg = __expf(g);
        float* S = state + (e * H + h) * (i64)K * V;
#pragma unroll
        for (int n = 0; n < 2; ++n) {  // V <= 256 = 2 x 128 threads; unrolled so acc stays in registers
            const int c = threadIdx.x + n * 128;
            if (c >= V) break;
            float u = vs[c];
            if (rule == 0) {
                float kv = 0.f;
                for (int i = 0; i < K; ++i) kv += ks[i] * S[mom_sidx(i, c, K, V, v_first)];
                u = beta * (vs[c] - eg * rk * kv);
            }
            float oc = 0.f;
            for (int i = 0; i < K; ++i) {
                const i64 si = mom_sidx(i, c, K, V, v_first);
                const float sn = eg * S[si] + ks[i] * rk * u;
                S[si] = sn;
                oc += sn * qs[i] * rq;
            }
            acc[n] += wt * oc;
        }
        __syncthreads();  // qs/ks/vs are rewritten for the next memory
    }
#pragma unroll
    for (int n = 0; n < 2; ++n)
        if (threadIdx.x + n * 128 < V) orow[threadIdx.x + n * 128] = from_f32<T>(acc[n]);
}

// Chunked prefill. grid (ceil(V / 64), H, streams), 64 threads, thread = one state column c.
// Per chunk of n rows with cumulative log decay G_i: the pseudo-values u solve
//   u_i = beta_i (v_i - e^{G_i} k_i.S0 - sum_{j<i} e^{G_i - G_j} (k_i.k_j) u_j),
// outputs are o_i = e^{G_i} q_i.S0 + sum_{j<=i} e^{G_i - G_j} (q_i.k_j) u_j, and the state
// becomes e^{G_n} S0 + sum_j e^{G_n - G_j} k_j u_j^T. Only differences G_i - G_j with j <= i
// are exponentiated, so strong decay underflows to 0 and never overflows.
template <typename T>
__device__ void mom_chunk(const T* qkv, const float* gb, const int* cu, const int* slot_ids, float* state, T* o,
                          unsigned* status, int seqs, int rows, int H, int K, int V, int slots, int chunk, int rule,
                          int v_first, float scale) {
    __shared__ float KK[MOM_CT * MOM_CT], QK[MOM_CT * MOM_CT];
    __shared__ float kt[MOM_CT][MOM_KT + 1], qt[MOM_CT][MOM_KT + 1];
    __shared__ float gam[MOM_CT], bet[MOM_CT], rq[MOM_CT], rk[MOM_CT], dec[MOM_CT];
    const int h = blockIdx.y, s = blockIdx.z, streams = gridDim.z;
    const int c = blockIdx.x * MOM_VT + threadIdx.x, tid = threadIdx.x;
    const bool active = c < V;
    const int HK = H * K, W = 2 * HK + H * V;
    if (!mom_block_offsets_ok(cu, streams, rows, false)) {
        if (tid == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return;
    }
    const unsigned fault = mom_block_slot_fault(slot_ids, s % seqs, seqs, slots);
    if (fault) {  // the stream's outputs are 0, its pool entry untouched
        if (tid == 0) raise_status(status, fault);
        if (active)
            for (int r = cu[s]; r < cu[s + 1]; ++r) o[(i64)r * H * V + (i64)h * V + c] = from_f32<T>(0.f);
        return;
    }
    const i64 e = (i64)(s / seqs) * slots + slot_ids[s % seqs];
    float* S = state + (e * H + h) * (i64)K * V;
    float u[MOM_CT], qs[MOM_CT];
    for (int r0 = cu[s]; r0 < cu[s + 1]; r0 += chunk) {
        const int n = min(chunk, cu[s + 1] - r0);
        if (tid < n) {
            const T* row = qkv + (i64)(r0 + tid) * W;
            float sq = 0.f, sk = 0.f;
            for (int i = 0; i < K; ++i) {
                const float a = to_f32(row[h * K + i]), bk = to_f32(row[HK + h * K + i]);
                sq += a * a, sk += bk * bk;
            }
            rq[tid] = scale * rsqrtf(sq + 1e-6f);
            rk[tid] = rsqrtf(sk + 1e-6f);
            gam[tid] = gb[(i64)(r0 + tid) * 2 * H + h];
            bet[tid] = gb[(i64)(r0 + tid) * 2 * H + H + h];
        }
        for (int i = tid; i < n * n; i += blockDim.x) KK[i] = 0.f, QK[i] = 0.f;
        __syncthreads();
        if (tid == 0)
            for (int i = 1; i < n; ++i) gam[i] += gam[i - 1];
        __syncthreads();
        if (tid < n) dec[tid] = __expf(gam[n - 1] - gam[tid]);
        for (int i = 0; i < n; ++i) u[i] = 0.f, qs[i] = 0.f;
        for (int k0 = 0; k0 < K; k0 += MOM_KT) {
            for (int i = tid; i < n * MOM_KT; i += blockDim.x) {
                const int r = i / MOM_KT, kk = i % MOM_KT;
                const T* row = qkv + (i64)(r0 + r) * W;
                const bool in = k0 + kk < K;  // K is a multiple of 8, the tile 16 wide
                kt[r][kk] = in ? to_f32(row[HK + h * K + k0 + kk]) * rk[r] : 0.f;
                qt[r][kk] = in ? to_f32(row[h * K + k0 + kk]) * rq[r] : 0.f;
            }
            __syncthreads();
            for (int i = tid; i < n * n; i += blockDim.x) {
                const int a = i / n, bj = i % n;
                if (bj > a) continue;
                float dk = 0.f, dq = 0.f;
                for (int kk = 0; kk < MOM_KT; ++kk) dk += kt[a][kk] * kt[bj][kk], dq += qt[a][kk] * kt[bj][kk];
                KK[i] += dk;
                QK[i] += dq;
            }
            if (active)
                for (int kk = 0; kk < min(MOM_KT, K - k0); ++kk) {
                    const float sv = S[mom_sidx(k0 + kk, c, K, V, v_first)];
                    for (int i = 0; i < n; ++i) u[i] += kt[i][kk] * sv, qs[i] += qt[i][kk] * sv;
                }
            __syncthreads();
        }
        if (active)
            for (int i = 0; i < n; ++i) {
                const float v = to_f32(qkv[(i64)(r0 + i) * W + 2 * HK + h * V + c]);
                float ui = v;
                if (rule == 0) {
                    ui = v - __expf(gam[i]) * u[i];
                    for (int j = 0; j < i; ++j) ui -= __expf(gam[i] - gam[j]) * KK[i * n + j] * u[j];
                    ui *= bet[i];
                }
                u[i] = ui;
                float oi = __expf(gam[i]) * qs[i];
                for (int j = 0; j <= i; ++j) oi += __expf(gam[i] - gam[j]) * QK[i * n + j] * u[j];
                o[(i64)(r0 + i) * H * V + (i64)h * V + c] = from_f32<T>(oi);
            }
        const float last = __expf(gam[n - 1]);
        for (int k0 = 0; k0 < K; k0 += MOM_KT) {
            __syncthreads();
            for (int i = tid; i < n * MOM_KT; i += blockDim.x) {
                const int r = i / MOM_KT, kk = i % MOM_KT;
                kt[r][kk] = k0 + kk < K ? to_f32(qkv[(i64)(r0 + r) * W + HK + h * K + k0 + kk]) * rk[r] : 0.f;
            }
            __syncthreads();
            if (active)
                for (int kk = 0; kk < min(MOM_KT, K - k0); ++kk) {
                    const i64 si = mom_sidx(k0 + kk, c, K, V, v_first);
                    float sv = last * S[si];
                    for (int j = 0; j < n; ++j) sv += dec[j] * kt[j][kk] * u[j];
                    S[si] = sv;
                }
        }
        __syncthreads();
    }
}

// Transport (sequence pieces). grid (ceil(K / 64), H, streams), 64 threads: thread c keeps
// column c of P in the stream's `trans` entry, from I; per row: kp = k.P[:,c],
// P[:,c] = e^g (P[:,c] - beta k kp) (no beta term for the linear rule), qt = q.P[:,c].
template <typename T>
__device__ void mom_transport(const T* qkv, const float* gb, const int* cu, const int* slot_ids, float* trans, T* qt,
                              unsigned* status, int seqs, int rows, int H, int K, int V, int slots, int rule,
                              float scale) {
    __shared__ float qs[256], ks[256];
    const int h = blockIdx.y, s = blockIdx.z, streams = gridDim.z, tid = threadIdx.x;
    const int c = blockIdx.x * 64 + tid, HK = H * K, W = 2 * HK + H * V;
    const bool live = c < K;
    if (!mom_block_offsets_ok(cu, streams, rows, false)) {
        if (tid == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return;
    }
    const unsigned fault = mom_block_slot_fault(slot_ids, s % seqs, seqs, slots);
    if (fault) {
        if (tid == 0) raise_status(status, fault);
        return;
    }
    const i64 e = (i64)(s / seqs) * slots + slot_ids[s % seqs];
    float* P = trans + (e * H + h) * (i64)K * K;
    if (live)
        for (int i = 0; i < K; ++i) P[(i64)i * K + c] = i == c ? 1.f : 0.f;
    for (int r = cu[s]; r < cu[s + 1]; ++r) {
        const T* row = qkv + (i64)r * W;
        float sq = 0.f, sk = 0.f;
        for (int i = tid; i < K; i += blockDim.x) {
            const float a = to_f32(row[h * K + i]), b = to_f32(row[HK + h * K + i]);
            qs[i] = a, ks[i] = b;
            sq += a * a, sk += b * b;
        }
        const float rq = scale * rsqrtf(block_sum(sq) + 1e-6f);  // block_sum also publishes qs, ks
        const float rk = rsqrtf(block_sum(sk) + 1e-6f);
        const float eg = __expf(gb[(i64)r * 2 * H + h]), beta = gb[(i64)r * 2 * H + H + h];
        if (live) {
            float kp = 0.f;
            for (int i = 0; i < K; ++i) kp += ks[i] * rk * P[(i64)i * K + c];
            float acc = 0.f;
            for (int i = 0; i < K; ++i) {
                const float v = eg * (P[(i64)i * K + c] - (rule == 0 ? beta * ks[i] * rk * kp : 0.f));
                P[(i64)i * K + c] = v;
                acc += qs[i] * rq * v;
            }
            qt[(i64)r * HK + h * K + c] = from_f32<T>(acc);
        }
        __syncthreads();  // qs, ks are rewritten for the next row
    }
}

// Apply an incoming state. grid (ceil(V / 64), H, streams), 64 threads: thread c owns column c
// of the stream's entry: S[:,c] += P S_in[:,c], then o[r, c] += qt_r . S_in[:,c] for its rows.
template <typename T>
__device__ void mom_apply_state(const float* s_in, const float* trans, const T* qt, const int* cu, const int* slot_ids,
                                float* state, T* o, unsigned* status, int seqs, int rows, int H, int K, int V,
                                int slots, int v_first) {
    const int h = blockIdx.y, s = blockIdx.z, streams = gridDim.z, tid = threadIdx.x;
    const int c = blockIdx.x * 64 + tid;
    if (!mom_block_offsets_ok(cu, streams, rows, false)) {
        if (tid == 0) raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return;
    }
    const unsigned fault = mom_block_slot_fault(slot_ids, s % seqs, seqs, slots);
    if (fault) {
        if (tid == 0) raise_status(status, fault);
        return;
    }
    if (c >= V) return;
    const i64 e = (i64)(s / seqs) * slots + slot_ids[s % seqs];
    const float* Sin = s_in + ((i64)s * H + h) * K * V;
    const float* P = trans + (e * H + h) * (i64)K * K;
    float* S = state + (e * H + h) * (i64)K * V;
    for (int i = 0; i < K; ++i) {
        float acc = S[mom_sidx(i, c, K, V, v_first)];
        for (int j = 0; j < K; ++j) acc += P[(i64)i * K + j] * Sin[mom_sidx(j, c, K, V, v_first)];
        S[mom_sidx(i, c, K, V, v_first)] = acc;
    }
    for (int r = cu[s]; r < cu[s + 1]; ++r) {
        const T* q = qt + (i64)r * H * K + (i64)h * K;
        float acc = 0.f;
        for (int j = 0; j < K; ++j) acc += to_f32(q[j]) * Sin[mom_sidx(j, c, K, V, v_first)];
        T* d = o + (i64)r * H * V + (i64)h * V + c;
        *d = from_f32<T>(to_f32(*d) + acc);
    }
}

// Gated output norm per head: one block per (token, head) row of V values.
template <typename T>
__device__ void mom_gated_norm(const T* o, const T* gate, const T* w, T* y, int rows, int V, float eps) {
    const i64 r = blockIdx.x + (i64)blockIdx.y * gridDim.x;
    if (r >= rows) return;  // uniform per block, so block_sum below sees every thread
    const T* orow = o + r * V;
    float ss = 0.f;
    for (int c = threadIdx.x; c < V; c += blockDim.x) ss += to_f32(orow[c]) * to_f32(orow[c]);
    const float inv = rsqrtf(block_sum(ss) / V + eps);
    for (int c = threadIdx.x; c < V; c += blockDim.x)
        y[r * V + c] = from_f32<T>(to_f32(orow[c]) * inv * to_f32(w[c]) * mom_silu(to_f32(gate[r * V + c])));
}

extern "C" __global__ void __launch_bounds__(256)
    mom_permute_count(const int* idx, const int* cu, int* counts, int* inverse, unsigned* status, int tokens,
                      int seqs, int M, int k, int shared) {
    permute_count(idx, cu, counts, inverse, status, tokens, seqs, M, k, shared);
}

extern "C" __global__ void __launch_bounds__(256)
    mom_permute_place(const int* idx, const int* cu, const int* counts, int* order, int* inverse, int* cu_mem,
                      int tokens, int seqs, int M, int k, int shared) {
    permute_place(idx, cu, counts, order, inverse, cu_mem, tokens, seqs, M, k, shared);
}

#define MOM_ENTRIES(SUF, T)                                                                                       \
    extern "C" __global__ void __launch_bounds__(128)                                                             \
        mom_route_##SUF(const T* logits, int* idx, float* w, unsigned* status, int tokens, int M, int k) {       \
        mom_route<T>(logits, idx, w, status, tokens, M, k);                                                       \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) mom_unpermute_##SUF(                                        \
        const T* y, const int* inverse, const float* w, T* out, unsigned* status, int tokens, int k, int n,       \
        int width, int rows) {                                                                                    \
        mom_unpermute<T>(y, inverse, w, out, status, tokens, k, n, width, rows);                                  \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) mom_short_conv_##SUF(                                       \
        const T* x, const int* order, const int* cu, const int* slot_ids, const T* conv_w, const float* gp,       \
        float* conv_state, T* qkv, float* gb, unsigned* status, int tokens, int seqs, int Mp, int H, int K,       \
        int V, int W, int slots, int rows, int P) {                                                               \
        mom_short_conv<T>(x, order, cu, slot_ids, conv_w, gp, conv_state, qkv, gb, status, tokens, seqs, Mp, H,   \
                          K, V, W, slots, rows, P);                                                               \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128) mom_step_##SUF(                                             \
        const T* x, const T* conv_w, const float* gp, const int* idx, const float* w, const int* slot_ids,        \
        float* state, float* conv_state, T* o, unsigned* status, int M, int k, int shared, int H, int K, int V,   \
        int W, int slots, int rule, int v_first, float scale, int P) {                                            \
        mom_step<T>(x, conv_w, gp, idx, w, slot_ids, state, conv_state, o, status, M, k, shared, H, K, V, W,      \
                    slots, rule, v_first, scale, P);                                                              \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(MOM_VT) mom_chunk_##SUF(                                         \
        const T* qkv, const float* gb, const int* cu, const int* slot_ids, float* state, T* o, unsigned* status,  \
        int seqs, int rows, int H, int K, int V, int slots, int chunk, int rule, int v_first, float scale) {      \
        mom_chunk<T>(qkv, gb, cu, slot_ids, state, o, status, seqs, rows, H, K, V, slots, chunk, rule, v_first,   \
                     scale);                                                                                      \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(64) mom_transport_##SUF(                                         \
        const T* qkv, const float* gb, const int* cu, const int* slot_ids, float* trans, T* qt, unsigned* status, \
        int seqs, int rows, int H, int K, int V, int slots, int rule, float scale) {                             \
        mom_transport<T>(qkv, gb, cu, slot_ids, trans, qt, status, seqs, rows, H, K, V, slots, rule, scale);      \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(64) mom_apply_state_##SUF(                                       \
        const float* s_in, const float* trans, const T* qt, const int* cu, const int* slot_ids, float* state,     \
        T* o, unsigned* status, int seqs, int rows, int H, int K, int V, int slots, int v_first) {               \
        mom_apply_state<T>(s_in, trans, qt, cu, slot_ids, state, o, status, seqs, rows, H, K, V, slots, v_first); \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(128)                                                             \
        mom_gated_norm_##SUF(const T* o, const T* gate, const T* w, T* y, int rows, int V, float eps) {           \
        mom_gated_norm<T>(o, gate, w, y, rows, V, eps);                                                           \
    }

FOR_EACH_FLOAT(MOM_ENTRIES)
