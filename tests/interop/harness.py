"""The little harness the interop scripts share: named checks that report
and go on, the summary line `.ci/run` reads, a served emulator and Azurite."""

import atexit
import datetime
import socket
import subprocess
import threading
import time
import traceback

RESULTS = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
        RESULTS["passed"] += 1
        print(f"ok   {name}", flush=True)
    except Exception:  # noqa: BLE001 - report and go on
        RESULTS["failed"] += 1
        print(f"FAIL {name}", flush=True)
        traceback.print_exc()


def summary():
    """Prints "N passed, M failed" and returns the exit status."""
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


class Served:
    """One `hsm-ceremony emulator serve` child on its own state directory, on
    a free loopback port: its URL and the CA to trust. Recovered contents live
    in that process only, so an upload and what follows it go to one server."""

    def __init__(self, binary, state_dir, *serve_args):
        self.state_dir = state_dir
        self.proc = subprocess.Popen(
            [binary, "emulator", "serve", "--state", state_dir, "--listen", "127.0.0.1:0", *serve_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = {}
        timer = threading.Timer(30, self.proc.kill)
        timer.start()
        try:
            for _ in range(2):
                line = self.proc.stdout.readline().strip()
                key, _, value = line.partition(": ") if line.startswith("CA") else line.partition(" on ")
                lines[key] = value
        finally:
            timer.cancel()
        self.url = lines["listening"]
        self.ca = lines["CA certificate"]
        assert self.url.startswith("https://127.0.0.1:"), self.url
        # Stopped however the script ends, so no server outlives a failed check.
        atexit.register(self.stop)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


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
        atexit.register(self.stop)

    def container(self, name):
        """Creates container `name`; its URL and a SAS (read, write, list, create) for 24 hours."""
        # Imported here: the Azure CLI's venv has azure-storage-blob (az bundles it), but only this needs it.
        from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

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
