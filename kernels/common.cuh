// Shared helpers for every kernel family: dtype conversion and block reductions.
// Kernels keep f32 in registers whatever the storage dtype; 16-bit types convert at load/store.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef long long i64;

// NVRTC has no <cmath>, so no INFINITY macro.
#define NEG_INF (__int_as_float(0xff800000))
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
