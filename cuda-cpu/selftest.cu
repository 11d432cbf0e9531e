// Kernels that check the emulated device itself (selftest.cpp launches them): its intrinsics
// against values worked out by hand, the mma.sync model against a plain product, the thread
// orders, the barrier reductions, and bugs planted on purpose that it or a sanitizer must catch.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "../kernels/tensor_core.cuh"

extern "C" __global__ void __launch_bounds__(32) st_intrinsics(unsigned* out) {
    if (threadIdx.x != 0) return;
    out[0] = __byte_perm(0x33221100u, 0x77665544u, 0x5410u);
    out[1] = (unsigned)__dp4a((int)0x01020304, (int)0xff010203, 5);
    out[2] = __vsub4(0x00010203u, 0x01010101u);
    out[3] = __float2half_rn(1.f).x;
    out[4] = __float2half_rn(65520.f).x;
    out[5] = __float2half_rn(65519.f).x;
    out[6] = __float2bfloat16_rn(__uint_as_float(0x3f808000u)).x;
    out[7] = __float2bfloat16_rn(__uint_as_float(0x3f818000u)).x;
    out[8] = __float_as_uint(__half2float(__float2half_rn(5.9604645e-8f)));
    out[9] = (unsigned)__float2bfloat16_rn(__uint_as_float(0x7fc00001u)).x;
}

// One warp: D (16 x 8) = A (16 x 32) B (32 x 8) + C, through the fragment layout of the PTX ISA.
__device__ __forceinline__ void st_mma(int (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

extern "C" __global__ void __launch_bounds__(32) st_mma_16832(const signed char* A, const signed char* Bt, const int* C, int* D) {
    const int l = threadIdx.x, g = l >> 2, t = l & 3;
    auto word = [](const signed char* p) {
        return (unsigned)(unsigned char)p[0] | (unsigned)(unsigned char)p[1] << 8 | (unsigned)(unsigned char)p[2] << 16 |
               (unsigned)(unsigned char)p[3] << 24;
    };
    const unsigned a[4] = {word(A + g * 32 + 4 * t), word(A + (g + 8) * 32 + 4 * t), word(A + g * 32 + 16 + 4 * t),
                           word(A + (g + 8) * 32 + 16 + 4 * t)};
    // Bt is B transposed (8 x 32): column g of B is row g of Bt.
    const unsigned b0 = word(Bt + g * 32 + 4 * t), b1 = word(Bt + g * 32 + 16 + 4 * t);
    int c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    st_mma(c, a, b0, b1);
    D[g * 8 + 2 * t] = c[0];
    D[g * 8 + 2 * t + 1] = c[1];
    D[(g + 8) * 8 + 2 * t] = c[2];
    D[(g + 8) * 8 + 2 * t + 1] = c[3];
}

// ---- tensor-core pieces (kernels/tensor_core.cuh, the wrappers every kernel uses) ------------

__device__ __forceinline__ unsigned st_pair(const unsigned short* p) { return (unsigned)p[0] | (unsigned)p[1] << 16; }

// One warp: D (16 x 8, f32) = A (16 x 16) B (16 x 8) + C, fragments read straight from global
// memory in the PTX ISA's layout (Bt is B transposed, 8 x 16).
template <typename T>
__device__ void st_mma_16816(const unsigned short* A, const unsigned short* Bt, const float* C, float* D) {
    const int l = threadIdx.x, g = l >> 2, t = l & 3;
    const unsigned a[4] = {st_pair(A + g * 16 + 2 * t), st_pair(A + (g + 8) * 16 + 2 * t), st_pair(A + g * 16 + 2 * t + 8),
                           st_pair(A + (g + 8) * 16 + 2 * t + 8)};
    const unsigned b0 = st_pair(Bt + g * 16 + 2 * t), b1 = st_pair(Bt + g * 16 + 2 * t + 8);
    float d[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    mma16816<T>(d, a, b0, b1);
    D[g * 8 + 2 * t] = d[0];
    D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2];
    D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
extern "C" __global__ void __launch_bounds__(32) st_mma_16816_f16(const unsigned short* A, const unsigned short* Bt, const float* C,
                                                                float* D) {
    st_mma_16816<__half>(A, Bt, C, D);
}
extern "C" __global__ void __launch_bounds__(32) st_mma_16816_bf16(const unsigned short* A, const unsigned short* Bt,
                                                                 const float* C, float* D) {
    st_mma_16816<__nv_bfloat16>(A, Bt, C, D);
}

// Every ldmatrix variant on a 32 x 8 shared matrix of 16-bit values; lane l writes its
// registers to out[variant][l][0..3] (x4, x2, x1, x4.trans, x2.trans; lane l names row l).
extern "C" __global__ void __launch_bounds__(32) st_ldmatrix(const unsigned short* in, unsigned* out) {
    __shared__ __align__(16) unsigned short s[32 * 8];
    const int l = threadIdx.x;
    for (int c = 0; c < 8; ++c) s[l * 8 + c] = in[l * 8 + c];
    __syncthreads();
    unsigned r4[4], r2[2];
    unsigned* o = out + l * 4;
    ldsm_x4(r4, s + l * 8);
    for (int i = 0; i < 4; ++i) o[i] = r4[i];
    ldsm_x2(r2, s + (l % 16) * 8);
    o[128] = r2[0], o[129] = r2[1];
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r2[0]) : "r"(smem_u32(s + (l % 8) * 8)));
    o[256] = r2[0];
    ldsm_x4_trans(r4, s + l * 8);
    for (int i = 0; i < 4; ++i) o[384 + i] = r4[i];
    ldsm_x2_trans(r2, s + (l % 16) * 8);
    o[512] = r2[0], o[513] = r2[1];
}

// The way the kernels use the pieces: A (16 x 32) and B (32 x 16, row-major [k][n]) staged into
// shared memory by cp.async, fragments by ldmatrix (B's transposed), D = A B on mma (f32).
template <typename T>
__device__ void st_tile_gemm(const unsigned short* A, const unsigned short* B, float* D) {
    __shared__ __align__(16) unsigned short sa[16 * 32], sb[32 * 16];
    const int l = threadIdx.x, g = l >> 2, t = l & 3;
    for (int c = l; c < 64; c += 32) {  // 16-byte chunks: 64 of A, 64 of B
        cp_async16(sa + c * 8, A + c * 8, true);
        cp_async16(sb + c * 8, B + c * 8, true);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    float d[2][4] = {};
    for (int k0 = 0; k0 < 32; k0 += 16) {
        unsigned a[4], b[4];
        ldsm_x4(a, sa + (l % 16) * 32 + k0 + (l / 16) * 8);
        ldsm_x4_trans(b, sb + (k0 + (l % 8) + ((l / 8) & 1) * 8) * 16 + (l / 16) * 8);
        mma16816<T>(d[0], a, b[0], b[1]);
        mma16816<T>(d[1], a, b[2], b[3]);
    }
    for (int n = 0; n < 2; ++n) {
        D[g * 16 + n * 8 + 2 * t] = d[n][0];
        D[g * 16 + n * 8 + 2 * t + 1] = d[n][1];
        D[(g + 8) * 16 + n * 8 + 2 * t] = d[n][2];
        D[(g + 8) * 16 + n * 8 + 2 * t + 1] = d[n][3];
    }
}
extern "C" __global__ void __launch_bounds__(32) st_tile_gemm_bf16(const unsigned short* A, const unsigned short* B, float* D) {
    st_tile_gemm<__nv_bfloat16>(A, B, D);
}

// cp.async retires by group: out[l] = the word before any wait (the old 0xaaaaaaaa), out[32 + l]
// after wait_group 1 (group 0 landed), out[64 + l] = the zero-filled word of group 1 still old
// then, out[96 + l] = it after wait_group 0 (zero).
extern "C" __global__ void __launch_bounds__(32) st_cp_async(const unsigned* in, unsigned* out) {
    __shared__ __align__(16) unsigned s[32 * 4 + 32 * 4];
    const int l = threadIdx.x;
    for (int i = 0; i < 8; ++i) s[l * 8 + i] = 0xaaaaaaaau;
    __syncthreads();
    cp_async16(s + 4 * l, in + 4 * l, true);
    out[l] = s[4 * l];
    cp_async_commit();
    cp_async16(s + 128 + 4 * l, in, false);
    cp_async_commit();
    cp_async_wait<1>();
    out[32 + l] = s[4 * l];
    out[64 + l] = s[128 + 4 * l];
    cp_async_wait<0>();
    out[96 + l] = s[128 + 4 * l];
}

// Planted: a cp.async from a global address off 16-byte alignment, and an ldmatrix row address
// that is not shared memory at all.
extern "C" __global__ void __launch_bounds__(32) st_cp_async_misaligned(const unsigned* in, unsigned* out) {
    __shared__ __align__(16) unsigned s[4];
    if (threadIdx.x == 0) cp_async16(s, in + 1, true);
    cp_async_wait<0>();
    out[threadIdx.x] = 0;
}
extern "C" __global__ void __launch_bounds__(32) st_ldmatrix_global(const unsigned short* in, unsigned* out) {
    unsigned r[4];
    ldsm_x4(r, in + threadIdx.x * 8);
    out[threadIdx.x] = r[0];
}

// The order threads ran in before the first barrier: ticket i went to thread out[i].
extern "C" __global__ void __launch_bounds__(64) st_order(int* counter, int* out) {
    out[atomicAdd(counter, 1)] = (int)threadIdx.x;
    __syncthreads();
}

// out = [or, and, count] of (tid % 3 == 0) over the block, and a shuffle sum of lane ids.
extern "C" __global__ void __launch_bounds__(128) st_reductions(int* out) {
    const int p = threadIdx.x % 3 == 0;
    const int o = __syncthreads_or(p), a = __syncthreads_and(p), c = __syncthreads_count(p);
    int v = threadIdx.x & 31;
    for (int s = 16; s > 0; s >>= 1) v += __shfl_xor_sync(0xffffffffu, v, s);
    const unsigned bal = __ballot_sync(0xffffffffu, threadIdx.x & 1);
    const int down = __shfl_down_sync(0xffffffffu, (int)(threadIdx.x & 31) + 100, 1);
    if (threadIdx.x == 0) {
        out[0] = o;
        out[1] = a;
        out[2] = c;
        out[3] = v;
        out[4] = (int)bal;
        out[5] = down;  // lane 1's
    }
}

// A slot nobody wrote reads as 0xff bytes.
extern "C" __global__ void __launch_bounds__(32) st_unwritten_shared(unsigned* out) {
    __shared__ unsigned s[64];
    s[threadIdx.x] = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x + 32];
}

extern "C" __global__ void __launch_bounds__(64) st_divergent_barrier(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    else __syncthreads();
    out[threadIdx.x] = 1;
}

extern "C" __global__ void __launch_bounds__(64) st_barrier_after_exit(int* out) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

extern "C" __global__ void __launch_bounds__(32) st_bad_mask(int* out) {
    out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, (int)threadIdx.x, 1);
}

extern "C" __global__ void __launch_bounds__(64) st_bounded(int* out) { out[threadIdx.x] = 1; }

// Planted bugs for the sanitizers.
extern "C" __global__ void __launch_bounds__(32) st_global_overrun(const int* in, int* out) {
    out[threadIdx.x] = in[threadIdx.x + 1];  // reads one past the 32 elements it was given
}

extern "C" __global__ void __launch_bounds__(32) st_shared_overrun(int* out, int k) {
    __shared__ int s[32];
    s[threadIdx.x + k] = 1;  // k = 1: the last thread writes past the array
    __syncthreads();
    out[threadIdx.x] = s[threadIdx.x];
}

extern "C" __global__ void __launch_bounds__(64) st_missing_barrier(int* out) {
    __shared__ int s[64];
    s[threadIdx.x] = (int)threadIdx.x;
    // No __syncthreads() here: thread i reads what thread i + 1 may not have written yet.
    out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}

// Counters: each lane reads its own row (2 or 4 bytes of a 256-byte row), or one contiguous
// 4-byte element; and shared memory read down a column (every lane on one bank) or along a row.
extern "C" __global__ void __launch_bounds__(32) st_rows_u16(const unsigned short* in, unsigned* out) {
    out[threadIdx.x] = in[threadIdx.x * 128];
}
extern "C" __global__ void __launch_bounds__(32) st_rows_u32(const unsigned* in, unsigned* out) {
    out[threadIdx.x] = in[threadIdx.x * 64];
}
extern "C" __global__ void __launch_bounds__(32) st_contiguous(const unsigned* in, unsigned* out) {
    out[threadIdx.x] = in[threadIdx.x];
}
extern "C" __global__ void __launch_bounds__(32) st_shared_banks(unsigned* out) {
    __shared__ unsigned s[32 * 33];
    // Every other word of row tid: 16 stores that no two adjoin, so the counters cannot merge
    // them into wider accesses, whatever the compiler unrolls.
    for (int i = 0; i < 32; i += 2) s[threadIdx.x * 32 + i] = threadIdx.x + i;
    __syncthreads();
    unsigned column = s[threadIdx.x * 32];  // one bank for all lanes: 32 wavefronts
    unsigned row = s[threadIdx.x];          // 32 banks: 1 wavefront
    out[threadIdx.x] = column + row;
}
