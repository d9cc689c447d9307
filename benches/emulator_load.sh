#!/usr/bin/env bash
# Load on the emulated Managed HSM, loopback only, bounded (20 drills, at
# most 20,000 status polls or 20 s): 20 concurrent recovery drills, status
# poll throughput and p99, emulator RSS. Prints the figures; exits non-zero
# if a target is missed. Set PROFILE=dev for a quick unoptimised run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
exec timeout 900 cargo bench --profile "${PROFILE:-bench}" --bench emulator_load
