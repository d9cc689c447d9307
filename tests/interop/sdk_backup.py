"""The real azure-keyvault-administration KeyVaultBackupClient (4.7) against
`hsm-ceremony emulator serve` over HTTPS, with Azurite (Microsoft's storage
emulator, started here on loopback, in memory) as the storage account: a
key created on instance A, a full backup of A to Azurite, instance B
recovered from A's security domain, a full restore on B bringing the key
back with the same version and tags, a foreign instance refusing the
backup, and a selective key restore on a third recovered instance. The
disaster-recovery proofs run on B after the restore, by the HSM: DEKs wrapped
on A under an RSA and an AES key unwrap, a signature A's EC key made
verifies, the restored keys sign anew, the inventory (names, versions, tags,
enabled) is A's, and an application's role assignment at one key is back."""

import argparse
import atexit
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

from azure.core.exceptions import HttpResponseError
import hashlib

from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultBackupClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm
from azure.keyvault.securitydomain.models import CertificateInfo, SecurityDomain
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from azure.storage.blob import BlobServiceClient

from harness import Azurite, check, summary
from sdk_interop import Instance, custodian_jwk

POLL = {"_polling_interval": 0.2}

def backup_client(inst):
    return KeyVaultBackupClient(inst.url, inst.credential, verify_challenge_resource=False,
                                connection_verify=inst.ca)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--azurite", required=True)
    args = parser.parse_args()
    if not os.path.exists(args.azurite):
        print(f"SKIP sdk_backup: Azurite is not installed at {args.azurite}")
        if os.environ.get("CI"):
            return 1
        return 0
    work = tempfile.mkdtemp(prefix="hsm-backup-interop-")
    # Registered first, so it runs last: after every served emulator is stopped.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    keys = []
    for i in range(3):
        key, cer = os.path.join(work, f"k{i}.key"), os.path.join(work, f"k{i}.cer")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                        "-subj", f"/CN=k{i}", "-keyout", key, "-out", cer],
                       check=True, capture_output=True, timeout=60)
        os.chmod(key, 0o600)
        keys.append((key, cer))

    azurite = Azurite(args.azurite)
    insts = {n: Instance(args.bin, os.path.join(work, n)) for n in ("a", "b", "c", "d")}
    a, b, c, d = insts["a"], insts["b"], insts["c"], insts["d"]
    state = {}

    def hsm_only(client):
        # The SDK does public-key halves (and an oct-HSM "wrap" with no k) locally:
        # without the key fetched, every operation is the HSM's.
        client._keys_get_forbidden = True  # noqa: SLF001
        return client

    def inventory(inst):
        kc = inst.key_client()
        out = {}
        for p in kc.list_properties_of_keys():
            for v in kc.list_properties_of_key_versions(p.name):
                out[(p.name, v.version)] = (v.enabled, dict(v.tags or {}))
        return out

    def activate(inst):
        info = CertificateInfo(certificates=[custodian_jwk(cer, i) for i, (_, cer) in enumerate(keys)], required=2)
        return inst.sd_client().begin_download(certificate_info=info, polling_interval=0.1).result().value

    def recover(inst, name):
        tk = inst.sd_client().get_transfer_key()
        jwk = tk.transfer_key if not isinstance(tk.transfer_key, str) else json.loads(tk.transfer_key)
        if not isinstance(jwk, dict):
            jwk = json.loads(json.dumps(jwk.as_dict() if hasattr(jwk, "as_dict") else dict(jwk)))
        cert = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
        exchange = os.path.join(work, f"{name}-exchange.cer")
        with open(exchange, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        out = os.path.join(work, f"{name}-blob.json")
        subprocess.run([args.bin, "--no-log", "restore-blob", "--sd-file", os.path.join(work, "sd.json"),
                        "--sd-exchange-key", exchange, "--sd-wrapping-keys", keys[0][0], keys[1][0],
                        "--out", out], check=True, timeout=120, capture_output=True)
        inst.sd_client().begin_upload(security_domain=SecurityDomain(value=open(out).read()),
                                      polling_interval=0.1).result()

    try:
        def original():
            state["sd"] = activate(a)
            with open(os.path.join(work, "sd.json"), "w") as f:
                f.write(state["sd"])
            kc = a.key_client()
            key = kc.create_rsa_key("dr-key", size=2048, tags={"app": "payments"})
            state["key"] = key
            ec = kc.create_ec_key("dr-sign", curve="P-256", tags={"app": "ledger"})
            aes = kc.create_oct_key("dr-aes", size=256, hardware_protected=True)
            crypto = lambda k: hsm_only(CryptographyClient(k.id, a.credential, verify_challenge_resource=False,
                                                           connection_verify=a.ca))
            state["dek"] = os.urandom(32)
            state["dek_rsa"] = crypto(key).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, state["dek"]).encrypted_key
            state["dek_aes"] = crypto(aes).wrap_key(KeyWrapAlgorithm.aes_256, state["dek"]).encrypted_key
            state["digest"] = hashlib.sha256(b"ledger entry before the disaster").digest()
            state["signature"] = crypto(ec).sign(SignatureAlgorithm.es256, state["digest"]).signature
            state["inventory"] = inventory(a)
            acl = KeyVaultAccessControlClient(a.url, a.credential, verify_challenge_resource=False,
                                              connection_verify=a.ca)
            user = [d for d in acl.list_role_definitions("/") if d.role_name == "Managed HSM Crypto User"][0]
            state["assignment"] = acl.create_role_assignment("/keys/dr-key", user.id, "payments-app").name
            state["container"], state["sas"] = azurite.container("backups")

        def pre_backup():
            backup_client(a).begin_pre_backup(state["container"], sas_token=state["sas"], **POLL).wait()

        def full_backup():
            poller = backup_client(a).begin_backup(state["container"], state["sas"], **POLL)
            result = poller.result()
            assert result.folder_url.startswith(state["container"] + "/mhsm-"), result.folder_url
            state["folder_url"] = result.folder_url
            names = [blob.name for blob in BlobServiceClient(azurite.endpoint, credential=state["sas"])
                     .get_container_client("backups").list_blobs()]
            assert any(n.startswith(result.folder_url.rsplit("/", 1)[1] + "/") for n in names), names

        def full_restore_on_recovered():
            recover(b, "b")
            client = backup_client(b)
            client.begin_pre_restore(state["folder_url"], sas_token=state["sas"], **POLL).wait()
            client.begin_restore(state["folder_url"], sas_token=state["sas"], **POLL).wait()
            back = b.key_client().get_key("dr-key")
            assert back.properties.version == state["key"].properties.version, back.id
            assert back.properties.tags == {"app": "payments"}, back.properties.tags
            assert back.key.n == state["key"].key.n

        def dr_proofs_on_recovered():
            assert inventory(b) == state["inventory"], (inventory(b), state["inventory"])
            kc = b.key_client()
            crypto = lambda name: hsm_only(CryptographyClient(kc.get_key(name).id, b.credential,
                                                              verify_challenge_resource=False, connection_verify=b.ca))
            # Unwrap is a private-key operation: the SDK sends it to the recovered HSM.
            assert crypto("dr-key").unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, state["dek_rsa"]).key == state["dek"]
            assert crypto("dr-aes").unwrap_key(KeyWrapAlgorithm.aes_256, state["dek_aes"]).key == state["dek"]
            assert crypto("dr-sign").verify(SignatureAlgorithm.es256, state["digest"], state["signature"]).is_valid
            fresh = hashlib.sha256(b"first entry after the recovery").digest()
            for name, alg in (("dr-sign", SignatureAlgorithm.es256), ("dr-key", SignatureAlgorithm.ps256)):
                signed = crypto(name).sign(alg, fresh).signature
                assert crypto(name).verify(alg, fresh, signed).is_valid, name
            acl = KeyVaultAccessControlClient(b.url, b.credential, verify_challenge_resource=False,
                                              connection_verify=b.ca)
            back = acl.get_role_assignment("/keys/dr-key", state["assignment"])
            assert back.properties.principal_id == "payments-app", back
            assert back.properties.scope == "/keys/dr-key", back.properties.scope

        def foreign_refuses():
            activate(c)
            try:
                backup_client(c).begin_restore(state["folder_url"], sas_token=state["sas"], **POLL).result()
            except HttpResponseError as e:
                assert "another security domain" in str(e), e
            else:
                raise AssertionError("an instance with another security domain restored the backup")
            try:
                c.key_client().get_key("dr-key")
            except HttpResponseError as e:
                assert e.status_code == 404, e
            else:
                raise AssertionError("the foreign instance holds the key")

        def selective_restore():
            recover(d, "d")
            backup_client(d).begin_restore(state["folder_url"], sas_token=state["sas"], key_name="dr-key",
                                           **POLL).wait()
            back = d.key_client().get_key("dr-key")
            assert back.properties.version == state["key"].properties.version

        def managed_identity_refused():
            try:
                backup_client(a).begin_backup(state["container"], use_managed_identity=True, **POLL).result()
            except HttpResponseError as e:
                assert e.status_code == 400 and "managed identity" in str(e), e
            else:
                raise AssertionError("useManagedIdentity was accepted")

        check("administration: a key on A, containers on Azurite", original)
        check("administration: begin_pre_backup to Azurite", pre_backup)
        check("administration: begin_backup to Azurite, folder_url mhsm-..., the blob listed", full_backup)
        check("administration: begin_pre_restore + begin_restore on B recovered from A's domain: same version and tags",
              full_restore_on_recovered)
        check("recovered B: inventory as on A; DEKs wrapped on A unwrap by B's HSM (RSA-OAEP-256, A256KW); "
              "A's ES256 signature verifies; the restored keys sign anew; the role assignment is back",
              dr_proofs_on_recovered)
        check("administration: begin_restore on C (another security domain) fails, no key", foreign_refuses)
        check("administration: begin_restore key_name= (selective) on D", selective_restore)
        check("administration: use_managed_identity=True refused (400)", managed_identity_refused)
    finally:
        for inst in insts.values():
            inst.stop()
        azurite.stop()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
