// The emulated device's runtime: blocks run one after another; each CUDA thread of a block is a
// fiber (its own stack, switched by emu_switch below) that runs until it reaches a barrier or a warp collective, or returns. The
// order in which ready fibers run between sync points is forward, reverse or seeded random
// (MLLM_CUDA_CPU_ORDER = fwd | rev | rand:SEED). Built without sanitizer instrumentation (only
// the kernels are instrumented); EMU_ASAN / EMU_TSAN tell it to annotate its fiber switches
// and its barriers for the sanitizer in the process.
#include "runtime.h"

#include <dlfcn.h>
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#if EMU_COUNTERS
#include "counters.h"
#define EMU_COUNT(x) ::emu::counters::x
#else
#define EMU_COUNT(x) ((void)0)
#endif
#if EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if EMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

// Saves the callee-saved registers on the current stack, stores its pointer in *save and
// continues on the stack `next` (made by emu_switch or by new_stack). No signal mask is saved,
// so no system call, and no libc function a sanitizer intercepts (ASan's swapcontext clears the
// shadow of the whole target stack on every switch).
extern "C" void emu_switch(void** save, void* next);
asm(R"(
    .text
    .p2align 4
    .type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

namespace emu {

Thread* current = nullptr;
dim3 block_idx, block_dim, grid_dim;

namespace {

constexpr int kMaxThreads = 1024;
// Kernel frames are small; sanitizers add redzones and fake frames, so leave room.
constexpr size_t kStack = 512 * 1024;
// ThreadSanitizer tracks at most a few hundred threads; larger blocks give each warp one identity.
constexpr int kTsanThreads = 192;

enum State { READY, AT_BARRIER, AT_WARP, DONE };

struct Fiber {
    Thread t;
    void* sp = nullptr;     // saved stack pointer while switched out
    char* stack = nullptr;  // mmap'd once, with a guard page below; never moves
    State state = DONE;
    unsigned gen = 0;       // the barrier or warp generation it waits in
    const char* file = "";  // where it waits
    int line = 0;
};

struct Warp {
    unsigned arrived = 0, want = 0, gen = 0, exited = 0, present = 0;
    int kind = 0;
    const char* file = "";
    int line = 0;
    unsigned long long slot[2][32][8];
    int result[2];
};

struct Launch {
    const Kernel* kernel = nullptr;
    void** args = nullptr;
    int nthreads = 0;
    std::string error;
};

// A thread's cp.async copies in flight: group -1 until committed, then its group number.
struct AsyncCopies {
    std::vector<std::pair<int, CpAsync>> queue;
    int committed = 0;
    std::vector<CpAsync> due;  // handed to the wait that retires them
};

Fiber* fibers;  // kMaxThreads of them, allocated once so no context ever moves
AsyncCopies* async_copies;  // one per thread, like fibers
Warp warps[kMaxThreads / 32];
void* sched_sp;  // the host thread's stack pointer while a fiber runs
Launch L;
unsigned char* dyn_shared = nullptr;
size_t dyn_shared_bytes = 0;

// Barrier state of the running block.
unsigned bar_gen = 0;
int bar_arrived = 0, bar_kind = 0, bar_acc = 0;
int bar_result[2];
const char* bar_file = "";
int bar_line = 0;

#if EMU_ASAN
const void* host_stack_bottom = nullptr;
size_t host_stack_size = 0;
#endif
#if EMU_TSAN
void* tsan_host = nullptr;
void* tsan_ids[kTsanThreads];
char tsan_block_start, tsan_block_done, tsan_bar[2], tsan_warp[kMaxThreads / 32];
void* tsan_identity(int linear, int nthreads) {
    const int i = nthreads <= kTsanThreads ? linear : linear / 32;
    if (!tsan_ids[i]) tsan_ids[i] = __tsan_create_fiber(0);
    return tsan_ids[i];
}
#endif

enum class Order { Forward, Reverse, Random };
Order order = Order::Forward;
std::mt19937_64 rng;

void read_order() {
    static bool done = false;
    if (done) return;
    done = true;
    const char* o = getenv("MLLM_CUDA_CPU_ORDER");
    if (!o || !*o || !strcmp(o, "fwd")) return;
    if (!strcmp(o, "rev")) {
        order = Order::Reverse;
    } else if (!strncmp(o, "rand:", 5)) {
        order = Order::Random;
        rng.seed(strtoull(o + 5, nullptr, 10));
    } else {
        fprintf(stderr, "cuda-cpu: MLLM_CUDA_CPU_ORDER=%s is not fwd, rev or rand:SEED; using fwd\n", o);
    }
}

// ---- static shared memory: the .emu.shared section of this library --------------------------

unsigned char* shared_lo = nullptr;
unsigned char* shared_hi = nullptr;

// Finds .emu.shared in this library's own ELF section table (the section name has a dot, so the
// linker makes no __start_/__stop_ symbols for it).
void find_shared_section() {
    static bool done = false;
    if (done) return;
    done = true;
    Dl_info info;
    if (!dladdr(reinterpret_cast<void*>(&find_shared_section), &info) || !info.dli_fname) return;
    FILE* f = fopen(info.dli_fname, "rb");
    if (!f) return;
    Elf64_Ehdr eh;
    std::vector<Elf64_Shdr> sh;
    std::vector<char> names;
    bool ok = fread(&eh, sizeof eh, 1, f) == 1 && eh.e_shentsize == sizeof(Elf64_Shdr);
    if (ok) {
        sh.resize(eh.e_shnum);
        ok = fseek(f, (long)eh.e_shoff, SEEK_SET) == 0 && fread(sh.data(), sizeof(Elf64_Shdr), sh.size(), f) == sh.size() &&
             eh.e_shstrndx < sh.size();
    }
    if (ok) {
        names.resize(sh[eh.e_shstrndx].sh_size + 1, 0);
        ok = fseek(f, (long)sh[eh.e_shstrndx].sh_offset, SEEK_SET) == 0 &&
             fread(names.data(), 1, names.size() - 1, f) == names.size() - 1;
    }
    fclose(f);
    if (!ok) return;
    for (const Elf64_Shdr& s : sh) {
        if (s.sh_name < names.size() && !strcmp(&names[s.sh_name], ".emu.shared")) {
            shared_lo = static_cast<unsigned char*>(info.dli_fbase) + s.sh_addr;
            shared_hi = shared_lo + s.sh_size;
        }
    }
}

// A plain byte loop, so no sanitizer's memset interceptor sees redzones written (they are only
// the sanitizer's bookkeeping, not data).
__attribute__((no_builtin("memset"))) void poison(unsigned char* lo, unsigned char* hi) {
    for (volatile unsigned char* p = lo; p < hi; ++p) *p = 0xff;
}

// ---- fibers ------------------------------------------------------------------------------------

Fiber& me() { return fibers[current->linear]; }

void to_scheduler(bool dying) {
    Fiber& f = me();
#if EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(dying ? nullptr : &fake, host_stack_bottom, host_stack_size);
#endif
#if EMU_TSAN
    __tsan_switch_to_fiber(tsan_host, __tsan_switch_to_fiber_no_sync);
#endif
    emu_switch(&f.sp, sched_sp);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, &host_stack_bottom, &host_stack_size);
#endif
    (void)dying;
}

void fiber_main() {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &host_stack_bottom, &host_stack_size);
#endif
#if EMU_TSAN
    __tsan_acquire(&tsan_block_start);
#endif
    L.kernel->run(L.args);
    EMU_COUNT(flush_thread(current->linear));
    Fiber& f = me();
    f.state = DONE;
    Warp& w = warps[f.t.warp];
    w.exited |= 1u << f.t.lane;
#if EMU_TSAN
    __tsan_release(&tsan_block_done);
#endif
    to_scheduler(true);
    abort();  // never resumed
}

// Records the launch's error and, from a fiber, leaves that fiber where it is for good: the
// scheduler abandons the block.
void fail(const std::string& what) {
    if (L.error.empty()) L.error = what;
    if (current) {
#if EMU_TSAN
        __tsan_release(&tsan_block_done);  // the host reads the error after the block
#endif
        to_scheduler(true);
        abort();  // never resumed
    }
}

std::string where(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }

std::string who() {
    char b[160];
    snprintf(b, sizeof b, "%s block (%u,%u,%u) thread (%u,%u,%u)", L.kernel ? L.kernel->name : "?", block_idx.x,
             block_idx.y, block_idx.z, current ? current->tid.x : 0, current ? current->tid.y : 0,
             current ? current->tid.z : 0);
    return b;
}

void yield_waiting(State s, unsigned gen, const char* file, int line) {
    Fiber& f = me();
    f.state = s;
    f.gen = gen;
    f.file = file;
    f.line = line;
    Thread* self = current;
#if EMU_TSAN
    // Whatever this thread did so far happens before the host's look at the block's end, even
    // if the block never completes (a failed launch); no other thread acquires this.
    __tsan_release(&tsan_block_done);
#endif
    to_scheduler(false);
    current = self;
}

// ---- warp collectives ----------------------------------------------------------------------

// Arrives at lane's warp exchange of `kind`; returns the slot bank of the completed exchange.
int warp_arrive(int kind, unsigned mask, const unsigned long long* mine, const char* file, int line) {
    EMU_COUNT(flush_thread(current->linear));
    const int lane = current->lane;
    Warp& w = warps[current->warp];
    if (!((mask >> lane) & 1u)) fail(who() + ": warp collective at " + where(file, line) + " with mask " +
                                     std::to_string(mask) + " that leaves out the calling lane");
    if (mask & ~w.present) fail(who() + ": warp collective at " + where(file, line) + " names lanes the warp does not have (mask " +
                                std::to_string(mask) + ", lanes present " + std::to_string(w.present) + ")");
    if (mask & w.exited) fail(who() + ": warp collective at " + where(file, line) + " names lanes that have already exited (mask " +
                              std::to_string(mask) + ", exited " + std::to_string(w.exited) + ")");
    if (w.arrived == 0) {
        w.want = mask;
        w.kind = kind;
        w.file = file;
        w.line = line;
    } else if (w.want != mask || w.kind != kind) {
        fail(who() + ": warp collectives disagree: " + where(file, line) + " (mask " + std::to_string(mask) + ") meets " +
             where(w.file, w.line) + " (mask " + std::to_string(w.want) + ")");
    }
    const unsigned gen = w.gen, bank = gen & 1u;
    if (mine)
        for (int i = 0; i < 8; ++i) w.slot[bank][lane][i] = mine[i];
    w.arrived |= 1u << lane;
    if (w.arrived == w.want) {
        w.arrived = 0;
        ++w.gen;
        for (int l = 0; l < 32; ++l)
            if ((mask >> l) & 1u && l != lane) fibers[current->warp * 32 + l].state = READY;
    } else {
        yield_waiting(AT_WARP, gen, file, line);
    }
    return (int)bank;
}

}  // namespace

void shfl(unsigned mask, const unsigned long long* mine, unsigned long long* out, int src, const char* file, int line) {
    const int bank = warp_arrive(1, mask, mine, file, line);
    if (!((mask >> src) & 1u))
        fail(who() + ": shuffle at " + where(file, line) + " reads lane " + std::to_string(src) + ", outside its mask");
    const Warp& w = warps[current->warp];
    for (int i = 0; i < 8; ++i) out[i] = w.slot[bank][src][i];
}

unsigned ballot(unsigned mask, int pred, const char* file, int line) {
    unsigned long long mine[8] = {(unsigned long long)(pred != 0), 0, 0, 0, 0, 0, 0, 0};
    const int bank = warp_arrive(2, mask, mine, file, line);
    const Warp& w = warps[current->warp];
    unsigned r = 0;
    for (int l = 0; l < 32; ++l)
        if ((mask >> l) & 1u) r |= (unsigned)(w.slot[bank][l][0] != 0) << l;
    return r;
}

void syncwarp(unsigned mask, const char* file, int line) {
#if EMU_TSAN
    __tsan_release(&tsan_warp[current->warp]);
#endif
    warp_arrive(3, mask, nullptr, file, line);
#if EMU_TSAN
    __tsan_acquire(&tsan_warp[current->warp]);
#endif
}

void gather(unsigned mask, const unsigned long long* mine, unsigned long long (*all)[8], const char* file, int line) {
    const int bank = warp_arrive(5, mask, mine, file, line);
    const Warp& w = warps[current->warp];
    memcpy(all, w.slot[bank], sizeof w.slot[bank]);
}

// ---- the shared window, ldmatrix and cp.async -------------------------------------------------

constexpr unsigned kStaticWindow = 0x1000u, kDynamicWindow = 0x80000000u;

unsigned shared_window(const void* p, const char* file, int line) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    if (shared_lo && c >= shared_lo && c < shared_hi) return kStaticWindow + (unsigned)(c - shared_lo);
    if (dyn_shared && c >= dyn_shared && c < dyn_shared + dyn_shared_bytes) return kDynamicWindow + (unsigned)(c - dyn_shared);
    fail(who() + ": __cvta_generic_to_shared at " + where(file, line) + " of a pointer outside shared memory");
    return 0;
}

void* shared_at(unsigned addr, unsigned bytes, const char* file, int line) {
    unsigned char* p = nullptr;
    if (addr >= kDynamicWindow && addr - kDynamicWindow + (size_t)bytes <= dyn_shared_bytes) {
        p = dyn_shared + (addr - kDynamicWindow);
    } else if (addr >= kStaticWindow && addr < kDynamicWindow && shared_lo &&
               addr - kStaticWindow + (size_t)bytes <= (size_t)(shared_hi - shared_lo)) {
        p = shared_lo + (addr - kStaticWindow);
    }
    if (!p) fail(who() + ": shared address " + std::to_string(addr) + " at " + where(file, line) + " (" + std::to_string(bytes) +
                 " bytes) is outside the block's shared memory");
    if (addr % bytes) fail(who() + ": shared address " + std::to_string(addr) + " at " + where(file, line) +
                           " is not aligned to " + std::to_string(bytes) + " bytes");
    return p;
}

void ldmatrix_rows(int num, bool trans, const unsigned long long* mine, unsigned* r, const char* file, int line) {
    const int lane = current->lane;
    unsigned long long all[32][8];
    gather(0xffffffffu, mine, all, file, line);
    auto elem = [&](int matrix, int row, int col) {  // 16-bit element (row, col) of matrix
        return (unsigned)(all[8 * matrix + row][col / 4] >> (16 * (col % 4))) & 0xffffu;
    };
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < num; ++i)
        r[i] = trans ? elem(i, 2 * t, g) | elem(i, 2 * t + 1, g) << 16 : elem(i, g, 2 * t) | elem(i, g, 2 * t + 1) << 16;
}

void cp_async_misaligned(const char* file, int line) {
    fail(who() + ": cp.async at " + where(file, line) + " from a global address not aligned to 16 bytes");
}

void cp_async_push(void* dst, unsigned long long w0, unsigned long long w1) {
    async_copies[current->linear].queue.push_back({-1, CpAsync{dst, {w0, w1}}});
}

void cp_async_commit() {
    AsyncCopies& a = async_copies[current->linear];
    for (auto& c : a.queue)
        if (c.first < 0) c.first = a.committed;
    ++a.committed;
}

const CpAsync* cp_async_due(int keep, int* n) {
    AsyncCopies& a = async_copies[current->linear];
    a.due.clear();
    std::vector<std::pair<int, CpAsync>> rest;
    for (auto& c : a.queue) {
        if (c.first >= 0 && c.first < a.committed - keep) a.due.push_back(c.second);
        else rest.push_back(c);
    }
    a.queue.swap(rest);
    *n = (int)a.due.size();
    return a.due.data();
}

// ---- mma ---------------------------------------------------------------------------------------

namespace {
float half_bits(unsigned h) {
    __half v;
    v.x = (unsigned short)h;
    return __half2float(v);
}
float bf16_bits(unsigned h) { return __uint_as_float(h << 16); }

template <float (*Elem)(unsigned)>
void mma16816(float& d0, float& d1, float& d2, float& d3, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
              unsigned b1, float c0, float c1, float c2, float c3, const char* file, int line) {
    unsigned long long mine[8] = {a0 | (unsigned long long)a1 << 32, a2 | (unsigned long long)a3 << 32,
                                  b0 | (unsigned long long)b1 << 32, 0, 0, 0, 0, 0};
    unsigned long long all[32][8];
    gather(0xffffffffu, mine, all, file, line);
    EMU_COUNT(mma(current->lane, 16 * 8 * 16));
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, t = l & 3;
        const unsigned a[4] = {(unsigned)all[l][0], (unsigned)(all[l][0] >> 32), (unsigned)all[l][1], (unsigned)(all[l][1] >> 32)};
        const unsigned b[2] = {(unsigned)all[l][2], (unsigned)(all[l][2] >> 32)};
        for (int j = 0; j < 2; ++j) {
            A[g][2 * t + j] = Elem(a[0] >> (16 * j) & 0xffffu);
            A[g + 8][2 * t + j] = Elem(a[1] >> (16 * j) & 0xffffu);
            A[g][2 * t + 8 + j] = Elem(a[2] >> (16 * j) & 0xffffu);
            A[g + 8][2 * t + 8 + j] = Elem(a[3] >> (16 * j) & 0xffffu);
            B[2 * t + j][g] = Elem(b[0] >> (16 * j) & 0xffffu);
            B[2 * t + 8 + j][g] = Elem(b[1] >> (16 * j) & 0xffffu);
        }
    }
    const int g = current->lane >> 2, t = current->lane & 3;
    auto dot = [&](float c, int r, int col) {
        double s = c;
        for (int k = 0; k < 16; ++k) s += (double)A[r][k] * (double)B[k][col];
        return (float)s;
    };
    d0 = dot(c0, g, 2 * t);
    d1 = dot(c1, g, 2 * t + 1);
    d2 = dot(c2, g + 8, 2 * t);
    d3 = dot(c3, g + 8, 2 * t + 1);
}
}  // namespace

void ptx_mma_sync_aligned_m16n8k16_row_col_f32_f16_f16_f32(float& d0, float& d1, float& d2, float& d3, unsigned a0,
                                                           unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1,
                                                           float c0, float c1, float c2, float c3, const char* file, int line) {
    mma16816<half_bits>(d0, d1, d2, d3, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3, file, line);
}
void ptx_mma_sync_aligned_m16n8k16_row_col_f32_bf16_bf16_f32(float& d0, float& d1, float& d2, float& d3, unsigned a0,
                                                             unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1,
                                                             float c0, float c1, float c2, float c3, const char* file, int line) {
    mma16816<bf16_bits>(d0, d1, d2, d3, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3, file, line);
}

void ptx_mma_sync_aligned_m16n8k32_row_col_s32_s8_s8_s32(int& d0, int& d1, int& d2, int& d3, unsigned a0, unsigned a1,
                                                         unsigned a2, unsigned a3, unsigned b0, unsigned b1, int c0,
                                                         int c1, int c2, int c3, const char* file, int line) {
    unsigned long long mine[8] = {a0 | (unsigned long long)a1 << 32, a2 | (unsigned long long)a3 << 32,
                                  b0 | (unsigned long long)b1 << 32, 0, 0, 0, 0, 0};
    const int bank = warp_arrive(4, 0xffffffffu, mine, file, line);
    const Warp& w = warps[current->warp];
    EMU_COUNT(mma(current->lane, 16 * 8 * 32));
    // Rebuild A (16 x 32) and B (32 x 8) from every lane's fragments.
    signed char A[16][32], B[32][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l >> 2, t = l & 3;
        const unsigned long long* s = w.slot[bank][l];
        const unsigned a[4] = {(unsigned)s[0], (unsigned)(s[0] >> 32), (unsigned)s[1], (unsigned)(s[1] >> 32)};
        const unsigned b[2] = {(unsigned)s[2], (unsigned)(s[2] >> 32)};
        for (int j = 0; j < 4; ++j) {
            A[g][4 * t + j] = (signed char)(a[0] >> (8 * j));
            A[g + 8][4 * t + j] = (signed char)(a[1] >> (8 * j));
            A[g][16 + 4 * t + j] = (signed char)(a[2] >> (8 * j));
            A[g + 8][16 + 4 * t + j] = (signed char)(a[3] >> (8 * j));
            B[4 * t + j][g] = (signed char)(b[0] >> (8 * j));
            B[16 + 4 * t + j][g] = (signed char)(b[1] >> (8 * j));
        }
    }
    const int g = current->lane >> 2, t = current->lane & 3;
    auto dot = [&](int r, int c) {
        int s = 0;
        for (int k = 0; k < 32; ++k) s += (int)A[r][k] * (int)B[k][c];
        return s;
    };
    d0 = c0 + dot(g, 2 * t);
    d1 = c1 + dot(g, 2 * t + 1);
    d2 = c2 + dot(g + 8, 2 * t);
    d3 = c3 + dot(g + 8, 2 * t + 1);
}

// ---- barriers ------------------------------------------------------------------------------------

int barrier(int kind, int pred, const char* file, int line) {
    EMU_COUNT(flush_thread(current->linear));
    if (bar_arrived == 0) {
        bar_kind = kind;
        bar_file = file;
        bar_line = line;
        bar_acc = kind == 2 ? 1 : 0;
    } else if (bar_kind != kind || bar_line != line || strcmp(bar_file, file) != 0) {
        fail(who() + ": divergent barrier: this thread is at " + where(file, line) + " while others wait at " +
             where(bar_file, bar_line));
    }
    switch (kind) {
        case 1: bar_acc |= pred; break;
        case 2: bar_acc &= pred; break;
        case 3: bar_acc += pred; break;
        default: break;
    }
    const unsigned gen = bar_gen;
#if EMU_TSAN
    __tsan_release(&tsan_bar[gen & 1]);
#endif
    if (++bar_arrived == L.nthreads) {
        bar_result[gen & 1] = bar_acc;
        bar_arrived = 0;
        ++bar_gen;
        for (int i = 0; i < L.nthreads; ++i)
            if (fibers[i].state == AT_BARRIER) fibers[i].state = READY;
    } else {
        yield_waiting(AT_BARRIER, gen, file, line);
    }
#if EMU_TSAN
    __tsan_acquire(&tsan_bar[gen & 1]);
#endif
    return bar_result[gen & 1];
}

void* dynamic_shared() { return dyn_shared; }

// ---- the kernel table ----------------------------------------------------------------------------

namespace {
std::vector<const Kernel*>& table() {
    static std::vector<const Kernel*> t;
    return t;
}

std::string describe_stuck() {
    std::string s;
    int shown = 0;
    for (int i = 0; i < L.nthreads && shown < 8; ++i) {
        const Fiber& f = fibers[i];
        if (f.state == DONE) continue;
        ++shown;
        s += "\n  thread " + std::to_string(i) + (f.state == AT_BARRIER ? " waits at barrier " : " waits at warp collective ") +
             where(f.file, f.line);
    }
    int exited = 0;
    for (int i = 0; i < L.nthreads; ++i) exited += fibers[i].state == DONE;
    if (exited) s += "\n  " + std::to_string(exited) + " thread(s) of the block have already returned";
    return s;
}

void run_block(std::vector<int>& idx) {
    const int n = L.nthreads;
    EMU_COUNT(begin_block(n));
    if (shared_lo) poison(shared_lo, shared_hi);
    if (dyn_shared) poison(dyn_shared, dyn_shared + dyn_shared_bytes);
    bar_gen = 0;
    bar_arrived = 0;
    for (int w = 0; w < (n + 31) / 32; ++w) {
        Warp& wp = warps[w];
        wp.arrived = wp.want = wp.gen = wp.exited = 0;
        const int lanes = n - 32 * w < 32 ? n - 32 * w : 32;
        wp.present = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    }
    for (int i = 0; i < n; ++i) {
        async_copies[i].queue.clear();
        async_copies[i].committed = 0;
        Fiber& f = fibers[i];
        if (!f.stack) {
            void* m = mmap(nullptr, kStack + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (m == MAP_FAILED) {
                L.error = "cannot map a fiber stack";
                return;
            }
            mprotect(m, 4096, PROT_NONE);  // a stack overflow faults instead of corrupting
            f.stack = static_cast<char*>(m) + 4096;
        }
        f.t.linear = i;
        f.t.tid.x = (unsigned)(i % (int)block_dim.x);
        f.t.tid.y = (unsigned)(i / (int)block_dim.x % (int)block_dim.y);
        f.t.tid.z = (unsigned)(i / (int)(block_dim.x * block_dim.y));
        f.t.lane = i & 31;
        f.t.warp = i >> 5;
        f.state = READY;
        // A fresh stack whose first switch "returns" into fiber_main: its return address sits
        // 16-byte aligned under six zeroed callee-saved registers.
        void** top = reinterpret_cast<void**>(f.stack + kStack - 64);
        top[0] = reinterpret_cast<void*>(&fiber_main);
        for (int r = 1; r <= 6; ++r) top[-r] = nullptr;
        f.sp = top - 6;
    }
#if EMU_TSAN
    __tsan_release(&tsan_block_start);
#endif
    int done = 0;
    while (L.error.empty()) {
        if (order == Order::Random) std::shuffle(idx.begin(), idx.end(), rng);
        bool ran = false;
        for (int k = 0; k < n && L.error.empty(); ++k) {
            const int i = order == Order::Reverse ? n - 1 - k : idx[k];
            Fiber& f = fibers[i];
            if (f.state != READY) continue;
            ran = true;
            current = &f.t;
#if EMU_ASAN
            void* fake = nullptr;
            __sanitizer_start_switch_fiber(&fake, f.stack, kStack);
#endif
#if EMU_TSAN
            __tsan_switch_to_fiber(tsan_identity(i, n), __tsan_switch_to_fiber_no_sync);
#endif
            emu_switch(&sched_sp, f.sp);
#if EMU_ASAN
            __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
            current = nullptr;
            if (f.state == DONE) ++done;
        }
        if (done == n) break;
        if (!ran && L.error.empty()) {
            L.error = std::string(L.kernel->name) + " block (" + std::to_string(block_idx.x) + "," +
                      std::to_string(block_idx.y) + "," + std::to_string(block_idx.z) +
                      "): no thread can go on (a barrier or warp collective that not every thread reaches):" +
                      describe_stuck();
        }
    }
#if EMU_TSAN
    __tsan_acquire(&tsan_block_done);
#endif
    EMU_COUNT(end_block());
}
}  // namespace

Register::Register(const Kernel* kernels, int n) {
    for (int i = 0; i < n; ++i) table().push_back(&kernels[i]);
}

const Kernel* find_kernel(const char* name) {
    for (const Kernel* k : table())
        if (!strcmp(k->name, name)) return k;
    return nullptr;
}

std::string launch(const Kernel& k, dim3 grid, dim3 block, size_t dynamic_shared_bytes, void** args) {
    read_order();
    find_shared_section();
    const long long nthreads = (long long)block.x * block.y * block.z;
    char b[256];
    if (nthreads <= 0 || nthreads > kMaxThreads) {
        snprintf(b, sizeof b, "%s: a block of %lld threads (the limit is %d)", k.name, nthreads, kMaxThreads);
        return b;
    }
    if (nthreads > k.max_threads) {
        snprintf(b, sizeof b, "%s: a block of %lld threads is over its __launch_bounds__(%d)", k.name, nthreads,
                 k.max_threads);
        return b;
    }
    if (!fibers) fibers = new Fiber[kMaxThreads];
    if (!async_copies) async_copies = new AsyncCopies[kMaxThreads];
#if EMU_TSAN
    tsan_host = __tsan_get_current_fiber();
#endif
    L = Launch{};
    L.kernel = &k;
    L.args = args;
    L.nthreads = (int)nthreads;
    dyn_shared_bytes = dynamic_shared_bytes;
    dyn_shared = dynamic_shared_bytes ? static_cast<unsigned char*>(malloc(dynamic_shared_bytes)) : nullptr;
    grid_dim = grid;
    block_dim = block;
    EMU_COUNT(begin_launch(k.name, grid, block, dynamic_shared_bytes, shared_lo, shared_hi, dyn_shared));
    std::vector<int> idx(nthreads);
    for (int i = 0; i < (int)nthreads; ++i) idx[i] = i;
    for (unsigned z = 0; z < grid.z && L.error.empty(); ++z)
        for (unsigned y = 0; y < grid.y && L.error.empty(); ++y)
            for (unsigned x = 0; x < grid.x && L.error.empty(); ++x) {
                block_idx.x = x;
                block_idx.y = y;
                block_idx.z = z;
                run_block(idx);
            }
    EMU_COUNT(end_launch());
    free(dyn_shared);
    dyn_shared = nullptr;
    std::string err = L.error;
    if (!err.empty()) {
        fprintf(stderr, "cuda-cpu: %s\n", err.c_str());
#if EMU_ASAN
        // Abandoned fibers leave their frames' redzones poisoned; the stacks are reused.
        for (int i = 0; i < kMaxThreads; ++i)
            if (fibers[i].stack) __asan_unpoison_memory_region(fibers[i].stack, kStack);
#endif
    }
    L = Launch{};
    return err;
}

}  // namespace emu
