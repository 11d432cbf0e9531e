// MatMul-free ternary layers: absmean ternarization, 2-bit packing, fused RMSNorm + int8
// quantization, exact ternary x int8 products (dp4a), and the MLGRU recurrence.
//
// Packed weights: 16 codes (t + 1) per u32, weight k at bits 2 * (k % 16) of word k / 16,
// padding code 1. i8 rows (q, unpacked t) are padded with zeros to kp = 16 * words.
#include "common.cuh"
#include "tensor_core.cuh"

__device__ __forceinline__ float sigmoidf_(float v) { return 1.f / (1.f + __expf(-v)); }
__device__ __forceinline__ float siluf_(float v) { return v / (1.f + __expf(-v)); }

// ---- weights ---------------------------------------------------------------------------------

// rowsum[r] = sum_k |w[r, k]|; a non-finite weight raises ST_VALUE_OUT_OF_RANGE.
template <typename T>
__device__ void row_abs_sum(const T* __restrict__ w, float* __restrict__ rowsum, unsigned* status, int k) {
    const i64 r = blockIdx.x;
    float acc = 0.f;
    bool bad = false;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float v = to_f32(w[r * k + c]);
        bad |= !isfinite(v);
        acc += fabsf(v);
    }
    if (bad) raise_status(status, ST_VALUE_OUT_OF_RANGE);
    acc = block_sum(acc);
    if (threadIdx.x == 0) rowsum[r] = acc;
}

// gamma[p] = max(mean |W| over partition p, 1e-5); one block per partition.
extern "C" __global__ void __launch_bounds__(256)
    ternary_gamma(const float* __restrict__ rowsum, float* __restrict__ gamma, int rows_per_part, int k) {
    const int p = blockIdx.x;
    float acc = 0.f;
    for (int r = threadIdx.x; r < rows_per_part; r += blockDim.x) acc += rowsum[(i64)p * rows_per_part + r];
    acc = block_sum(acc);
    if (threadIdx.x == 0) gamma[p] = fmaxf(acc / ((float)rows_per_part * (float)k), 1e-5f);
}

__device__ __forceinline__ unsigned ternary_code(float v) {
    // round half to even, clamp to [-1, 1], code t + 1 (NaN lands on 0: it was flagged).
    const float t = fminf(fmaxf(rintf(v), -1.f), 1.f);
    return (unsigned)((int)t + 1);
}

// One thread per packed word: t = clamp(round(w / gamma)), codes packed 16 to a word.
template <typename T>
__device__ void quant_pack(const T* __restrict__ w, const float* __restrict__ gamma, unsigned* __restrict__ packed,
                           int n, int k, int kw, int rows_per_part) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)n * kw) return;
    const int r = (int)(i / kw), c0 = (int)(i % kw) * 16;
    const float g = gamma[r / rows_per_part];
    unsigned word = 0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const int c = c0 + j;
        const unsigned code = c < k ? ternary_code(to_f32(w[(i64)r * k + c]) / g) : 1u;
        word |= code << (2 * j);
    }
    packed[i] = word;
}

// Pack padded i8 rows of {-1, 0, 1}; out-of-range values are clamped and raise ST_VALUE_OUT_OF_RANGE.
extern "C" __global__ void __launch_bounds__(256)
    ternary_pack(const signed char* __restrict__ t, unsigned* __restrict__ packed, unsigned* status, int n, int k, int kw) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)n * kw) return;
    const int c0 = (int)(i % kw) * 16;
    const signed char* src = t + i * 16;  // rows are kp = 16 * kw long, so word i starts at 16 i
    unsigned word = 0;
    bool bad = false;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        int v = c0 + j < k ? (int)src[j] : 0;
        bad |= v < -1 || v > 1;
        v = min(max(v, -1), 1);
        word |= (unsigned)(v + 1) << (2 * j);
    }
    if (bad) raise_status(status, ST_VALUE_OUT_OF_RANGE);
    packed[i] = word;
}

// Unpack to padded i8 rows; code 3 reads as 0 and raises ST_BAD_TERNARY_CODE.
extern "C" __global__ void __launch_bounds__(256)
    ternary_unpack(const unsigned* __restrict__ packed, signed char* __restrict__ t, unsigned* status, int n, int k, int kw) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)n * kw) return;
    const int c0 = (int)(i % kw) * 16;
    const unsigned word = packed[i];
    unsigned out[4] = {0, 0, 0, 0};
    bool bad = false;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const unsigned code = (word >> (2 * j)) & 3u;
        int v = 0;
        if (c0 + j < k) {
            bad |= code == 3u;
            v = code == 3u ? 0 : (int)code - 1;
        }
        out[j >> 2] |= ((unsigned)v & 0xffu) << (8 * (j & 3));
    }
    if (bad) raise_status(status, ST_BAD_TERNARY_CODE);
    reinterpret_cast<uint4*>(t)[i] = make_uint4(out[0], out[1], out[2], out[3]);
}

// ---- activations -----------------------------------------------------------------------------

// Element c of the normalized input: x, or silu(g) * u for a GLU row [g, u].
template <typename T>
__device__ __forceinline__ float act_in(const T* row, int c, int k, bool glu) {
    return glu ? siluf_(to_f32(row[c])) * to_f32(row[k + c]) : to_f32(row[c]);
}

// RMSNorm then absmax int8 quantization of one row into q_row (kp bytes, zero padded); returns s.
// Every thread of the block must call it.
template <typename T>
__device__ float norm_quant_row(const T* row, const T* w, signed char* q_row, int k, int kp, float eps, bool glu) {
    float ss = 0.f;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float v = act_in(row, c, k, glu);
        ss += v * v;
    }
    const float inv = 1.f / sqrtf(block_sum(ss) / (float)k + eps);
    float amax = 0.f, bad = 0.f;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float y = act_in(row, c, k, glu) * inv * to_f32(w[c]);
        amax = fmaxf(amax, fabsf(y));
        if (!finite_bits(y)) bad = 1.f;
    }
    amax = block_max(amax);
    // A row with a non-finite value quantizes to 0 with scale NaN (the NaN policy).
    if (block_max(bad) > 0.f) {
        for (int c = threadIdx.x; c < kp; c += blockDim.x) q_row[c] = 0;
        return NAN_F;
    }
    const float s = 127.f / fmaxf(amax, 1e-5f);
    for (int c = threadIdx.x; c < kp; c += blockDim.x) {
        float qv = 0.f;
        if (c < k) qv = fminf(fmaxf(rintf(act_in(row, c, k, glu) * inv * to_f32(w[c]) * s), -128.f), 127.f);
        q_row[c] = (signed char)(int)qv;
    }
    return s;
}

// grid (m, projections): q[p, r, :] and s[p, r] for norm weight w[p, :].
template <typename T>
__device__ void rmsnorm_quant(const T* __restrict__ x, const T* __restrict__ w, signed char* __restrict__ q,
                              float* __restrict__ s, int m, int k, int kp, i64 x_stride, float eps, int glu) {
    const int r = blockIdx.x, p = blockIdx.y;
    const float sc = norm_quant_row(x + r * x_stride, w + (i64)p * k, q + ((i64)p * m + r) * kp, k, kp, eps, glu != 0);
    if (threadIdx.x == 0) s[(i64)p * m + r] = sc;
}

// ---- the product -----------------------------------------------------------------------------

// Activations (q0..q15) as four words ordered like the weight lanes (w >> 2i) & 0x03030303,
// which hold codes i, 4 + i, 8 + i, 12 + i.
__device__ __forceinline__ void interleave(const int4 a, unsigned b[4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const unsigned sel = (unsigned)i | ((unsigned)(4 + i) << 4);
        const unsigned lo = __byte_perm((unsigned)a.x, (unsigned)a.y, sel);
        const unsigned hi = __byte_perm((unsigned)a.z, (unsigned)a.w, sel);
        b[i] = __byte_perm(lo, hi, 0x5410);
    }
}

// Code 3 (no weight) as code 1 (weight 0), as unpack and the oracle read it, on every backend:
// the high bit of each code whose two bits are set is cleared.
__device__ __forceinline__ unsigned sane_codes(unsigned w) { return w ^ ((w & (w >> 1) & 0x55555555u) << 1); }

// sum over 16 weights of one packed word (codes made sane by the caller) times 16 int8
// activations.
__device__ __forceinline__ int dot16(unsigned word, const int4 a, int acc) {
    unsigned b[4];
    interleave(a, b);
#pragma unroll
    for (int i = 0; i < 4; ++i) acc = __dp4a((int)b[i], (int)__vsub4((word >> (2 * i)) & 0x03030303u, 0x01010101u), acc);
    return acc;
}

// out[mm, j] = acc * gamma / s (+ out when accumulating); acc_out gets the raw sums if given.
template <typename T>
__device__ __forceinline__ void store_out(T* out, int* acc_out, int acc, float g, float s, i64 oi, i64 ai, int accumulate) {
    float v = (float)acc * g / s;
    if (accumulate) v += to_f32(out[oi]);
    out[oi] = from_f32<T>(v);
    if (acc_out) acc_out[ai] = acc;
}

// One warp computes stacked output row j for all M (<= 8) activation rows of its projection.
// q_p points at the projection's [M, kp] activations (global or shared memory).
template <typename T>
__device__ void gemv_row(const signed char* q_p, const float* s_p, const unsigned* __restrict__ packed,
                         const float* __restrict__ gamma, T* out, int* acc_out, int j, int M, int n, int kw, int parts,
                         i64 out_stride, int total_n, int accumulate) {
    const int lane = threadIdx.x & 31;
    const int kp = kw * 16;
    const unsigned* wrow = packed + (i64)j * kw;
    int acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int w = lane; w < kw; w += 32) {
        const unsigned word = sane_codes(__ldg(wrow + w));
#pragma unroll
        for (int mm = 0; mm < 8; ++mm)
            if (mm < M) acc[mm] = dot16(word, *reinterpret_cast<const int4*>(q_p + (i64)mm * kp + w * 16), acc[mm]);
    }
#pragma unroll
    for (int mm = 0; mm < 8; ++mm)
        for (int o = 16; o > 0; o >>= 1) acc[mm] += __shfl_xor_sync(0xffffffffu, acc[mm], o);
    if (lane == 0) {
        const int p = j / n;
        const float g = gamma[p * parts + (j % n) / (n / parts)];
        // Unrolled with a guard so acc stays in registers (a runtime index would spill it).
#pragma unroll
        for (int mm = 0; mm < 8; ++mm)
            if (mm < M)
                store_out(out, acc_out, acc[mm], g, s_p[mm], (i64)mm * out_stride + j, (i64)mm * total_n + j, accumulate);
    }
}

// GEMV for M <= 8 (decode). A block of 8 warps owns R consecutive output rows of one projection
// and splits each row's K over 8 / R warps, so small N still gives a grid of about two waves (R
// is chosen on the host). The block stages its projection's activations in shared memory, 32 KiB
// a chunk, each 16-byte piece interleaved once to the packed lanes' order (so the hot loop does
// no byte shuffling). Each lane then takes packed words four at a time with one 16-byte load:
// every weight byte is read once, from global memory, by one lane. Piece w is stored at
// w ^ ((w >> 3) & 7): the staging writes (consecutive w) and the reads (w = 4 qd + e across
// lanes) then both fall in eight different 16-byte bank groups per phase.
#define GEMV_STAGE_BYTES 32768
template <typename T, int R>
__device__ void gemv(const signed char* __restrict__ q, const float* __restrict__ s, const unsigned* __restrict__ packed,
                     const float* __restrict__ gamma, T* out, int* acc_out, int M, int n, int kw, int P, int parts,
                     i64 out_stride, int accumulate) {
    constexpr int PARTS = 8 / R;
    __shared__ __align__(16) uint4 act[GEMV_STAGE_BYTES / 16];
    __shared__ int red[8][8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, rr = warp % R, part = warp / R;
    const int per_proj = (n + R - 1) / R, p = blockIdx.x / per_proj, jl = (blockIdx.x % per_proj) * R + rr;
    const int total_n = P * n, j = p * n + jl, kp = kw * 16;
    const bool live = jl < n;
    const signed char* q_p = q + (i64)p * M * kp;
    const unsigned* wrow = packed + (i64)(live ? j : 0) * kw;
    // 16-byte weight loads need whole quads of words from a 16-byte-aligned row.
    const bool vec = kw % 4 == 0 && (reinterpret_cast<unsigned long long>(packed) & 15) == 0;
    const int cw = (GEMV_STAGE_BYTES / 16 / M) & ~7;  // words of a chunk: whole groups of 8 pieces
    int acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int c0 = 0; c0 < kw; c0 += cw) {
        const int len = min(cw, kw - c0), quads = (len + 3) / 4;
        __syncthreads();  // the previous chunk's readers are done
        for (int i = threadIdx.x; i < M * len; i += blockDim.x) {
            const int mm = i / len, w = i % len;
            unsigned b[4];
            interleave(__ldg(reinterpret_cast<const int4*>(q_p + (i64)mm * kp + (i64)(c0 + w) * 16)), b);
            act[mm * cw + (w ^ ((w >> 3) & 7))] = make_uint4(b[0], b[1], b[2], b[3]);
        }
        __syncthreads();
        if (!live) continue;
        for (int qd = part * 32 + lane; qd < quads; qd += PARTS * 32) {
            unsigned wv[4];
            if (vec) {
                const uint4 v = __ldg(reinterpret_cast<const uint4*>(wrow + c0 + 4 * qd));
                wv[0] = v.x, wv[1] = v.y, wv[2] = v.z, wv[3] = v.w;
            } else {
#pragma unroll
                for (int e = 0; e < 4; ++e) wv[e] = 4 * qd + e < len ? __ldg(wrow + c0 + 4 * qd + e) : 0x55555555u;
            }
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const unsigned word = sane_codes(wv[e]);
#pragma unroll
                for (int mm = 0; mm < 8; ++mm) {
                    if (mm < M) {
                        const int w = 4 * qd + e;
                        const uint4 a = act[mm * cw + (w ^ ((w >> 3) & 7))];
#pragma unroll
                        for (int i = 0; i < 4; ++i)
                            acc[mm] = __dp4a((int)(i == 0 ? a.x : i == 1 ? a.y : i == 2 ? a.z : a.w),
                                             (int)__vsub4((word >> (2 * i)) & 0x03030303u, 0x01010101u), acc[mm]);
                    }
                }
            }
        }
    }
    // The row's sum: the warp's lanes, then the row's warps in shared memory.
#pragma unroll
    for (int mm = 0; mm < 8; ++mm)
        for (int o = 16; o > 0; o >>= 1) acc[mm] += __shfl_xor_sync(0xffffffffu, acc[mm], o);
    if (lane == 0) {
#pragma unroll
        for (int mm = 0; mm < 8; ++mm) red[warp][mm] = acc[mm];
    }
    __syncthreads();
    if (threadIdx.x < R * M) {
        const int r = threadIdx.x % R, mm = threadIdx.x / R, jr = (blockIdx.x % per_proj) * R + r;
        if (jr < n) {
            int sum = 0;
            for (int pt = 0; pt < PARTS; ++pt) sum += red[pt * R + r][mm];
            const float g = gamma[p * parts + jr / (n / parts)];
            store_out(out, acc_out, sum, g, s[(i64)p * M + mm], (i64)mm * out_stride + p * n + jr,
                      (i64)mm * total_n + p * n + jr, accumulate);
        }
    }
}

// Tiled GEMM, 64 x 64 outputs per block of 256 threads (4 x 4 each), 64 k per step. Weights
// are decoded to natural-order int8 in shared memory so both operands feed dp4a directly.
template <typename T>
__device__ void gemm(const signed char* __restrict__ q, const float* __restrict__ s, const unsigned* __restrict__ packed,
                     const float* __restrict__ gamma, T* out, int* acc_out, int M, int n, int kw, int P, int parts,
                     i64 out_stride, int accumulate) {
    __shared__ int As[64][17];
    __shared__ int Bs[64][17];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int p = blockIdx.z, m0 = blockIdx.y * 64, j0 = blockIdx.x * 64;
    const int kp = kw * 16;
    const signed char* qp = q + (i64)p * M * kp;
    const unsigned* wp = packed + (i64)p * n * kw;
    int acc[4][4] = {};
    for (int kt = 0; kt < kw; kt += 4) {
        {  // A: row tid / 4, packed-word column tid % 4 -> 16 bytes
            const int r = tid >> 2, c = tid & 3;
            int4 v = make_int4(0, 0, 0, 0);
            if (m0 + r < M && kt + c < kw) v = *reinterpret_cast<const int4*>(qp + (i64)(m0 + r) * kp + (kt + c) * 16);
            As[r][c * 4 + 0] = v.x;
            As[r][c * 4 + 1] = v.y;
            As[r][c * 4 + 2] = v.z;
            As[r][c * 4 + 3] = v.w;
        }
        {  // B: row tid / 4, one packed word -> four natural-order int8x4 words
            const int r = tid >> 2, c = tid & 3;
            unsigned word = 0x55555555u;  // code 1 everywhere: weight 0
            if (j0 + r < n && kt + c < kw) word = sane_codes(__ldg(wp + (i64)(j0 + r) * kw + kt + c));
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const unsigned x = (word >> (8 * i)) & 0xffu;
                const unsigned y = (x & 3u) | ((x & 0xcu) << 6) | ((x & 0x30u) << 12) | ((x & 0xc0u) << 18);
                Bs[r][c * 4 + i] = (int)__vsub4(y, 0x01010101u);
            }
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) {
            int a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                a[i] = As[ty * 4 + i][kk];
                b[i] = Bs[tx * 4 + i][kk];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) acc[i][jj] = __dp4a(a[i], b[jj], acc[i][jj]);
        }
        __syncthreads();
    }
    const int total_n = P * n;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int mm = m0 + ty * 4 + i;
        if (mm >= M) continue;
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
            const int jl = j0 + tx * 4 + jj;
            if (jl >= n) continue;
            const int j = p * n + jl;
            const float g = gamma[p * parts + jl / (n / parts)];
            store_out(out, acc_out, acc[i][jj], g, s[(i64)p * M + mm], (i64)mm * out_stride + j, (i64)mm * total_n + j, accumulate);
        }
    }
}

// The same product on int8 tensor cores (mma.sync m16n8k32, sm_80 and later), the default for
// M >= 16 there: 128 x 128 outputs per block of 8 warps (2 along m x 4 along n, 64 x 32 each:
// 4 x 4 fragments of 16 x 8), 64 k per stage, two stages. The activations of stage i + 1 travel by
// 16-byte cp.async and its packed weight words into registers while stage i is multiplied; the
// words are then expanded once to signed bytes in shared memory ([n][k], k contiguous), so both
// operands come out by ldmatrix (an s8 16 x 32 tile is a b16 16 x 16 one; A row-major, B as
// [n][k]) with no per-fragment unpacking. Rows of 80 bytes put the 8 rows of an ldmatrix phase
// in 8 different 16-byte bank groups. Fragment layout (PTX ISA, lane = 4 g + t): a0 = A[g][4t..],
// a1 = A[g + 8][4t..], a2 = A[g][16 + 4t..], a3 = A[g + 8][16 + 4t..]; b0 = B[4t..][g],
// b1 = B[16 + 4t..][g]; c0, c1 = C[g][2t, 2t + 1], c2, c3 = C[g + 8][2t, 2t + 1].
#define MMA_BM 128
#define MMA_BN 128
#define MMA_LD 20  // u32 per staged row: 16 (64 k bytes) + 4 of padding

__device__ __forceinline__ void mma_s8_16832(int (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// One packed word (16 codes, sane) as 16 signed bytes in k order.
__device__ __forceinline__ uint4 expand_word(unsigned word) {
    unsigned bv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const unsigned x = (word >> (8 * i)) & 0xffu;
        const unsigned y = (x & 3u) | ((x & 0xcu) << 6) | ((x & 0x30u) << 12) | ((x & 0xc0u) << 18);
        bv[i] = __vsub4(y, 0x01010101u);
    }
    return make_uint4(bv[0], bv[1], bv[2], bv[3]);
}

template <typename T>
__device__ void gemm_mma(const signed char* __restrict__ q, const float* __restrict__ s, const unsigned* __restrict__ packed,
                         const float* __restrict__ gamma, T* out, int* acc_out, int M, int n, int kw, int P, int parts,
                         i64 out_stride, int accumulate) {
    __shared__ __align__(16) unsigned As[2][MMA_BM * MMA_LD];
    __shared__ __align__(16) unsigned Bs[2][MMA_BN * MMA_LD];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;  // the warp's corner in the tile
    const int p = blockIdx.z, m0 = blockIdx.y * MMA_BM, j0 = blockIdx.x * MMA_BN;
    const int kp = kw * 16;
    const signed char* qp = q + (i64)p * M * kp;
    const unsigned* wp = packed + (i64)p * n * kw;
    // 128 rows x 4 words (16-byte pieces) per operand and stage: slots tid and tid + 256.
    auto load_a = [&](int st, int kt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int e = tid + 256 * h, r = e >> 2, c = e & 3;
            const bool ok = m0 + r < M && kt + c < kw;
            cp_async16(&As[st][r * MMA_LD + c * 4], ok ? (const void*)(qp + (i64)(m0 + r) * kp + (kt + c) * 16) : q, ok);
        }
    };
    auto load_w = [&](unsigned (&w)[2], int kt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int e = tid + 256 * h, r = e >> 2, c = e & 3;
            // Code 1 everywhere past the edges: weight 0.
            w[h] = j0 + r < n && kt + c < kw ? sane_codes(__ldg(wp + (i64)(j0 + r) * kw + kt + c)) : 0x55555555u;
        }
    };
    auto store_w = [&](int st, const unsigned (&w)[2]) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int e = tid + 256 * h, r = e >> 2, c = e & 3;
            *reinterpret_cast<uint4*>(&Bs[st][r * MMA_LD + c * 4]) = expand_word(w[h]);
        }
    };
    int acc[4][4][4] = {};
    unsigned wnext[2];
    load_a(0, 0);
    cp_async_commit();
    load_w(wnext, 0);
    store_w(0, wnext);
    for (int kt = 0, st = 0; kt < kw; kt += 4, st ^= 1) {
        cp_async_wait<0>();
        __syncthreads();  // stage st is in shared memory; every read of stage st ^ 1 is done
        const bool more = kt + 4 < kw;
        if (more) {
            load_a(st ^ 1, kt + 4);
            cp_async_commit();
            load_w(wnext, kt + 4);
        }
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {  // two k32 slices of the 64 staged
            unsigned a[4][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 4; ++i)
                ldsm_x4(a[i], &As[st][(wm + i * 16 + (lane & 15)) * MMA_LD + ks * 8 + (lane >> 4) * 4]);
#pragma unroll
            for (int jj = 0; jj < 4; jj += 2) {
                unsigned r4[4];
                ldsm_x4(r4, &Bs[st][(wn + jj * 8 + (lane & 7) + (lane >> 4) * 8) * MMA_LD + ks * 8 + ((lane >> 3) & 1) * 4]);
                b[jj][0] = r4[0], b[jj][1] = r4[1], b[jj + 1][0] = r4[2], b[jj + 1][1] = r4[3];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int jj = 0; jj < 4; ++jj) mma_s8_16832(acc[i][jj], a[i], b[jj][0], b[jj][1]);
        }
        if (more) store_w(st ^ 1, wnext);  // its last readers finished before the barrier above
    }
    cp_async_wait<0>();
    const int total_n = P * n;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int jj = 0; jj < 4; ++jj)
#pragma unroll
            for (int v = 0; v < 4; ++v) {
                const int mm = m0 + wm + i * 16 + g + (v >> 1) * 8;
                const int jl = j0 + wn + jj * 8 + 2 * t + (v & 1);
                if (mm >= M || jl >= n) continue;
                const int j = p * n + jl;
                const float gm = gamma[p * parts + jl / (n / parts)];
                store_out(out, acc_out, acc[i][jj][v], gm, s[(i64)p * M + mm], (i64)mm * out_stride + j,
                          (i64)mm * total_n + j, accumulate);
            }
}

// Fused BitLinear for decode (M <= 8): each block normalizes and quantizes the M input rows for
// its projection into shared memory, then runs the GEMV over 32 of the projection's rows.
// Block 0 of each projection also writes q and s out. grid (ceil(n / 32), P).
template <typename T>
__device__ void bitlinear_gemv(const T* __restrict__ x, const T* __restrict__ norm_w, const unsigned* __restrict__ packed,
                               const float* __restrict__ gamma, T* out, signed char* __restrict__ q_out,
                               float* __restrict__ s_out, int M, int n, int k, int kw, int P, int parts, i64 x_stride,
                               i64 out_stride, float eps, int accumulate) {
    extern __shared__ int4 smem4[];
    signed char* qs = reinterpret_cast<signed char*>(smem4);
    __shared__ float ss[8];
    const int p = blockIdx.y, kp = kw * 16;
    for (int mm = 0; mm < M; ++mm) {
        const float sc = norm_quant_row(x + (i64)mm * x_stride, norm_w + (i64)p * k, qs + mm * kp, k, kp, eps, false);
        if (threadIdx.x == 0) ss[mm] = sc;
    }
    __syncthreads();
    if (blockIdx.x == 0) {
        for (int c = threadIdx.x; c < M * kp; c += blockDim.x) q_out[(i64)p * M * kp + c] = qs[c];
        if (threadIdx.x < M) s_out[(i64)p * M + threadIdx.x] = ss[threadIdx.x];
    }
    const int warp = threadIdx.x >> 5;
    for (int r = warp; r < 32; r += 8) {
        const int jl = blockIdx.x * 32 + r;
        if (jl >= n) break;
        gemv_row(qs, ss, packed, gamma, out, (int*)nullptr, p * n + jl, M, n, kw, parts, out_stride, P * n, accumulate);
    }
}

// ---- MLGRU -----------------------------------------------------------------------------------

// Gates of one channel: f (with the optional lower bound) and i = silu(c) (1 - f).
template <typename T>
__device__ __forceinline__ void mlgru_gates(const T* row, int c, int d, const float* lb, float& f, float& i) {
    f = sigmoidf_(to_f32(row[c]));
    if (lb) f = lb[c] + (1.f - lb[c]) * f;
    i = siluf_(to_f32(row[d + c])) * (1.f - f);
}

// Whether a row other than b among the n rows names `slot`. Called by the whole block; every
// thread gets the answer.
__device__ __forceinline__ bool slot_repeated_block(const int* __restrict__ slot_ids, int b, int n, int slot) {
    int dup = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) dup |= (j != b && slot_ids[j] == slot);
    return __syncthreads_or(dup) != 0;
}

// The status bit that keeps row b of n away from the pool: its slot is outside it, or another
// row names the same slot. Rows that share a slot are all skipped, so no two blocks ever
// write one slot and the rest of the batch stays exact.
__device__ __forceinline__ unsigned slot_fault(const int* __restrict__ slot_ids, int b, int n, int slots) {
    const int slot = slot_ids[b];
    if (slot < 0 || slot >= slots) return ST_SLOT_OUT_OF_RANGE;
    return slot_repeated_block(slot_ids, b, n, slot) ? ST_SLOT_REPEATED : 0u;
}

// One decode step: block (z, b) takes channels [z * 256, z * 256 + 256) of sequence b (grid
// (ceil(d / 256), batch)), so a batch of 64 at d = 2048 is 512 blocks rather than 64: h = f h + i
// in the pool slot, then o = rmsnorm(g) * w * silu(h), each block summing the whole row's g^2 for
// the norm (the g row is read by every block of the row, from L2 after the first). A slot id
// outside the pool, or one that another row also names, skips the row (o = 0, the slot
// untouched) and raises its status bit. No two blocks write one element.
#define MLGRU_STEP_CH 256
template <typename T>
__device__ void mlgru_step(const T* __restrict__ fcg, float* __restrict__ state, const int* __restrict__ slot_ids,
                           const float* __restrict__ lb, const T* __restrict__ w, T* __restrict__ o, unsigned* status,
                           int d, int slots, i64 fcg_stride, float eps) {
    const int b = blockIdx.y, c = blockIdx.x * MLGRU_STEP_CH + threadIdx.x;
    const int slot = slot_ids[b];
    T* orow = o + (i64)b * d;
    const unsigned fault = slot_fault(slot_ids, b, gridDim.y, slots);
    if (fault) {
        if (threadIdx.x == 0 && blockIdx.x == 0) raise_status(status, fault);
        if (c < d) orow[c] = from_f32<T>(0.f);
        return;
    }
    const T* row = fcg + (i64)b * fcg_stride;
    float ss = 0.f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        const float g = to_f32(row[2 * d + k]);
        ss += g * g;
    }
    const float inv = 1.f / sqrtf(block_sum(ss) / (float)d + eps);
    if (c >= d) return;
    float* h = state + (i64)slot * d;
    float f, i;
    mlgru_gates(row, c, d, lb, f, i);
    const float hn = f * h[c] + i;
    h[c] = hn;
    orow[c] = from_f32<T>(to_f32(row[2 * d + c]) * inv * to_f32(w[c]) * siluf_(hn));
}

// The token range of sequence b, or false (and a raised status) when cu_seqlens is bad: it must
// run from 0 to tokens without decreasing, and no sequence may exceed max_len.
__device__ __forceinline__ bool seq_range(const int* cu, int b, int seqs, int tokens, int max_len, unsigned* status,
                                          int& t0, int& t1) {
    t0 = cu[b];
    t1 = cu[b + 1];
    if (cu[0] != 0 || cu[seqs] != tokens || t0 < 0 || t1 < t0 || t1 > tokens || t1 - t0 > max_len) {
        raise_status(status, ST_INDEX_OUT_OF_RANGE);
        return false;
    }
    return true;
}

// Chunked prefill, pass 1. grid (ceil(d / 128), chunks, seqs): each chunk scans from a zero
// state, writing local h per token and its (summed log decay, end state) summary.
template <typename T>
__device__ void scan_local(const T* __restrict__ fcg, const int* __restrict__ cu, const float* __restrict__ lb,
                           float* __restrict__ hws, float* __restrict__ chunk_a, float* __restrict__ chunk_h,
                           unsigned* status, int d, int tokens, int max_len, int chunk, int chunks, i64 fcg_stride) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y, b = blockIdx.z;
    int s0, s1;
    if (!seq_range(cu, b, gridDim.z, tokens, max_len, status, s0, s1) || c >= d) return;
    const int t0 = s0 + ch * chunk, t1 = min(t0 + chunk, s1);
    float h = 0.f, loga = 0.f;
    for (int t = t0; t < t1; ++t) {
        float f, i;
        mlgru_gates(fcg + (i64)t * fcg_stride, c, d, lb, f, i);
        h = f * h + i;
        loga += __logf(f);
        hws[(i64)t * d + c] = h;
    }
    const i64 si = ((i64)b * chunks + ch) * d + c;
    chunk_a[si] = loga;
    chunk_h[si] = h;
}

// Pass 2. grid (ceil(d / 128), seqs): chain the chunks from the pool state; chunk_h becomes
// each chunk's incoming state and the pool slot gets the final state. A sequence whose slot is
// outside the pool or named by another sequence runs from zero and leaves the pool alone.
__device__ void scan_carry(const int* __restrict__ cu, const int* __restrict__ slot_ids, float* __restrict__ state,
                           const float* __restrict__ chunk_a, float* __restrict__ chunk_h, unsigned* status, int d,
                           int tokens, int max_len, int chunks, int slots) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    int s0, s1;
    if (!seq_range(cu, b, gridDim.y, tokens, max_len, status, s0, s1) || c >= d) return;
    const int slot = slot_ids[b];
    bool repeated = false;
    for (int j = 0; j < (int)gridDim.y; ++j) repeated |= (j != b && slot_ids[j] == slot);
    const bool in_pool = slot >= 0 && slot < slots;
    const bool ok = in_pool && !repeated;
    if (!in_pool) raise_status(status, ST_SLOT_OUT_OF_RANGE);
    else if (repeated) raise_status(status, ST_SLOT_REPEATED);
    float carry = ok ? state[(i64)slot * d + c] : 0.f;
    for (int ch = 0; ch < chunks; ++ch) {
        const i64 si = ((i64)b * chunks + ch) * d + c;
        const float hloc = chunk_h[si];
        chunk_h[si] = carry;
        carry = __expf(chunk_a[si]) * carry + hloc;
    }
    if (ok) state[(i64)slot * d + c] = carry;
}

// Pass 3, grid as pass 1: h_t = local_t + exp(sum of log f up to t) * incoming state.
template <typename T>
__device__ void scan_apply(const T* __restrict__ fcg, const int* __restrict__ cu, const float* __restrict__ lb,
                           float* __restrict__ hws, const float* __restrict__ chunk_h, unsigned* status, int d,
                           int tokens, int max_len, int chunk, int chunks, i64 fcg_stride) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y, b = blockIdx.z;
    int s0, s1;
    if (!seq_range(cu, b, gridDim.z, tokens, max_len, status, s0, s1) || c >= d) return;
    const int t0 = s0 + ch * chunk, t1 = min(t0 + chunk, s1);
    const float carry = chunk_h[((i64)b * chunks + ch) * d + c];
    float loga = 0.f;
    for (int t = t0; t < t1; ++t) {
        float f, i;
        mlgru_gates(fcg + (i64)t * fcg_stride, c, d, lb, f, i);
        loga += __logf(f);
        hws[(i64)t * d + c] += __expf(loga) * carry;
    }
}

// Output gate per token: o = rmsnorm(g) * w * silu(h). grid tokens.
template <typename T>
__device__ void gate_norm(const T* __restrict__ fcg, const float* __restrict__ hws, const T* __restrict__ w,
                          T* __restrict__ o, int d, i64 fcg_stride, float eps) {
    const i64 t = blockIdx.x;
    const T* g = fcg + t * fcg_stride + 2 * d;
    float ss = 0.f;
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        const float v = to_f32(g[c]);
        ss += v * v;
    }
    const float inv = 1.f / sqrtf(block_sum(ss) / (float)d + eps);
    for (int c = threadIdx.x; c < d; c += blockDim.x)
        o[t * d + c] = from_f32<T>(to_f32(g[c]) * inv * to_f32(w[c]) * siluf_(hws[t * d + c]));
}

extern "C" __global__ void __launch_bounds__(128)
    ternary_scan_carry(const int* cu, const int* slot_ids, float* state, const float* chunk_a, float* chunk_h,
                       unsigned* status, int d, int tokens, int max_len, int chunks, int slots) {
    scan_carry(cu, slot_ids, state, chunk_a, chunk_h, status, d, tokens, max_len, chunks, slots);
}

// The GEMV per rows-per-block R (`ternary_gemv_r<R>_<dtype>`).
// At most 64 registers a thread, so four blocks share a multiprocessor.
#define TERNARY_GEMV(SUF, T, R)                                                                                    \
    extern "C" __global__ void __launch_bounds__(256, 4)                                                           \
        ternary_gemv_r##R##_##SUF(const signed char* q, const float* s, const unsigned* packed, const float* gamma, \
                                  T* out, int* acc_out, int M, int n, int kw, int P, int parts, i64 os,           \
                                  int accumulate) {                                                                \
        gemv<T, R>(q, s, packed, gamma, out, acc_out, M, n, kw, P, parts, os, accumulate);                        \
    }
#define TERNARY_ENTRIES(SUF, T)                                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        ternary_row_abs_sum_##SUF(const T* w, float* rowsum, unsigned* status, int k) {                            \
        row_abs_sum<T>(w, rowsum, status, k);                                                                      \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256) ternary_quant_pack_##SUF(                                    \
        const T* w, const float* gamma, unsigned* packed, int n, int k, int kw, int rows_per_part) {               \
        quant_pack<T>(w, gamma, packed, n, k, kw, rows_per_part);                                                  \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256) ternary_rmsnorm_quant_##SUF(                                 \
        const T* x, const T* w, signed char* q, float* s, int m, int k, int kp, i64 xs, float eps, int glu) {      \
        rmsnorm_quant<T>(x, w, q, s, m, k, kp, xs, eps, glu);                                                      \
    }                                                                                                              \
    TERNARY_GEMV(SUF, T, 1) TERNARY_GEMV(SUF, T, 2) TERNARY_GEMV(SUF, T, 4) TERNARY_GEMV(SUF, T, 8)              \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        ternary_gemm_##SUF(const signed char* q, const float* s, const unsigned* packed, const float* gamma,       \
                           T* out, int* acc_out, int M, int n, int kw, int P, int parts, i64 os, int accumulate) { \
        gemm<T>(q, s, packed, gamma, out, acc_out, M, n, kw, P, parts, os, accumulate);                            \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        ternary_gemm_mma_##SUF(const signed char* q, const float* s, const unsigned* packed, const float* gamma,   \
                               T* out, int* acc_out, int M, int n, int kw, int P, int parts, i64 os, int accumulate) { \
        gemm_mma<T>(q, s, packed, gamma, out, acc_out, M, n, kw, P, parts, os, accumulate);                        \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256) ternary_bitlinear_gemv_##SUF(                                \
        const T* x, const T* norm_w, const unsigned* packed, const float* gamma, T* out, signed char* q_out,       \
        float* s_out, int M, int n, int k, int kw, int P, int parts, i64 xs, i64 os, float eps, int accumulate) {  \
        bitlinear_gemv<T>(x, norm_w, packed, gamma, out, q_out, s_out, M, n, k, kw, P, parts, xs, os, eps,         \
                          accumulate);                                                                             \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        ternary_mlgru_step_##SUF(const T* fcg, float* state, const int* slot_ids, const float* lb, const T* w,     \
                                 T* o, unsigned* status, int d, int slots, i64 fs, float eps) {                    \
        mlgru_step<T>(fcg, state, slot_ids, lb, w, o, status, d, slots, fs, eps);                                  \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(128) ternary_scan_local_##SUF(                                    \
        const T* fcg, const int* cu, const float* lb, float* hws, float* chunk_a, float* chunk_h,                  \
        unsigned* status, int d, int tokens, int max_len, int chunk, int chunks, i64 fs) {                         \
        scan_local<T>(fcg, cu, lb, hws, chunk_a, chunk_h, status, d, tokens, max_len, chunk, chunks, fs);          \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(128) ternary_scan_apply_##SUF(                                    \
        const T* fcg, const int* cu, const float* lb, float* hws, const float* chunk_h, unsigned* status, int d,   \
        int tokens, int max_len, int chunk, int chunks, i64 fs) {                                                  \
        scan_apply<T>(fcg, cu, lb, hws, chunk_h, status, d, tokens, max_len, chunk, chunks, fs);                   \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
        ternary_gate_norm_##SUF(const T* fcg, const float* hws, const T* w, T* o, int d, i64 fs, float eps) {      \
        gate_norm<T>(fcg, hws, w, o, d, fs, eps);                                                                  \
    }

FOR_EACH_FLOAT(TERNARY_ENTRIES)
