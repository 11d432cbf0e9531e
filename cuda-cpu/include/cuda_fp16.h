// The emulated device's stand-in for CUDA's <cuda_fp16.h>: everything is in cuda_emu.h.
#pragma once
#include "cuda_emu.h"
