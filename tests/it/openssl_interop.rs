//! OpenSSL interoperability, run for real: custodian keys made the way the
//! Azure docs make them, in every form OpenSSL writes, serve in a whole
//! ceremony; and OpenSSL reads the keys and certificates we write. These
//! tests need the `openssl` command and fail, never skip, without it.

use crate::util;

use std::path::Path;
use std::process::{Command, Stdio};

use hsm_ceremony::inputs;
use hsm_ceremony::recovery::{contents_fingerprint, open_restore_blob};
use util::{fixtures, openssl, Dir, EXIT_INPUT};

const PASS_B: &str = "openssl made this passphrase";

/// `a.key`/`a.cer`: `openssl req -newkey rsa:2048 -nodes` (PKCS#8 PEM), mode 0600.
fn openssl_plain(dir: &Dir, name: &str) {
    let (key, cer) = (format!("{name}.key"), format!("{name}.cer"));
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-x509",
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &cer,
        ],
    );
    // OpenSSL may create the key 0644; the tool refuses that.
    dir.chmod(&key, 0o600);
    assert!(dir.read_string(&key).starts_with("-----BEGIN PRIVATE KEY-----"));
}

/// Opens `blob` with the shared exchange key, as an instance would.
fn blob_fingerprint(blob: &Path) -> String {
    let f = fixtures();
    let blob = inputs::restore_blob(blob).unwrap();
    let key = inputs::key_file(&f.path("exchange.key"))
        .unwrap()
        .into_key(None)
        .unwrap();
    let cert = inputs::certificate(&f.path("exchange.cer")).unwrap();
    contents_fingerprint(&open_restore_blob(&blob, &key, &cert).unwrap())
}

/// Regression (in part): `openssl req` without `-nodes` encrypts the key with
/// PBES2 and DES-EDE3-CBC, which could not be opened ("unsupported OID
/// 1.2.840.113549.3.7"), though it is how the Azure docs make custodian keys.
#[test]
fn openssl_made_custodians_split_verify_and_restore() {
    let dir = Dir::new("ossl-ceremony");
    dir.copy(&["exchange.cer"]);
    dir.custodian(0);
    openssl_plain(&dir, "a");
    dir.write_secret("b.pass", format!("{PASS_B}\n"));
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:3072",
            "-passout",
            &format!("pass:{PASS_B}"),
            "-x509",
            "-days",
            "30",
            "-subj",
            "/CN=b",
            "-keyout",
            "b.key",
            "-out",
            "b.cer",
        ],
    );
    dir.chmod("b.key", 0o600);
    assert!(dir
        .read_string("b.key")
        .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    dir.run(&["custodian", "show", "b.cer"]).ok().stdout_has("RSA-3072");

    dir.run(&[
        "sd",
        "split",
        "--certs",
        "a.cer",
        "b.cer",
        "c0.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd.json",
    ])
    .ok();
    dir.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", "a.key"])
        .ok()
        .stdout_has("share x=1 of 3 opens for a.key (certificate a.cer)");
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "b.key",
        "--passphrase-file",
        "b.pass",
    ])
    .ok()
    .stdout_has("share x=2 of 3 opens for b.key (certificate b.cer)");
    // The 3072-bit share's encrypted CEK is 384 bytes long.
    let sd = util::read_json(&dir.join("sd.json"));
    let cek = sd["SharedKeys"]["enc_shares"][1]["enc_key"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    assert_eq!(util::b64u_decode(&cek).len(), 384);

    // Two different quorums produce blobs that open to the same contents.
    let restore = |keys: &[&str], passes: &[&str], out: &str| dir.run(&util::restore_blob_args(keys, passes, out));
    restore(&["a.key", "b.key"], &["b.pass"], "ab.json")
        .ok()
        .stdout_has("2 of 2 needed");
    restore(&["b.key", "c0.key"], &["b.pass", "c0.pass"], "bc.json").ok();
    let (ab, bc) = (
        blob_fingerprint(&dir.join("ab.json")),
        blob_fingerprint(&dir.join("bc.json")),
    );
    assert_eq!(ab, bc);
    // Azure CLI style: "" for the unencrypted OpenSSL key.
    restore(&["a.key", "b.key", "--passwords", "", PASS_B], &[], "az.json").ok();
    assert_eq!(blob_fingerprint(&dir.join("az.json")), ab);
}

#[test]
fn pkcs1_and_der_forms_work() {
    let dir = Dir::new("ossl-forms");
    dir.custodian(0);
    dir.custodian(1);
    openssl_plain(&dir, "a");
    openssl(&dir, &["rsa", "-in", "a.key", "-traditional", "-out", "pkcs1.pem"]);
    openssl(
        &dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "a.key",
            "-outform",
            "DER",
            "-out",
            "pkcs8.der",
        ],
    );
    openssl(
        &dir,
        &[
            "rsa",
            "-in",
            "a.key",
            "-traditional",
            "-outform",
            "DER",
            "-out",
            "pkcs1.der",
        ],
    );
    openssl(&dir, &["x509", "-in", "a.cer", "-outform", "DER", "-out", "a.der"]);
    for k in ["pkcs1.pem", "pkcs8.der", "pkcs1.der"] {
        dir.chmod(k, 0o600);
    }
    assert!(dir
        .read_string("pkcs1.pem")
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(dir.read("a.der")[0], 0x30, "a DER SEQUENCE");

    // The DER certificate is the same certificate: same thumbprint.
    let pem = dir.run(&["custodian", "show", "--json", "a.cer"]).ok().json();
    let der = dir.run(&["custodian", "show", "--json", "a.der"]).ok().json();
    assert_eq!(pem[0]["x5t_256"], der[0]["x5t_256"]);

    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "a.der",
        "c1.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd.json",
    ])
    .ok();
    for key in ["a.key", "pkcs1.pem", "pkcs8.der", "pkcs1.der"] {
        dir.run(&[
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            key,
            "--cert",
            "a.der",
        ])
        .ok()
        .stdout_has(&format!("share x=2 of 3 opens for {key} (certificate a.der)"));
    }
    dir.copy(&["exchange.cer"]);
    dir.run(&util::restore_blob_args(
        &["pkcs1.der", "c1.key"],
        &["c1.pass"],
        "blob.json",
    ))
    .ok()
    .stdout_has("share x=2 opened for pkcs1.der (1 of 2 needed)");
    blob_fingerprint(&dir.join("blob.json"));
}

#[test]
fn legacy_encrypted_pem_is_refused_with_the_conversion_command() {
    let dir = Dir::new("ossl-legacy");
    dir.copy(&["sd.json"]);
    openssl_plain(&dir, "a");
    openssl(
        &dir,
        &[
            "rsa",
            "-in",
            "a.key",
            "-traditional",
            "-aes256",
            "-passout",
            "pass:legacy passphrase",
            "-out",
            "legacy.key",
        ],
    );
    dir.chmod("legacy.key", 0o600);
    assert!(dir.read_string("legacy.key").contains("Proc-Type: 4,ENCRYPTED"));
    dir.write_secret("p", "legacy passphrase");
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "legacy.key",
        "--passphrase-file",
        "p",
    ])
    .fails(
        EXIT_INPUT,
        &[
            "legacy.key",
            "legacy OpenSSL format",
            "openssl pkcs8 -topk8 -v2 aes-256-cbc -in legacy.key -out NEW.key",
        ],
    );
}

#[test]
fn openssl_opens_our_encrypted_keys() {
    let dir = Dir::new("ossl-reads-keys");
    dir.custodian(0);
    openssl(&dir, &["pkey", "-in", "c0.key", "-passin", "file:c0.pass", "-noout"]);
    let text = openssl(
        &dir,
        &["pkey", "-in", "c0.key", "-passin", "file:c0.pass", "-text", "-noout"],
    );
    assert!(text.contains("Private-Key: (2048 bit"), "{text}");
    // The key is PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC.
    let asn1 = openssl(&dir, &["asn1parse", "-in", "c0.key"]);
    for oid in ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"] {
        assert!(asn1.contains(oid), "{oid} not in\n{asn1}");
    }
    // Control: OpenSSL does refuse a wrong passphrase, so the success above means something.
    dir.write_secret("wrong.pass", "not the passphrase at all");
    let status = Command::new("openssl")
        .args(["pkey", "-in", "c0.key", "-passin", "file:wrong.pass", "-noout"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(!status.success());
}

#[test]
fn openssl_fingerprint_matches_ours() {
    let dir = Dir::new("ossl-fingerprint");
    dir.custodian(3);
    let ours = dir.run(&["custodian", "show", "c3.cer"]).ok().stdout.clone();
    let ours = ours
        .lines()
        .find(|l| l.trim_start().starts_with("SHA-256"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let theirs = openssl(&dir, &["x509", "-in", "c3.cer", "-noout", "-fingerprint", "-sha256"]);
    let theirs = theirs.trim().split_once('=').expect("Fingerprint=...").1;
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 32 * 3 - 1);
    // And OpenSSL reads our certificate's key as RSA-2048 with our subject.
    let text = openssl(&dir, &["x509", "-in", "c3.cer", "-noout", "-subject", "-text"]);
    assert!(text.contains("CN = c3") || text.contains("CN=c3"), "{text}");
    assert!(text.contains("(2048 bit)"), "{text}");
}

/// A weakly encrypted key (PBKDF2 with 1 iteration, or 3DES) still opens, but
/// the custodian is told, naming the file, and given the command that fixes it.
#[test]
fn weakly_encrypted_keys_open_with_a_warning_and_the_fix() {
    let dir = Dir::new("ossl-weak-keys");
    dir.ceremony();
    openssl(
        &dir,
        &["pkey", "-in", "c0.key", "-passin", "file:c0.pass", "-out", "plain.pem"],
    );
    dir.chmod("plain.pem", 0o600);
    let variants: [(&str, &[&str], &str); 3] = [
        (
            "iter1.key",
            &["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256", "-iter", "1"],
            "only 1 PBKDF2 iteration(s)",
        ),
        ("des3.key", &["-v2", "des3", "-iter", "600000"], "3DES (DES-EDE3-CBC)"),
        (
            "good.key",
            &["-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256", "-iter", "100000"],
            "",
        ),
    ];
    for (name, opts, weakness) in variants {
        let mut args = vec![
            "pkcs8",
            "-topk8",
            "-in",
            "plain.pem",
            "-passout",
            "file:c0.pass",
            "-out",
            name,
        ];
        args.extend_from_slice(opts);
        openssl(&dir, &args);
        dir.chmod(name, 0o600);
        let out = dir.run(&[
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            name,
            "--cert",
            "c0.cer",
            "--passphrase-file",
            "c0.pass",
        ]);
        out.ok();
        if weakness.is_empty() {
            assert!(!out.stderr.contains("warning"), "{name}: {}", out.stderr);
            continue;
        }
        for want in [
            &format!("warning: {name}: it is encrypted with")[..],
            weakness,
            &format!("openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -iter 600000 -in {name} -out NEW.key"),
        ] {
            assert!(out.stderr.contains(want), "{name}: {want:?} not in\n{}", out.stderr);
        }
    }
}
