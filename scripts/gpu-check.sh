#!/usr/bin/env bash
# The GPU check, in two halves:
#   scripts/gpu-check.sh build          here (Rust toolchain, no GPU needed): release test binary,
#                                       the tool and the baseline script into .gpu-bundle/
#   scripts/gpu-check.sh run OUTDIR     on a Linux x86-64 host with an NVIDIA GPU and no Rust:
#                                       CUDA tests, verify --backend cuda, bench, PyTorch baselines;
#                                       writes report.md, *.json, logs and gpu_verified.txt to OUTDIR.
#   scripts/gpu-check.sh ncu OUTDIR     on the same host, as a device call of its own: ncu over
#                                       `bench --counters` (the cases the emulated device counts),
#                                       set beside the emulator's figures (ncu_compare.txt).
# The run half is one command meant to finish in well under 8 minutes; ncu in under 5.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

build() {
  set -e
  cd "$here/.."
  if env_lines=$(scripts/setup-cuda.sh); then eval "$env_lines"; fi
  local b=.gpu-bundle
  rm -rf "$b" && mkdir -p "$b"
  cargo build --release --bin mllm-kernels
  local test_bin
  test_bin=$(cargo test --release --test kernels --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys,json
for l in sys.stdin:
    try: m=json.loads(l)
    except Exception: continue
    if m.get("reason")=="compiler-artifact" and m.get("target",{}).get("name")=="kernels" and m.get("executable"): print(m["executable"])' | tail -n 1)
  [ -n "$test_bin" ] || { echo "gpu-check: no test binary" >&2; exit 1; }
  cp target/release/mllm-kernels "$b/mllm-kernels"
  cp "$test_bin" "$b/kernels-tests"
  strip "$b/mllm-kernels" "$b/kernels-tests" 2>/dev/null || true
  cp scripts/gpu-check.sh scripts/baselines.py scripts/ncu_compare.py "$b/"
  # The emulated device's counts of the counter cases, for `ncu` to be compared with (best
  # effort: it needs clang-19, and takes a few minutes).
  scripts/cuda-cpu.sh --counters -- target/release/mllm-kernels bench --backend cuda --counters \
    --json "$b/counters.json" > /dev/null \
    || echo "gpu-check: no emulator counters (clang-19 missing?); the ncu pass will print ncu alone" >&2
  # flash-linear-attention's kernels (fla-core: pure Python over Triton, 6 MB) and einops for the
  # fla baselines: the GPU host has PyTorch and Triton but may lack these, and cannot download.
  # Best effort.
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-compile --target "$b/py" fla-core einops >&2 \
    || echo "gpu-check: could not fetch flash-linear-attention; its baselines will be skipped" >&2
  git rev-parse --short HEAD > "$b/COMMIT" 2>/dev/null || echo unknown > "$b/COMMIT"
  git diff --quiet HEAD 2>/dev/null || echo "+dirty" >> "$b/COMMIT"
  du -sh "$b"
  local kib
  kib=$(du -sk "$b" | cut -f1)
  [ "$kib" -lt $((60 * 1024)) ] || { echo "gpu-check: bundle is ${kib} KiB, over 60 MiB" >&2; exit 1; }
}

# The bundle's folder: in the bundle the binaries sit beside this script; in a checkout, in
# .gpu-bundle/.
bundle() {
  if [ -x "$here/mllm-kernels" ]; then echo "$here"; else echo "$here/../.gpu-bundle"; fi
}

run() {
  local out=${1:?usage: gpu-check.sh run OUTDIR}
  mkdir -p "$out"
  local b
  b=$(bundle)
  local commit
  commit=$(tr -d '\n' < "$b/COMMIT" 2>/dev/null || echo unknown)
  local t0=$SECONDS
  command -v nvidia-smi >/dev/null || echo "gpu-check: nvidia-smi not found: is this a GPU host?" >&2
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
  local card
  card=$(head -n 1 "$out/gpu.txt" | cut -d, -f1)
  export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

  echo "== tests (CUDA and every other backend present)"
  MLLM_KERNELS_BIN="$b/mllm-kernels" timeout 240 "$b/kernels-tests" --test-threads=4 > "$out/tests.log" 2>&1
  local tests_rc=$?
  tail -n 3 "$out/tests.log"

  echo "== verify --backend cuda"
  timeout 120 "$b/mllm-kernels" verify --backend cuda --proof "$out/gpu_verified.txt" --commit "$commit" --card "$card" \
    > "$out/verify.log" 2>&1
  local verify_rc=$?
  tail -n 2 "$out/verify.log"

  # compute-sanitizer on verify: out-of-bounds and misaligned accesses (memcheck), shared-memory
  # races (racecheck), reads of uninitialized device memory (initcheck). Slow, so each tool has a
  # time box; MLLM_SANITIZE=0 skips it. A tool that finds errors exits 3.
  local san_rc=skipped
  : > "$out/sanitizer.log"
  local san
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ "${MLLM_SANITIZE:-1}" != 0 ] && [ -n "$san" ]; then
    echo "== compute-sanitizer (memcheck, racecheck, initcheck) on verify --backend cuda"
    san_rc=0
    # Time boxes that keep the whole run inside one 10-minute device call; a tool cut short
    # reports exit 124 and what it saw until then.
    for tool in memcheck:60 racecheck:60 initcheck:45; do
      local box=${tool#*:}
      tool=${tool%:*}
      echo "-- $tool" >> "$out/sanitizer.log"
      timeout "$box" "$san" --tool "$tool" --error-exitcode 3 --print-limit 20 \
        "$b/mllm-kernels" verify --backend cuda --seed 1 >> "$out/sanitizer.log" 2>&1
      local rc=$?
      echo "-- $tool exit $rc" >> "$out/sanitizer.log"
      [ $rc = 0 ] || san_rc="$san_rc $tool:$rc"
    done
    grep -E "^-- |ERROR SUMMARY|RACECHECK SUMMARY" "$out/sanitizer.log"
  else
    echo "== compute-sanitizer skipped (MLLM_SANITIZE=0 or not installed)"
  fi

  echo "== bench --backend cuda"
  timeout 180 "$b/mllm-kernels" bench --backend cuda --iters 100 --json "$out/bench.json" > "$out/bench.log" 2>&1
  local bench_rc=$?
  cat "$out/bench.log"

  echo "== PyTorch baselines"
  PYTHONPATH="$b/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 timeout 150 python3 "$b/baselines.py" --json "$out/baselines.json" > "$out/baselines.log" 2>&1
  local base_rc=$?
  cat "$out/baselines.log"

  {
    echo "# GPU check"
    echo
    echo "- card: $(cat "$out/gpu.txt")"
    echo "- commit: $commit"
    echo "- date: $(date -u +%Y-%m-%d)"
    echo "- exit codes: tests $tests_rc, verify $verify_rc, sanitizer $san_rc, bench $bench_rc, baselines $base_rc"
    echo "- wall time: $((SECONDS - t0)) s"
    echo
    echo "## Tests"; echo '```'; tail -n 30 "$out/tests.log"; echo '```'
    echo "## verify --backend cuda"; echo '```'; cat "$out/verify.log"; echo '```'
    echo "## compute-sanitizer"; echo '```'; grep -E "^-- |ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race|Uninitialized" "$out/sanitizer.log" | head -60; echo '```'
    echo "## bench --backend cuda"; echo '```'; cat "$out/bench.log"; echo '```'
    echo "## PyTorch baselines (same card, same run)"; echo '```'; cat "$out/baselines.log"; echo '```'
    echo "## Lines for GPU_VERIFIED.md"; echo '```'; cat "$out/gpu_verified.txt" 2>/dev/null; echo '```'
  } > "$out/report.md"
  echo "report: $out/report.md"
  [ $tests_rc = 0 ] && [ $verify_rc = 0 ] && [ $bench_rc = 0 ]
}

# ncu over one untimed launch per counter case: what the emulator's counters model, measured.
ncu_pass() {
  local out=${1:?usage: gpu-check.sh ncu OUTDIR}
  mkdir -p "$out"
  local b
  b=$(bundle)
  local ncu
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
  [ -n "$ncu" ] || { echo "gpu-check: ncu not found" >&2; return 1; }
  local metrics=dram__bytes_read.sum,dram__bytes_write.sum
  metrics+=,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum
  metrics+=,l1tex__t_requests_pipe_lsu_mem_global_op_st.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum
  metrics+=,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,sm__warps_active.avg.pct_of_peak_sustained_active
  metrics+=,launch__registers_per_thread,launch__waves_per_multiprocessor
  echo "== ncu over bench --counters (one launch per case)"
  timeout 280 "$ncu" --csv --metrics "$metrics" "$b/mllm-kernels" bench --backend cuda --counters \
    > "$out/ncu.csv" 2> "$out/ncu.log"
  local rc=$?
  if [ -f "$b/counters.json" ]; then
    python3 "$b/ncu_compare.py" "$out/ncu.csv" "$b/counters.json" | tee "$out/ncu_compare.txt"
  else
    echo "no counters.json in the bundle: ncu's figures alone are in $out/ncu.csv"
  fi
  return $rc
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  ncu) shift; ncu_pass "$@" ;;
  *) echo "usage: $0 build | run OUTDIR | ncu OUTDIR" >&2; exit 2 ;;
esac
