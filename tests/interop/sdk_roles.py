"""The role matrix with the real Python SDKs: each of the nine built-in roles
(and a principal with none) runs every operation the SDKs reach on a served,
activated emulator, and is allowed exactly what Microsoft's table allows.

The expectation is NOT computed from the emulator's Rust code: TABLE below
is transcribed from Microsoft's page "Local RBAC built-in roles for Managed
HSM" (learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles,
"Permitted operations", ms.date 01/25/2024), and each operation names the
data action the same page and the data-plane REST reference give it. Where
the table is silent (random bytes, the rotation policy, settings,
the download status) the row is in SILENT, with the emulator's documented
decision from hsm-ceremony-emulator(7).

A denied operation must be HttpResponseError 403 with the service's code
AccessDenied and a message naming the data action; an allowed one must
succeed. CryptographyClient does encrypt, verify and wrap locally when it has
the public key: every crypto client here is built from the key id with the
key fetch forbidden, so every operation is a request the HSM authorizes.
Full backup and restore go to Azurite; the restores run last (they put the
instance back as it was at the backup).

Last line: "N passed, M failed"; exit status non-zero on any failure.
"""

import argparse
import atexit
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.keyvault.administration import (
    KeyVaultAccessControlClient, KeyVaultBackupClient, KeyVaultDataAction, KeyVaultPermission, KeyVaultSetting,
    KeyVaultSettingsClient,
)
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from harness import Azurite, Served, check, summary
from sdk_keys import download

# The table's columns, in its order (every name has the prefix "Managed HSM ").
ADM, CO, CU, PA, CSE, BAK, AUD, CSR, RST = (
    "Administrator", "Crypto Officer", "Crypto User", "Policy Administrator", "Crypto Service Encryption User",
    "Backup", "Crypto Auditor", "Crypto Service Release User", "Restore",
)
ROLES = [ADM, CO, CU, PA, CSE, BAK, AUD, CSR, RST]

# "Permitted operations", row by row (prefix Microsoft.KeyVault/managedHsm omitted, as there).
TABLE = {
    # Security domain management
    "/securitydomain/download/action": {ADM},
    "/securitydomain/upload/action": {ADM},
    "/securitydomain/upload/read": {ADM},
    "/securitydomain/transferkey/read": {ADM},
    # Key management
    "/keys/read/action": {CU, CSE, AUD},
    "/keys/write/action": {CU},
    "/keys/rotate/action": {CU},
    "/keys/create": {CU},
    "/keys/delete": {CU},
    "/keys/deletedKeys/read/action": {CO},
    "/keys/deletedKeys/recover/action": {CO},
    "/keys/deletedKeys/delete": {CO, AUD},
    "/keys/backup/action": {CU, BAK},
    "/keys/restore/action": {CU, RST},
    "/keys/release/action": {CU, CSR},
    "/keys/import/action": {CU},
    # Key cryptographic operations
    "/keys/encrypt/action": {CU},
    "/keys/decrypt/action": {CU},
    "/keys/wrap/action": {CU, CSE},
    "/keys/unwrap/action": {CU, CSE},
    "/keys/sign/action": {CU},
    "/keys/verify/action": {CU},
    # Role management
    "/roleAssignments/read/action": {ADM, CO, CU, PA, AUD},
    "/roleAssignments/write/action": {ADM, CO, PA},
    "/roleAssignments/delete/action": {ADM, CO, PA},
    "/roleDefinitions/read/action": {ADM, CO, CU, PA, AUD},
    "/roleDefinitions/write/action": {ADM, CO, PA},
    "/roleDefinitions/delete/action": {ADM, CO, PA},
    # Backup and restore management
    "/backup/start/action": {ADM, BAK},
    "/backup/status/action": {ADM, BAK},
    "/restore/start/action": {ADM, RST},
    "/restore/status/action": {ADM, RST},
}

# Not in the table: the emulator's decisions, as hsm-ceremony-emulator(7) states them.
SILENT = {
    "/rng/action": {CU},
    "/settings/read/action": {ADM},
    "/settings/write/action": {ADM},
}

PREFIX = "Microsoft.KeyVault/managedHsm"
DEF = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
AUDITOR_ID = "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3"
POLL = {"_polling_interval": 0.1}


def allowed(action):
    return (TABLE.get(action) or SILENT[action])


class Credential:
    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


class Principal:
    """One principal's SDK clients; every CryptographyClient is HSM-only."""

    def __init__(self, hsm, token):
        self.hsm = hsm
        self.cred = Credential(token)
        kw = dict(verify_challenge_resource=False, connection_verify=hsm.ca)
        self.kw = kw
        self.keys = KeyClient(hsm.url, self.cred, **kw)
        self.acl = KeyVaultAccessControlClient(hsm.url, self.cred, **kw)
        self.backup = KeyVaultBackupClient(hsm.url, self.cred, **kw)
        self.settings = KeyVaultSettingsClient(hsm.url, self.cred, **kw)

    def crypto(self, name):
        c = CryptographyClient(f"{self.hsm.url}/keys/{name}", self.cred, **self.kw)
        # Without the key fetched the SDK has no public key to work with locally.
        c._keys_get_forbidden = True  # noqa: SLF001
        return c


def issue(binary, state, principal, *roles):
    args = [binary, "emulator", "token", "--state", state, "--principal", principal]
    for r in roles:
        args += ["--role", r]
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout.strip()


def ec_key(admin, name):
    return admin.keys.create_ec_key(name, curve="P-256", hardware_protected=True)


def deleted(admin, name):
    ec_key(admin, name)
    admin.keys.begin_delete_key(name, **POLL).wait()
    return name


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--azurite", required=True)
    args = p.parse_args()
    have_azurite = os.path.exists(args.azurite)
    if not have_azurite and os.environ.get("CI"):
        print(f"FAIL sdk_roles: Azurite is not installed at {args.azurite}")
        return 1
    work = tempfile.mkdtemp(prefix="sdk-roles-")
    # Registered first, so it runs last: after every served emulator is stopped.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    state = os.path.join(work, "hsm")
    # Purge protection off, so that an allowed purge succeeds rather than 403s for another reason.
    hsm = Served(args.bin, state, "--purge-protection", "off")
    azurite = Azurite(args.azurite) if have_azurite else None
    admin_token = issue(args.bin, state, "setup", "Managed HSM Administrator", "Managed HSM Crypto User",
                        "Managed HSM Crypto Officer")
    admin = Principal(hsm, admin_token)
    # Each role under its real name, as `emulator token --role` takes it.
    who = {r: Principal(hsm, issue(args.bin, state, f"p-{i}", f"Managed HSM {r}")) for i, r in enumerate(ROLES)}
    who["(no role)"] = Principal(hsm, issue(args.bin, state, "p-none"))
    fx = {}

    def setup():
        download(args.bin, hsm, admin_token, work)
        admin.keys.create_rsa_key("rsa", size=2048, hardware_protected=True)
        ec_key(admin, "ec")
        ec_key(admin, "rot")
        admin.keys.update_key_rotation_policy(
            "rot", KeyRotationPolicy(), lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")],
            expires_in="P90D")
        deleted(admin, "gone")
        fx["digest"] = hashlib.sha256(b"matrix").digest()
        fx["sig"] = admin.crypto("ec").sign(SignatureAlgorithm.es256, fx["digest"]).signature
        fx["ct"] = admin.crypto("rsa").encrypt(EncryptionAlgorithm.rsa_oaep_256, b"plaintext").ciphertext
        fx["wrapped"] = admin.crypto("rsa").wrap_key(KeyWrapAlgorithm.rsa_oaep_256, os.urandom(32)).encrypted_key
        fx["assignment"] = admin.acl.create_role_assignment("/", DEF + AUDITOR_ID, "someone").name
        if azurite:
            fx["container"], fx["sas"] = azurite.container("matrix")

    check("setup: activated by download; RSA and EC keys, a deleted key, an assignment; Azurite", setup)

    def custom_role(tag):
        perm = KeyVaultPermission(data_actions=[KeyVaultDataAction.READ_HSM_KEY])
        name = str(uuid.uuid4())
        admin.acl.set_role_definition("/", name=name, role_name=f"reader-{tag}", permissions=[perm])
        return name

    def backed_up_and_purged(tag):
        name = f"rk-{tag}"
        ec_key(admin, name)
        blob = admin.keys.backup_key(name)
        admin.keys.begin_delete_key(name, **POLL).wait()
        admin.keys.purge_deleted_key(name)
        return blob

    def jwk():
        priv = ec.generate_private_key(ec.SECP256R1())
        n = priv.private_numbers()
        return JsonWebKey(kty="EC-HSM", crv="P-256", d=n.private_value.to_bytes(32, "big"),
                          x=n.public_numbers.x.to_bytes(32, "big"), y=n.public_numbers.y.to_bytes(32, "big"))

    none = lambda tag: None  # noqa: E731
    # (operation, data action, prepare(tag) -> arg with the setup principal, act(principal, tag, arg)).
    rows = [
        ("KeyClient.create_ec_key", "/keys/create", none,
         lambda c, t, a: c.keys.create_ec_key(f"new-{t}", curve="P-256", hardware_protected=True)),
        ("KeyClient.import_key", "/keys/import/action", lambda t: jwk(),
         lambda c, t, a: c.keys.import_key(f"imp-{t}", a, hardware_protected=True)),
        ("KeyClient.get_key", "/keys/read/action", none, lambda c, t, a: c.keys.get_key("ec")),
        ("KeyClient.list_properties_of_keys", "/keys/read/action", none,
         lambda c, t, a: list(c.keys.list_properties_of_keys())),
        ("KeyClient.list_properties_of_key_versions", "/keys/read/action", none,
         lambda c, t, a: list(c.keys.list_properties_of_key_versions("ec"))),
        ("KeyClient.update_key_properties", "/keys/write/action", none,
         lambda c, t, a: c.keys.update_key_properties("ec", tags={"by": t})),
        ("KeyClient.begin_delete_key", "/keys/delete", lambda t: ec_key(admin, f"del-{t}"),
         lambda c, t, a: c.keys.begin_delete_key(f"del-{t}", **POLL).wait()),
        ("KeyClient.get_deleted_key", "/keys/deletedKeys/read/action", none,
         lambda c, t, a: c.keys.get_deleted_key("gone")),
        ("KeyClient.list_deleted_keys", "/keys/deletedKeys/read/action", none,
         lambda c, t, a: list(c.keys.list_deleted_keys())),
        ("KeyClient.begin_recover_deleted_key", "/keys/deletedKeys/recover/action",
         lambda t: deleted(admin, f"rec-{t}"), lambda c, t, a: c.keys.begin_recover_deleted_key(a, **POLL).wait()),
        ("KeyClient.purge_deleted_key", "/keys/deletedKeys/delete", lambda t: deleted(admin, f"pur-{t}"),
         lambda c, t, a: c.keys.purge_deleted_key(a)),
        ("KeyClient.backup_key", "/keys/backup/action", none, lambda c, t, a: c.keys.backup_key("ec")),
        ("KeyClient.restore_key_backup", "/keys/restore/action", backed_up_and_purged,
         lambda c, t, a: c.keys.restore_key_backup(a)),
        ("KeyClient.rotate_key", "/keys/rotate/action", none, lambda c, t, a: c.keys.rotate_key("rot")),
        ("KeyClient.get_random_bytes", "/rng/action", none, lambda c, t, a: c.keys.get_random_bytes(16)),
        ("CryptographyClient.sign (HSM)", "/keys/sign/action", none,
         lambda c, t, a: c.crypto("ec").sign(SignatureAlgorithm.es256, fx["digest"])),
        ("CryptographyClient.verify (HSM)", "/keys/verify/action", none,
         lambda c, t, a: assert_true(c.crypto("ec").verify(SignatureAlgorithm.es256, fx["digest"], fx["sig"]).is_valid)),
        ("CryptographyClient.encrypt (HSM)", "/keys/encrypt/action", none,
         lambda c, t, a: c.crypto("rsa").encrypt(EncryptionAlgorithm.rsa_oaep_256, b"x")),
        ("CryptographyClient.decrypt (HSM)", "/keys/decrypt/action", none,
         lambda c, t, a: assert_true(c.crypto("rsa").decrypt(EncryptionAlgorithm.rsa_oaep_256, fx["ct"]).plaintext
                                     == b"plaintext")),
        ("CryptographyClient.wrap_key (HSM)", "/keys/wrap/action", none,
         lambda c, t, a: c.crypto("rsa").wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)),
        ("CryptographyClient.unwrap_key (HSM)", "/keys/unwrap/action", none,
         lambda c, t, a: c.crypto("rsa").unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, fx["wrapped"])),
        ("KeyVaultAccessControlClient.list_role_assignments", "/roleAssignments/read/action", none,
         lambda c, t, a: list(c.acl.list_role_assignments("/"))),
        ("KeyVaultAccessControlClient.get_role_assignment", "/roleAssignments/read/action", none,
         lambda c, t, a: c.acl.get_role_assignment("/", fx["assignment"])),
        ("KeyVaultAccessControlClient.create_role_assignment", "/roleAssignments/write/action", none,
         lambda c, t, a: c.acl.create_role_assignment("/", DEF + AUDITOR_ID, f"someone-{t}")),
        ("KeyVaultAccessControlClient.delete_role_assignment", "/roleAssignments/delete/action",
         lambda t: admin.acl.create_role_assignment("/", DEF + AUDITOR_ID, f"other-{t}").name,
         lambda c, t, a: c.acl.delete_role_assignment("/", a)),
        ("KeyVaultAccessControlClient.list_role_definitions", "/roleDefinitions/read/action", none,
         lambda c, t, a: list(c.acl.list_role_definitions("/"))),
        ("KeyVaultAccessControlClient.get_role_definition", "/roleDefinitions/read/action", none,
         lambda c, t, a: c.acl.get_role_definition("/", AUDITOR_ID)),
        ("KeyVaultAccessControlClient.set_role_definition", "/roleDefinitions/write/action", none,
         lambda c, t, a: c.acl.set_role_definition("/", name=str(uuid.uuid4()), role_name=f"mine-{t}",
                                                   permissions=[KeyVaultPermission(data_actions=["Microsoft.KeyVault/managedHsm/keys/read/action"])])),
        ("KeyVaultAccessControlClient.delete_role_definition", "/roleDefinitions/delete/action", custom_role,
         lambda c, t, a: c.acl.delete_role_definition("/", a)),
        ("KeyVaultSettingsClient.list_settings", "/settings/read/action", none,
         lambda c, t, a: list(c.settings.list_settings())),
        ("KeyVaultSettingsClient.get_setting", "/settings/read/action", none,
         lambda c, t, a: c.settings.get_setting("AllowKeyManagementOperationsThroughARM")),
        ("KeyVaultSettingsClient.update_setting", "/settings/write/action", none,
         lambda c, t, a: c.settings.update_setting(KeyVaultSetting(name="AllowKeyManagementOperationsThroughARM",
                                                                   value=True))),
    ]
    # The rotation policy has no action of its own in the table; the REST
    # reference files it under the key's read (get) and write (set), which are in it.
    rows += [
        ("KeyClient.get_key_rotation_policy", "/keys/read/action", none,
         lambda c, t, a: c.keys.get_key_rotation_policy("rot")),
        ("KeyClient.update_key_rotation_policy", "/keys/write/action", none,
         lambda c, t, a: c.keys.update_key_rotation_policy("rot", KeyRotationPolicy(), expires_in="P90D")),
    ]
    backup_rows = [
        ("KeyVaultBackupClient.begin_pre_backup", "/backup/start/action", none,
         lambda c, t, a: c.backup.begin_pre_backup(fx["container"], sas_token=fx["sas"], **POLL).wait()),
        # A container each: two backups in one second would name the same folder.
        ("KeyVaultBackupClient.begin_backup", "/backup/start/action", lambda t: azurite.container(f"matrix-{t}"),
         lambda c, t, a: c.backup.begin_backup(a[0], a[1], **POLL).result()),
    ]
    # Last: a restore puts the instance back as it was when the backup was made.
    restore_rows = [
        ("KeyVaultBackupClient.begin_pre_restore", "/restore/start/action", none,
         lambda c, t, a: c.backup.begin_pre_restore(fx["folder"], sas_token=fx["sas"], **POLL).wait()),
        ("KeyVaultBackupClient.begin_restore key_name= (selective)", "/restore/start/action", none,
         lambda c, t, a: c.backup.begin_restore(fx["folder"], fx["sas"], key_name="ec", **POLL).wait()),
        ("KeyVaultBackupClient.begin_restore (full)", "/restore/start/action", none,
         lambda c, t, a: c.backup.begin_restore(fx["folder"], fx["sas"], **POLL).wait()),
    ]

    def matrix_row(op, action, prepare, act):
        want = allowed(action)
        mismatches = []
        for i, (role, principal) in enumerate(who.items()):
            tag = f"r{i}"
            arg = prepare(tag)
            try:
                act(principal, tag, arg)
            except HttpResponseError as e:
                if role in want:
                    mismatches.append(f"{role}: refused, the table allows it: {e.status_code} {e.message[:200]}")
                elif e.status_code != 403 or e.error is None or e.error.code != "AccessDenied":
                    mismatches.append(f"{role}: {e.status_code} {e.error.code if e.error else None}, "
                                      f"not 403 AccessDenied: {e.message[:200]}")
                elif f"{PREFIX}{action}" not in e.message:
                    mismatches.append(f"{role}: the refusal does not name {PREFIX}{action}: {e.message[:200]}")
            else:
                if role not in want:
                    mismatches.append(f"{role}: allowed, the table refuses it")
        assert not mismatches, "\n".join(mismatches)

    def run_rows(selected):
        for op, action, prepare, act in selected:
            want = ", ".join(r for r in ROLES if r in allowed(action)) or "none"
            check(f"{op} needs {action}: allowed exactly {want}",
                  lambda op=op, action=action, prepare=prepare, act=act: matrix_row(op, action, prepare, act))

    run_rows(rows)
    if azurite:
        run_rows(backup_rows)

        def backup_to_restore():
            fx["folder"] = admin.backup.begin_backup(fx["container"], fx["sas"], **POLL).result().folder_url

        check("setup: a full backup to restore from", backup_to_restore)
        run_rows(restore_rows)

        def keys_back():
            assert admin.keys.get_key("ec").key.crv == "P-256"

        check("after the restores the instance still serves its keys", keys_back)
        azurite.stop()
    else:
        print(f"SKIP backup and restore rows: Azurite is not installed at {args.azurite}")

    def every_action_has_a_row():
        # Release and export are not served (no key release, nothing exportable), the
        # security-domain actions are the activation's own checks (sdk_interop.py).
        covered = {a for _, a, _, _ in rows + backup_rows + restore_rows}
        missing = set(TABLE) - covered - {"/keys/release/action", "/securitydomain/download/action",
                                          "/securitydomain/upload/action", "/securitydomain/upload/read",
                                          "/securitydomain/transferkey/read", "/backup/status/action",
                                          "/restore/status/action"}
        assert not missing, missing

    check("every key, role, backup and restore action of the table has a row", every_action_has_a_row)
    hsm.stop()
    return summary()


def assert_true(value):
    assert value, "the HSM answered but the result is wrong"


if __name__ == "__main__":
    sys.exit(main())
