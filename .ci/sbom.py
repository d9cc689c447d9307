#!/usr/bin/env python3
"""CycloneDX 1.5 SBOM of the crates compiled into one release binary, and
their license texts. Deterministic: sorted, no random serial number, the
time is SOURCE_DATE_EPOCH (the commit's). Usage:
  sbom.py BINARY_NAME FEATURE_ARGS OUT.json LICENSE_DIR
FEATURE_ARGS is "" (default build) or "--no-default-features"."""
import json, os, re, shutil, subprocess, sys, datetime

name, feature_args, out_path, license_dir = sys.argv[1:5]
target = "x86_64-unknown-linux-gnu"
feats = feature_args.split()

# The offline build's source replacement (vendored crates), when given.
CONFIG = ["--config", os.environ["CARGO_CONFIG_FILE"]] if os.environ.get("CARGO_CONFIG_FILE") else []

def cargo(*args):
    return subprocess.run(["cargo", *CONFIG, *args], check=True, capture_output=True, text=True).stdout

# The exact set compiled for this build: the normal-dependency graph as the
# resolver builds it (dev- and build-only crates are not in the binary).
tree = cargo("tree", "--locked", "-e", "normal", "--target", target, *feats,
             "--prefix", "none", "--format", "{p}")
ids = set()
for line in tree.splitlines():
    m = re.match(r"^(\S+) v(\S+)", line)
    if m:
        ids.add((m.group(1), m.group(2)))

meta = json.loads(cargo("metadata", "--locked", "--format-version", "1", "--filter-platform", target, *feats))
pkgs = {(p["name"], p["version"]): p for p in meta["packages"]}
lock = {}
with open("Cargo.lock") as f:
    for block in f.read().split("[[package]]")[1:]:
        n = re.search(r'^name = "([^"]+)"', block, re.M).group(1)
        v = re.search(r'^version = "([^"]+)"', block, re.M).group(1)
        c = re.search(r'^checksum = "([^"]+)"', block, re.M)
        lock[(n, v)] = c.group(1) if c else None

root = meta["resolve"]["root"] if meta.get("resolve") else None
root_pkg = next(p for p in meta["packages"] if p["id"] == root)
epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

LICENSE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|UNLICENSE|COPYRIGHT)", re.I)
os.makedirs(license_dir, exist_ok=True)
components = []
for (n, v) in sorted(ids):
    if (n, v) == (root_pkg["name"], root_pkg["version"]):
        continue
    p = pkgs[(n, v)]
    comp = {
        "type": "library",
        "bom-ref": f"pkg:cargo/{n}@{v}",
        "name": n,
        "version": v,
        "purl": f"pkg:cargo/{n}@{v}",
    }
    if p.get("license"):
        comp["licenses"] = [{"expression": p["license"]}]
    if lock.get((n, v)):
        comp["hashes"] = [{"alg": "SHA-256", "content": lock[(n, v)]}]
    components.append(comp)
    src = os.path.dirname(p["manifest_path"])
    files = sorted(f for f in os.listdir(src) if LICENSE_FILE.match(f) and os.path.isfile(os.path.join(src, f)))
    dest = os.path.join(license_dir, f"{n}-{v}")
    os.makedirs(dest, exist_ok=True)
    for f in files:
        shutil.copyfile(os.path.join(src, f), os.path.join(dest, f))
    if not files:
        with open(os.path.join(dest, "NO-LICENSE-FILE"), "w") as fh:
            fh.write(f"{n} {v} ships no license file; its Cargo.toml declares: {p.get('license')}\n")

bom = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "version": 1,
    "metadata": {
        "timestamp": stamp,
        "component": {
            "type": "application",
            "bom-ref": f"pkg:cargo/{root_pkg['name']}@{root_pkg['version']}",
            "name": name,
            "version": root_pkg["version"],
            "licenses": [{"expression": root_pkg["license"]}],
            "properties": [
                {"name": "cargo:features", "value": feature_args or "default (network)"},
                {"name": "cargo:target", "value": target},
                {"name": "git:commit", "value": os.environ.get("HSM_CEREMONY_COMMIT", "unknown")},
            ],
        },
    },
    "components": components,
    "dependencies": [{"ref": f"pkg:cargo/{root_pkg['name']}@{root_pkg['version']}",
                      "dependsOn": [c["bom-ref"] for c in components]}],
}
with open(out_path, "w") as f:
    json.dump(bom, f, indent=2, sort_keys=True)
    f.write("\n")
print(f"{out_path}: {len(components)} crates")
