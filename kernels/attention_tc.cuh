// Flash attention for one group of up to G query rows on tensor cores (f16, bf16; sm_80+), the
// core the MLA decode/prefill and the visual sparse and neighbour attention share.
//
// A block of 8 warps stages its G query rows in shared memory once, then walks keys t0 .. t1
// TK at a time: each tile's key rows (and value rows, when they are a separate tensor) are copied
// into shared memory once for the whole group by 16-byte cp.async, the next tile in flight while
// the current one is multiplied. The G rows are 16-row strips; the WPS = 8 / (G / 16) warps of a
// strip share it:
//   S = Q K^T   each warp a slice of the tile's keys, on mma m16n8k16 (f32 accumulate);
//   softmax     row maxima meet in shared memory, so every warp of a strip holds the same
//               running max and rescale for its rows; P (16-bit) goes to shared memory;
//   O += P V    each warp owns VW / WPS output columns in registers (G * VW <= 32768 keeps
//               that at 128 floats a thread; MAXNT sizes them).
// Scores are kept in log2 units (scale * log2 e), so exp2f is the softmax's exponential.
//
// Shared memory (dynamic; rows padded by 8 elements so the 8 rows one ldmatrix phase reads fall
// in 8 different 16-byte bank groups): Q [G][QW + 8], K [2][TK][QW + 8], V [2][TK][VW + 8] when
// separate, P [G][TK + 8] (T), red [WPS][G] (f32), krow [2][TK] (i64), kaux [2][TK] (int).
// attn_tc_smem_bytes is mirrored by the host (tc_shared_bytes in src/mla/mod.rs).
//
// The problem P says what the rows and keys are:
//   int qw, vw;                                 widths of q . k (a multiple of 16) and of the
//                                               output (a multiple of 8 * WPS); with shared V,
//                                               V is the first vw columns of the key tile
//   const T* q_row(int r)                       the group's query row r < rows (16-byte aligned)
//   i64 key_row(int t, int t1, int* aux)        the storage row of key t (t < t1), or -1 for no
//                                               key; may set *aux (mask data) and raise status
//   const T* k_src(i64 row, int c)              16-byte chunk c of a key row's qw elements
//   const T* v_src(i64 row, int c)              the same of a value row (separate V only)
//   bool visible(int r, int t, int aux)         row r sees key t (aux: what key_row set)
//   bool v_zero(int r, int t, int aux)          key t counts in row r's softmax sum but its
//                                               value is zeroed (YOPO's key mask)
//   void store(int r, int c, float o0, float o1)  output columns c, c + 1 of row r (normalized)
//   void store_lse(int r, float lse)            natural log-sum-exp of row r (-inf: no key)
//
// F8 keys (fp8 E4M3 rows with a per-row scale; shared V only): k_src(row, c) is then 16-byte
// chunk c of the row's qw bytes, and `float k_scale(i64 row)` its scale. The tile's bytes go
// into K8 [2][TK][qw] by cp.async as before (the next tile in flight); after the wait each tile
// is decoded once, times its row's scale, into a single T tile K [TK][QW + 8], which the
// products then read as usual (decoding in shared memory keeps the bytes read from global at
// one per element). kscale [2][TK] (f32) holds the scales; the host mirror is tc_shared_bytes.
#pragma once
#include "tensor_core.cuh"

#define ATTN_TC_WARPS 8

__host__ __device__ constexpr int attn_tc_wps(int G) { return ATTN_TC_WARPS / (G / 16); }

// Groups of G rows laid out sequence after sequence, sequence s holding
// (cu[s + 1] - cu[s]) * per_token rows (cu a checked partition): the sequence that holds group
// `grp`, with `grp` made its index within that sequence; -1 past the last group (a grid holds an
// upper bound, ceil(rows / G) + seqs).
template <int G>
__device__ int attn_tc_group_seq(const int* cu, int seqs, int per_token, int& grp) {
    for (int s = 0; s < seqs; ++s) {
        const i64 ng = ((i64)(cu[s + 1] - cu[s]) * per_token + G - 1) / G;
        if (grp < ng) return s;
        grp -= (int)ng;
    }
    return -1;
}

// MAXNT: the most n-tiles of 8 output columns a warp holds (VW / (8 * WPS) at the widest VW the
// caller allows); the accumulators are that many registers x 4.
template <typename T, int G, int TK, int MAXNT, bool SEPV, bool F8 = false, typename P>
__device__ void attn_tc_group(const P& pb, int rows, int t0, int t1, float scale) {
    static_assert(!(F8 && SEPV), "fp8 keys are the shared-V (MLA) layout only");
    constexpr int STRIPS = G / 16, WPS = ATTN_TC_WARPS / STRIPS, NKT = TK / 8;
    constexpr int KT_PER = (NKT + WPS - 1) / WPS;  // key n-tiles of S a warp computes
    extern __shared__ __align__(16) unsigned char attn_smem[];
    const int QW = pb.qw + 8, VW = SEPV ? pb.vw + 8 : QW, PW = TK + 8;
    T* Qs = reinterpret_cast<T*>(attn_smem);
    T* Ks = Qs + G * QW;
    T* Vs = Ks + (F8 ? 1 : 2) * TK * QW;  // separate V only
    T* Ps = Vs + (SEPV ? 2 * TK * VW : 0);
    float* red = reinterpret_cast<float*>(Ps + G * PW);
    i64* krow = reinterpret_cast<i64*>(red + WPS * G);
    int* kaux = reinterpret_cast<int*>(krow + 2 * TK);
    float* kscale = reinterpret_cast<float*>(kaux + 2 * TK);          // F8 only
    unsigned char* K8 = reinterpret_cast<unsigned char*>(kscale + 2 * TK);  // F8 only
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int strip = warp / WPS, wk = warp % WPS;

    // The storage row of each key of the tile at `base` (-1: past t1 or no key).
    auto key_rows = [&](int stage, int base) {
        for (int k = tid; k < TK; k += blockDim.x) {
            int aux = 0;
            const i64 row = base + k < t1 ? pb.key_row(base + k, t1, &aux) : -1;
            krow[stage * TK + k] = row;
            kaux[stage * TK + k] = aux;
            if constexpr (F8) kscale[stage * TK + k] = row >= 0 ? pb.k_scale(row) : 0.f;
        }
    };
    // cp.async of a tile's rows, 16 bytes a copy, consecutive threads along a row; no key: zeros.
    auto load_tile = [&](int stage) {
        if constexpr (F8) {
            const int kc = pb.qw / 16;
            for (int c = tid; c < TK * kc; c += blockDim.x) {
                const int k = c / kc, cc = c % kc;
                const i64 row = krow[stage * TK + k];
                cp_async16(K8 + (stage * TK + k) * pb.qw + cc * 16, row >= 0 ? (const void*)pb.k_src(row, cc) : Qs,
                           row >= 0);
            }
        } else {
            const int kc = pb.qw / 8;
            for (int c = tid; c < TK * kc; c += blockDim.x) {
                const int k = c / kc, cc = c % kc;
                const i64 row = krow[stage * TK + k];
                cp_async16(Ks + (stage * TK + k) * QW + cc * 8, row >= 0 ? pb.k_src(row, cc) : Qs, row >= 0);
            }
            if (SEPV) {
                const int vc = pb.vw / 8;
                for (int c = tid; c < TK * vc; c += blockDim.x) {
                    const int k = c / vc, cc = c % vc;
                    const i64 row = krow[stage * TK + k];
                    cp_async16(Vs + (stage * TK + k) * VW + cc * 8, row >= 0 ? pb.v_src(row, cc) : Qs, row >= 0);
                }
            }
        }
    };

    // Prologue: the query rows (rows past the group's: zeros) and the first tile.
    {
        const int qc = pb.qw / 8;
        for (int c = tid; c < G * qc; c += blockDim.x) {
            const int r = c / qc, cc = c % qc;
            cp_async16(Qs + r * QW + cc * 8, r < rows ? pb.q_row(r) + cc * 8 : Qs, r < rows);
        }
    }
    key_rows(0, t0);
    __syncthreads();
    if (t0 < t1) load_tile(0);
    cp_async_commit();

    const float sl2 = scale * 1.4426950408889634f;  // scores in log2 units
    float o[MAXNT][4];
#pragma unroll
    for (int n = 0; n < MAXNT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};  // rows g and g + 8 of the strip
    const int my_rows[2] = {strip * 16 + g, strip * 16 + g + 8};
    const int NT = pb.vw / (8 * WPS);  // this warp's output n-tiles
    const int col0 = wk * NT * 8;

    for (int base = t0, stage = 0; base < t1; base += TK, stage ^= 1) {
        cp_async_wait<0>();
        __syncthreads();  // B1: the tile (and at first the query rows) is in shared memory
        if constexpr (F8) {
            // Decode the tile's bytes times their rows' scales into the T tile (its last reader,
            // the previous tile's P V, finished before B1); 8 elements a thread per step.
            const int kc = pb.qw / 8;
            const unsigned char* src = K8 + stage * TK * pb.qw;
            for (int c = tid; c < TK * kc; c += blockDim.x) {
                const int k = c / kc, cc = c % kc;
                const float sc = kscale[stage * TK + k];
                const uint2 raw = *reinterpret_cast<const uint2*>(src + k * pb.qw + cc * 8);
                unsigned out[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const unsigned w = e < 2 ? raw.x : raw.y, sh = (e & 1) * 16;
                    out[e] = pack2<T>(e4m3_bits_f32((w >> sh) & 0xffu) * sc, e4m3_bits_f32((w >> (sh + 8)) & 0xffu) * sc);
                }
                *reinterpret_cast<uint4*>(Ks + k * QW + cc * 8) = make_uint4(out[0], out[1], out[2], out[3]);
            }
            __syncthreads();  // B1b: the decoded tile is visible
        }
        const T* Kt = Ks + (F8 ? 0 : stage * TK * QW);
        const T* Vt = SEPV ? Vs + stage * TK * VW : Kt;
        // S = Q K^T for this warp's key n-tiles.
        float s[KT_PER][4];
#pragma unroll
        for (int k = 0; k < KT_PER; ++k) s[k][0] = s[k][1] = s[k][2] = s[k][3] = 0.f;
        const int kt0 = wk * KT_PER;
        if (kt0 < NKT) {
            for (int d0 = 0; d0 < pb.qw; d0 += 16) {
                unsigned a[4];
                ldsm_x4(a, Qs + (strip * 16 + (lane & 15)) * QW + d0 + (lane >> 4) * 8);
#pragma unroll
                for (int k = 0; k < KT_PER; ++k) {
                    if (kt0 + k < NKT) {
                        unsigned bb[2];
                        ldsm_x2(bb, Kt + ((kt0 + k) * 8 + (lane & 7)) * QW + d0 + ((lane >> 3) & 1) * 8);
                        mma16816<T>(s[k], a, bb[0], bb[1]);
                    }
                }
            }
        }
        // Mask (no key, or not visible to the row), scale, and the rows' maxima over this warp's
        // keys; lanes 4g .. 4g+3 share a row.
        float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int k = 0; k < KT_PER; ++k) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int kk = (kt0 + k) * 8 + 2 * t4 + (e & 1), hr = e >> 1;
                const bool ok = kt0 + k < NKT && krow[stage * TK + kk] >= 0 && my_rows[hr] < rows &&
                                pb.visible(my_rows[hr], base + kk, kaux[stage * TK + kk]);
                s[k][e] = ok ? s[k][e] * sl2 : NEG_INF;
                mx[hr] = fmaxf(mx[hr], s[k][e]);
            }
        }
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            mx[hr] = fmaxf(mx[hr], __shfl_xor_sync(0xffffffffu, mx[hr], 1));
            mx[hr] = fmaxf(mx[hr], __shfl_xor_sync(0xffffffffu, mx[hr], 2));
        }
        if (t4 == 0) {
            red[wk * G + my_rows[0]] = mx[0];
            red[wk * G + my_rows[1]] = mx[1];
        }
        // The next tile's key rows (its stage's previous rows were last read before B1).
        const bool more = base + TK < t1;
        if (more) key_rows(stage ^ 1, base + TK);
        __syncthreads();  // B2: the maxima and the next key rows are visible
        float alpha[2];
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            float mt = NEG_INF;
            for (int w = 0; w < WPS; ++w) mt = fmaxf(mt, red[w * G + my_rows[hr]]);
            const float mn = fmaxf(m[hr], mt);
            // With every key so far hidden, mn is -inf: weights and the rescale stay 0, never NaN.
            alpha[hr] = m[hr] == NEG_INF ? 0.f : exp2f(m[hr] - mn);
            m[hr] = mn;
            l[hr] *= alpha[hr];
        }
#pragma unroll
        for (int k = 0; k < KT_PER; ++k) {
            if (kt0 + k < NKT) {
                float p[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int kk = (kt0 + k) * 8 + 2 * t4 + (e & 1);
                    p[e] = s[k][e] == NEG_INF ? 0.f : exp2f(s[k][e] - m[e >> 1]);
                    l[e >> 1] += p[e];
                    if (p[e] != 0.f && pb.v_zero(my_rows[e >> 1], base + kk, kaux[stage * TK + kk])) p[e] = 0.f;
                }
                const int kk = (kt0 + k) * 8 + 2 * t4;
                *reinterpret_cast<unsigned*>(Ps + my_rows[0] * PW + kk) = pack2<T>(p[0], p[1]);
                *reinterpret_cast<unsigned*>(Ps + my_rows[1] * PW + kk) = pack2<T>(p[2], p[3]);
            }
        }
        // The next tile goes in flight into the other stage (its last reader finished before B1).
        if (more) load_tile(stage ^ 1);
        cp_async_commit();
        __syncthreads();  // B3: P is visible
        // O = alpha O + P V over this warp's columns.
#pragma unroll
        for (int n = 0; n < MAXNT; ++n) {
            o[n][0] *= alpha[0];
            o[n][1] *= alpha[0];
            o[n][2] *= alpha[1];
            o[n][3] *= alpha[1];
        }
#pragma unroll
        for (int k0 = 0; k0 < TK; k0 += 16) {
            unsigned a[4];
            ldsm_x4(a, Ps + (strip * 16 + (lane & 15)) * PW + k0 + (lane >> 4) * 8);
            const T* vrow = Vt + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * VW + col0;
#pragma unroll
            for (int n = 0; n < MAXNT; n += 2) {
                if (n + 1 < NT) {
                    unsigned bb[4];
                    ldsm_x4_trans(bb, vrow + n * 8 + (lane >> 4) * 8);
                    mma16816<T>(o[n], a, bb[0], bb[1]);
                    mma16816<T>(o[n + 1], a, bb[2], bb[3]);
                } else if (n < NT) {
                    unsigned bb[2];
                    ldsm_x2_trans(bb, vrow + n * 8);
                    mma16816<T>(o[n], a, bb[0], bb[1]);
                }
            }
        }
    }
    cp_async_wait<0>();  // no copy may outlive the block's shared memory
    // The rows' sums: the quad's lanes, then the strip's warps (all share m).
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 1);
        l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 2);
    }
    __syncthreads();  // every read of red in the loop is done
    if (t4 == 0) {
        red[wk * G + my_rows[0]] = l[0];
        red[wk * G + my_rows[1]] = l[1];
    }
    __syncthreads();
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int r = my_rows[hr];
        float sum = 0.f;
        for (int w = 0; w < WPS; ++w) sum += red[w * G + r];
        if (r >= rows) continue;
        // A NaN score reached the sum as a NaN weight: the row is NaN (the NaN policy). The sum
        // is positive, zero (no key) or NaN, and IEEE comparisons tell them apart (the kernels
        // build without fast math), so the NaN passes through to o and lse.
        const float inv = sum > 0.f ? 1.f / sum : sum == 0.f ? 0.f : sum;
#pragma unroll
        for (int n = 0; n < MAXNT; ++n)
            if (n < NT) pb.store(r, col0 + n * 8 + 2 * t4, o[n][2 * hr] * inv, o[n][2 * hr + 1] * inv);
        if (wk == 0 && t4 == 0)
            pb.store_lse(r, sum > 0.f ? (m[hr] + log2f(sum)) * 0.6931471805599453f : sum == 0.f ? NEG_INF : sum);
    }
}
