#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need when it is missing (see
# scripts/env.sh), then runs the whole suite. Under CI=true a missing wgpu adapter or PTX
# compiler fails the run. Extra arguments go to the test binaries (e.g. a name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
# The release profile (with the crate's overflow checks on, Cargo.toml): the build
# scripts/verify.sh made is reused, not redone at other settings.
# Benches (one smoke pass each) and examples first, so the suite's summary closes the log.
cargo test --release --benches --examples
cargo test --release --doc
# --show-output puts each test's seed, backend and ptxas report into the log.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --lib --bins --tests -- --show-output "$@" 2>&1 | tee "$log"
# A test that found no backend to run on passes; say so where people look, after the summary.
skips=$(grep -o "skipping the [a-z]* backend: .*" "$log" | sort | uniq -c || true)
if [ -n "$skips" ]; then
  echo
  echo "SKIPPED (counted as passed above; nothing ran on these backends):"
  echo "$skips"
fi
