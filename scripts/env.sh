# Sourced by scripts/test.sh and scripts/verify.sh: installs what is missing and exports paths.
#   - Mesa's lavapipe (Debian: mesa-vulkan-drivers), so every WGSL kernel runs on the CPU;
#   - clang 19 with its sanitizer runtimes (Debian: clang-19, libclang-rt-19-dev), so every CUDA
#     kernel runs on the emulated CUDA device (scripts/cuda-cpu.sh) under ASan and TSan too;
#   - NVRTC, CUDA headers and ptxas wheels (scripts/setup-cuda.sh), so every CUDA kernel is
#     compiled to PTX and assembled.
# Under CI=true a failed install is fatal; elsewhere it is reported and the run goes on.
mllm_fail() {
  echo "$1" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
}

mllm_missing=()
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || mllm_missing+=(mesa-vulkan-drivers)
command -v clang++-19 >/dev/null || mllm_missing+=(clang-19)
{ command -v clang++-19 >/dev/null && [ -f "$(clang++-19 -print-file-name=libclang_rt.tsan-x86_64.so)" ]; } \
  || mllm_missing+=(libclang-rt-19-dev)
if [ ${#mllm_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${mllm_missing[*]}" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${mllm_missing[@]}" >/dev/null; } \
      || mllm_fail "could not install ${mllm_missing[*]}"
  else
    mllm_fail "missing ${mllm_missing[*]}: install them (as root) for the wgpu backend without a GPU (mesa-vulkan-drivers) and the emulated CUDA device (clang-19, libclang-rt-19-dev)"
  fi
fi

if mllm_env_lines=$(scripts/setup-cuda.sh); then
  eval "$mllm_env_lines"
else
  mllm_fail "could not install the CUDA wheels (NVRTC, ptxas): CUDA kernels will be embedded as source"
fi

# lavapipe wants a runtime dir; a bare container has none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
