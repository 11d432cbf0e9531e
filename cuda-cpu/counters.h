// Kernel counters of the emulated device (scripts/cuda-cpu.sh --counters): what a launch asks of
// memory, counted from every load and store of the kernels (clang's -fsanitize-coverage load
// and store hooks) and grouped as a GPU would group them, by warp and instruction.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "include/cuda_emu.h"

// One launch's counters, as `bench --counters` reads them (src/harness/counters.rs mirrors it).
struct CudaCpuLaunch {
    char kernel[64];
    uint32_t grid[3], block[3];
    uint64_t dynamic_shared, static_shared;  // bytes per block
    int32_t registers;                       // per thread, from the sm_90 cubin (0: unknown)
    int32_t blocks_per_sm;                   // occupancy on the modelled card (0: unknown)
    double waves;                            // blocks / (blocks_per_sm * SMs)
    uint64_t load_bytes, store_bytes;        // global bytes requested
    uint64_t load_requests, load_sectors;    // warp-level requests and the 32-byte sectors they touch
    uint64_t store_requests, store_sectors;
    uint64_t unique_sectors;                 // distinct sectors touched: the compulsory traffic
    uint64_t dram_read_bytes, dram_write_bytes;  // through an L2 of the card's size (l2_bytes), cold at launch
    uint64_t shared_requests, shared_wavefronts, shared_ideal_wavefronts;
    uint64_t mma_macs;                       // multiply-adds of warp-wide mma.sync instructions
};

namespace emu {
namespace counters {

constexpr int kSms = 132;
// The modelled L2: an H100's 50 MB, or MLLM_CUDA_CPU_L2_MB megabytes.
uint64_t l2_bytes();

void note_alloc(uint64_t ptr, uint64_t bytes);
void note_free(uint64_t ptr);
void note_resources(const char* kernel, int registers, uint64_t static_shared);

// Called by the runtime (only in the counters build).
void begin_launch(const char* kernel, dim3 grid, dim3 block, size_t dynamic_shared, const unsigned char* shared_lo,
                  const unsigned char* shared_hi, const unsigned char* dyn_lo);
void begin_block(int nthreads);
void flush_thread(int linear);  // at a barrier, a warp collective and the thread's end
void end_block();
void end_launch();
void mma(int lane, uint64_t macs);

}  // namespace counters
}  // namespace emu
