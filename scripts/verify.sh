#!/usr/bin/env bash
# The main job (README): installs what is missing (scripts/env.sh), then runs `verify` on every
# backend present. Where no NVIDIA driver is, the CUDA kernels run on the emulated CUDA device
# (scripts/cuda-cpu.sh), reported as `cuda-cpu`: their logic, not GPU proof. Arguments go to
# `verify` (e.g. --family core, --backend wgpu).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo build --release --bin mllm-kernels
tool=target/release/mllm-kernels
if "$tool" devices | grep -q '^cuda  *present' || ! command -v clang++-19 >/dev/null; then
  exec "$tool" verify "$@"
fi
exec scripts/cuda-cpu.sh -- "$tool" verify "$@"
