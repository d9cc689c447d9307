"""The real Azure CLI (`az keyvault security-domain restore-blob`) against
files made by `hsm-ceremony`, both ways.

Instance A (an emulated Managed HSM, served in process with `--url local:`)
is activated by `hsm-ceremony instance download` with three custodians whose
keys `hsm-ceremony custodian keygen` made (encrypted PKCS#8); a canary key is
backed up on it. Then:

- az reads our security domain and our encrypted keys, and its restore blob
  for instance B's exchange key is accepted by B; the canary restores on B
  (B and C are served emulators: what an upload recovers lives in the
  serving process only, so the upload and the restore go to one server);
- our restore blob for instance C has the very shape of az's: the same text
  byte for byte once the base64url runs are masked (keys, order, spacing),
  the same JWE protected headers byte for byte and the same part sizes (only
  the random bytes differ), and C accepts it too;
- az refuses a wrong passphrase, as we do;
- a key with no `.cer` beside it: az cannot pair it with its share (its
  hidden sibling-file rule), hsm-ceremony finds the share the key opens.

az needs no login for restore-blob: it is an offline command.
Last line: "N passed, M failed"; exit status non-zero on any failure.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

from harness import Served, check, summary


def run(cmd, cwd, expect_ok=True):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if expect_ok and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwe_shape(compact):
    """A compact JWE without its random bytes: the decoded header and each
    part's length."""
    parts = compact.split(".")
    return {
        "header": b64u_decode(parts[0]).decode(),
        "part_lengths": [len(b64u_decode(p)) for p in parts[1:]],
    }


def shape(value):
    """A JSON value with every string replaced by its form: JWE strings by
    their shape, other strings by their length. Dict key order is kept."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, str) and value.count(".") == 4:
        return jwe_shape(value)
    if isinstance(value, str):
        return f"str[{len(value)}]"
    return value


def skeleton(text):
    """The JSON text byte for byte, with every base64url run of 40 or more
    characters (JWEs, thumbprints) replaced: spacing, separators, key order
    and the short strings are left as they are."""
    return re.sub(r'"[A-Za-z0-9_\-.]{40,}"', '"..."', text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--az", required=True)
    args = ap.parse_args()
    hc = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="hsm-ceremony-azcli-")
    os.environ["AZURE_CONFIG_DIR"] = os.path.join(work, ".azure")
    os.environ["AZURE_CORE_COLLECT_TELEMETRY"] = "no"
    passes = [f"interop custodian {i} passphrase" for i in range(3)]
    for i, p in enumerate(passes):
        # Passphrase and token files others can read are refused: created 0600.
        with open(os.open(os.path.join(work, f"c{i}.pass"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(p + "\n")
    state = {}

    def setup():
        keygen = [hc, "custodian", "keygen", "--count", "3", "--prefix", "c", "--bits", "2048"]
        for i in range(3):
            keygen += ["--passphrase-file", f"c{i}.pass"]
        run(keygen, work)
        for name in ["a", "b", "c"]:
            token = run(
                [hc, "emulator", "token", "--state", f"hsm-{name}", "--principal", "ops",
                 "--role", "administrator", "--role", "crypto-user"],
                work,
            ).stdout.strip()
            with open(os.open(os.path.join(work, f"{name}.token"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(token + "\n")
        served = {n: Served(hc, os.path.join(work, f"hsm-{n}")) for n in ["b", "c"]}
        state["served"] = served

        def conn(n):
            if n in served:
                return ["--url", served[n].url, "--ca", served[n].ca, "--token-file", f"{n}.token"]
            return ["--url", f"local:hsm-{n}", "--token-file", f"{n}.token"]

        state["conn"] = conn
        run([hc, "instance", "download", *conn("a"), "--certs", "c0.cer", "c1.cer", "c2.cer",
             "--quorum", "2", "--out", "sd.json"], work)
        run([hc, "drill", "prepare", *conn("a"), "--out", "canary.json"], work)
        for n in ["b", "c"]:
            run([hc, "instance", "init-recovery", *conn(n), "--out", f"exchange-{n}.cer"], work)

    check("setup: our keys, activation of A, canary, exchange keys of B and C", setup)

    def az_blob_restores():
        run([args.az, "keyvault", "security-domain", "restore-blob", "--sd-file", "sd.json",
             "--sd-exchange-key", "exchange-b.cer", "--sd-wrapping-keys", "c0.key", "c2.key",
             "--passwords", passes[0], passes[2], "--sd-file-restore-blob", "az-blob.json"], work)
        conn = state["conn"]
        out = run([hc, "instance", "upload", *conn("b"), "--restore-blob", "az-blob.json"], work).stdout
        assert "upload succeeded" in out, out
        out = run([hc, "instance", "restore-key", *conn("b"), "--canary", "canary.json"], work).stdout
        assert "restored as" in out, out

    check("az restore-blob reads our security domain and encrypted keys; B accepts its blob; the canary restores",
          az_blob_restores)

    def our_blob_has_azs_shape():
        run([hc, "restore-blob", "--sd-file", "sd.json", "--sd-exchange-key", "exchange-c.cer",
             "--sd-wrapping-keys", "c1.key", "c2.key", "--passphrase-file", "c1.pass",
             "--passphrase-file", "c2.pass", "--out", "our-blob.json"], work)
        with open(os.path.join(work, "az-blob.json")) as f:
            az_text = f.read()
        with open(os.path.join(work, "our-blob.json")) as f:
            our_text = f.read()
        az_shape, our_shape = shape(json.loads(az_text)), shape(json.loads(our_text))
        assert our_shape == az_shape, f"shapes differ:\naz:  {az_shape}\nour: {our_shape}"
        assert skeleton(our_text) == skeleton(az_text), f"az:  {skeleton(az_text)}\nour: {skeleton(our_text)}"
        conn = state["conn"]
        run([hc, "instance", "upload", *conn("c"), "--restore-blob", "our-blob.json"], work)
        out = run([hc, "instance", "restore-key", *conn("c"), "--canary", "canary.json"], work).stdout
        assert "restored as" in out, out

    check("our restore blob has az's shape (text, key order, JWE headers, part sizes); C accepts it",
          our_blob_has_azs_shape)

    def az_refuses_a_wrong_passphrase():
        p = run([args.az, "keyvault", "security-domain", "restore-blob", "--sd-file", "sd.json",
                 "--sd-exchange-key", "exchange-c.cer", "--sd-wrapping-keys", "c0.key", "c1.key",
                 "--passwords", "not the passphrase", passes[1],
                 "--sd-file-restore-blob", "az-wrong.json"], work, expect_ok=False)
        assert p.returncode != 0, p.stdout
        assert not os.path.exists(os.path.join(work, "az-wrong.json"))

    check("az refuses a wrong passphrase for our key", az_refuses_a_wrong_passphrase)

    def key_without_its_certificate():
        # az pairs a key with its share through the .cer beside it and fails
        # without one; we find the share the key opens.
        with open(os.path.join(work, "c1.key"), "rb") as src, open(os.path.join(work, "lonely.key"), "wb") as dst:
            dst.write(src.read())
        os.chmod(os.path.join(work, "lonely.key"), 0o600)
        p = run([args.az, "keyvault", "security-domain", "restore-blob", "--sd-file", "sd.json",
                 "--sd-exchange-key", "exchange-c.cer", "--sd-wrapping-keys", "c0.key", "lonely.key",
                 "--passwords", passes[0], passes[1], "--sd-file-restore-blob", "az-lonely.json"],
                work, expect_ok=False)
        assert p.returncode != 0, p.stdout
        out = run([hc, "restore-blob", "--sd-file", "sd.json", "--sd-exchange-key", "exchange-c.cer",
                   "--sd-wrapping-keys", "c0.key", "lonely.key", "--passphrase-file", "c0.pass",
                   "--passphrase-file", "c1.pass", "--out", "our-lonely.json"], work).stdout
        assert "opened for lonely.key" in out, out

    check("a key with no .cer beside it: az fails, hsm-ceremony finds its share", key_without_its_certificate)

    for served in state.get("served", {}).values():
        served.stop()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
