// The CUDA device API on the CPU, for the emulated device (cuda-cpu/). Kernel sources compile
// against this header with clang as ordinary C++: every CUDA thread is a fiber of the runtime
// (cuda-cpu/runtime.cpp), which yields only at barriers and warp collectives. Nothing here is
// fast; all of it is meant to be exact where CUDA is exact (integer intrinsics, bf16/f16
// round-to-nearest-even conversions) and to report what a GPU would silently get wrong
// (divergent barriers, bad shuffle masks, deadlocks).
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

// ---- qualifiers ------------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
// Launch bounds are read from the preprocessed source by cuda-cpu/gen.py (EMU_SCAN keeps them
// visible there) and checked at launch.
#ifdef EMU_SCAN
#undef __global__
#define __global__ __emu_global__
#define __launch_bounds__(...) __emu_launch_bounds__(__VA_ARGS__)
#else
#define __launch_bounds__(...)
#endif
// Every static __shared__ variable lives in one section, which the runtime fills with 0xff at
// each block's start so a read of a slot nobody wrote shows. The section name has a dot in it:
// clang's AddressSanitizer leaves globals in C-identifier sections without redzones.
#define __shared__ __attribute__((section(".emu.shared"), aligned(16))) static

// ---- vector types ----------------------------------------------------------------------------

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
typedef dim3 uint3;

// clang's vector types, so a 16-byte copy is one 16-byte load and store (a struct copy would be
// a memcpy call, which the counters build cannot see), with CUDA's sizes and alignments.
#define EMU_VEC(name, T, n) typedef T name __attribute__((ext_vector_type(n)));
EMU_VEC(int2, int, 2)
EMU_VEC(uint2, unsigned int, 2)
EMU_VEC(float2, float, 2)
EMU_VEC(int4, int, 4)
EMU_VEC(uint4, unsigned int, 4)
EMU_VEC(float4, float, 4)
EMU_VEC(char4, signed char, 4)
EMU_VEC(uchar4, unsigned char, 4)
#undef EMU_VEC
inline int2 make_int2(int x, int y) { return {x, y}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// ---- the runtime's side (cuda-cpu/runtime.cpp) ----------------------------------------------

namespace emu {

struct Thread {
    dim3 tid;      // threadIdx
    int linear;    // x + y * bx + z * bx * by
    int lane, warp;
};

extern Thread* current;  // the fiber running now
extern dim3 block_idx, block_dim, grid_dim;

// A barrier of the whole block (kind 0 plain, 1 or, 2 and, 3 count); returns the reduction.
int barrier(int kind, int pred, const char* file, int line);
// Warp collectives. Every lane of `mask` must reach one of the same kind (with the same mask)
// before any of them goes on; payloads are 64 bytes a lane. `shfl` hands back lane `src`'s.
void shfl(unsigned mask, const unsigned long long* mine, unsigned long long* out, int src, const char* file, int line);
unsigned ballot(unsigned mask, int pred, const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
// The launch's dynamic shared memory (sharedMemBytes of cuLaunchKernel, poisoned with 0xff).
void* dynamic_shared();
// Every lane of `mask` hands in 64 bytes and gets all 32 lanes' (a warp collective).
void gather(unsigned mask, const unsigned long long* mine, unsigned long long (*all)[8], const char* file, int line);

// The shared state space as PTX sees it: a 32-bit window, static shared memory from 0x1000 and
// the launch's dynamic shared memory from 0x80000000. `shared_window` maps a generic pointer
// into it (a pointer outside shared memory is reported); `shared_at` maps back, reporting an
// address outside both regions or not aligned to `bytes`.
unsigned shared_window(const void* p, const char* file, int line);
void* shared_at(unsigned addr, unsigned bytes, const char* file, int line);

// cp.async: a copy is queued by its thread with the bytes read from global memory at issue
// (a GPU may read them any time before the wait); the shared store happens only at the
// cp.async.wait_group that retires its group, so a read before the wait sees the old bytes.
struct CpAsync {
    void* dst;
    unsigned long long w[2];
};
void cp_async_push(void* dst, unsigned long long w0, unsigned long long w1);
// Reports a cp.async from a global address off 16-byte alignment and abandons the thread.
void cp_async_misaligned(const char* file, int line);
void cp_async_commit();
// The copies the wait retires: every copy of every committed group but the `keep` newest.
const CpAsync* cp_async_due(int keep, int* n);

}  // namespace emu

#define threadIdx (::emu::current->tid)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
static constexpr int warpSize = 32;

#define __syncthreads() ((void)::emu::barrier(0, 0, __FILE__, __LINE__))
#define __syncthreads_or(p) ::emu::barrier(1, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_and(p) ::emu::barrier(2, (p) != 0, __FILE__, __LINE__)
#define __syncthreads_count(p) ::emu::barrier(3, (p) != 0, __FILE__, __LINE__)
#define __threadfence() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define __threadfence_block() __atomic_thread_fence(__ATOMIC_SEQ_CST)

// ---- warp collectives ------------------------------------------------------------------------

namespace emu {
template <typename T>
inline T shfl_pick(unsigned mask, T v, int src, const char* file, int line) {
    static_assert(sizeof(T) <= 64 && std::is_trivially_copyable<T>::value, "shuffle of an unsupported type");
    unsigned long long in[8] = {0, 0, 0, 0, 0, 0, 0, 0}, out[8];
    memcpy(in, &v, sizeof(T));
    shfl(mask, in, out, src, file, line);
    T r;
    memcpy(&r, out, sizeof(T));
    return r;
}
// The source lane within a segment of `width` lanes, as the hardware computes it.
inline int shfl_src(int lane, int width, int src, int mode) {
    const int base = lane & ~(width - 1);
    switch (mode) {
        case 0: return base + (src & (width - 1));                                     // idx
        case 1: return (lane ^ src) < base + width ? (lane ^ src) : lane;             // xor
        case 2: return (lane & (width - 1)) + src < width ? lane + src : lane;        // down
        default: return (lane & (width - 1)) >= src ? lane - src : lane;              // up
    }
}
}  // namespace emu

#define __shfl_sync(m, v, s, ...) \
    ::emu::shfl_pick((m), (v), ::emu::shfl_src(::emu::current->lane, EMU_WIDTH(__VA_ARGS__), (s), 0), __FILE__, __LINE__)
#define __shfl_xor_sync(m, v, s, ...) \
    ::emu::shfl_pick((m), (v), ::emu::shfl_src(::emu::current->lane, EMU_WIDTH(__VA_ARGS__), (s), 1), __FILE__, __LINE__)
#define __shfl_down_sync(m, v, s, ...) \
    ::emu::shfl_pick((m), (v), ::emu::shfl_src(::emu::current->lane, EMU_WIDTH(__VA_ARGS__), (s), 2), __FILE__, __LINE__)
#define __shfl_up_sync(m, v, s, ...) \
    ::emu::shfl_pick((m), (v), ::emu::shfl_src(::emu::current->lane, EMU_WIDTH(__VA_ARGS__), (s), 3), __FILE__, __LINE__)
#define EMU_WIDTH(...) EMU_WIDTH_(__VA_ARGS__ + 0, 32)
#define EMU_WIDTH_(w, ...) ((w) == 0 ? 32 : (w))

#define __ballot_sync(m, p) ::emu::ballot((m), (p), __FILE__, __LINE__)
#define __any_sync(m, p) (::emu::ballot((m), (p), __FILE__, __LINE__) != 0u)
#define __all_sync(m, p) (::emu::ballot((m), (p), __FILE__, __LINE__) == (m))
#define __syncwarp(...) ::emu::syncwarp(EMU_MASK(__VA_ARGS__), __FILE__, __LINE__)
#define EMU_MASK(...) EMU_MASK_(__VA_ARGS__ + 0, 0)
#define EMU_MASK_(m, ...) ((unsigned)((m) == 0 ? 0xffffffffu : (m)))

// ---- atomics (relaxed, as on a GPU; real atomics so the sanitizers see them) ----------------

#define EMU_ATOMIC_RMW(NAME, OP)                                                          \
    template <typename T>                                                                 \
    inline T NAME(T* p, T v) {                                                            \
        return __atomic_##OP(p, v, __ATOMIC_RELAXED);                                     \
    }
EMU_ATOMIC_RMW(atomicOr, fetch_or)
EMU_ATOMIC_RMW(atomicAnd, fetch_and)
EMU_ATOMIC_RMW(atomicXor, fetch_xor)
EMU_ATOMIC_RMW(atomicExch, exchange_n)
#undef EMU_ATOMIC_RMW
template <typename T>
inline T atomicAdd(T* p, T v) {
    if constexpr (std::is_integral<T>::value) {
        return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
    } else {
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(p, &old, (T)(old + v), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
        return old;
    }
}
template <typename T>
inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
template <typename T>
inline T atomicCAS(T* p, T cmp, T v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
template <typename T>
inline T atomicMax(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T>
inline T atomicMin(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}

// ---- integer and bit intrinsics ----------------------------------------------------------------

template <typename T>
inline T __ldg(const T* p) { return *p; }

inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
}
inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    for (int i = 0; i < 4; ++i) c += ((a >> (8 * i)) & 0xffu) * ((b >> (8 * i)) & 0xffu);
    return c;
}
// Per-byte a - b modulo 256.
inline unsigned __vsub4(unsigned a, unsigned b) {
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (((a >> (8 * i)) - (b >> (8 * i))) & 0xffu) << (8 * i);
    return r;
}
inline unsigned __vadd4(unsigned a, unsigned b) {
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (((a >> (8 * i)) + (b >> (8 * i))) & 0xffu) << (8 * i);
    return r;
}
// Byte i of the result is byte (s >> 4i) & 7 of the 8 bytes {y, x} (x is bytes 0-3).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long xy = (unsigned long long)x | ((unsigned long long)y << 32);
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((xy >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz((unsigned)v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline unsigned __brev(unsigned v) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
    return r;
}
inline int __mul24(int a, int b) { return (int)((long long)((a << 8) >> 8) * ((b << 8) >> 8)); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }

// CUDA's device min/max take mixed argument types; the common type answers.
template <typename A, typename B>
inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)a : (C)b;
}
template <typename A, typename B>
inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a > (C)b ? (C)a : (C)b;
}

// ---- float intrinsics (libm here: the GPU's fast-math error is not modelled) ------------------

inline float __int_as_float(int v) { float f; memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; memcpy(&v, &f, 4); return v; }
inline float __uint_as_float(unsigned v) { float f; memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned v; memcpy(&v, &f, 4); return v; }
inline float __expf(float v) { return expf(v); }
inline float __logf(float v) { return logf(v); }
inline float __log2f(float v) { return log2f(v); }
inline float __exp10f(float v) { return exp10f(v); }
inline float __sinf(float v) { return sinf(v); }
inline float __cosf(float v) { return cosf(v); }
inline float __tanhf(float v) { return tanhf(v); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float v) { return 1.f / v; }
inline float __fsqrt_rn(float v) { return sqrtf(v); }
inline float __saturatef(float v) { return v != v ? 0.f : fminf(fmaxf(v, 0.f), 1.f); }
inline float rsqrtf(float v) { return 1.f / sqrtf(v); }
inline int __float2int_rn(float v) { return (int)rintf(v); }
inline int __float2int_rz(float v) { return (int)v; }
inline float __int2float_rn(int v) { return (float)v; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }

// ---- 16-bit floats (bit-exact, round to nearest even) ------------------------------------------

struct __half {
    unsigned short x;
};
struct __nv_bfloat16 {
    unsigned short x;
};
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;

inline float __half2float(__half h) {
    const unsigned s = (unsigned)(h.x & 0x8000u) << 16, e = (h.x >> 10) & 0x1fu, m = h.x & 0x3ffu;
    unsigned bits;
    if (e == 0) {
        const float v = (float)m * 5.9604644775390625e-8f;  // 2^-24
        return s ? -v : v;
    }
    if (e == 31) bits = s | 0x7f800000u | (m << 13);
    else bits = s | ((e + 112u) << 23) | (m << 13);
    return __uint_as_float(bits);
}
inline __half __float2half_rn(float f) {
    const unsigned b = __float_as_uint(f), s = (b >> 16) & 0x8000u, a = b & 0x7fffffffu;
    __half h;
    if (a > 0x7f800000u) h.x = 0x7fffu;                                        // NaN, as CUDA's
    else if (a >= 0x477ff000u) h.x = (unsigned short)(s | 0x7c00u);           // rounds to inf
    else if (a >= 0x38800000u) {                                               // normal
        const unsigned r = a - 0x38000000u;
        h.x = (unsigned short)(s | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
    } else {                                                                   // subnormal or zero
        h.x = (unsigned short)(s | (unsigned)rintf(__uint_as_float(a) * 16777216.f));
    }
    return h;
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline __half __ushort_as_half(unsigned short v) {
    __half h;
    h.x = v;
    return h;
}
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned)h.x << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const unsigned b = __float_as_uint(f);
    __nv_bfloat16 h;
    if ((b & 0x7fffffffu) > 0x7f800000u) h.x = 0x7fffu;  // NaN, as CUDA's cuda_bf16.hpp gives it
    else h.x = (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    return h;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short v) {
    __nv_bfloat16 h;
    h.x = v;
    return h;
}

// ---- inline PTX with a model here (gen.py turns each `asm` statement into one of these) -------

namespace emu {
// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32: D = A (16 x 32, s8) B (32 x 8, s8) + C, one
// warp. Lane l = 4 g + t holds (PTX ISA, "Matrix fragments for mma.m16n8k32"):
// a0 = A[g][4t..4t+3], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..] (byte j of a
// register is column +j); b0 = B[4t..4t+3][g], b1 = B[16+4t..][g]; c0, c1 = C[g][2t, 2t+1],
// c2, c3 = C[g+8][2t, 2t+1], and D likewise.
void ptx_mma_sync_aligned_m16n8k32_row_col_s32_s8_s8_s32(int& d0, int& d1, int& d2, int& d3, unsigned a0, unsigned a1, unsigned a2,
                                            unsigned a3, unsigned b0, unsigned b1, int c0, int c1, int c2, int c3,
                                            const char* file, int line);

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: D = A (16 x 16) B (16 x 8) + C in f32, one
// warp. Lane l = 4 g + t holds (PTX ISA, "Matrix fragments for mma.m16n8k16", 16-bit types;
// the low half of a register is the lower column or row): a0 = A[g][2t, 2t+1],
// a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]; b0 = B[2t, 2t+1][g],
// b1 = B[2t+8, 2t+9][g]; c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1], and D likewise.
// The products are exact; the model sums them in f64 and rounds once (a GPU rounds more often,
// in an order it does not document).
#define EMU_MMA16816(NAME)                                                                                        \
    void NAME(float& d0, float& d1, float& d2, float& d3, unsigned a0, unsigned a1, unsigned a2, unsigned a3, \
              unsigned b0, unsigned b1, float c0, float c1, float c2, float c3, const char* file, int line);
EMU_MMA16816(ptx_mma_sync_aligned_m16n8k16_row_col_f32_f16_f16_f32)
EMU_MMA16816(ptx_mma_sync_aligned_m16n8k16_row_col_f32_bf16_bf16_f32)
#undef EMU_MMA16816

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16: lanes 8i .. 8i+7 give the shared
// addresses of the 8 rows (16 bytes each) of matrix i; register i of lane l = 4 g + t then holds
// row g, 16-bit columns 2t and 2t+1 of matrix i, or with .trans its column g, rows 2t and 2t+1.
void ldmatrix_rows(int num, bool trans, const unsigned long long* mine, unsigned* r, const char* file, int line);
#define EMU_INLINE inline __attribute__((always_inline))
// Each lane's row is its own 16-byte shared load, here at the call site (where the counters and
// the sanitizers see it); the runtime hands the fragments out.
EMU_INLINE void ldmatrix(int num, bool trans, unsigned* r, unsigned addr, const char* file, int line) {
    unsigned long long mine[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (current->lane < 8 * num) {
        const unsigned long long* row = static_cast<const unsigned long long*>(shared_at(addr, 16, file, line));
        mine[0] = row[0];
        mine[1] = row[1];
    }
    ldmatrix_rows(num, trans, mine, r, file, line);
}
EMU_INLINE void ptx_ldmatrix_sync_aligned_m8n8_x1_shared_b16(unsigned& r0, unsigned a, const char* f, int l) {
    ldmatrix(1, false, &r0, a, f, l);
}
EMU_INLINE void ptx_ldmatrix_sync_aligned_m8n8_x2_shared_b16(unsigned& r0, unsigned& r1, unsigned a, const char* f, int l) {
    unsigned r[2];
    ldmatrix(2, false, r, a, f, l);
    r0 = r[0], r1 = r[1];
}
EMU_INLINE void ptx_ldmatrix_sync_aligned_m8n8_x4_shared_b16(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, unsigned a,
                                                         const char* f, int l) {
    unsigned r[4];
    ldmatrix(4, false, r, a, f, l);
    r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}
EMU_INLINE void ptx_ldmatrix_sync_aligned_m8n8_x2_trans_shared_b16(unsigned& r0, unsigned& r1, unsigned a, const char* f, int l) {
    unsigned r[2];
    ldmatrix(2, true, r, a, f, l);
    r0 = r[0], r1 = r[1];
}
EMU_INLINE void ptx_ldmatrix_sync_aligned_m8n8_x4_trans_shared_b16(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3,
                                                               unsigned a, const char* f, int l) {
    unsigned r[4];
    ldmatrix(4, true, r, a, f, l);
    r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}

// cp.async.cg.shared.global [dst], [src], 16, src_size: src_size bytes (at most 16) from a
// 16-byte-aligned global address, the rest of the 16 zero-filled. The global read is an
// ordinary load of this thread, so the counters and the sanitizers see it at its call site.
EMU_INLINE void ptx_cp_async_cg_shared_global(unsigned dst, const void* src, unsigned src_size, const char* file, int line) {
    void* d = shared_at(dst, 16, file, line);
    if (src_size && reinterpret_cast<uintptr_t>(src) % 16) cp_async_misaligned(file, line);  // does not return
    unsigned long long w0 = 0, w1 = 0;
    if (src_size >= 16) {  // two adjacent 8-byte loads, which the counters merge into one 16-byte one
        const unsigned long long* s = static_cast<const unsigned long long*>(src);
        w0 = s[0];
        w1 = s[1];
    } else {
        const unsigned char* s = static_cast<const unsigned char*>(src);
        for (unsigned i = 0; i < src_size; ++i) (i < 8 ? w0 : w1) |= (unsigned long long)s[i] << (8 * (i % 8));
    }
    cp_async_push(d, w0, w1);
}
EMU_INLINE void ptx_cp_async_commit_group(const char*, int) { cp_async_commit(); }
// The shared stores of the retired copies are this thread's own, here.
EMU_INLINE void ptx_cp_async_wait_group(int keep, const char*, int) {
    int n = 0;
    const CpAsync* c = cp_async_due(keep, &n);
    for (int i = 0; i < n; ++i) {
        unsigned long long* d = static_cast<unsigned long long*>(c[i].dst);
        d[0] = c[i].w[0];
        d[1] = c[i].w[1];
    }
}
EMU_INLINE void ptx_cp_async_wait_all(const char* file, int line) {
    cp_async_commit();
    ptx_cp_async_wait_group(0, file, line);
}
}  // namespace emu

#define __cvta_generic_to_shared(p) ((size_t)::emu::shared_window((p), __FILE__, __LINE__))
