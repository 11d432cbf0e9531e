#!/usr/bin/env bash
# The main job (README): installs what is missing (scripts/env.sh), then runs `verify` on every
# backend present. Arguments go to `verify` (e.g. --family core, --backend wgpu).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
cargo run --release -- verify "$@"
