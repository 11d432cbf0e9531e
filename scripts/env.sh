# Sourced by scripts/test.sh and scripts/verify.sh: installs what is missing and exports paths.
#   - Mesa's lavapipe (Debian: mesa-vulkan-drivers), so every WGSL kernel runs on the CPU;
#   - NVRTC, CUDA headers and ptxas wheels (scripts/setup-cuda.sh), so every CUDA kernel is
#     compiled to PTX and assembled.
# Under CI=true a failed install is fatal; elsewhere it is reported and the run goes on.
mllm_fail() {
  echo "$1" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
}

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing lavapipe (mesa-vulkan-drivers)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null; } \
      || mllm_fail "could not install mesa-vulkan-drivers"
  else
    mllm_fail "lavapipe is missing: install mesa-vulkan-drivers (as root) for the wgpu backend without a GPU"
  fi
fi

if mllm_env_lines=$(scripts/setup-cuda.sh); then
  eval "$mllm_env_lines"
else
  mllm_fail "could not install the CUDA wheels (NVRTC, ptxas): CUDA kernels will be embedded as source"
fi

# lavapipe wants a runtime dir; a bare container has none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
