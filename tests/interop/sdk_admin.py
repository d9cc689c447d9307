"""The real azure-keyvault-administration (4.7) against `hsm-ceremony emulator serve`.

KeyVaultAccessControlClient: list_role_definitions (the nine built-ins with
their real names and ids), set/get/delete_role_definition (a custom role),
create/get/list/delete_role_assignment at "/", "/keys" and "/keys/{name}";
KeyVaultSettingsClient: list/get/update_setting. With azure-keyvault-keys, a
Crypto Officer-only principal is refused key creation (403 AccessDenied),
as the real service refuses it. HTTPS on 127.0.0.1 with the emulator's CA.

Last line: "N passed, M failed"; exit status non-zero on any failure.
"""

import argparse
import subprocess
import sys
import tempfile
import time
import uuid

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.administration import (
    KeyVaultAccessControlClient,
    KeyVaultDataAction,
    KeyVaultPermission,
    KeyVaultRoleScope,
    KeyVaultSetting,
    KeyVaultSettingsClient,
)
from azure.keyvault.keys import KeyClient

from harness import Served, check, summary

BUILT_IN = {
    "a290e904-7015-4bba-90c8-60543313cdb4": "Managed HSM Administrator",
    "515eb02d-2335-4d2d-92f2-b1cbdf9c3778": "Managed HSM Crypto Officer",
    "21dbd100-6940-42c2-9190-5d6cb909625b": "Managed HSM Crypto User",
    "4bd23610-cdcf-4971-bdee-bdc562cc28e4": "Managed HSM Policy Administrator",
    "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3": "Managed HSM Crypto Auditor",
    "33413926-3206-4cdd-b39a-83574fe37a17": "Managed HSM Crypto Service Encryption User",
    "21dbd100-6940-42c2-9190-5d6cb909625c": "Managed HSM Crypto Service Release User",
    "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8": "Managed HSM Backup",
    "6efe6056-5259-49d2-8b3d-d3d73544b20b": "Managed HSM Restore",
}


class FakeCredential:
    """Returns a token the emulator issued, whatever scope is asked for."""

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


def token(binary, state_dir, principal, *roles):
    args = [binary, "emulator", "token", "--state", state_dir, "--principal", principal]
    for r in roles:
        args += ["--role", r]
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)
    return FakeCredential(out.stdout.strip())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = f"{tmp}/hsm"
        hsm = Served(args.bin, state)
        opts = dict(verify_challenge_resource=False, connection_verify=hsm.ca)
        admin = token(args.bin, state, "ops", "Managed HSM Administrator")
        acl = KeyVaultAccessControlClient(hsm.url, admin, **opts)
        settings = KeyVaultSettingsClient(hsm.url, admin, **opts)
        custom_name = str(uuid.uuid4())

        def built_ins_listed():
            found = {d.name: d for d in acl.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
            for role_id, name in BUILT_IN.items():
                d = found[role_id]
                assert d.role_name == name, (role_id, d.role_name)
                assert d.role_type == "AKVBuiltInRole", d.role_type
                assert d.id == f"Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{role_id}", d.id
            user = found["21dbd100-6940-42c2-9190-5d6cb909625b"].permissions[0].data_actions
            assert KeyVaultDataAction.CREATE_HSM_KEY in user, user
            officer = found["515eb02d-2335-4d2d-92f2-b1cbdf9c3778"].permissions[0].data_actions
            assert KeyVaultDataAction.CREATE_HSM_KEY not in officer, officer
            assert len(list(acl.list_role_definitions(KeyVaultRoleScope.KEYS))) == len(found)

        def custom_role():
            perm = KeyVaultPermission(
                data_actions=[KeyVaultDataAction.READ_HSM_KEY, KeyVaultDataAction.SIGN_HSM_KEY],
                not_data_actions=[],
            )
            made = acl.set_role_definition(KeyVaultRoleScope.GLOBAL, name=custom_name, role_name="signer",
                                           description="rehearsal", permissions=[perm])
            assert made.name == custom_name and made.role_type == "CustomRole", made
            got = acl.get_role_definition(KeyVaultRoleScope.GLOBAL, custom_name)
            assert got.role_name == "signer" and got.assignable_scopes == ["/"], got
            assert set(got.permissions[0].data_actions) == {"Microsoft.KeyVault/managedHsm/keys/read/action",
                                                            "Microsoft.KeyVault/managedHsm/keys/sign/action"}
            # Updated in place under the same name.
            acl.set_role_definition(KeyVaultRoleScope.GLOBAL, name=custom_name, role_name="signer2",
                                    permissions=[perm])
            assert acl.get_role_definition("/", custom_name).role_name == "signer2"

        def built_in_unchangeable():
            try:
                acl.set_role_definition("/", name="21dbd100-6940-42c2-9190-5d6cb909625b", role_name="mine")
            except HttpResponseError as e:
                assert e.status_code == 400 and "cannot be changed" in str(e), e
            else:
                raise AssertionError("a built-in role definition was changed")

        def assignments_at_three_scopes():
            user_def = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/21dbd100-6940-42c2-9190-5d6cb909625b"
            made = {}
            for scope in ["/", "/keys", "/keys/canary"]:
                a = acl.create_role_assignment(scope, user_def, "app")
                assert a.properties.scope == scope and a.properties.principal_id == "app", a.properties
                assert a.properties.role_definition_id == user_def, a.properties.role_definition_id
                made[scope] = a
                got = acl.get_role_assignment(scope, a.name)
                assert got.role_assignment_id == a.role_assignment_id, (got.role_assignment_id, a.role_assignment_id)
            assert made["/keys"].role_assignment_id == f"/keys/providers/Microsoft.Authorization/roleAssignments/{made['/keys'].name}"
            at_key = {a.name for a in acl.list_role_assignments("/keys/canary")}
            assert set(x.name for x in made.values()) <= at_key, at_key
            for scope, a in made.items():
                acl.delete_role_assignment(scope, a.name)
                try:
                    acl.get_role_assignment(scope, a.name)
                except ResourceNotFoundError:
                    pass
                else:
                    raise AssertionError(f"deleted assignment at {scope} still there")
            acl.delete_role_definition("/", custom_name)
            try:
                acl.get_role_definition("/", custom_name)
            except ResourceNotFoundError:
                pass
            else:
                raise AssertionError("deleted custom role still there")

        def crypto_officer_refused_key_create():
            officer = token(args.bin, state, "officer", "Managed HSM Crypto Officer")
            keys = KeyClient(hsm.url, officer, **opts)
            try:
                keys.create_rsa_key("canary", hardware_protected=True)
            except HttpResponseError as e:
                assert e.status_code == 403, e
                assert e.error.code == "AccessDenied", e.error.code
                assert "Microsoft.KeyVault/managedHsm/keys/create" in e.message, e.message
            else:
                raise AssertionError("a Crypto Officer-only principal created a key")
            # A Crypto User gets past authorization (then this instance is not activated yet).
            user = KeyClient(hsm.url, token(args.bin, state, "user", "crypto-user"), **opts)
            try:
                user.create_rsa_key("canary", hardware_protected=True)
            except HttpResponseError as e:
                assert e.status_code == 400 and "not activated" in e.message, e
            else:
                raise AssertionError("a key was created on an instance that is not activated")

        def settings_round_trip():
            listed = {s.name: s for s in settings.list_settings()}
            s = listed["AllowKeyManagementOperationsThroughARM"]
            assert s.setting_type == "boolean" and s.value == "false", (s.setting_type, s.value)
            updated = settings.update_setting(KeyVaultSetting(name=s.name, value=True))
            assert updated.getboolean() is True, updated.value
            assert settings.get_setting(s.name).value == "true"

        def settings_need_the_administrator():
            user = KeyVaultSettingsClient(hsm.url, token(args.bin, state, "user2", "crypto-user"), **opts)
            try:
                list(user.list_settings())
            except HttpResponseError as e:
                assert e.status_code == 403, e
            else:
                raise AssertionError("a Crypto User read the settings")

        check("access control: list_role_definitions lists the nine built-ins by real name and id", built_ins_listed)
        check("access control: set/get_role_definition of a custom role, updated in place", custom_role)
        check("access control: a built-in role definition cannot be changed (400)", built_in_unchangeable)
        check("access control: create/get/list/delete_role_assignment at /, /keys, /keys/canary; delete_role_definition",
              assignments_at_three_scopes)
        check("keys: a Crypto Officer-only principal is refused create_rsa_key (403 AccessDenied)",
              crypto_officer_refused_key_create)
        check("settings: list/get/update_setting AllowKeyManagementOperationsThroughARM", settings_round_trip)
        check("settings: a Crypto User is refused (403)", settings_need_the_administrator)
        hsm.stop()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
