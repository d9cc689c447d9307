#!/usr/bin/env bash
# Load on the emulated Managed HSM, loopback only, bounded:
# - emulator_load: 20 concurrent recovery drills, status-poll throughput and
#   p99 (at most 20,000 polls or 20 s), emulator RSS;
# - emulator_keys: 1,000 keys created, a full backup and restore of them
#   timed, RSA-2048 sign and unwrap throughput with p99 (at most 20,000 each
#   or 10 s), RSS holding the 1,000 keys.
# Prints the figures; exits non-zero if a target is missed. Set PROFILE=dev
# for a quick unoptimised run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
status=0
timeout 900 cargo bench --locked --profile "${PROFILE:-bench}" --bench emulator_load || status=1
timeout 900 cargo bench --locked --profile "${PROFILE:-bench}" --bench emulator_keys || status=1
exit $status
