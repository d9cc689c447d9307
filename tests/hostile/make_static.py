#!/usr/bin/env python3
"""Regenerates the static hostile inputs in files/ (their provenance). Large
inputs (a sparse 1 GB file, megabyte strings) are made by tests/it/hostile.rs at
run time instead of being committed.

Security domains are mutations of fixtures/azure/sdfile.json (the real Azure
file); keys and certificates come from `openssl` (3.x) and are then mutated
byte-wise. Nothing here is secret: the keys are throw-away and refused.
Usage: python3 tests/hostile/make_static.py LOG  (LOG: a one-line ceremony log
with its LOG.head, e.g. from `rotate` in a `demo --keep` folder)
"""
import base64, json, os, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "files")
AZ = os.path.join(ROOT, "..", "..", "fixtures", "azure", "sdfile.json")
os.makedirs(OUT, exist_ok=True)
TEXT = open(AZ).read()
SD = json.loads(TEXT)


def w(name, data):
    if isinstance(data, str):
        data = data.encode()
    open(os.path.join(OUT, name), "wb").write(data)


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sd_with(f):
    v = json.loads(TEXT)
    f(v)
    return json.dumps(v, separators=(",", ":"))


def set_header(jwe, header):
    parts = jwe.split(".")
    parts[0] = b64u(header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode())
    return ".".join(parts)


def share0(f):
    def g(v):
        k = v["SharedKeys"]["enc_shares"][0]
        k["enc_key"] = f(k["enc_key"])
    return sd_with(g)


def item0(f):
    def g(v):
        d = v["EncData"]["data"][0]
        d["compact_jwe"] = f(d["compact_jwe"])
    return sd_with(g)


SHARE_H = {"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512", "kid": "not used"}
ITEM_H = {"alg": "dir", "enc": "A256CBC-HS512", "kid": "hsm_backup"}

# --- security-domain files -------------------------------------------------
w("sd-one-brace.json", "{")
w("sd-cut-in-shares.json", TEXT[: TEXT.index("SharedKeys") + 200])
w("sd-nested-arrays.json", "[" * 100000 + "]" * 100000)
w("sd-nested-objects.json", '{"a":' * 50000 + "1" + "}" * 50000)
w("sd-nested-in-tag.json", TEXT.replace('"tag":"hsm_backup"', '"tag":' + "[" * 3000 + "]" * 3000, 1))
w("sd-required-2pow64.json", sd_with(lambda v: None).replace('"required":2', '"required":18446744073709551616'))
w("sd-required-u64max.json", sd_with(lambda v: None).replace('"required":2', '"required":18446744073709551615'))
w("sd-required-1e400.json", sd_with(lambda v: None).replace('"required":2', '"required":1e400'))
w("sd-required-float.json", sd_with(lambda v: None).replace('"required":2', '"required":2.0'))
w("sd-version-2pow64.json", sd_with(lambda v: None).replace('"version":2', '"version":18446744073709551618'))
w("sd-version-string.json", sd_with(lambda v: v.__setitem__("version", "2")))
w("sd-duplicate-required.json", sd_with(lambda v: None).replace('"required":2', '"required":2,"required":3'))
w("sd-duplicate-enc-shares.json", sd_with(lambda v: None).replace('"SharedKeys":{', '"SharedKeys":{"enc_shares":[],', 1))
w("sd-bom.json", b"\xef\xbb\xbf" + TEXT.encode())
w("sd-utf16.json", TEXT.encode("utf-16"))
w("sd-invalid-utf8.json", TEXT.encode().replace(b'"hsm_backup"', b'"hsm_\xff\xfeackup"', 1))
w("sd-zeros.bin", b"\0" * 4096)
w("sd-top-array.json", "[" + TEXT + "]")
w("sd-top-null.json", "null")
w("sd-shares-empty.json", sd_with(lambda v: v["SharedKeys"].__setitem__("enc_shares", [])))
w("sd-shares-11.json", sd_with(lambda v: v["SharedKeys"].__setitem__("enc_shares", (v["SharedKeys"]["enc_shares"] * 4)[:11])))
w("sd-enc-key-number.json", share0(lambda k: 5))
w("sd-x5t-not-base64.json", sd_with(lambda v: v["SharedKeys"]["enc_shares"][0].__setitem__("x5t_256", "!!!!" * 11)))
w("sd-no-kdf.json", sd_with(lambda v: v["EncData"].pop("kdf")))
w("sd-share-enc-a128.json", share0(lambda k: set_header(k, dict(SHARE_H, enc="A128CBC-HS256"))))
w("sd-item-enc-gcm.json", item0(lambda k: set_header(k, dict(ITEM_H, enc="A256GCM"))))
w("sd-share-alg-rsa-oaep-384.json", share0(lambda k: set_header(k, dict(SHARE_H, alg="RSA-OAEP-384"))))
w("sd-share-crit.json", share0(lambda k: set_header(k, dict(SHARE_H, crit=["exp"], exp=1))))
w("sd-item-crit-empty.json", item0(lambda k: set_header(k, dict(ITEM_H, crit=[]))))
w("sd-share-zip.json", share0(lambda k: set_header(k, dict(SHARE_H, zip="DEF"))))
w("sd-share-header-not-json.json", share0(lambda k: set_header(k, b"not json at all")))
w("sd-share-header-array.json", share0(lambda k: set_header(k, b"[]")))
w("sd-share-header-dup-alg.json", share0(lambda k: set_header(k, b'{"alg":"RSA-OAEP-256","alg":"RSA1_5","enc":"A256CBC-HS512"}')))
w("sd-item-header-deep.json", item0(lambda k: set_header(k, b'{"alg":"dir","enc":"A256CBC-HS512","kid":' + b"[" * 5000 + b"]" * 5000 + b"}")))
w("sd-item-iv-empty.json", item0(lambda k: ".".join(k.split(".")[:2] + [""] + k.split(".")[3:])))
w("sd-item-ct-15-bytes.json", item0(lambda k: ".".join(k.split(".")[:3] + [b64u(b"x" * 15)] + k.split(".")[4:])))
w("sd-share-ek-100k.json", share0(lambda k: ".".join([k.split(".")[0], b64u(b"\x01" * 100000)] + k.split(".")[2:])))
w("sd-share-all-empty.json", share0(lambda k: "...."))
w("sd-tag-escape.json", sd_with(lambda v: v["EncData"]["data"][0].__setitem__("tag", "\x1b]0;pwned\x07\x1b[2J")))


# --- restore blobs (uploaded to the emulator; "{x5t}" is replaced by its
# exchange certificate's x5t_256 at run time) ---------------------------------
ITEMS = SD["EncData"]
SHARE = SD["SharedKeys"]["enc_shares"][0]["enc_key"]


def blob(enc_key, x5t="{x5t}", items=ITEMS):
    return json.dumps({"EncData": items, "WrappedKey": {"enc_key": enc_key, "x5t_256": x5t}})


w("blob-wrong-x5t.json", blob(SHARE, x5t=b64u(b"\x01" * 32)))
w("blob-other-key.json", blob(SHARE))
w("blob-rsa1_5.json", blob(set_header(SHARE, dict(SHARE_H, alg="RSA1_5"))))
w("blob-alg-dir.json", blob(set_header(SHARE, dict(SHARE_H, alg="dir"))))
w("blob-crit.json", blob(set_header(SHARE, dict(SHARE_H, crit=["b64"], b64=False))))
w("blob-enc-key-huge.json", blob(".".join([SHARE.split(".")[0], b64u(b"\xff" * 65536)] + SHARE.split(".")[2:])))
w("blob-no-items.json", blob(SHARE, items={"data": [], "kdf": "sp108_kdf"}))
w("blob-nested.json", '{"EncData":' * 20000 + "1" + "}" * 20000)
w("blob-not-json.json", "restore blob? no.")
w("blob-is-an-sd.json", TEXT)

# --- logs --------------------------------------------------------------------
GOOD_LOG = open(sys.argv[1]).read() if len(sys.argv) > 1 else None
if GOOD_LOG:
    head = open(sys.argv[1] + ".head").read()
    w("log-no-head.jsonl", GOOD_LOG)
    w("log-tampered.jsonl.head", head)
    w("log-seq-huge.jsonl.head", head)
    line = json.loads(GOOD_LOG.splitlines()[0])
    w("log-truncated.jsonl", GOOD_LOG[: len(GOOD_LOG) // 2])
    t = dict(line, outcome="failed: nothing happened")
    w("log-tampered.jsonl", json.dumps(t, separators=(",", ":")) + "\n")
    w("log-seq-huge.jsonl", json.dumps(dict(line, seq=18446744073709551616), separators=(",", ":")) + "\n")
    w("log-nested.jsonl", GOOD_LOG.replace('"details":{', '"details":{"x":' + "[" * 3000 + "]" * 3000 + ",", 1))
w("log-garbage.jsonl", "this is not a log\n\x00\x01\x02\n")
w("log-invalid-utf8.jsonl", b'{"seq":1,"command":"\xff\xfe"}\n')

# --- keys and certificates ----------------------------------------------------
tmp = tempfile.mkdtemp()


def ossl(*args):
    subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)
    return tmp


def rd(name):
    return open(os.path.join(tmp, name), "rb").read()


def pem(label, der):
    b = base64.b64encode(der).decode()
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(b[i:i + 64] for i in range(0, len(b), 64)), label)


def pem_der(text):
    return base64.b64decode("".join(l for l in text.decode().splitlines() if not l.startswith("-----")))


def flip_modulus_low_bit(der, n_hex):
    n = bytes.fromhex(n_hex)
    i = der.find(n)
    assert i > 0, "modulus not found"
    b = bytearray(der)
    b[i + len(n) - 1] ^= 1
    return bytes(b)


ossl("req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "3650", "-subj", "/CN=small", "-keyout", "small.key", "-out", "small.cer")
w("key-rsa-1024.key", rd("small.key"))
w("cert-rsa-1024.cer", rd("small.cer"))
ossl("genrsa", "-traditional", "-out", "k512.pem", "512")
w("key-rsa-512.key", rd("k512.pem"))
ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=even", "-keyout", "even.key", "-out", "even.cer")
ossl("rsa", "-in", "even.key", "-traditional", "-out", "even1.key")
mod = subprocess.run(["openssl", "rsa", "-in", "even.key", "-noout", "-modulus"], cwd=tmp, capture_output=True, check=True).stdout.decode().strip().split("=")[1]
w("key-even-modulus.key", pem("RSA PRIVATE KEY", flip_modulus_low_bit(pem_der(rd("even1.key")), mod)))
w("cert-even-modulus.cer", pem("CERTIFICATE", flip_modulus_low_bit(pem_der(rd("even.cer")), mod)))
ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650", "-subj", "/CN=ecdsa", "-keyout", "ec.key", "-out", "ec.cer")
w("cert-ecdsa.cer", rd("ec.cer"))
w("key-ecdsa.key", rd("ec.key"))
ossl("req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "3650", "-subj", "/CN=ed", "-keyout", "ed.key", "-out", "ed.cer")
w("cert-ed25519.cer", rd("ed.cer"))
good_der = pem_der(rd("even.cer"))
w("cert-der-truncated.der", good_der[: len(good_der) // 2])
w("cert-der-trailing.der", good_der + b"\x00garbage")
w("cert-der-indefinite.der", b"\x30\x80" + good_der[4:] + b"\x00\x00")
w("cert-der-length-4g.der", b"\x30\x84\xff\xff\xff\xff" + good_der[4:])
w("cert-pem-bad-base64.cer", "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n")
w("cert-is-a-key.cer", rd("small.key"))
w("cert-empty.cer", b"")
w("key-empty.key", b"")
w("key-garbage.key", os.urandom(0) + b"\x30\x82\x01\x00" + b"\xa5" * 300)
w("key-is-a-cert.key", rd("even.cer"))
w("key-pem-truncated.key", rd("even.key")[:700])
w("key-der-length-4g.key", pem("PRIVATE KEY", b"\x30\x84\xff\xff\xff\xff\x02\x01\x00"))
w("item-empty.bin", b"")
print("wrote", len(os.listdir(OUT)), "files to", OUT)
