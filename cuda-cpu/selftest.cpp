// The emulated device's own test (scripts/cuda-cpu.sh --selftest): launches the kernels of
// selftest.cu through the runtime and checks what each must give or report. Bugs planted for a
// sanitizer run in a forked child whose report is read back. Prints `N passed, M failed`.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "runtime.h"
#if EMU_COUNTERS
#include "counters.h"
extern "C" int cuda_cpu_counters_read(CudaCpuLaunch* out, int max);
extern "C" void cuda_cpu_counters_reset();
#endif

namespace {

int passed = 0, failed = 0;

void check(bool ok, const std::string& what) {
    printf("%s  %s\n", ok ? "PASS" : "FAIL", what.c_str());
    ok ? ++passed : ++failed;
}

std::string run(const char* name, dim3 grid, dim3 block, std::vector<void*> args) {
    const emu::Kernel* k = emu::find_kernel(name);
    if (!k) return std::string("no kernel ") + name;
    return emu::launch(*k, grid, block, 0, args.data());
}

dim3 d(unsigned x) { return dim3{x, 1, 1}; }

// Runs f in a child; returns its exit status and what it wrote to stderr.
template <typename F>
std::pair<int, std::string> in_child(F f) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return {-1, "pipe failed"};
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        f();
        _exit(0);
    }
    close(pipefd[1]);
    std::string err;
    char buf[4096];
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof buf)) > 0) err.append(buf, (size_t)n);
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return {status, err};
}

bool has(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

}  // namespace

int main() {
    const char* sanitizer = getenv("MLLM_CUDA_CPU_SANITIZE") ? getenv("MLLM_CUDA_CPU_SANITIZE") : "plain";
    const char* order = getenv("MLLM_CUDA_CPU_ORDER") ? getenv("MLLM_CUDA_CPU_ORDER") : "fwd";

    {  // intrinsics, against values worked out by hand
        unsigned out[10] = {};
        unsigned* p = out;
        check(run("st_intrinsics", d(1), d(32), {&p}).empty(), "st_intrinsics launches");
        const unsigned want[10] = {0x55441100u, 24u, 0xff000102u, 0x3c00u, 0x7c00u, 0x7bffu, 0x3f80u, 0x3f82u,
                                   0x33800000u,
                                   0x7fffu};
        const char* names[10] = {"__byte_perm",         "__dp4a",          "__vsub4",
                                 "f16 1.0",             "f16 65520 -> inf", "f16 65519 -> max",
                                 "bf16 tie to even down", "bf16 tie to even up", "f16 smallest subnormal",
                                 "bf16 NaN is 0x7fff"};
        for (int i = 0; i < 10; ++i) {
            char b[128];
            snprintf(b, sizeof b, "%s = 0x%x (want 0x%x)", names[i], out[i], want[i]);
            check(out[i] == want[i], b);
        }
    }
    {  // mma.sync m16n8k32 s8 against a plain product
        signed char A[16 * 32], Bt[8 * 32];
        int C[16 * 8], D[16 * 8];
        unsigned s = 12345;
        auto rnd = [&] { return (s = s * 1103515245u + 12345u) >> 16; };
        for (auto& v : A) v = (signed char)(rnd() % 256 - 128);
        for (auto& v : Bt) v = (signed char)(rnd() % 256 - 128);
        for (auto& v : C) v = (int)(rnd() % 2001) - 1000;
        signed char *pa = A, *pb = Bt;
        int *pc = C, *pd = D;
        check(run("st_mma_16832", d(1), d(32), {&pa, &pb, &pc, &pd}).empty(), "st_mma_16832 launches");
        int bad = 0;
        for (int r = 0; r < 16; ++r)
            for (int c = 0; c < 8; ++c) {
                int want = C[r * 8 + c];
                for (int k = 0; k < 32; ++k) want += A[r * 32 + k] * Bt[c * 32 + k];
                bad += D[r * 8 + c] != want;
            }
        check(bad == 0, "mma.sync.m16n8k32 s8 equals A B + C (" + std::to_string(bad) + " of 128 wrong)");
    }
    {  // mma.sync m16n8k16 (f16, bf16) against a plain product: values k / 8 with |k| <= 16 are
       // exact in both types, and so is every sum, so the result must match to the bit
        unsigned s = 777;
        auto rnd = [&] { return (s = s * 1103515245u + 12345u) >> 16; };
        auto val = [&] { return (float)((int)(rnd() % 33) - 16) / 8.f; };
        for (int bf = 0; bf < 2; ++bf) {
            float A[16 * 16], Bt[8 * 16], C[128], D[128];
            unsigned short a16[16 * 16], b16[8 * 16];
            for (int i = 0; i < 256; ++i) {
                A[i] = val();
                a16[i] = bf ? __float2bfloat16_rn(A[i]).x : __float2half_rn(A[i]).x;
            }
            for (int i = 0; i < 128; ++i) {
                Bt[i] = val();
                b16[i] = bf ? __float2bfloat16_rn(Bt[i]).x : __float2half_rn(Bt[i]).x;
                C[i] = val();
            }
            unsigned short *pa = a16, *pb = b16;
            float *pc = C, *pd = D;
            const char* name = bf ? "st_mma_16816_bf16" : "st_mma_16816_f16";
            check(run(name, d(1), d(32), {&pa, &pb, &pc, &pd}).empty(), std::string(name) + " launches");
            int bad = 0;
            for (int r = 0; r < 16; ++r)
                for (int c = 0; c < 8; ++c) {
                    float want = C[r * 8 + c];
                    for (int k = 0; k < 16; ++k) want += A[r * 16 + k] * Bt[c * 16 + k];
                    bad += D[r * 8 + c] != want;
                }
            check(bad == 0, std::string("mma.sync.m16n8k16 ") + (bf ? "bf16" : "f16") + " equals A B + C (" +
                                std::to_string(bad) + " of 128 wrong)");
        }
    }
    {  // ldmatrix, every variant, against the fragment layout written out here
        unsigned short in[32 * 8];
        for (int i = 0; i < 256; ++i) in[i] = (unsigned short)(i + 1);
        std::vector<unsigned> out(5 * 128, 0);
        unsigned short* pi = in;
        unsigned* po = out.data();
        check(run("st_ldmatrix", d(1), d(32), {&pi, &po}).empty(), "st_ldmatrix launches");
        auto el = [&](int row, int col) { return (unsigned)in[row * 8 + col]; };
        const char* names[5] = {"x4", "x2", "x1", "x4.trans", "x2.trans"};
        const int regs[5] = {4, 2, 1, 4, 2};
        for (int v = 0; v < 5; ++v) {
            int bad = 0;
            for (int l = 0; l < 32; ++l)
                for (int i = 0; i < regs[v]; ++i) {
                    const int g = l >> 2, t = l & 3;
                    const unsigned want = v < 3 ? el(8 * i + g, 2 * t) | el(8 * i + g, 2 * t + 1) << 16
                                                : el(8 * i + 2 * t, g) | el(8 * i + 2 * t + 1, g) << 16;
                    bad += out[v * 128 + l * 4 + i] != want;
                }
            check(bad == 0, std::string("ldmatrix ") + names[v] + " hands out the PTX fragment layout (" +
                                std::to_string(bad) + " wrong)");
        }
    }
    {  // cp.async + ldmatrix + mma: a 16 x 32 by 32 x 16 product, bf16, exact as above
        unsigned s = 4242;
        auto rnd = [&] { return (s = s * 1103515245u + 12345u) >> 16; };
        float A[16 * 32], B[32 * 16], D[16 * 16];
        alignas(16) unsigned short a16[16 * 32], b16[32 * 16];
        for (int i = 0; i < 512; ++i) {
            A[i] = (float)((int)(rnd() % 33) - 16) / 8.f;
            B[i] = (float)((int)(rnd() % 33) - 16) / 8.f;
            a16[i] = __float2bfloat16_rn(A[i]).x;
            b16[i] = __float2bfloat16_rn(B[i]).x;
        }
        unsigned short *pa = a16, *pb = b16;
        float* pd = D;
        check(run("st_tile_gemm_bf16", d(1), d(32), {&pa, &pb, &pd}).empty(), "st_tile_gemm_bf16 launches");
        int bad = 0;
        for (int r = 0; r < 16; ++r)
            for (int c = 0; c < 16; ++c) {
                float want = 0.f;
                for (int k = 0; k < 32; ++k) want += A[r * 32 + k] * B[k * 16 + c];
                bad += D[r * 16 + c] != want;
            }
        check(bad == 0, "cp.async -> ldmatrix (B transposed) -> mma equals A B (" + std::to_string(bad) + " of 256 wrong)");
    }
    {  // cp.async lands at the wait that retires its group, not before
        alignas(16) unsigned in[128];
        unsigned out[128];
        for (int i = 0; i < 128; ++i) in[i] = 1000u + (unsigned)i;
        unsigned *pi = in, *po = out;
        check(run("st_cp_async", d(1), d(32), {&pi, &po}).empty(), "st_cp_async launches");
        bool before = true, landed = true, pending = true, zero = true;
        for (int l = 0; l < 32; ++l) {
            before &= out[l] == 0xaaaaaaaau;
            landed &= out[32 + l] == in[4 * l];
            pending &= out[64 + l] == 0xaaaaaaaau;
            zero &= out[96 + l] == 0u;
        }
        check(before, "a cp.async destination read before any wait holds the old bytes");
        check(landed && pending, "cp.async.wait_group 1 retires the older group only");
        check(zero, "a cp.async with source size 0 writes zeros at its wait");
        std::string e = run("st_cp_async_misaligned", d(1), d(32), {&pi, &po});
        check(has(e, "not aligned to 16 bytes"), "a cp.async from a misaligned global address is reported: " + e);
        unsigned short g16[256] = {};
        unsigned short* pg = g16;
        e = run("st_ldmatrix_global", d(1), d(32), {&pg, &po});
        check(has(e, "outside shared memory"), "an ldmatrix of a pointer outside shared memory is reported: " + e);
    }
    {  // the thread order asked for
        int counter = 0, out[64];
        int* pc = &counter;
        int* po = out;
        check(run("st_order", d(1), d(64), {&pc, &po}).empty(), "st_order launches");
        bool fwd = true, rev = true;
        std::vector<int> seen(64, 0);
        for (int i = 0; i < 64; ++i) {
            fwd &= out[i] == i;
            rev &= out[i] == 63 - i;
            if (out[i] >= 0 && out[i] < 64) seen[out[i]]++;
        }
        bool perm = true;
        for (int v : seen) perm &= v == 1;
        const bool want = !strcmp(order, "fwd") ? fwd : !strcmp(order, "rev") ? rev : (perm && !fwd && !rev);
        check(want, std::string("threads ran in the order asked for (") + order + ")");
    }
    {  // barrier reductions, shuffles, ballot
        int out[6] = {};
        int* p = out;
        check(run("st_reductions", d(1), d(128), {&p}).empty(), "st_reductions launches");
        check(out[0] == 1 && out[1] == 0 && out[2] == 43, "__syncthreads_or / _and / _count");
        check(out[3] == 496, "__shfl_xor_sync butterfly sum of lane ids");
        check((unsigned)out[4] == 0xaaaaaaaau, "__ballot_sync of odd lanes");
        check(out[5] == 101, "__shfl_down_sync");
    }
    {  // shared memory nobody wrote reads as 0xff bytes
        unsigned out[32];
        unsigned* p = out;
        check(run("st_unwritten_shared", d(1), d(32), {&p}).empty(), "st_unwritten_shared launches");
        bool all = true;
        for (unsigned v : out) all &= v == 0xffffffffu;
        check(all, "an unwritten shared slot reads 0xffffffff");
    }
    {  // what the emulator itself reports
        int out[64];
        int* p = out;
        std::string e = run("st_divergent_barrier", d(1), d(64), {&p});
        check(has(e, "divergent barrier"), "divergent __syncthreads is reported: " + e);
        e = run("st_barrier_after_exit", d(1), d(64), {&p});
        check(has(e, "no thread can go on") && has(e, "already returned"), "a barrier some threads never reach is reported");
        e = run("st_bad_mask", d(1), d(32), {&p});
        check(has(e, "leaves out the calling lane"), "a shuffle whose mask leaves out its lane is reported");
        e = run("st_bounded", d(1), d(128), {&p});
        check(has(e, "__launch_bounds__(64)"), "a launch over __launch_bounds__ is refused");
        e = run("st_bounded", d(2), d(64), {&p});
        check(e.empty(), "the same kernel within its bounds runs, and the runtime recovers after failures");
    }
    // Bugs planted for the sanitizers: each must end its process with the sanitizer's report.
    const bool asan = !strcmp(sanitizer, "address"), tsan = !strcmp(sanitizer, "thread");
    if (asan) {
        auto r = in_child([] {
            int* in = static_cast<int*>(malloc(32 * sizeof(int)));
            int out[32];
            int* po = out;
            for (int i = 0; i < 32; ++i) in[i] = i;
            run("st_global_overrun", d(1), d(32), {&in, &po});
        });
        check(r.first != 0 && has(r.second, "heap-buffer-overflow"), "AddressSanitizer reports a global read past the end");
        r = in_child([] {
            int out[32], k = 1;
            int* po = out;
            run("st_shared_overrun", d(1), d(32), {&po, &k});
        });
        check(r.first != 0 && (has(r.second, "out of bounds") || has(r.second, "global-buffer-overflow")),
              "UndefinedBehaviorSanitizer or AddressSanitizer reports a shared-array overrun");
    }
    if (tsan) {
        auto r = in_child([] {
            int out[64];
            int* po = out;
            run("st_missing_barrier", d(1), d(64), {&po});
        });
        check(r.first != 0 && has(r.second, "data race"), "ThreadSanitizer reports a missing __syncthreads");
        r = in_child([] {
            int out[64];
            int* po = out;
            run("st_reductions", d(1), d(128), {&po});
        });
        check(r.first == 0 && !has(r.second, "data race"), "and stays quiet on a correct kernel");
    }
    if (!asan && !tsan) {
        int out[32], k = 0;
        int* po = out;
        check(run("st_shared_overrun", d(1), d(32), {&po, &k}).empty(), "(planted sanitizer bugs run in the sanitized builds)");
    }
#if EMU_COUNTERS
    {  // what the counters must see of toy kernels whose access patterns are known
        alignas(256) static unsigned buf[64 * 64];  // aligned as cuMemAlloc aligns: sector counts depend on it
        alignas(256) static unsigned out[32];
        emu::counters::note_alloc((uint64_t)buf, sizeof buf);
        emu::counters::note_alloc((uint64_t)out, sizeof out);
        unsigned* pin = buf;
        unsigned* pout = out;
        auto last = [](const char* name, std::vector<void*> args) {
            cuda_cpu_counters_reset();
            run(name, d(1), d(32), args);
            CudaCpuLaunch r[4];
            const int n = cuda_cpu_counters_read(r, 4);
            return n == 1 ? r[0] : CudaCpuLaunch{};
        };
        auto eff = [](const CudaCpuLaunch& r) { return r.load_sectors ? (double)r.load_bytes / (32.0 * r.load_sectors) : 0.0; };
        CudaCpuLaunch r = last("st_rows_u16", {&pin, &pout});
        check(r.load_requests == 1 && r.load_sectors == 32 && eff(r) == 1.0 / 16, "2 bytes from each lane's own row: load efficiency 1/16");
        r = last("st_rows_u32", {&pin, &pout});
        check(r.load_requests == 1 && r.load_sectors == 32 && eff(r) == 1.0 / 8, "4 bytes from each lane's own row: 1/8");
        r = last("st_contiguous", {&pin, &pout});
        check(r.load_requests == 1 && r.load_sectors == 4 && eff(r) == 1.0, "a contiguous read: 1");
        check(r.store_requests == 1 && r.store_sectors == 4 && r.unique_sectors == 8 && r.dram_read_bytes == 128,
              "its store: 4 sectors; 8 distinct sectors; 128 bytes from DRAM");
        r = last("st_shared_banks", {&pout});
        // 16 row writes (each lane its own row: stride 32 words, one bank, 32 wavefronts each),
        // the column read (32 wavefronts) and the row read (1).
        check(r.shared_requests == 18 && r.shared_wavefronts == 16 * 32 + 32 + 1 && r.shared_ideal_wavefronts == 18,
              "shared bank conflicts: a column costs 32 wavefronts, a row 1 (" + std::to_string(r.shared_wavefronts) + ")");
        signed char A[16 * 32] = {}, Bt[8 * 32] = {};
        int C[128] = {}, D[128];
        emu::counters::note_alloc((uint64_t)A, sizeof A);
        signed char *pa = A, *pb = Bt;
        int *pc = C, *pd = D;
        r = last("st_mma_16832", {&pa, &pb, &pc, &pd});
        check(r.mma_macs == 4096, "one warp mma.sync m16n8k32 counted once: 4096 multiply-adds");
        alignas(16) static unsigned short a16[16 * 32], b16[32 * 16];
        alignas(256) static float dd[256];
        emu::counters::note_alloc((uint64_t)a16, sizeof a16);
        emu::counters::note_alloc((uint64_t)b16, sizeof b16);
        emu::counters::note_alloc((uint64_t)dd, sizeof dd);
        unsigned short *p16a = a16, *p16b = b16;
        float* pdd = dd;
        r = last("st_tile_gemm_bf16", {&p16a, &p16b, &pdd});
        check(r.mma_macs == 4 * 2048, "four mma.sync m16n8k16: 8192 multiply-adds (" + std::to_string(r.mma_macs) + ")");
        check(r.load_bytes == 2048 && r.load_requests == 4 && r.load_sectors == 64,
              "cp.async's global reads are counted: 2 KiB in 4 warp requests of 16 sectors (" + std::to_string(r.load_bytes) +
                  ", " + std::to_string(r.load_requests) + ", " + std::to_string(r.load_sectors) + ")");
    }
#endif
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
