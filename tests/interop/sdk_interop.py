"""The real Azure Python SDKs against `hsm-ceremony emulator serve`.

azure-keyvault-securitydomain: begin_download (3 certificates, 2 of 3) on
instance A, get_transfer_key on instance B, begin_upload of a restore blob on
B, statuses. azure-keyvault-keys: create_rsa_key + backup_key on A,
restore_key_backup on B (and refused on C, which has another security
domain). Everything runs on 127.0.0.1 over HTTPS with the emulator's CA.

The restore blob is made by `hsm-ceremony restore-blob`. The security domain
the SDK downloads is also opened by a small from-the-spec Python
implementation, an independent check of the emulator's format.

Last line: "N passed, M failed"; exit status non-zero on any failure.
"""

import argparse
import atexit
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.securitydomain import SecurityDomainClient
from azure.keyvault.securitydomain.models import CertificateInfo, SecurityDomain, SecurityDomainJsonWebKey
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness import Served, check, summary


class FakeCredential:
    """Returns a token the emulator issued, whatever scope is asked for."""

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


class Instance(Served):
    """A served emulator with an SDK principal's credential."""

    def __init__(self, binary, state_dir):
        super().__init__(binary, state_dir)
        token = subprocess.run(
            [binary, "emulator", "token", "--state", state_dir, "--principal", "sdk",
             "--role", "administrator", "--role", "crypto-user"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()
        self.credential = FakeCredential(token)

    def sd_client(self, **kw):
        return SecurityDomainClient(self.url, self.credential, verify_challenge_resource=False,
                                    connection_verify=self.ca, **kw)

    def key_client(self, **kw):
        return KeyClient(self.url, self.credential, verify_challenge_resource=False,
                         connection_verify=self.ca, **kw)

# ---- the format, from hsm-ceremony-security-domain(5) (man/) ----

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def sp108_kdf(ki, label, context=b"", bits=512):
    out, i = b"", 1
    while len(out) * 8 < bits:
        out += hmac.new(ki, i.to_bytes(4, "big") + label + b"\x00" + context + bits.to_bytes(4, "big"),
                        hashlib.sha512).digest()
        i += 1
    return out[: bits // 8]


OAEP256 = asym.OAEP(mgf=asym.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _tag(mac_key, aad, iv, ct):
    return hmac.new(mac_key, aad + iv + ct + (len(aad) * 8).to_bytes(8, "big"), hashlib.sha512).digest()[:32]


def jwe_decrypt(compact, dir_key=None, rsa_key=None):
    h, ek, iv, ct, tag = compact.split(".")
    cek = dir_key if dir_key is not None else rsa_key.decrypt(b64u_d(ek), OAEP256)
    iv, ct, tag = b64u_d(iv), b64u_d(ct), b64u_d(tag)
    if not hmac.compare_digest(_tag(cek[:32], h.encode(), iv, ct), tag):
        raise ValueError("integrity check failed")
    dec = Cipher(algorithms.AES(cek[32:]), modes.CBC(iv)).decryptor()
    unpad = padding.PKCS7(128).unpadder()
    return unpad.update(dec.update(ct) + dec.finalize()) + unpad.finalize()


def shamir_combine(shares):
    """shares: list of share byte strings (16-bit LE words, x << 9 | v)."""
    parsed = []
    for s in shares:
        words = [int.from_bytes(s[i:i + 2], "little") for i in range(0, len(s), 2)]
        parsed.append((words[0] >> 9, [w & 0x1FF for w in words]))
    p = 257
    secret = []
    for pos in range(len(parsed[0][1])):
        acc = 0
        for j, (xj, vj) in enumerate(parsed):
            lj = 1
            for k, (xk, _) in enumerate(parsed):
                if k != j:
                    lj = lj * xk * pow((xk - xj) % p, p - 2, p) % p
            acc = (acc + vj[pos] * lj) % p
        assert acc < 256, "shares inconsistent"
        secret.append(acc)
    return bytes(secret)


def open_by_spec(sd_json, key_files):
    """Opens a security domain with the spec alone (no hsm-ceremony code):
    unwraps the quorum's shares, combines them in GF(257), derives each item's
    key and checks every item's tag. Returns the master key."""
    sd = json.loads(sd_json)
    shares = []
    for key_file, cert_file in key_files:
        key = serialization.load_pem_private_key(open(key_file, "rb").read(), password=None)
        der = x509.load_pem_x509_certificate(open(cert_file, "rb").read()).public_bytes(serialization.Encoding.DER)
        x5t = b64u(hashlib.sha256(der).digest())
        share = next(s for s in sd["SharedKeys"]["enc_shares"] if s["x5t_256"] == x5t)
        shares.append(jwe_decrypt(share["enc_key"], rsa_key=key))
    master = shamir_combine(shares[: sd["SharedKeys"]["required"]])
    for item in sd["EncData"]["data"]:
        jwe_decrypt(item["compact_jwe"], dir_key=sp108_kdf(master, item["tag"].encode()))
    return master


# ---- the scenario ----

def custodian_jwk(cert_file, index):
    cert = x509.load_pem_x509_certificate(open(cert_file, "rb").read())
    der = cert.public_bytes(serialization.Encoding.DER)
    numbers = cert.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return SecurityDomainJsonWebKey(
        kid=f"custodian-{index}", kty="RSA", key_ops=["wrapKey", "encrypt"], n=b64u(n), e=b64u(e),
        x5_c=[base64.b64encode(der).decode()], x5_t=b64u(hashlib.sha1(der).digest()),
        x5_t_s256=b64u(hashlib.sha256(der).digest()), alg="RSA-OAEP-256", use="enc",
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="hsm-interop-")
    # Registered first, so it runs last: after every served emulator is stopped.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    keys = []
    for i in range(3):
        key, cer = os.path.join(work, f"k{i}.key"), os.path.join(work, f"k{i}.cer")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                        "-subj", f"/CN=k{i}", "-keyout", key, "-out", cer],
                       check=True, capture_output=True, timeout=60)
        os.chmod(key, 0o600)  # hsm-ceremony refuses private keys other users can read
        keys.append((key, cer))

    a = Instance(args.bin, os.path.join(work, "a"))
    b = Instance(args.bin, os.path.join(work, "b"))
    c = Instance(args.bin, os.path.join(work, "c"))
    state = {}
    try:
        def download_on_a():
            client = a.sd_client()  # SDK default api-version (2025-07-01)
            info = CertificateInfo(certificates=[custodian_jwk(cer, i) for i, (_, cer) in enumerate(keys)], required=2)
            sd = client.begin_download(certificate_info=info, polling_interval=0.1).result()
            parsed = json.loads(sd.value)
            assert len(parsed["SharedKeys"]["enc_shares"]) == 3 and parsed["SharedKeys"]["required"] == 2
            assert [d["tag"] for d in parsed["EncData"]["data"]] == ["hsm_backup", "base_enclave_backup",
                                                                      "partition_enclave_backup"]
            state["sd"] = sd.value
            with open(os.path.join(work, "sd.json"), "w") as f:
                f.write(sd.value)
            status = client.get_download_status()
            assert str(status.status) in ("Success", "OperationStatus.SUCCESS"), status

        def transfer_key_on_b():
            client = b.sd_client(api_version="7.5")  # what the Azure CLI sends
            tk = client.get_transfer_key()
            print(f"     (the SDK hands transfer_key over as {type(tk.transfer_key).__name__})")
            jwk = tk.transfer_key if not isinstance(tk.transfer_key, str) else json.loads(tk.transfer_key)
            if not isinstance(jwk, dict):
                jwk = json.loads(json.dumps(jwk.as_dict() if hasattr(jwk, "as_dict") else dict(jwk)))
            assert tk.key_format == "jwk"
            der = base64.b64decode(jwk["x5c"][0])
            cert = x509.load_der_x509_certificate(der)
            assert cert.public_key().public_numbers().n == int.from_bytes(b64u_d(jwk["n"]), "big")
            state["exchange"] = cert
            path = os.path.join(work, "exchange.cer")
            with open(path, "wb") as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
            state["exchange_path"] = path

        def sd_opens_by_spec():
            a_master = open_by_spec(state["sd"], keys[:2])
            b_master = open_by_spec(state["sd"], [keys[2], keys[0]])
            assert a_master == b_master and len(a_master) == 32

        def build_blob():
            out = os.path.join(work, "blob.json")
            subprocess.run([args.bin, "--no-log", "restore-blob", "--sd-file", os.path.join(work, "sd.json"),
                            "--sd-exchange-key", state["exchange_path"], "--sd-wrapping-keys",
                            keys[0][0], keys[1][0], "--out", out], check=True, timeout=120)
            state["blob"] = open(out).read()

        def upload_on_b():
            client = b.sd_client()
            client.begin_upload(security_domain=SecurityDomain(value=state["blob"]), polling_interval=0.1).result()
            status = client.get_upload_status()
            assert str(status.status) in ("Success", "OperationStatus.SUCCESS"), status

        def upload_refused_when_activated():
            try:
                b.sd_client().get_transfer_key()
            except HttpResponseError as e:
                assert e.status_code == 400, e
                return
            raise AssertionError("an activated instance issued a transfer key")

        def canary_key():
            ka = a.key_client()
            key = ka.create_rsa_key("canary", size=2048, hardware_protected=True)
            assert key.name == "canary" and key.id.startswith(a.url + "/keys/canary/"), key.id
            backup = ka.backup_key("canary")
            assert isinstance(backup, bytes) and len(backup) > 100
            restored = b.key_client().restore_key_backup(backup)
            assert restored.name == "canary" and restored.id.startswith(b.url), restored.id
            assert restored.key.n == key.key.n
            assert b.key_client().get_key("canary").properties.version == key.properties.version
            state["backup"] = backup

        def canary_refused_on_other_domain():
            client = c.sd_client()
            info = CertificateInfo(certificates=[custodian_jwk(cer, i) for i, (_, cer) in enumerate(keys)], required=3)
            client.begin_download(certificate_info=info, polling_interval=0.1).result()
            try:
                c.key_client().restore_key_backup(state["backup"])
            except HttpResponseError as e:
                assert e.status_code == 400, e
                return
            raise AssertionError("an instance with another security domain restored the backup")

        def wrong_token_refused():
            bad = KeyClient(a.url, FakeCredential("hsmemu_not-issued"), verify_challenge_resource=False,
                            connection_verify=a.ca)
            try:
                bad.get_key("canary")
            except HttpResponseError as e:
                assert e.status_code == 401, e
                return
            raise AssertionError("a token the emulator never issued was accepted")

        check("securitydomain: begin_download 3 certificates 2-of-3 on A, status Success", download_on_a)
        check("securitydomain: get_transfer_key on B (api-version 7.5)", transfer_key_on_b)
        check("A's security domain opens by the spec alone (Python, two different quorums)", sd_opens_by_spec)
        check("hsm-ceremony restore-blob for B's exchange key from A's security domain", build_blob)
        check("securitydomain: begin_upload on B reaches Success", upload_on_b)
        check("securitydomain: activated B refuses a transfer key (400)", upload_refused_when_activated)
        check("keys: create_rsa_key + backup_key on A, restore_key_backup on B", canary_key)
        check("keys: restore_key_backup refused (400) on C with another security domain", canary_refused_on_other_domain)
        check("keys: a token the emulator never issued gets 401", wrong_token_refused)
    finally:
        for inst in (a, b, c):
            inst.stop()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
