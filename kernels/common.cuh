// Shared helpers for every kernel family: dtype conversion and block reductions.
// Kernels keep f32 in registers whatever the storage dtype; 16-bit types convert at load/store.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef long long i64;

// NVRTC has no <cmath>, so no INFINITY macro.
#define NEG_INF (__int_as_float(0xff800000))
#define POS_INF (__int_as_float(0x7f800000))
#define NAN_F (__int_as_float(0x7fc00000))

// NaN and finiteness by the bits (the NaN policy, ARCHITECTURE.md: a NaN score makes its row NaN).
__device__ __forceinline__ bool nan_bits(float x) { return (__float_as_uint(x) & 0x7fffffffu) > 0x7f800000u; }
__device__ __forceinline__ bool finite_bits(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// fp8 E4M3 (float8_e4m3fn) storage, the MLA cache's: 4 exponent bits (bias 7), 3 mantissa bits,
// no infinity, S.1111.111 NaN, largest 448. Decoded by bit operations on every architecture
// (sm_89's cvt instruction would do the same), encoded as src/dtype.rs's e4m3_from_f32.
struct e4m3 {
    unsigned char bits;
};
__device__ __forceinline__ float e4m3_bits_f32(unsigned b) {
    const unsigned e = (b >> 3) & 15u, m = b & 7u;
    float mag = e == 0u ? (float)m * 0.001953125f : __uint_as_float(((e + 120u) << 23) | (m << 20));
    if (e == 15u && m == 7u) mag = NAN_F;
    return (b & 0x80u) ? -mag : mag;
}
__device__ __forceinline__ float to_f32(e4m3 v) { return e4m3_bits_f32(v.bits); }
// Round to nearest even; past 448 saturates, NaN is 0x7f. Exact steps: a * 2^9 below 2^-6 and
// the mantissa's 23 bits times 2^-20 are exact in f32, so rintf does the one rounding.
__device__ __forceinline__ unsigned f32_e4m3_bits(float v) {
    if (nan_bits(v)) return 0x7fu;
    const unsigned sign = (__float_as_uint(v) >> 24) & 0x80u;
    const float a = fminf(fabsf(v), 448.f);
    if (a < 0.015625f) return sign | (unsigned)rintf(a * 512.f);
    const unsigned bits = __float_as_uint(a);
    const int e = (int)((bits >> 23) & 0xffu) - 127;
    const unsigned q = (unsigned)rintf((float)(bits & 0x7fffffu) * (8.f / 8388608.f));
    return sign | min(((unsigned)(e + 7) << 3) + q, 0x7eu);
}
// The per-token scale of a cache row with largest magnitude amax: the smallest power of two s
// with amax / s <= 448 (1 for zero, NaN for a non-finite amax), as src/dtype.rs's e4m3_scale.
__device__ __forceinline__ float e4m3_scale(float amax) {
    if (!finite_bits(amax)) return NAN_F;
    if (amax == 0.f) return 1.f;
    const int e = (int)((__float_as_uint(amax) >> 23) & 0xffu) - 127;
    const float s = __int_as_float((max(e - 8, -126) + 127) << 23);
    return amax > 448.f * s ? 2.f * s : s;
}

// A 16-bit float's bits and back.
__device__ __forceinline__ unsigned short as_bits(__half v) { return __half_as_ushort(v); }
__device__ __forceinline__ unsigned short as_bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
template <typename T> __device__ __forceinline__ T bits_as(unsigned short b);
template <> __device__ __forceinline__ __half bits_as<__half>(unsigned short b) { return __ushort_as_half(b); }
template <> __device__ __forceinline__ __nv_bfloat16 bits_as<__nv_bfloat16>(unsigned short b) { return __ushort_as_bfloat16(b); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block; every thread gets the result. blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // `part` may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    const int nw = blockDim.x >> 5;
    v = lane < nw ? part[lane] : 0.f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    const int nw = blockDim.x >> 5;
    v = lane < nw ? part[lane] : NEG_INF;
    return warp_max(v);
}

// Status bits raised by kernels that clamp bad indices instead of faulting.
__device__ __forceinline__ void raise_status(unsigned int* status, unsigned int bit) {
    if (status) atomicOr(status, bit);
}

// One extern "C" entry point per dtype, as `<name>_f32`, `<name>_f16`, `<name>_bf16`.
#define FOR_EACH_FLOAT(M) M(f32, float) M(f16, __half) M(bf16, __nv_bfloat16)
