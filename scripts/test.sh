#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need when it is missing (see
# scripts/env.sh), then runs the whole suite. Under CI=true a missing wgpu adapter or PTX
# compiler fails the run. Extra arguments go to the test binaries (e.g. a name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
# The emulated CUDA device's sanitizer and counters builds (tests/cuda_cpu.rs needs them) compile
# in the background while cargo builds the tests, whose last steps use one core. Each is built
# once, when its sources change; a test that needs one waits on its lock, and a failed build
# here is rebuilt and reported by the test itself.
if command -v clang++-19 >/dev/null; then
  mkdir -p target
  (for b in "--sanitize address" "--sanitize thread" "--counters"; do
     scripts/cuda-cpu.sh $b --build-only || true
   done) > target/cuda-cpu-prebuild.log 2>&1 &
  prebuild=$!
  trap 'kill "$prebuild" 2>/dev/null || true' EXIT
fi
# The release profile (with the crate's overflow checks on, Cargo.toml): the build
# scripts/verify.sh made is reused, not redone at other settings.
# Every test target built in one cargo run (both cores busy), then the benches (one smoke pass
# each) and examples first, so the suite's summary closes the log.
cargo test --release --no-run --tests --benches --examples
cargo test --release --benches --examples
cargo test --release --doc
# --show-output puts each test's seed, backend and ptxas report into the log.
log=$(mktemp)
trap 'rm -f "$log"; [ -n "${prebuild:-}" ] && kill "$prebuild" 2>/dev/null || true' EXIT
cargo test --release --tests -- --show-output "$@" 2>&1 | tee "$log"
# A test that found no backend to run on passes; say so where people look, after the summary.
skips=$(grep -o "skipping the [a-z]* backend: .*" "$log" | sort | uniq -c || true)
if [ -n "$skips" ]; then
  echo
  echo "SKIPPED (counted as passed above; nothing ran on these backends):"
  echo "$skips"
fi
