#!/usr/bin/env bash
# Runs COMMAND with the emulated CUDA device (cuda-cpu/) in place of the NVIDIA driver: every CUDA
# kernel of the crate, compiled from kernels/*.cu by clang, runs on the CPU behind a fake
# libcuda.so.1, through the crate's own cudarc path. It proves a kernel's logic and memory
# safety, not its code generation, inter-block behaviour or speed (ARCHITECTURE.md).
#
#   scripts/cuda-cpu.sh [--sanitize address|thread] [--order fwd|rev|rand:SEED] -- COMMAND...
#   scripts/cuda-cpu.sh --build-only [--sanitize ...]     # build, print the library's folder
#   scripts/cuda-cpu.sh --selftest [--sanitize ...] [--order ...]   # the emulator's own checks
#   scripts/cuda-cpu.sh --counters -- target/release/mllm-kernels bench --backend cuda --counters
#     (kernel counters: every load and store counted, see cuda-cpu/counters.h; `--counters` is a
#     build of its own, like a sanitizer)
#
# e.g. scripts/cuda-cpu.sh -- target/release/mllm-kernels verify --backend cuda
# The device is built into target/cuda-cpu/<plain|address|thread>/ when its sources changed
# (kernels/, cuda-cpu/, the status bits, the compiler). It needs clang-19 (Debian: clang-19
# and libclang-rt-19-dev for the sanitizers; scripts/env.sh installs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sanitize=plain order=fwd build_only=0 selftest=0
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize=$2; shift 2 ;;
    --order) order=$2; shift 2 ;;
    --build-only) build_only=1; shift ;;
    --selftest) selftest=1; shift ;;
    --counters) sanitize=counters; shift ;;
    --) shift; break ;;
    *) echo "cuda-cpu.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$sanitize" in plain|address|thread|counters) ;; *) echo "cuda-cpu.sh: --sanitize address|thread" >&2; exit 2 ;; esac
if [ $build_only = 0 ] && [ $selftest = 0 ] && [ $# = 0 ]; then echo "cuda-cpu.sh: no COMMAND after --" >&2; exit 2; fi

cxx=${MLLM_CUDA_CPU_CXX:-clang++-19}
if ! command -v "$cxx" >/dev/null; then
  echo "cuda-cpu.sh: $cxx not found: install clang-19 and libclang-rt-19-dev (scripts/env.sh does, as root on Debian)" >&2
  exit 3
fi

out="$root/target/cuda-cpu/$sanitize"
gen="$out/gen"
mkdir -p "$gen"
base_flags=(-std=c++17 -fPIC -g -fno-strict-aliasing -fvisibility=hidden -Wall -Wno-unused-function
  -Wno-pragma-once-outside-header -Wno-unused-variable -Wno-unused-but-set-variable
  -I "$root/cuda-cpu/include" -I "$root/cuda-cpu")
case "$sanitize" in
  plain) kflags=(-O2) rflags=() lflags=() ;;
  # No fake stacks (use after return): each fiber would map and unmap one of its own.
  address) kflags=(-O1 -fsanitize=address,undefined -fsanitize-address-use-after-return=never -fno-sanitize-recover=all -fno-omit-frame-pointer)
           rflags=(-DEMU_ASAN=1) lflags=(-fsanitize=address,undefined -shared-libsan) ;;
  thread) kflags=(-O1 -fsanitize=thread) rflags=(-DEMU_TSAN=1) lflags=(-fsanitize=thread -shared-libsan) ;;
  # Every load and store of the kernels reaches a hook; no x86 vectorizing, so loads stay the
  # width the source gives them, as on a GPU.
  counters) kflags=(-O2 -fno-vectorize -fno-slp-vectorize -fsanitize-coverage=trace-pc-guard,trace-loads,trace-stores)
            rflags=(-DEMU_COUNTERS=1) lflags=() ;;
esac

# Rebuild only when an input changed: the stamp is a hash of every source and the flags.
stamp=$( (cat "$root"/cuda-cpu/*.cpp "$root"/cuda-cpu/*.h "$root"/cuda-cpu/gen.py "$root"/cuda-cpu/include/* \
           "$root"/kernels/* "$root/src/backend/status_bits.rs"; "$cxx" --version; echo "${kflags[*]} ${lflags[*]}") \
         | sha256sum | cut -c1-16)
lib="$out/libcuda.so.1"
# One build at a time per folder (tests run several of these at once); the runs themselves
# share the built library.
exec 9> "$out/.lock"
flock 9
if [ ! -f "$lib" ] || [ "$(cat "$out/stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "cuda-cpu: building the emulated CUDA device ($sanitize) into $out" >&2
  t0=$(date +%s)
  families=$(python3 "$root/cuda-cpu/gen.py" --root "$root" --out "$gen" --cxx "$cxx" --extra cuda-cpu/selftest.cu)
  jobs=$(nproc 2>/dev/null || echo 2)
  pids=()
  compile() {  # src obj flags...
    local src=$1 obj=$2; shift 2
    "$cxx" "${base_flags[@]}" "$@" -c "$src" -o "$obj" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  }
  objs=()
  for f in $families; do
    compile "$gen/$f.cpp" "$out/$f.kernels.o" "${kflags[@]}" -I "$gen"
    [ "$f" = selftest ] || objs+=("$out/$f.kernels.o")
  done
  runtime=(runtime driver)
  [ "$sanitize" = counters ] && runtime+=(counters)
  for r in "${runtime[@]}"; do compile "$root/cuda-cpu/$r.cpp" "$out/$r.o" -O2 -fno-builtin "${rflags[@]}"; done
  compile "$root/cuda-cpu/selftest.cpp" "$out/selftest.o" -O1 "${rflags[@]}"
  for p in "${pids[@]}"; do wait "$p"; done
  rt_objs=("${runtime[@]/#/$out/}")
  rt_objs=("${rt_objs[@]/%/.o}")
  "$cxx" -shared -Wl,-soname,libcuda.so.1 "${lflags[@]}" -o "$lib" "${objs[@]}" "${rt_objs[@]}" -lpthread -ldl
  st_objs=("$out/runtime.o")
  [ "$sanitize" = counters ] && st_objs+=("$out/counters.o")
  "$cxx" "${lflags[@]/-shared-libsan/}" -o "$out/selftest" "$out/selftest.kernels.o" "${st_objs[@]}" "$out/selftest.o" -lpthread -ldl
  ln -sf libcuda.so.1 "$out/libcuda.so"
  echo "$stamp" > "$out/stamp"
  echo "cuda-cpu: built in $(( $(date +%s) - t0 )) s" >&2
fi
flock -u 9
exec 9>&-
if [ $build_only = 1 ]; then echo "$out"; exit 0; fi

export MLLM_CUDA_CPU_ORDER="$order" MLLM_CUDA_CPU_SANITIZE="$sanitize"
if [ $selftest = 1 ]; then
  # Planted bugs run in forked children, which end at their sanitizer's first report.
  ASAN_OPTIONS="detect_leaks=0" UBSAN_OPTIONS="print_stacktrace=0" TSAN_OPTIONS="halt_on_error=1:report_signal_unsafe=0" \
    exec "$out/selftest"
fi
export LD_LIBRARY_PATH="$out${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
case "$sanitize" in
  address)
    export LD_PRELOAD="$("$cxx" -print-file-name=libclang_rt.asan-x86_64.so)${LD_PRELOAD:+:$LD_PRELOAD}"
    # Leaks of the host program (Rust statics, drivers) are not the kernels' business.
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" ;;
  thread)
    export LD_PRELOAD="$("$cxx" -print-file-name=libclang_rt.tsan-x86_64.so)${LD_PRELOAD:+:$LD_PRELOAD}"
    # The host program is not instrumented: only the kernels' and the fake driver's accesses count.
    export TSAN_OPTIONS="halt_on_error=1:exitcode=66:ignore_noninstrumented_modules=1:report_signal_unsafe=0${TSAN_OPTIONS:+:$TSAN_OPTIONS}" ;;
esac
exec "$@"
