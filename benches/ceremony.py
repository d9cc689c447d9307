#!/usr/bin/env python3
"""Speed and memory of the ceremony commands, measured on this machine.

Run through benches/run.sh (which builds the release binary first). Prints:
- RSA-3072 custodian key generation, median of N runs, against
  `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072` (target: ratio <= 1.0);
- batch generation of 10 custodians on all cores;
- `restore-blob` whole-process time and peak memory on a 3-of-5 RSA-3072
  security domain (target: under 50 ms and 20 MB, with unencrypted keys; the
  encrypted-key figure is dominated by the deliberate PBKDF2 cost and is
  shown beside it).

Each process is timed from spawn to exit; peak memory is the child's
ru_maxrss from wait4.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run(argv, cwd):
    """Runs argv; returns (seconds, peak RSS in KiB). Fails loudly."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark step failed: {' '.join(argv)}\n{err}")
    return elapsed, usage.ru_maxrss


def median_of(label, runs, make_argv, cwd):
    times = [run(make_argv(i), cwd)[0] for i in range(runs)]
    med = statistics.median(times)
    print(f"{label:<44} median {med * 1000:8.1f} ms  (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, n={runs})")
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the release hsm-ceremony binary")
    ap.add_argument("--keygen-runs", type=int, default=21)
    ap.add_argument("--blob-runs", type=int, default=15)
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    if shutil.which("openssl") is None:
        sys.exit("openssl is needed for the comparison: apt-get install openssl")
    work = tempfile.mkdtemp(prefix="hsm-ceremony-bench-")
    try:
        print(f"machine: {os.cpu_count()} cores; binary: {binary}\n")
        print("== RSA-3072 key generation (one process per key, unencrypted, as openssl genpkey) ==")
        ours = median_of(
            "hsm-ceremony custodian keygen --bits 3072",
            args.keygen_runs,
            lambda i: [binary, "-q", "custodian", "keygen", "--name", f"k{i}", "--bits", "3072",
                       "--insecure-unencrypted-key", "--out-dir", work],
            work,
        )
        theirs = median_of(
            "openssl genpkey rsa_keygen_bits:3072",
            args.keygen_runs,
            lambda i: ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072",
                       "-out", os.path.join(work, f"o{i}.pem")],
            work,
        )
        print(f"{'ratio hsm-ceremony / openssl':<44} {ours / theirs:8.2f}x  (target <= 1.00x)\n")

        print("== batch: 10 custodians, RSA-3072, encrypted keys, all cores ==")
        batch = os.path.join(work, "batch")
        os.mkdir(batch)
        passfile = os.path.join(work, "pass")
        # Passphrase files others can read are refused: created 0600.
        with open(os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write("benchmark passphrase only\n")
        t, rss = run([binary, "-q", "custodian", "keygen", "--count", "10", "--prefix", "b", "--bits", "3072",
                      "--passphrase-file", passfile, "--out-dir", batch], work)
        print(f"{'10 custodians in one process':<44} {t:8.2f} s  (peak {rss / 1024:.1f} MB)\n")

        print("== restore-blob, 3-of-5 RSA-3072 security domain ==")
        plain = os.path.join(work, "plain")
        os.mkdir(plain)
        run([binary, "-q", "custodian", "keygen", "--count", "5", "--prefix", "c", "--bits", "3072",
             "--insecure-unencrypted-key", "--out-dir", plain], work)
        run([binary, "-q", "custodian", "keygen", "--name", "exchange", "--bits", "3072",
             "--insecure-unencrypted-key", "--out-dir", plain], work)
        certs = [os.path.join(plain, f"c{i}.cer") for i in range(5)]
        sd = os.path.join(plain, "sd.json")
        run([binary, "-q", "sd", "split", "--certs", *certs, "--quorum", "3", "--random-contents", "--out", sd], work)
        plain_keys = [os.path.join(plain, f"c{i}.key") for i in range(3)]
        enc_keys = [os.path.join(batch, f"b{i}.key") for i in range(3)]
        sd_enc = os.path.join(batch, "sd.json")
        run([binary, "-q", "sd", "split", "--certs", *[os.path.join(batch, f"b{i}.cer") for i in range(5)],
             "--quorum", "3", "--random-contents", "--out", sd_enc], work)

        def blob(keys, sdfile, extra):
            def make(i):
                out = os.path.join(work, f"blob-{os.path.basename(sdfile)}-{len(extra)}-{i}.json")
                return [binary, "-q", "restore-blob", "--sd-file", sdfile, "--sd-exchange-key",
                        os.path.join(plain, "exchange.cer"), "--sd-wrapping-keys", *keys, "--out", out, *extra]
            return make

        times, peaks = [], []
        make = blob(plain_keys, sd, [])
        for i in range(args.blob_runs):
            t, rss = run(make(i), work)
            times.append(t)
            peaks.append(rss)
        med = statistics.median(times)
        print(f"{'unencrypted keys: whole process':<44} median {med * 1000:8.1f} ms  (target < 50 ms)")
        print(f"{'unencrypted keys: peak memory':<44} {max(peaks) / 1024:8.1f} MB  (target < 20 MB)")
        median_of("encrypted keys (PBKDF2 600k x 3 dominates)", 3, blob(enc_keys, sd_enc, ["--passphrase-file", passfile]), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
