// Kernel counters (see counters.h). Every load and store of the instrumented kernels lands in a
// __sanitizer_cov_load/store hook with its address; the hook's return address names the static
// instruction. A lane's k-th execution of an instruction and the other lanes' k-th executions of
// it form one warp request, as on a GPU. Global requests count the 32-byte sectors they touch;
// shared ones the bank wavefronts (32 banks of 4 bytes) they need; every sector goes through an
// LRU model of the card's L2, cold at each launch, for the DRAM traffic.
#include "counters.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime.h"

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace emu {
namespace counters {
namespace {

struct Pending {
    uintptr_t site = 0;
    uint64_t addr = 0;
    uint32_t size = 0;
    bool store = false;
    uint32_t unit = 0;  // the size of each merged piece
};

struct Key {
    uintptr_t site;
    uint32_t warp, occurrence;
    bool store, shared;
    bool operator==(const Key& o) const {
        return site == o.site && warp == o.warp && occurrence == o.occurrence && store == o.store && shared == o.shared;
    }
};
struct KeyHash {
    size_t operator()(const Key& k) const {
        return std::hash<uint64_t>()(k.site * 0x9e3779b97f4a7c15ull ^ ((uint64_t)k.warp << 40) ^ ((uint64_t)k.occurrence << 1) ^
                                     (k.store ? 1u : 0u) ^ (k.shared ? 2u : 0u));
    }
};
struct Request {
    uint64_t bytes = 0;
    std::vector<uint64_t> units;  // sectors (global) or 4-byte words (shared)
};

std::mutex alloc_lock;
std::map<uint64_t, uint64_t> allocations;  // start -> bytes (device memory from cuMemAlloc)
std::unordered_map<std::string, std::pair<int, uint64_t>> resources;  // kernel -> registers, static shared

bool active = false;
CudaCpuLaunch cur;
const unsigned char *sh_lo, *sh_hi, *dyn_lo, *dyn_hi;
Pending pending[1024];
std::unordered_map<uintptr_t, uint32_t> occurrences[1024];
std::unordered_map<Key, Request, KeyHash> requests;
std::unordered_set<uint64_t> unique_sectors, written_sectors;
// The L2 model: most recent sector at the front.
std::list<uint64_t> lru;
std::unordered_map<uint64_t, std::list<uint64_t>::iterator> lru_pos;
std::vector<CudaCpuLaunch> records;

bool is_global(uint64_t a) {
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin()) return false;
    --it;
    return a < it->first + it->second;
}

void l2_touch(uint64_t sector, bool store) {
    auto it = lru_pos.find(sector);
    if (it != lru_pos.end()) {
        lru.splice(lru.begin(), lru, it->second);
    } else {
        if (!store) cur.dram_read_bytes += 32;
        lru.push_front(sector);
        lru_pos[sector] = lru.begin();
        if (lru.size() > l2_bytes() / 32) {
            lru_pos.erase(lru.back());
            lru.pop_back();
        }
    }
    if (store) written_sectors.insert(sector);
}

void record(int linear, const Pending& p) {
    const bool shared = ((const unsigned char*)p.addr >= sh_lo && (const unsigned char*)p.addr < sh_hi) ||
                        ((const unsigned char*)p.addr >= dyn_lo && (const unsigned char*)p.addr < dyn_hi);
    const uint32_t occ = occurrences[linear][p.site]++;
    Request& r = requests[Key{p.site, (uint32_t)(linear >> 5), occ, p.store, shared}];
    r.bytes += p.size;
    const uint64_t shift = shared ? 2 : 5;
    for (uint64_t u = p.addr >> shift; u <= (p.addr + p.size - 1) >> shift; ++u) r.units.push_back(u);
}

void note(const void* addr, uint32_t size, bool store, uintptr_t site) {
    if (!active || !current) return;
    const int linear = current->linear;
    Pending& p = pending[linear];
    const uint64_t a = (uint64_t)addr;
    // The thread's own stack and the emulator's host memory are registers and bookkeeping: they
    // neither count nor split a pending access.
    const unsigned char* c = (const unsigned char*)addr;
    if (!(c >= sh_lo && c < sh_hi) && !(c >= dyn_lo && c < dyn_hi) && !is_global(a)) return;
    // clang on x86 splits a 16-byte vector load or store (which nvcc keeps as one v4 access)
    // into 8- or 4-byte ones from separate sites, in either order: pieces of the same size that
    // adjoin, from different sites, merge up to an aligned 16 bytes. A rolled loop repeats one
    // site, so its accesses stay separate, as they are on a GPU.
    const uint64_t lo = a < p.addr ? a : p.addr;
    const bool adjoins = a == p.addr + p.size || (p.size == size && p.addr == a + size);
    if (p.size && size == p.unit && size < 16 && store == p.store && site != p.site && adjoins &&
        p.size + size <= 16 && (lo & 15) == 0) {
        p.size += size;
        p.addr = lo;
        p.site = p.site < site ? p.site : site;
        if (p.size == 16) {
            record(linear, p);
            p.size = 0;
        }
        return;
    }
    if (p.size) record(linear, p);
    p = Pending{site, a, size, store, size};
}

}  // namespace

uint64_t l2_bytes() {
    static const uint64_t bytes = [] {
        const char* mb = getenv("MLLM_CUDA_CPU_L2_MB");
        const unsigned long long v = mb ? strtoull(mb, nullptr, 10) : 0;
        return v ? (uint64_t)v << 20 : 50ull << 20;
    }();
    return bytes;
}

void note_alloc(uint64_t ptr, uint64_t bytes) {
    std::lock_guard<std::mutex> g(alloc_lock);
    allocations[ptr] = bytes;
}
void note_free(uint64_t ptr) {
    std::lock_guard<std::mutex> g(alloc_lock);
    allocations.erase(ptr);
}
void note_resources(const char* kernel, int registers, uint64_t static_shared) {
    std::lock_guard<std::mutex> g(alloc_lock);
    resources[kernel] = {registers, static_shared};
}

void begin_launch(const char* kernel, dim3 grid, dim3 block, size_t dynamic_shared, const unsigned char* shared_lo,
                  const unsigned char* shared_hi, const unsigned char* dyn) {
    active = true;
    cur = CudaCpuLaunch{};
    snprintf(cur.kernel, sizeof cur.kernel, "%s", kernel);
    cur.grid[0] = grid.x, cur.grid[1] = grid.y, cur.grid[2] = grid.z;
    cur.block[0] = block.x, cur.block[1] = block.y, cur.block[2] = block.z;
    cur.dynamic_shared = dynamic_shared;
    sh_lo = shared_lo;
    sh_hi = shared_hi;
    dyn_lo = dyn;
    dyn_hi = dyn ? dyn + dynamic_shared : dyn;
    unique_sectors.clear();
    written_sectors.clear();
    lru.clear();
    lru_pos.clear();
    std::lock_guard<std::mutex> g(alloc_lock);
    auto it = resources.find(kernel);
    const int threads = (int)(block.x * block.y * block.z), warps = (threads + 31) / 32;
    if (it != resources.end() && it->second.first > 0) {
        cur.registers = it->second.first;
        cur.static_shared = it->second.second;
        // Occupancy on an H100-like SM: 2048 threads, 32 blocks, 64 K registers (allocated per
        // warp in units of 256), 228 KiB of shared memory (1 KiB reserved per block).
        const int regs_per_warp = ((cur.registers * 32 + 255) / 256) * 256;
        int by_regs = regs_per_warp ? 65536 / (regs_per_warp * warps) : 32;
        const uint64_t smem = cur.static_shared + dynamic_shared + 1024;
        const int by_smem = (int)((228 * 1024) / smem);
        int b = std::min(std::min(32, 64 / warps), std::min(by_regs, by_smem));
        cur.blocks_per_sm = b;
        const double blocks = (double)grid.x * grid.y * grid.z;
        cur.waves = b > 0 ? blocks / ((double)b * kSms) : 0.0;
    }
}

void begin_block(int nthreads) {
    for (int i = 0; i < nthreads; ++i) {
        pending[i] = Pending{};
        occurrences[i].clear();
    }
}

void flush_thread(int linear) {
    if (!active) return;
    Pending& p = pending[linear];
    if (p.size) record(linear, p);
    p.size = 0;
}

void end_block() {
    if (!active) return;
    for (auto& kv : requests) {
        std::vector<uint64_t>& u = kv.second.units;
        std::sort(u.begin(), u.end());
        u.erase(std::unique(u.begin(), u.end()), u.end());
        if (kv.first.shared) {
            // Wavefronts: the most distinct words any one bank must serve (a broadcast is free).
            int per_bank[32] = {};
            for (uint64_t w : u) ++per_bank[w % 32];
            cur.shared_requests += 1;
            cur.shared_wavefronts += (uint64_t)*std::max_element(per_bank, per_bank + 32);
            cur.shared_ideal_wavefronts += (u.size() + 31) / 32;
            continue;
        }
        if (kv.first.store) {
            cur.store_requests += 1;
            cur.store_sectors += u.size();
            cur.store_bytes += kv.second.bytes;
        } else {
            cur.load_requests += 1;
            cur.load_sectors += u.size();
            cur.load_bytes += kv.second.bytes;
        }
        for (uint64_t s : u) {
            unique_sectors.insert(s);
            l2_touch(s, kv.first.store);
        }
    }
    requests.clear();
}

void end_launch() {
    if (!active) return;
    cur.unique_sectors = unique_sectors.size();
    cur.dram_write_bytes = 32 * written_sectors.size();
    records.push_back(cur);
    active = false;
}

void mma(int lane, uint64_t macs) {
    if (active && lane == 0) cur.mma_macs += macs;
}

}  // namespace counters
}  // namespace emu

// ---- what bench --counters reads ---------------------------------------------------------------

EXPORT int cuda_cpu_counters_read(CudaCpuLaunch* out, int max) {
    const int n = (int)emu::counters::records.size();
    for (int i = 0; i < n && i < max; ++i) out[i] = emu::counters::records[i];
    return n;
}
EXPORT void cuda_cpu_counters_reset() { emu::counters::records.clear(); }
EXPORT int cuda_cpu_counters_layout() { return (int)sizeof(CudaCpuLaunch); }

// ---- clang's coverage hooks (the kernels are compiled with trace-pc-guard,trace-loads,trace-stores)

#define EMU_RET ((uintptr_t)__builtin_return_address(0))
EXPORT void __sanitizer_cov_trace_pc_guard_init(uint32_t*, uint32_t*) {}
EXPORT void __sanitizer_cov_trace_pc_guard(uint32_t*) {}
EXPORT void __sanitizer_cov_load1(uint8_t* a) { emu::counters::note(a, 1, false, EMU_RET); }
EXPORT void __sanitizer_cov_load2(uint16_t* a) { emu::counters::note(a, 2, false, EMU_RET); }
EXPORT void __sanitizer_cov_load4(uint32_t* a) { emu::counters::note(a, 4, false, EMU_RET); }
EXPORT void __sanitizer_cov_load8(uint64_t* a) { emu::counters::note(a, 8, false, EMU_RET); }
EXPORT void __sanitizer_cov_load16(__int128* a) { emu::counters::note(a, 16, false, EMU_RET); }
EXPORT void __sanitizer_cov_store1(uint8_t* a) { emu::counters::note(a, 1, true, EMU_RET); }
EXPORT void __sanitizer_cov_store2(uint16_t* a) { emu::counters::note(a, 2, true, EMU_RET); }
EXPORT void __sanitizer_cov_store4(uint32_t* a) { emu::counters::note(a, 4, true, EMU_RET); }
EXPORT void __sanitizer_cov_store8(uint64_t* a) { emu::counters::note(a, 8, true, EMU_RET); }
EXPORT void __sanitizer_cov_store16(__int128* a) { emu::counters::note(a, 16, true, EMU_RET); }
