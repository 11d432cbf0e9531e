// Kernels that check the emulated device itself (selftest.cpp launches them): its intrinsics
// against values worked out by hand, the mma.sync model against a plain product, the thread
// orders, the barrier reductions, and bugs planted on purpose that it or a sanitizer must catch.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

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
    for (int i = 0; i < 32; ++i) s[threadIdx.x * 32 + i] = threadIdx.x + i;  // row tid
    __syncthreads();
    unsigned column = s[threadIdx.x * 32];  // one bank for all lanes: 32 wavefronts
    unsigned row = s[threadIdx.x];          // 32 banks: 1 wavefront
    out[threadIdx.x] = column + row;
}
