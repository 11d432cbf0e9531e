#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need when it is missing, then runs
# the whole suite. Under CI=true a missing wgpu adapter or PTX compiler fails the run.
#   - Mesa's lavapipe (Debian: mesa-vulkan-drivers), so every WGSL kernel runs on the CPU;
#   - NVRTC, CUDA headers and ptxas wheels (scripts/setup-cuda.sh), so every CUDA kernel is
#     compiled to PTX and assembled for sm_80 and sm_90.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing lavapipe (mesa-vulkan-drivers)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  else
    echo "test.sh: lavapipe is missing and this is not a root Debian shell: install mesa-vulkan-drivers" >&2
    [ "${CI:-}" = true ] && exit 1
  fi
fi

if env_lines=$(scripts/setup-cuda.sh); then
  eval "$env_lines"
else
  echo "test.sh: could not install the CUDA wheels (NVRTC, ptxas)" >&2
  [ "${CI:-}" = true ] && exit 1
fi

# lavapipe wants a runtime dir; a bare container has none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# One thread per core: the wgpu tests share one adapter, and the machine has two cores.
cargo test --all-targets -- --test-threads=2 "$@"
