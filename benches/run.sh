#!/usr/bin/env bash
# Speed and memory benchmarks (not tests): builds the release binary and runs
# benches/ceremony.py, which prints each figure beside its target.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
python3 benches/ceremony.py --bin target/release/hsm-ceremony "$@"
