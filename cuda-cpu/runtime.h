// The emulated device's runtime, as the fake driver (driver.cpp) and the generated kernel tables
// (gen.py) see it. Device code sees only include/cuda_emu.h.
#pragma once

#include <stddef.h>

#include <string>
#include <type_traits>
#include <utility>

#include "include/cuda_emu.h"

namespace emu {

// One `extern "C" __global__` entry point of a kernel file.
struct Kernel {
    const char* name;
    const char* family;
    int max_threads;          // __launch_bounds__'s first value, else 1024
    void (*run)(void** args);  // calls the kernel with cuLaunchKernel's argument array
};

// Called by each generated kernel table at load time.
struct Register {
    Register(const Kernel* kernels, int n);
};

const Kernel* find_kernel(const char* name);

// Runs a whole grid, block after block. Returns an empty string, or what went wrong (a launch
// over the kernel's bounds, a divergent barrier, a deadlock, a bad shuffle mask), already
// printed to stderr with the block and thread it happened in.
std::string launch(const Kernel& k, dim3 grid, dim3 block, size_t dynamic_shared_bytes, void** args);

// Calls a kernel with the arguments cuLaunchKernel received, each read as its parameter type.
template <typename... A, size_t... I>
inline void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_cv<A>::type*>(args[I])...);
}
template <typename... A>
inline void call(void (*f)(A...), void** args) {
    call_with(f, args, std::index_sequence_for<A...>{});
}

}  // namespace emu
