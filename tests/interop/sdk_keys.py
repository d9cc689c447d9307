"""azure-keyvault-keys (KeyClient, CryptographyClient) against `hsm-ceremony
emulator serve`: every key operation the emulator serves, over HTTPS.

CryptographyClient does encrypt, wrap and verify LOCALLY with the public key
when it has it. So every check here records the requests the SDK really
sent (azure-core's raw_request_hook) and asserts which half ran where: the
private-key half (decrypt, unwrap, sign) must be a request to the HSM, a
locally wrapped key must be unwrapped by the HSM, and a verify made with a
client that has no key material must be answered by the HSM.

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

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction, KeyType
from azure.keyvault.keys.crypto import (
    CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm,
)

from harness import Served, check, summary
from sdk_interop import FakeCredential


class Recorder:
    """Collects "METHOD path" of every request an SDK client sends."""

    def __init__(self):
        self.sent = []

    def __call__(self, request):
        url = request.http_request.url
        path = url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0]
        self.sent.append(f"{request.http_request.method} /{path}")

    def take(self):
        out, self.sent = self.sent, []
        return out


def token(binary, state, principal, *roles):
    args = [binary, "emulator", "token", "--state", state, "--principal", principal]
    for r in roles:
        args += ["--role", r]
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout.strip()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="sdk-keys-")
    # Registered first, so it runs last: after every served emulator is stopped.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    state = os.path.join(work, "hsm")
    hsm = Served(args.bin, state)
    admin = token(args.bin, state, "admin", "administrator")
    user = FakeCredential(token(args.bin, state, "app", "crypto-user", "crypto-officer"))
    kw = dict(verify_challenge_resource=False, connection_verify=hsm.ca)
    rec = Recorder()
    keys = KeyClient(hsm.url, user, raw_request_hook=rec, **kw)

    check("activation: security-domain download", lambda: download(args.bin, hsm, admin, work))

    def life_cycle():
        rsa = keys.create_rsa_key("rsa", size=2048, hardware_protected=True, tags={"app": "billing"})
        assert rsa.key_type == KeyType.rsa_hsm and rsa.properties.tags == {"app": "billing"}
        ec = keys.create_ec_key("ec", curve="P-384", hardware_protected=True)
        assert ec.key.crv == "P-384"
        oct_key = keys.create_oct_key("aes", size=256, hardware_protected=True)
        assert oct_key.key_type == KeyType.oct_hsm
        second = keys.create_rsa_key("rsa", size=3072, hardware_protected=True)
        assert second.properties.version != rsa.properties.version
        assert keys.get_key("rsa", rsa.properties.version).key.n == rsa.key.n
        assert len(list(keys.list_properties_of_key_versions("rsa"))) == 2
        names = sorted(k.name for k in keys.list_properties_of_keys(max_page_size=1))
        assert names == ["aes", "ec", "rsa"], names
        updated = keys.update_key_properties("ec", enabled=False, tags={"t": "1"})
        assert updated.properties.enabled is False and updated.properties.tags == {"t": "1"}
        keys.update_key_properties("ec", enabled=True)

    check("keys: create RSA/EC/oct, versions, list with paging, update", life_cycle)

    def soft_delete():
        deleted = keys.begin_delete_key("aes").result()
        assert deleted.recovery_id.endswith("/deletedkeys/aes") and deleted.scheduled_purge_date
        assert keys.get_deleted_key("aes").name == "aes"
        assert [d.name for d in keys.list_deleted_keys()] == ["aes"]
        try:
            keys.create_oct_key("aes", size=256, hardware_protected=True)
            raise AssertionError("a deleted name was reused")
        except (ResourceExistsError, HttpResponseError) as e:
            assert e.status_code == 409, e
        try:
            keys.purge_deleted_key("aes")
            raise AssertionError("purged under purge protection")
        except HttpResponseError as e:
            assert e.status_code == 403 and "purge protection" in str(e), e
        recovered = keys.begin_recover_deleted_key("aes").result()
        assert recovered.name == "aes" and keys.get_key("aes").key_type == KeyType.oct_hsm

    check("keys: soft delete, name held, purge refused, recover", soft_delete)

    def rotation():
        policy = keys.update_key_rotation_policy(
            "rsa", KeyRotationPolicy(), lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")],
            expires_in="P90D")
        assert policy.expires_in == "P90D"
        assert keys.get_key_rotation_policy("rsa").lifetime_actions[0].action == KeyRotationPolicyAction.rotate
        before = keys.get_key("rsa")
        rotated = keys.rotate_key("rsa")
        assert rotated.properties.version != before.properties.version and rotated.properties.expires_on

    check("keys: rotation policy set/get, rotate", rotation)

    def rng():
        assert len(keys.get_random_bytes(128)) == 128
        try:
            keys.get_random_bytes(129)
            raise AssertionError("129 random bytes given")
        except HttpResponseError as e:
            assert e.status_code == 400

    check("keys: random bytes 1..128", rng)

    def hsm_rsa():
        key = keys.get_key("rsa")
        local = CryptographyClient(key, user, raw_request_hook=rec, **kw)
        rec.take()
        dek = os.urandom(32)
        wrapped = local.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
        assert rec.take() == [], "the SDK wrapped locally with the public key"
        unwrapped = local.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
        assert unwrapped.key == dek
        assert [s.rsplit("/", 1)[1] for s in rec.take()] == ["unwrapkey"], "the HSM unwrapped"
        for alg in (EncryptionAlgorithm.rsa_oaep, EncryptionAlgorithm.rsa_oaep_256, EncryptionAlgorithm.rsa1_5):
            ct = local.encrypt(alg, b"plaintext").ciphertext
            assert local.decrypt(alg, ct).plaintext == b"plaintext"
        assert all(s.endswith("/decrypt") for s in rec.take())
        digest = hashlib.sha256(b"release 1.0").digest()
        for alg in (SignatureAlgorithm.rs256, SignatureAlgorithm.ps256):
            sig = local.sign(alg, digest).signature
            assert rec.take()[-1].endswith("/sign"), "the HSM signed"
            assert local.verify(alg, digest, sig).is_valid
        # A client with only the key id and no key material: verify goes to the HSM.
        remote = CryptographyClient(key.id, FakeCredential("hsmemu_not-issued"), raw_request_hook=rec, **kw)
        remote._keys_get_forbidden = True  # noqa: SLF001 - skip the get that would fetch the public key
        sig = local.sign(SignatureAlgorithm.rs256, digest).signature
        rec.take()
        try:
            remote.verify(SignatureAlgorithm.rs256, digest, sig)
            raise AssertionError("an unknown token verified")
        except HttpResponseError as e:
            assert e.status_code == 401
        assert rec.take()[-1].endswith("/verify"), "the verify reached the service"
        hsm_verify = CryptographyClient(key.id, user, raw_request_hook=rec, **kw)
        hsm_verify._keys_get_forbidden = True  # noqa: SLF001
        assert hsm_verify.verify(SignatureAlgorithm.rs256, digest, sig).is_valid
        assert not hsm_verify.verify(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest(), sig).is_valid
        assert [s for s in rec.take() if s.endswith("/verify")], "verified by the HSM"

    check("crypto RSA: local wrap unwrapped by the HSM, HSM decrypt/sign, HSM verify", hsm_rsa)

    def hsm_ec_and_aes():
        ec = CryptographyClient(keys.get_key("ec"), user, raw_request_hook=rec, **kw)
        digest = hashlib.sha384(b"m").digest()
        sig = ec.sign(SignatureAlgorithm.es384, digest).signature
        assert len(sig) == 96 and ec.verify(SignatureAlgorithm.es384, digest, sig).is_valid
        aes = CryptographyClient(keys.get_key("aes").id, user, raw_request_hook=rec, **kw)
        # The SDK would "wrap" locally with the absent k of an oct-HSM JWK (and unwrap
        # what it made): every AES operation must go to the HSM.
        aes._keys_get_forbidden = True  # noqa: SLF001
        rec.take()
        r = aes.encrypt(EncryptionAlgorithm.a256_gcm, b"secret", additional_authenticated_data=b"ctx")
        back = aes.decrypt(EncryptionAlgorithm.a256_gcm, r.ciphertext, iv=r.iv,
                           authentication_tag=r.tag, additional_authenticated_data=b"ctx")
        assert back.plaintext == b"secret"
        iv = os.urandom(16)
        c = aes.encrypt(EncryptionAlgorithm.a256_cbcpad, b"abc", iv=iv)
        assert aes.decrypt(EncryptionAlgorithm.a256_cbcpad, c.ciphertext, iv=iv).plaintext == b"abc"
        w = aes.wrap_key(KeyWrapAlgorithm.aes_256, b"k" * 32)
        assert aes.unwrap_key(KeyWrapAlgorithm.aes_256, w.encrypted_key).key == b"k" * 32
        # An oct-HSM JWK carries no k: the SDK has nothing to compute with locally.
        assert keys.get_key("aes").key.k is None
        sent = [s.rsplit("/", 1)[1] for s in rec.take()]
        assert {"encrypt", "decrypt"} <= set(sent), sent

    check("crypto EC ES384 and oct-HSM A256GCM/A256CBCPAD/A256KW by the HSM", hsm_ec_and_aes)

    def enforcement():
        keys.update_key_properties("rsa", enabled=False)
        c = CryptographyClient(keys.get_key("rsa").id, user, **kw)
        c._keys_get_forbidden = True  # noqa: SLF001
        try:
            c.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"m").digest())
            raise AssertionError("a disabled key signed")
        except HttpResponseError as e:
            assert e.status_code == 403 and "disabled" in str(e), e
        keys.update_key_properties("rsa", enabled=True, key_operations=["verify"])
        try:
            c.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"m").digest())
            raise AssertionError("sign outside key_ops")
        except HttpResponseError as e:
            assert e.status_code == 403 and "not permitted" in str(e), e

    check("crypto: disabled key and key_ops refused by the HSM", enforcement)

    def missing():
        try:
            keys.get_key("nope")
            raise AssertionError("found")
        except ResourceNotFoundError as e:
            assert e.error.code == "KeyNotFound"

    check("keys: an unknown key is KeyNotFound", missing)
    return summary()


def download(binary, hsm, admin_token, work):
    """Activates the instance with three custodian certificates made by the CLI."""
    tok = os.path.join(work, "admin.token")
    with open(tok, "w") as f:
        f.write(admin_token)
    os.chmod(tok, 0o600)
    certs = []
    for i in range(3):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        f"/CN=c{i}", "-keyout", os.path.join(work, f"c{i}.key"), "-out",
                        os.path.join(work, f"c{i}.cer")], check=True, capture_output=True, timeout=60)
        certs.append(os.path.join(work, f"c{i}.cer"))
    out = subprocess.run([binary, "--no-log", "instance", "download", "--url", hsm.url, "--ca", hsm.ca,
                          "--token-file", tok, "--certs", *certs, "--quorum", "2", "--out", os.path.join(work, "sd.json")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


if __name__ == "__main__":
    sys.exit(main())
