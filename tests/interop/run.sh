#!/usr/bin/env bash
# Runs the real Azure Python SDKs (azure-keyvault-securitydomain,
# azure-keyvault-keys, azure-keyvault-administration 4.7) against `hsm-ceremony emulator serve` on 127.0.0.1,
# then the real Azure CLI's `az keyvault security-domain restore-blob`
# against our files. The venvs live in $CARGO_TARGET_DIR/interop-venv and
# azcli-venv (default target/). Bounded: each script is given 300 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --bin hsm-ceremony
VENV="$CARGO_TARGET_DIR/interop-venv"
# A venv moved or copied from elsewhere keeps scripts whose first line names
# its old place: one whose pip does not run is made anew.
if ! "$VENV/bin/pip" --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import azure.keyvault.securitydomain, azure.keyvault.keys, azure.keyvault.administration, azure.storage.blob" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet azure-keyvault-securitydomain azure-keyvault-keys \
        "azure-keyvault-administration==4.7.2" azure-storage-blob
fi
"$VENV/bin/pip" list 2>/dev/null | grep -iE '^(azure-core|azure-keyvault-securitydomain|azure-keyvault-keys|azure-keyvault-administration|azure-storage-blob) ' || true
status=0
timeout 300 "$VENV/bin/python" tests/interop/sdk_interop.py --bin "$CARGO_TARGET_DIR/debug/hsm-ceremony" || status=1
# Full backup and restore with KeyVaultBackupClient, to Azurite (installed by .ci/run).
timeout 300 "$VENV/bin/python" tests/interop/sdk_backup.py --bin "$CARGO_TARGET_DIR/debug/hsm-ceremony" \
    --azurite "$CARGO_TARGET_DIR/azurite/node_modules/.bin/azurite-blob" || status=1
# Local RBAC and settings (KeyVaultAccessControlClient, KeyVaultSettingsClient).
timeout 300 "$VENV/bin/python" tests/interop/sdk_admin.py --bin "$CARGO_TARGET_DIR/debug/hsm-ceremony" || status=1
# Keys and HSM-side cryptography (KeyClient, CryptographyClient).
timeout 300 "$VENV/bin/python" tests/interop/sdk_keys.py --bin "$CARGO_TARGET_DIR/debug/hsm-ceremony" || status=1
# The role matrix: each built-in role against every SDK operation, expected from Microsoft's table.
timeout 300 "$VENV/bin/python" tests/interop/sdk_roles.py --bin "$CARGO_TARGET_DIR/debug/hsm-ceremony" \
    --azurite "$CARGO_TARGET_DIR/azurite/node_modules/.bin/azurite-blob" || status=1

# The Azure CLI in a venv of its own (it pins its own azure-* versions); .ci/run
# installs it before `cargo test` (the runbooks run it), so this reuses it.
AZ_VENV="$CARGO_TARGET_DIR/azcli-venv"
if ! "$AZ_VENV/bin/az" version >/dev/null 2>&1; then
    rm -rf "$AZ_VENV"
    python3 -m venv "$AZ_VENV"
    "$AZ_VENV/bin/pip" install --quiet azure-cli==2.91.0
fi
"$AZ_VENV/bin/pip" list 2>/dev/null | grep -iE '^azure-cli ' || true
timeout 300 "$AZ_VENV/bin/python" tests/interop/azcli_interop.py \
    --bin "$CARGO_TARGET_DIR/debug/hsm-ceremony" --az "$AZ_VENV/bin/az" \
    --azurite "$CARGO_TARGET_DIR/azurite/node_modules/.bin/azurite-blob" || status=1
exit $status
