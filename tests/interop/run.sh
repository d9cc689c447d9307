#!/usr/bin/env bash
# Runs the real Azure Python SDKs (azure-keyvault-securitydomain,
# azure-keyvault-keys) against `hsm-ceremony emulator serve` on 127.0.0.1.
# The venv lives in $CARGO_TARGET_DIR/interop-venv (default target/).
# Bounded: the script is given 300 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --bin hsm-ceremony
VENV="$CARGO_TARGET_DIR/interop-venv"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import azure.keyvault.securitydomain, azure.keyvault.keys" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet azure-keyvault-securitydomain azure-keyvault-keys
fi
"$VENV/bin/pip" list 2>/dev/null | grep -iE '^(azure-core|azure-keyvault-securitydomain|azure-keyvault-keys) ' || true
exec timeout 300 "$VENV/bin/python" tests/interop/sdk_interop.py --bin "$CARGO_TARGET_DIR/debug/hsm-ceremony"
