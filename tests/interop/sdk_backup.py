"""The real azure-keyvault-administration KeyVaultBackupClient (4.7) against
`hsm-ceremony emulator serve` over HTTPS, with Azurite (Microsoft's storage
emulator, started here on loopback, in memory) as the storage account: a
key created on instance A, a full backup of A to Azurite, instance B
recovered from A's security domain, a full restore on B bringing the key
back with the same version and tags, a foreign instance refusing the
backup, and a selective key restore on a third recovered instance."""

import argparse
import base64
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from azure.core.exceptions import HttpResponseError
from azure.keyvault.administration import KeyVaultBackupClient
from azure.keyvault.securitydomain.models import CertificateInfo, SecurityDomain
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from harness import check, summary
from sdk_interop import Instance, custodian_jwk

# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
POLL = {"_polling_interval": 0.2}


class Azurite:
    """azurite-blob on a free loopback port, in memory; stopped by pid."""

    def __init__(self, binary):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError("Azurite did not listen within 30 s")
                time.sleep(0.1)
        self.endpoint = f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def container(self, name):
        conn = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.endpoint};")
        BlobServiceClient.from_connection_string(conn).create_container(name)
        sas = generate_container_sas(
            ACCOUNT, name, account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions(read=True, write=True, list=True, create=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=24),
        )
        return f"{self.endpoint}/{name}", sas

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


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
            key = a.key_client().create_rsa_key("dr-key", size=2048, tags={"app": "payments"})
            state["key"] = key
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
