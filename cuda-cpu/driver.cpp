// A fake libcuda.so.1: the driver-API entry points cudarc's safe layer calls on this crate's
// paths, over host memory and the emulator's kernel table. One device, "cuda-cpu (emulated)",
// that reports itself like an H100 (sm_90, 132 SMs, 228 KiB shared per SM, 50 MB L2). Streams
// and events are synchronous: every copy and launch has finished when its call returns. A
// launch the emulator rejects (bounds, divergent barrier, deadlock, bad mask) returns
// CUDA_ERROR_LAUNCH_FAILED after printing why.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chrono>
#include <mutex>
#include <string>

#include "runtime.h"

#if EMU_COUNTERS
#include <elf.h>

#include "counters.h"
#endif

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUmodule;
typedef const emu::Kernel* CUfunction;
typedef void* CUstream;
typedef struct Event* CUevent;
typedef void (*CUhostFn)(void*);

struct Event {
    double ms = 0;
};

namespace {

enum : CUresult {
    OK = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    NOT_INITIALIZED = 3,
    INVALID_DEVICE = 101,
    INVALID_HANDLE = 400,
    NOT_FOUND = 500,
    LAUNCH_OUT_OF_RESOURCES = 701,
    LAUNCH_FAILED = 719,
    NOT_SUPPORTED = 801,
};

// The emulator runs one launch at a time: its fibers and shared memory are process-wide.
std::mutex big_lock;
bool initialised = false;
int the_context = 1, the_module = 1;

constexpr int kSms = 132;
constexpr int kSharedPerBlock = 48 * 1024, kSharedOptin = 227 * 1024, kSharedPerSm = 228 * 1024;
constexpr unsigned long long kTotalMem = 16ull << 30;

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

int attribute(int a) {
    switch (a) {
        case 1: return 1024;                 // max threads per block
        case 2: case 3: return 1024;         // max block dim x, y
        case 4: return 64;                   // z
        case 5: return 2147483647;           // max grid dim x
        case 6: case 7: return 65535;        // y, z
        case 8: return kSharedPerBlock;      // shared per block
        case 9: return 65536;                // constant memory
        case 10: return 32;                  // warp size
        case 12: return 65536;               // registers per block
        case 13: return 1980000;             // clock (kHz)
        case 16: return kSms;
        case 36: return 2619000;             // memory clock (kHz)
        case 37: return 5120;                // bus width
        case 38: return 50 * 1024 * 1024;    // L2
        case 39: return 2048;                // threads per SM
        case 41: return 1;                   // unified addressing
        case 75: return 9;                   // compute capability
        case 76: return 0;
        case 81: return kSharedPerSm;
        case 82: return 65536;               // registers per SM
        case 97: return kSharedOptin;
        case 106: return 32;                 // blocks per SM
        case 115: return 0;                  // no memory pools: cudarc takes cuMemAlloc / cuMemFree
        default: return 0;
    }
}

struct FuncAttrs {
    const emu::Kernel* k;
    int max_dynamic_shared = kSharedPerBlock;
};
FuncAttrs* attrs_of(CUfunction f);

}  // namespace

#define EXPORT extern "C" __attribute__((visibility("default")))
#define LOCK std::lock_guard<std::mutex> guard(big_lock)

EXPORT CUresult cuInit(unsigned) {
    LOCK;
    initialised = true;
    return OK;
}
EXPORT CUresult cuDriverGetVersion(int* v) {
    *v = 12090;
    return OK;
}
EXPORT CUresult cuDeviceGetCount(int* n) {
    *n = initialised ? 1 : 0;
    return initialised ? OK : NOT_INITIALIZED;
}
EXPORT CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *d = 0;
    return OK;
}
EXPORT CUresult cuDeviceGetAttribute(int* v, int attrib, CUdevice d) {
    if (d != 0) return INVALID_DEVICE;
    *v = attribute(attrib);
    return OK;
}
EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (d != 0 || len <= 0) return INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", "cuda-cpu (emulated)");
    return OK;
}
EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = kTotalMem;
    return OK;
}
EXPORT CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice) {
    memset(uuid, 0, 16);
    return OK;
}
EXPORT CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice) {
    memset(uuid, 0, 16);
    return OK;
}
EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice) {
    *c = &the_context;
    return OK;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }
EXPORT CUresult cuCtxSetCurrent(CUcontext) { return OK; }
EXPORT CUresult cuCtxGetCurrent(CUcontext* c) {
    *c = &the_context;
    return OK;
}
EXPORT CUresult cuCtxPushCurrent_v2(CUcontext) { return OK; }
EXPORT CUresult cuCtxPopCurrent_v2(CUcontext* c) {
    if (c) *c = &the_context;
    return OK;
}
EXPORT CUresult cuCtxGetDevice(CUdevice* d) {
    *d = 0;
    return OK;
}
EXPORT CUresult cuCtxSynchronize() { return OK; }
EXPORT CUresult cuCtxSetFlags(unsigned) { return OK; }
EXPORT CUresult cuCtxGetLimit(size_t* v, int) {
    *v = 0;
    return OK;
}
EXPORT CUresult cuCtxSetLimit(int, size_t) { return OK; }
EXPORT CUresult cuCtxGetStreamPriorityRange(int* lo, int* hi) {
    if (lo) *lo = 0;
    if (hi) *hi = 0;
    return OK;
}
EXPORT CUresult cuMemGetInfo_v2(size_t* free_b, size_t* total) {
    *free_b = kTotalMem;
    *total = kTotalMem;
    return OK;
}

// ---- memory: host allocations stand in for device ones ---------------------------------------

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    // 256-byte aligned, as the real driver's: sector counts and vector loads see the same
    // alignment as on a GPU. The size is not rounded up, so ASan still sees a byte past the end.
    void* m = nullptr;
    if (posix_memalign(&m, 256, bytes ? bytes : 1) != 0) return OUT_OF_MEMORY;
    *p = (CUdeviceptr)m;
#if EMU_COUNTERS
    emu::counters::note_alloc(*p, bytes);
#endif
    return OK;
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
#if EMU_COUNTERS
    emu::counters::note_free(p);
#endif
    free((void*)p);
    return OK;
}
EXPORT CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream) { return cuMemAlloc_v2(p, bytes); }
EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return cuMemFree_v2(p); }
EXPORT CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) {
    *p = malloc(bytes ? bytes : 1);
    return *p ? OK : OUT_OF_MEMORY;
}
EXPORT CUresult cuMemFreeHost(void* p) {
    free(p);
    return OK;
}
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    LOCK;
    if (n) memcpy((void*)dst, src, n);
    return OK;
}
EXPORT CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    LOCK;
    if (n) memcpy(dst, (const void*)src, n);
    return OK;
}
EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    LOCK;
    if (n) memmove((void*)dst, (const void*)src, n);
    return OK;
}
EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream) { return cuMemcpyHtoD_v2(dst, src, n); }
EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream) { return cuMemcpyDtoH_v2(dst, src, n); }
EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream) { return cuMemcpyDtoD_v2(dst, src, n); }
EXPORT CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    LOCK;
    if (n) memset((void*)dst, v, n);
    return OK;
}
EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream) { return cuMemsetD8_v2(dst, v, n); }
EXPORT CUresult cuMemsetD16_v2(CUdeviceptr dst, unsigned short v, size_t n) {
    LOCK;
    for (size_t i = 0; i < n; ++i) memcpy((char*)dst + 2 * i, &v, 2);
    return OK;
}
EXPORT CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, CUstream) { return cuMemsetD16_v2(dst, v, n); }
EXPORT CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned v, size_t n) {
    LOCK;
    for (size_t i = 0; i < n; ++i) memcpy((char*)dst + 4 * i, &v, 4);
    return OK;
}
EXPORT CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n, CUstream) { return cuMemsetD32_v2(dst, v, n); }

// ---- streams and events (synchronous) ----------------------------------------------------------

EXPORT CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = new int(0);
    return OK;
}
EXPORT CUresult cuStreamCreateWithPriority(CUstream* s, unsigned f, int) { return cuStreamCreate(s, f); }
EXPORT CUresult cuStreamDestroy_v2(CUstream s) {
    delete static_cast<int*>(s);
    return OK;
}
EXPORT CUresult cuStreamSynchronize(CUstream) { return OK; }
EXPORT CUresult cuStreamQuery(CUstream) { return OK; }
EXPORT CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned) { return OK; }
EXPORT CUresult cuStreamIsCapturing(CUstream, int* status) {
    *status = 0;
    return OK;
}
EXPORT CUresult cuLaunchHostFunc(CUstream, CUhostFn fn, void* data) {
    fn(data);
    return OK;
}
EXPORT CUresult cuEventCreate(CUevent* e, unsigned) {
    *e = new Event();
    return OK;
}
EXPORT CUresult cuEventDestroy_v2(CUevent e) {
    delete e;
    return OK;
}
EXPORT CUresult cuEventRecord(CUevent e, CUstream) {
    if (!e) return INVALID_HANDLE;
    e->ms = now_ms();
    return OK;
}
EXPORT CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned) { return cuEventRecord(e, s); }
EXPORT CUresult cuEventSynchronize(CUevent) { return OK; }
EXPORT CUresult cuEventQuery(CUevent) { return OK; }
EXPORT CUresult cuEventElapsedTime(float* ms, CUevent a, CUevent b) {
    if (!a || !b) return INVALID_HANDLE;
    *ms = (float)(b->ms - a->ms);
    return OK;
}
EXPORT CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }

// ---- modules and launches ----------------------------------------------------------------------

#if EMU_COUNTERS
namespace {
// What ptxas gave each kernel of a cubin: registers (EIATTR_REGCOUNT entries of `.nv.info`,
// naming the kernel's symbol) and static shared memory (the size of `.nv.shared.<kernel>`, which
// includes the 1 KiB sm_90 reserves per block).
void read_cubin(const unsigned char* img) {
    const Elf64_Ehdr* eh = reinterpret_cast<const Elf64_Ehdr*>(img);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64) return;
    const Elf64_Shdr* sh = reinterpret_cast<const Elf64_Shdr*>(img + eh->e_shoff);
    const char* names = reinterpret_cast<const char*>(img + sh[eh->e_shstrndx].sh_offset);
    const Elf64_Shdr *info = nullptr, *symtab = nullptr;
    for (int i = 0; i < eh->e_shnum; ++i) {
        if (!strcmp(names + sh[i].sh_name, ".nv.info")) info = &sh[i];
        if (sh[i].sh_type == SHT_SYMTAB) symtab = &sh[i];
    }
    if (!info || !symtab) return;
    const Elf64_Sym* syms = reinterpret_cast<const Elf64_Sym*>(img + symtab->sh_offset);
    const size_t nsyms = symtab->sh_size / sizeof(Elf64_Sym);
    const char* symnames = reinterpret_cast<const char*>(img + sh[symtab->sh_link].sh_offset);
    const unsigned char* p = img + info->sh_offset;
    const unsigned char* end = p + info->sh_size;
    while (p + 4 <= end) {
        const unsigned fmt = p[0], attr = p[1];
        if (fmt != 4) {  // entries without a payload are 4 bytes
            p += 4;
            continue;
        }
        unsigned short size;
        memcpy(&size, p + 2, 2);
        if (attr == 0x2f && size >= 8) {  // EIATTR_REGCOUNT: symbol index, registers
            unsigned sym, regs;
            memcpy(&sym, p + 4, 4);
            memcpy(&regs, p + 8, 4);
            if (sym < nsyms) {
                const char* kernel = symnames + syms[sym].st_name;
                uint64_t shared = 0;
                const std::string want = std::string(".nv.shared.") + kernel;
                for (int j = 0; j < eh->e_shnum; ++j)
                    if (want == names + sh[j].sh_name) shared = sh[j].sh_size >= 1024 ? sh[j].sh_size - 1024 : sh[j].sh_size;
                emu::counters::note_resources(kernel, (int)regs, shared);
            }
        }
        p += 4 + size;
    }
}
}  // namespace
#endif

// The image (PTX or a cubin) is not run: every kernel of every family is already in the table.
// The counters build reads a cubin's register and shared-memory use, for occupancy.
EXPORT CUresult cuModuleLoadData(CUmodule* m, const void* image) {
#if EMU_COUNTERS
    if (image) read_cubin(static_cast<const unsigned char*>(image));
#else
    (void)image;
#endif
    *m = &the_module;
    return OK;
}
EXPORT CUresult cuModuleLoadDataEx(CUmodule* m, const void* image, unsigned, void*, void*) { return cuModuleLoadData(m, image); }
EXPORT CUresult cuModuleUnload(CUmodule) { return OK; }
EXPORT CUresult cuModuleGetFunction(CUfunction* f, CUmodule, const char* name) {
    const emu::Kernel* k = emu::find_kernel(name);
    if (!k) return NOT_FOUND;
    *f = k;
    return OK;
}

namespace {
FuncAttrs* attrs_of(CUfunction f) {
    static std::mutex m;
    static FuncAttrs* table = nullptr;
    static int n = 0, cap = 0;
    std::lock_guard<std::mutex> g(m);
    for (int i = 0; i < n; ++i)
        if (table[i].k == f) return &table[i];
    if (n == cap) {
        cap = cap ? 2 * cap : 64;
        FuncAttrs* t = new FuncAttrs[cap];
        for (int i = 0; i < n; ++i) t[i] = table[i];
        delete[] table;  // callers only hold pointers for the length of one call
        table = t;
    }
    table[n] = FuncAttrs{f};
    return &table[n++];
}
}  // namespace

EXPORT CUresult cuFuncGetAttribute(int* v, int attrib, CUfunction f) {
    if (!f) return INVALID_HANDLE;
    switch (attrib) {
        case 0: *v = f->max_threads; break;
        case 4: *v = 32; break;
        case 8: *v = attrs_of(f)->max_dynamic_shared; break;
        default: *v = 0; break;
    }
    return OK;
}
EXPORT CUresult cuFuncSetAttribute(CUfunction f, int attrib, int v) {
    if (!f) return INVALID_HANDLE;
    if (attrib == 8) {
        if (v < 0 || v > kSharedOptin) return INVALID_VALUE;
        attrs_of(f)->max_dynamic_shared = v;
    }
    return OK;
}
EXPORT CUresult cuFuncSetCacheConfig(CUfunction, int) { return OK; }

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shared, CUstream, void** params, void** extra) {
    if (!f) return INVALID_HANDLE;
    if (extra) {
        fprintf(stderr, "cuda-cpu: %s: cuLaunchKernel's `extra` argument is not supported\n", f->name);
        return NOT_SUPPORTED;
    }
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 || gy > 65535 || gz > 65535 || bx > 1024 ||
        by > 1024 || bz > 64 || gx > 2147483647u) {
        fprintf(stderr, "cuda-cpu: %s: invalid launch grid (%u,%u,%u) block (%u,%u,%u)\n", f->name, gx, gy, gz, bx, by, bz);
        return INVALID_VALUE;
    }
    if ((int)shared > attrs_of(f)->max_dynamic_shared) {
        fprintf(stderr, "cuda-cpu: %s: %u bytes of dynamic shared memory over its limit of %d\n", f->name, shared,
                attrs_of(f)->max_dynamic_shared);
        return INVALID_VALUE;
    }
    LOCK;
    const std::string err = emu::launch(*f, dim3{gx, gy, gz}, dim3{bx, by, bz}, shared, params);
    if (err.empty()) return OK;
    return (unsigned long long)bx * by * bz > (unsigned long long)f->max_threads ? LAUNCH_OUT_OF_RESOURCES : LAUNCH_FAILED;
}

EXPORT CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, CUfunction f, int block, size_t) {
    if (!f || block <= 0) return INVALID_VALUE;
    *n = 2048 / block < 32 ? 2048 / block : 32;
    return OK;
}
EXPORT CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* n, CUfunction f, int block, size_t s, unsigned) {
    return cuOccupancyMaxActiveBlocksPerMultiprocessor(n, f, block, s);
}

EXPORT CUresult cuGetErrorName(CUresult e, const char** s) {
    switch (e) {
        case OK: *s = "CUDA_SUCCESS"; break;
        case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
        case OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
        case INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
        case INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
        case NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
        case LAUNCH_OUT_OF_RESOURCES: *s = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"; break;
        case LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
        case NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
        default: *s = "CUDA_ERROR_UNKNOWN"; return INVALID_VALUE;
    }
    return OK;
}
EXPORT CUresult cuGetErrorString(CUresult e, const char** s) {
    const CUresult r = cuGetErrorName(e, s);
    if (e == LAUNCH_FAILED) *s = "the emulated launch failed (cuda-cpu printed why on stderr)";
    return r;
}
