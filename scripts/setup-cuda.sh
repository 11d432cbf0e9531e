#!/usr/bin/env bash
# Installs NVRTC, the CUDA headers and ptxas from PyPI wheels into .cuda/ (ignored by git), so
# build.rs compiles every kernel to PTX and assembles cubins on a machine with no CUDA toolkit.
# build.rs and tests/ptx.rs look there by themselves (no environment to export).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cuda"
want="nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 nvidia-cuda-nvcc-cu12==12.9.86"
if [ ! -f "$dest/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ] || [ ! -x "$dest/nvidia/cuda_nvcc/bin/ptxas" ] \
   || [ ! -f "$dest/nvidia/cuda_runtime/include/cuda_bf16.h" ]; then
  echo "setup-cuda: installing $want into $dest" >&2
  py=$(command -v python3 || command -v python)
  # Installing into .cuda/ as root is what we want: no "running pip as root" warning.
  PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --disable-pip-version-check --upgrade --target "$dest" $want >&2
fi
# Nothing to export: build.rs and the tests find NVRTC, the headers and ptxas under .cuda/
# themselves, so the scripts and a plain `cargo` run share one environment and one build.
