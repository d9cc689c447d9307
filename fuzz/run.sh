#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 120 s each, or $1) and
# prints the executions libFuzzer reports. Crashes land in artifacts/TARGET/.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); nightly features on the
# stable toolchain through RUSTC_BOOTSTRAP. Not part of .ci/run (too long).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-120}"
targets=(sd_parser jwe_parser share_decoder restore_blob emulator_request)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-$PWD/target}"
cargo fuzz build -O >/dev/null 2>&1 || cargo fuzz build -O
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t" seeds/"$t"
  log="artifacts/$t/run.log"
  set +e
  cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "$t: ${secs}s, ${execs:-?} executions, exit $rc"
  if [ $rc -ne 0 ]; then
    status=1
    tail -30 "$log"
  fi
done
exit $status
