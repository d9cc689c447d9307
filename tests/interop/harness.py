"""The little harness both interop scripts share: named checks that report
and go on, the summary line `.ci/run` reads, and a served emulator."""

import atexit
import subprocess
import threading
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
