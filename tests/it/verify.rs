//! `custodian verify`: one custodian proves they can open their own share,
//! and every way that proof can fail names the file at fault.

use crate::util;

use util::{fixtures, Dir, EXIT_INPUT, EXIT_INTEGRITY};

#[test]
fn each_custodian_opens_their_share() {
    let dir = Dir::new("verify-ok");
    dir.ceremony();
    for i in 0..3 {
        let key = format!("c{i}.key");
        let pass = format!("c{i}.pass");
        let out = dir.run(&[
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            &key,
            "--passphrase-file",
            &pass,
        ]);
        out.ok().stdout_has(&format!(
            "share x={} of 3 opens for c{i}.key (certificate c{i}.cer) (x5t_256 {})",
            i + 1,
            fixtures().x5t[i]
        ));
    }
    dir.assert_files(&[
        "c0.cer",
        "c0.key",
        "c0.pass",
        "c1.cer",
        "c1.key",
        "c1.pass",
        "c2.cer",
        "c2.key",
        "c2.pass",
        "ceremony-log.jsonl",
        "ceremony-log.jsonl.head",
        "exchange.cer",
        "exchange.key",
        "sd.json",
    ]);
    // Each proof is recorded against the file's fingerprint, with the custodian's thumbprint.
    let sd_sha: String = util::sha256(&dir.read("sd.json"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let lines: Vec<serde_json::Value> = dir
        .read_string("ceremony-log.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["command"], "custodian verify");
        assert_eq!(l["outcome"], "ok");
        assert_eq!(l["inputs"][0]["sha256"], sd_sha.as_str());
        assert_eq!(l["thumbprints"], serde_json::json!([fixtures().x5t[i]]));
    }
    dir.run(&["log", "verify", "ceremony-log.jsonl"]).ok();
}

#[test]
fn json_and_explicit_cert_and_no_cert() {
    let dir = Dir::new("verify-json");
    dir.copy(&["sd.json", "c2.key", "c2.pass"]);
    // No certificate anywhere: the key finds its share by trial decryption.
    let v = dir
        .run(&[
            "custodian",
            "verify",
            "--json",
            "--sd-file",
            "sd.json",
            "--key",
            "c2.key",
            "--passphrase-file",
            "c2.pass",
        ])
        .ok()
        .json();
    assert_eq!(
        (v["opens"].as_bool(), v["x"].as_u64(), v["position"].as_u64()),
        (Some(true), Some(3), Some(3))
    );
    assert_eq!(v["x5t_256"], fixtures().x5t[2]);
    assert_eq!(v["required"], 2);
    // An explicit --cert elsewhere.
    std::fs::create_dir(dir.join("certs")).unwrap();
    std::fs::copy(fixtures().path("c2.cer"), dir.join("certs/two.cer")).unwrap();
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c2.key",
        "--cert",
        "certs/two.cer",
        "--passphrase-file",
        "c2.pass",
    ])
    .ok()
    .stdout_has("share x=3 of 3 opens for c2.key (certificate certs/two.cer)");
}

/// Regression: an explicit `--cert` of another custodian was ignored when the
/// key's own `.cer` lay beside it, and the check passed.
#[test]
fn explicit_cert_of_another_custodian_is_refused() {
    let dir = Dir::new("verify-other-key");
    dir.ceremony();
    let out = dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c1.key",
        "--cert",
        "c0.cer",
        "--passphrase-file",
        "c1.pass",
    ]);
    out.fails(
        EXIT_INTEGRITY,
        &[
            "the key c1.key does not belong to the certificate c0.cer",
            "Pair each key with its own certificate",
        ],
    );
    // The same mix-up through the .cer beside the key.
    std::fs::create_dir(dir.join("mixed")).unwrap();
    std::fs::copy(dir.join("c1.key"), dir.join("mixed/c0.key")).unwrap();
    std::fs::copy(dir.join("c0.cer"), dir.join("mixed/c0.cer")).unwrap();
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "mixed/c0.key",
        "--passphrase-file",
        "c1.pass",
    ])
    .fails(
        EXIT_INTEGRITY,
        &["the key mixed/c0.key does not belong to the certificate mixed/c0.cer"],
    );
}

#[test]
fn a_key_not_in_the_security_domain_is_named() {
    let dir = Dir::new("verify-outsider");
    dir.copy(&["sd.json"]);
    dir.custodian(3);
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c3.key",
        "--passphrase-file",
        "c3.pass",
    ])
    .fails(
        EXIT_INTEGRITY,
        &[&format!(
            "the certificate c3.cer (x5t_256 {}) has no share in this security domain",
            fixtures().x5t[3]
        )],
    );
    std::fs::remove_file(dir.join("c3.cer")).unwrap();
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c3.key",
        "--passphrase-file",
        "c3.pass",
    ])
    .fails(
        EXIT_INTEGRITY,
        &["the key c3.key opens none of the 3 shares in this security domain"],
    );
}

#[test]
fn wrong_passphrase_is_named() {
    let dir = Dir::new("verify-wrong-pass");
    dir.ceremony();
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c1.pass",
    ])
    .fails(
        EXIT_INTEGRITY,
        &[
            "the key c0.key cannot be used: the passphrase does not open it",
            "The custodian who owns c0.key must type their passphrase",
        ],
    );
}

#[test]
fn encrypted_key_without_passphrase_source_is_a_usage_error() {
    let dir = Dir::new("verify-no-pass");
    dir.ceremony();
    dir.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", "c0.key"])
        .fails(util::EXIT_USAGE, &["Passphrase for c0.key: no terminal to ask on"]);
}

#[test]
fn group_readable_key_is_refused_with_chmod_advice() {
    let dir = Dir::new("verify-0644");
    dir.ceremony();
    dir.chmod("c0.key", 0o644);
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ])
    .fails(
        EXIT_INPUT,
        &["c0.key can be read by other users of this machine", "chmod 600 c0.key"],
    );
    dir.chmod("c0.key", 0o640);
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ])
    .fails(EXIT_INPUT, &["chmod 600 c0.key"]);
}

/// A certificate given where the key belongs (public, so 0644) is named for
/// what it is, not refused with `chmod 600` advice that would not help.
#[test]
fn a_certificate_given_as_the_key_is_named_as_such() {
    let dir = Dir::new("verify-cert-as-key");
    dir.ceremony();
    assert_eq!(dir.mode("c0.cer"), 0o644);
    let out = dir.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", "c0.cer"]);
    out.fails(
        EXIT_INPUT,
        &[
            "the key c0.cer cannot be used",
            "it is a certificate, not a private key",
        ],
    );
    out.stderr_lacks("chmod");
    // In DER too, with advice that names where certificates go.
    dir.write("c0.der", util::pem_der(&dir.read_string("c0.cer")));
    dir.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", "c0.der"])
        .fails(
            EXIT_INPUT,
            &[
                "it is a certificate, not a private key",
                "c0.der is a certificate: give the custodian's private key",
            ],
        )
        .stderr_lacks("chmod");
}

#[test]
fn windows_line_endings_in_key_cert_and_passphrase_file() {
    let dir = Dir::new("verify-crlf");
    dir.ceremony();
    let crlf = |text: String| text.replace('\n', "\r\n");
    dir.write("w.key", crlf(dir.read_string("c0.key")));
    dir.chmod("w.key", 0o600);
    dir.write("w.cer", crlf(dir.read_string("c0.cer")));
    dir.write_secret("w.pass", crlf(dir.read_string("c0.pass")));
    assert!(dir.read_string("w.pass").ends_with("\r\n"));
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "w.key",
        "--cert",
        "w.cer",
        "--passphrase-file",
        "w.pass",
    ])
    .ok()
    .stdout_has("share x=1 of 3 opens for w.key (certificate w.cer)");
}
