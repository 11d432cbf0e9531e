#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need when it is missing (see
# scripts/env.sh), then runs the whole suite. Under CI=true a missing wgpu adapter or PTX
# compiler fails the run. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo test --all-targets "$@"
