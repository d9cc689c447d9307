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

az needs no login for restore-blob: it is an offline command. The last
checks sign the real az in to served emulators with `emulator az-setup`
and run download, init-recovery, upload (both forms), wait and the key
commands through it (az_signed_in_checks).
Last line: "N passed, M failed"; exit status non-zero on any failure.
"""

import argparse
import atexit
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from harness import Azurite, Served, check, summary


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
    ap.add_argument("--azurite", help="azurite-blob, for az keyvault backup start / restore start")
    args = ap.parse_args()
    hc = os.path.abspath(args.bin)
    args.az = os.path.abspath(args.az)
    work = tempfile.mkdtemp(prefix="hsm-ceremony-azcli-")
    # Registered first, so it runs last: after every served emulator is stopped.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
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

    az_signed_in_checks(hc, args.az, work, passes, args.azurite)

    for served in state.get("served", {}).values():
        served.stop()
    return summary()


def tree_snapshot(root):
    """Every path under root with its mode, size, mtime and content digest."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            snap[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return snap


def az_signed_in_checks(hc, az, work, passes, azurite_bin):
    """The real az, signed in by `eval "$(hsm-ceremony emulator az-setup ...)"`,
    runs the ceremony's connected steps against served emulators: D is
    activated by az's download, E recovers with a restore blob made by
    hsm-ceremony from az's file, F with the keys given to az; a key az created
    and backed up on D restores on both. HOME is a fake one holding a
    ~/.azure that must come out unchanged."""
    home = os.path.join(work, "home")
    os.makedirs(os.path.join(home, ".azure"))
    with open(os.path.join(home, ".azure", "config"), "w") as f:
        f.write("[cloud]\nname = AzureCloud\n")
    before = tree_snapshot(home)
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("AZURE_", "REQUESTS_CA_BUNDLE"))}
    base_env["HOME"] = home
    base_env["PATH"] = os.path.dirname(os.path.abspath(az)) + os.pathsep + base_env.get("PATH", "")
    st = {}

    def az_run(name, cmd, expect_ok=True):
        p = subprocess.run([az, *cmd, "--only-show-errors"], cwd=work, env=st["env"][name],
                           capture_output=True, text=True, timeout=120)
        if expect_ok and p.returncode != 0:
            raise AssertionError(f"az {' '.join(cmd)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def sign_in():
        st["served"], st["env"] = {}, {}
        # D's state folder has a space and a quote: the printed lines must quote them.
        # D's principal also holds Crypto Officer: deleted keys are its (list-deleted, recover).
        for name, folder, roles in [("d", "az d's state", ["administrator", "crypto-user", "crypto-officer"]),
                                    ("e", "az-e", []), ("f", "az-f", [])]:
            served = Served(hc, os.path.join(work, folder))
            st["served"][name] = served
            role_args = [a for r in roles for a in ("--role", r)]
            p = subprocess.run(
                ["bash", "-c", 'eval "$("$0" emulator az-setup --state "$1" --principal ops "${@:2}")" && env -0',
                 hc, served.state_dir, *role_args],
                cwd=work, env=base_env, capture_output=True, text=True, timeout=180)
            assert p.returncode == 0, p.stderr
            env = dict(kv.split("=", 1) for kv in p.stdout.split("\0") if "=" in kv)
            assert env["AZURE_CONFIG_DIR"] == os.path.join(served.state_dir, "azure-cli"), env["AZURE_CONFIG_DIR"]
            assert env["REQUESTS_CA_BUNDLE"] == served.ca
            assert os.stat(env["AZURE_CONFIG_DIR"]).st_mode & 0o777 == 0o700
            st["env"][name] = env
            account = json.loads(az_run(name, ["account", "show", "--output", "json"]).stdout)
            assert account["user"]["type"] == "servicePrincipal", account
            assert account["environmentName"] == "HsmCeremonyEmulator", account

    check("az-setup: eval signs the real az in to three served emulators (a state path with a space and a quote)",
          sign_in)

    def download():
        d = st["served"]["d"].url
        az_run("d", ["keyvault", "security-domain", "download", "--id", d, "--sd-wrapping-keys",
                     "c0.cer", "c1.cer", "c2.cer", "--sd-quorum", "2", "--security-domain-file", "az-sd.json"])
        az_run("d", ["keyvault", "security-domain", "wait", "--id", d, "--target-operation", "download"])
        with open(os.path.join(work, "az-sd.json")) as f:
            assert json.load(f)["SharedKeys"]["required"] == 2
        az_run("d", ["keyvault", "key", "create", "--id", f"{d}/keys/azcanary", "--kty", "RSA-HSM", "--size", "2048"])
        shown = json.loads(az_run("d", ["keyvault", "key", "show", "--id", f"{d}/keys/azcanary", "-o", "json"]).stdout)
        assert shown["key"]["kid"].startswith(f"{d}/keys/azcanary/"), shown
        st["n"] = shown["key"]["n"]
        az_run("d", ["keyvault", "key", "backup", "--id", f"{d}/keys/azcanary", "--file", "azcanary.backup"])

    check("az keyvault security-domain download + wait activate D; az key create/show/backup on D", download)

    def upload_restore_blob():
        e = st["served"]["e"].url
        az_run("e", ["keyvault", "security-domain", "init-recovery", "--id", e, "--sd-exchange-key", "az-exchange-e.cer"])
        # Our custodian keys open az's download: hsm-ceremony makes the restore blob from it.
        run([hc, "restore-blob", "--sd-file", "az-sd.json", "--sd-exchange-key", "az-exchange-e.cer",
             "--sd-wrapping-keys", "c0.key", "c1.key", "--passphrase-file", "c0.pass",
             "--passphrase-file", "c1.pass", "--out", "az-blob-e.json"], work)
        az_run("e", ["keyvault", "security-domain", "upload", "--id", e, "--sd-file", "az-blob-e.json", "--restore-blob"])
        az_run("e", ["keyvault", "security-domain", "wait", "--id", e, "--target-operation", "upload"])
        restored = json.loads(az_run("e", ["keyvault", "key", "restore", "--id", e, "--file", "azcanary.backup",
                                           "-o", "json"]).stdout)
        assert restored["key"]["n"] == st["n"], "E restored the very key D created"

    check("E: az init-recovery, our restore blob from az's file, az upload --restore-blob, wait; the key restores",
          upload_restore_blob)

    def upload_with_keys():
        f = st["served"]["f"].url
        az_run("f", ["keyvault", "security-domain", "init-recovery", "--id", f, "--sd-exchange-key", "az-exchange-f.cer"])
        az_run("f", ["keyvault", "security-domain", "upload", "--id", f, "--sd-file", "az-sd.json",
                     "--sd-exchange-key", "az-exchange-f.cer", "--sd-wrapping-keys", "c1.key", "c2.key",
                     "--passwords", passes[1], passes[2]])
        az_run("f", ["keyvault", "security-domain", "wait", "--id", f, "--target-operation", "upload"])
        az_run("f", ["keyvault", "key", "restore", "--id", f, "--file", "azcanary.backup"])
        shown = json.loads(az_run("f", ["keyvault", "key", "show", "--id", f"{f}/keys/azcanary", "-o", "json"]).stdout)
        assert shown["key"]["n"] == st["n"]

    check("F: az init-recovery, az upload with our keys and passphrases, wait; the key restores and shows",
          upload_with_keys)

    def wrong_secret():
        # In a copy of D's private configuration: az records a service
        # principal's secret before the login is known to succeed, so a
        # refused login would leave D's own configuration with the wrong one.
        # (Run with D's token cache, az never sent the wrong secret at all.)
        env = dict(st["env"]["d"])
        scratch = os.path.join(work, "az-scratch-config")
        shutil.copytree(env["AZURE_CONFIG_DIR"], scratch)
        # Without its cached token MSAL must present the secret to the authority.
        for name in os.listdir(scratch):
            if name.startswith("msal_token_cache"):
                os.remove(os.path.join(scratch, name))
        env["AZURE_CONFIG_DIR"] = scratch
        client_id = json.loads(az_run("d", ["account", "show", "--output", "json"]).stdout)["user"]["name"]
        for user, code in [(client_id, "AADSTS7000215"), ("00000000-1111-4222-8333-444444444444", "AADSTS700016")]:
            p = subprocess.run([az, "login", "--service-principal", "--username", user,
                                "--password", "not-the-secret", "--tenant", "00000000-0000-0000-0000-000000000000",
                                "--allow-no-subscriptions", "--output", "none"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=120)
            assert p.returncode != 0 and code in p.stderr, p.stderr
            assert "not-the-secret" not in p.stderr

    check("a wrong secret or an unknown client id: az reports the authority's AADSTS7000215 / AADSTS700016",
          wrong_secret)

    def show(name, cmd):
        return json.loads(az_run(name, [*cmd, "-o", "json"]).stdout)

    def hsm_name_form():
        # az makes https://localhost:PORT of `--hsm-name localhost` with the
        # mhsmDns suffix az-setup registered: the same instance as --id.
        d = st["served"]["d"].url
        # Key ids carry the host asked for (localhost or 127.0.0.1): compared by path.
        path = lambda kid: "/" + kid.split("://", 1)[1].split("/", 1)[1]  # noqa: E731
        by_name = sorted(path(k["kid"]) for k in show("d", ["keyvault", "key", "list", "--hsm-name", "localhost"]))
        by_id = sorted(path(k["kid"]) for k in show("d", ["keyvault", "key", "list", "--id", d]))
        assert by_name == by_id and "/keys/azcanary" in by_id, (by_name, by_id)
        made = show("d", ["keyvault", "key", "create", "--hsm-name", "localhost", "--name", "hn-key",
                          "--kty", "EC-HSM", "--curve", "P-256"])
        st["hn_x"] = made["key"]["x"]
        assert show("d", ["keyvault", "key", "show", "--id", f"{d}/keys/hn-key"])["key"]["x"] == st["hn_x"]

    check("az keyvault key list/create/show --hsm-name localhost (the registered mhsmDns suffix) is D, as --id",
          hsm_name_form)

    def delete_and_recover():
        d = st["served"]["d"].url
        path = lambda kid: "/" + kid.split("://", 1)[1].split("/", 1)[1]  # noqa: E731
        for form, key in [(["--hsm-name", "localhost", "--name"], "hn-key"), (["--id"], f"{d}/keys/azcanary")]:
            name = key.rsplit("/", 1)[-1]
            deleted = show("d", ["keyvault", "key", "delete", *form, key])
            assert deleted["recoveryId"].endswith(f"/deletedkeys/{name}"), deleted
            assert deleted["scheduledPurgeDate"], deleted
            listed = [k["name"] if "name" in k else k["kid"].rsplit("/", 2)[-2]
                      for k in show("d", ["keyvault", "key", "list-deleted", "--hsm-name", "localhost"])]
            assert name in listed, listed
            by_id = show("d", ["keyvault", "key", "show-deleted", "--id", f"{d}/deletedkeys/{name}"])
            by_name = show("d", ["keyvault", "key", "show-deleted", "--hsm-name", "localhost", "--name", name])
            ids = {path(x["recoveryId"]) for x in (by_id, by_name, deleted)}
            assert ids == {f"/deletedkeys/{name}"}, (by_id, by_name, deleted)
            # Gone from the key list, and its name held.
            assert not [k for k in show("d", ["keyvault", "key", "list", "--id", d]) if k["kid"].endswith(f"/{name}")]
            p = az_run("d", ["keyvault", "key", "purge", "--hsm-name", "localhost", "--name", name], expect_ok=False)
            assert p.returncode != 0 and "purge protection" in p.stderr, p.stderr
            if form[0] == "--id":
                az_run("d", ["keyvault", "key", "recover", "--id", f"{d}/deletedkeys/{name}"])
            else:
                az_run("d", ["keyvault", "key", "recover", "--hsm-name", "localhost", "--name", name])
            assert show("d", ["keyvault", "key", "show", "--id", f"{d}/keys/{name}"])["key"]["kid"]

    check("az keyvault key delete / list-deleted / show-deleted / recover (--hsm-name and --id); purge refused "
          "under purge protection", delete_and_recover)

    def role_assignments():
        defs = show("d", ["keyvault", "role", "definition", "list", "--hsm-name", "localhost"])
        names = {x["roleName"] for x in defs}
        assert {"Managed HSM Administrator", "Managed HSM Crypto User", "Managed HSM Backup"} <= names, names
        app = "7f6e5d4c-3b2a-4190-8877-665544332211"
        made = show("d", ["keyvault", "role", "assignment", "create", "--hsm-name", "localhost",
                          "--role", "Managed HSM Crypto User", "--assignee-object-id", app,
                          "--assignee-principal-type", "ServicePrincipal", "--scope", "/keys/azcanary"])
        assert made["principalId"] == app and made["scope"] == "/keys/azcanary", made
        assert made["roleName"] == "Managed HSM Crypto User", made
        st["assignment"] = made["name"]
        listed = show("d", ["keyvault", "role", "assignment", "list", "--hsm-name", "localhost",
                            "--scope", "/keys/azcanary"])
        assert made["name"] in {x["name"] for x in listed}, listed
        # Kept for the restore on F; a second one is deleted again.
        other = show("d", ["keyvault", "role", "assignment", "create", "--id", st["served"]["d"].url,
                           "--role", "Managed HSM Crypto Auditor", "--assignee-object-id", app,
                           "--assignee-principal-type", "ServicePrincipal", "--scope", "/"])
        az_run("d", ["keyvault", "role", "assignment", "delete", "--hsm-name", "localhost", "--ids", other["id"]])
        left = show("d", ["keyvault", "role", "assignment", "list", "--hsm-name", "localhost", "--scope", "/"])
        assert other["name"] not in {x["name"] for x in left}, left

    check("az keyvault role definition list; role assignment create/list/delete at /keys/azcanary and /",
          role_assignments)

    if azurite_bin and os.path.exists(azurite_bin):
        azurite = Azurite(azurite_bin)

        def backup_start():
            uri, sas = azurite.container("az-backups")
            st["storage"] = (uri, sas)
            out = show("d", ["keyvault", "backup", "start", "--hsm-name", "localhost",
                             "--storage-resource-uri", uri, "--storage-container-SAS-token", sas])
            assert out["status"] == "Succeeded", out
            assert out["folderUrl"].startswith(f"{uri}/mhsm-"), out
            st["folder"] = out["folderUrl"].rsplit("/", 1)[1]

        check("az keyvault backup start --hsm-name localhost to Azurite (container URL and SAS): Succeeded, "
              "folderUrl mhsm-...", backup_start)

        def restore_start():
            # F was recovered from D's security domain (the F check above).
            f = st["served"]["f"].url
            uri, sas = st["storage"]
            # az prints nothing when the restore succeeds.
            az_run("f", ["keyvault", "restore", "start", "--id", f, "--storage-resource-uri", uri,
                         "--storage-container-SAS-token", sas, "--backup-folder", st["folder"]])
            assert show("f", ["keyvault", "key", "show", "--id", f"{f}/keys/hn-key"])["key"]["x"] == st["hn_x"]
            assert show("f", ["keyvault", "key", "show", "--id", f"{f}/keys/azcanary"])["key"]["n"] == st["n"]
            back = show("f", ["keyvault", "role", "assignment", "list", "--id", f, "--scope", "/keys/azcanary"])
            assert st["assignment"] in {x["name"] for x in back}, back

        check("az keyvault restore start on F (recovered from D's domain): D's keys and role assignment are back",
              restore_start)

        def selective_restore():
            # E was recovered from D's domain too, and holds only azcanary (a key restore).
            e = st["served"]["e"].url
            uri, sas = st["storage"]
            az_run("e", ["keyvault", "restore", "start", "--id", e, "--storage-resource-uri", uri,
                         "--storage-container-SAS-token", sas, "--backup-folder", st["folder"],
                         "--key-name", "hn-key"])
            assert show("e", ["keyvault", "key", "show", "--id", f"{e}/keys/hn-key"])["key"]["x"] == st["hn_x"]

        check("az keyvault restore start --key-name hn-key (selective) on E brings back that key", selective_restore)
        azurite.stop()
    elif os.environ.get("CI"):
        check("Azurite for az keyvault backup/restore start", lambda: (_ for _ in ()).throw(
            AssertionError(f"Azurite is not installed at {azurite_bin}")))
    else:
        print(f"SKIP az keyvault backup/restore start: no Azurite at {azurite_bin}")

    def home_untouched():
        after = tree_snapshot(home)
        assert after == before, f"~/.azure changed: {sorted(set(after.items()) ^ set(before.items()))}"

    check("the operator's ~/.azure (a fake HOME) is left exactly as it was (no file created or changed)", home_untouched)

    for served in st.get("served", {}).values():
        served.stop()


if __name__ == "__main__":
    sys.exit(main())
