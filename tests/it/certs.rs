//! `custodian show` and `sd check-certs`: what a custodian's certificate says,
//! its warnings, and the checks Azure makes at download time.

use crate::util;

use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::custodian::key::KeyFile;
use hsm_ceremony::custodian::keygen::self_signed_certificate_with_rng;
use time::{Duration, OffsetDateTime};
use util::{fixtures, openssl, Dir, EXIT_INPUT};

/// `NAME.cer`, a certificate for the shared exchange key valid for `days`
/// days from `from` (OpenSSL 3.0 cannot back-date a certificate).
fn dated_cert(dir: &Dir, name: &str, from: OffsetDateTime, days: u32) {
    let bytes = std::fs::read(fixtures().path("exchange.key")).unwrap();
    let key = KeyFile::parse(&bytes).unwrap().into_key(None).unwrap();
    let cert = self_signed_certificate_with_rng(&mut os_rng(), &key, name, days, from).unwrap();
    dir.write(&format!("{name}.cer"), cert.to_pem());
}

/// A self-signed RSA-1024 certificate made by OpenSSL, as `weak.cer`.
fn weak_cert(dir: &Dir) {
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", "weak.key", "-out", "weak.cer", "-days", "365",
            "-subj", "/CN=weak",
        ],
    );
}

#[test]
fn show_prints_fields_of_our_certificate() {
    let dir = Dir::new("show-fields");
    dir.custodian(0);
    let out = dir.run(&["custodian", "show", "c0.cer"]);
    out.ok()
        .stdout_has("subject       CN=c0")
        .stdout_has("key           RSA-2048")
        .stdout_has(&format!("x5t#S256      {}", fixtures().x5t[0]))
        .stdout_has("days left");
    assert!(
        !out.stderr.contains("warning"),
        "a fresh 2048-bit certificate has no warnings: {}",
        out.stderr
    );
}

#[test]
fn show_warns_about_rsa_1024() {
    let dir = Dir::new("show-1024");
    weak_cert(&dir);
    let out = dir.run(&["custodian", "show", "weak.cer"]);
    out.ok()
        .stdout_has("RSA-1024")
        .stderr_has("warning: weak.cer: its RSA key is 1024 bits; Azure refuses keys below 2048");
    out.stderr_lacks("expires in");
}

#[test]
fn show_warns_about_expiry_within_90_days() {
    let dir = Dir::new("show-expiry");
    dir.run(&[
        "custodian",
        "keygen",
        "--name",
        "soon",
        "--bits",
        "2048",
        "--days",
        "10",
        "--insecure-unencrypted-key",
    ])
    .ok();
    let out = dir.run(&["custodian", "show", "soon.cer"]);
    out.ok()
        .stderr_has("warning: soon.cer: it expires in")
        .stderr_lacks("1024");
    let days: i64 = out
        .stderr
        .split("expires in ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((9..=10).contains(&days), "{days}");
}

#[test]
fn show_json_parses_with_warnings() {
    let dir = Dir::new("show-json");
    dir.custodian(1);
    weak_cert(&dir);
    let v = dir
        .run(&["custodian", "show", "--json", "c1.cer", "weak.cer"])
        .ok()
        .json();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["subject"], "CN=c1");
    assert_eq!(list[0]["bits"], 2048);
    assert_eq!(list[0]["x5t_256"], fixtures().x5t[1]);
    assert_eq!(list[0]["warnings"].as_array().unwrap().len(), 0);
    assert_eq!(list[1]["bits"], 1024);
    assert!(list[1]["warnings"][0].as_str().unwrap().contains("1024 bits"), "{v}");
}

#[test]
fn show_names_a_file_that_is_not_a_certificate() {
    let dir = Dir::new("show-not-cert");
    dir.custodian(0);
    dir.run(&["custodian", "show", "c0.key"])
        .fails(EXIT_INPUT, &["c0.key", "not a certificate"]);
    dir.run(&["custodian", "show", "missing.cer"])
        .fails(6, &["missing.cer"]);
}

#[test]
fn check_certs_ok_prints_the_az_line() {
    let dir = Dir::new("check-ok");
    for i in 0..3 {
        dir.custodian(i);
    }
    let out = dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "c2.cer"]);
    out.ok();
    let az = out.stdout.lines().find(|l| l.starts_with("az ")).expect("an az line");
    assert_eq!(
        az,
        "az keyvault security-domain download --hsm-name <HSM_NAME> --sd-wrapping-keys c0.cer c1.cer c2.cer --sd-quorum 2 --security-domain-file <SD_FILE>"
    );
    // --quiet keeps the one line a script needs.
    let quiet = dir.run(&[
        "--quiet",
        "sd",
        "check-certs",
        "--quorum",
        "3",
        "c0.cer",
        "c1.cer",
        "c2.cer",
    ]);
    assert_eq!(
        quiet.ok().stdout.lines().collect::<Vec<_>>(),
        [az.replace("--sd-quorum 2", "--sd-quorum 3")]
    );
}

#[test]
fn check_certs_refuses_two_custodians_unless_local() {
    let dir = Dir::new("check-two");
    dir.custodian(0);
    dir.custodian(1);
    let out = dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer"]);
    out.fails(EXIT_INPUT, &["2 custodians is outside the allowed 3 to 10"]);
    assert!(!out.stdout.contains("az keyvault"), "no az line for a refused set");
    dir.run(&["sd", "check-certs", "--local", "--quorum", "2", "c0.cer", "c1.cer"])
        .ok()
        .stdout_has("--sd-quorum 2");
}

#[test]
fn check_certs_refuses_quorum_out_of_range() {
    let dir = Dir::new("check-quorum");
    for i in 0..3 {
        dir.custodian(i);
    }
    dir.run(&["sd", "check-certs", "--quorum", "1", "c0.cer", "c1.cer", "c2.cer"])
        .fails(EXIT_INPUT, &["a quorum of 1 is outside"]);
    dir.run(&["sd", "check-certs", "--quorum", "4", "c0.cer", "c1.cer", "c2.cer"])
        .fails(EXIT_INPUT, &["a quorum of 4 is outside the allowed 2 to 3"]);
}

#[test]
fn check_certs_refuses_a_duplicate_certificate() {
    let dir = Dir::new("check-dup");
    dir.custodian(0);
    dir.custodian(1);
    std::fs::copy(dir.join("c0.cer"), dir.join("copy.cer")).unwrap();
    dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "copy.cer"])
        .fails(EXIT_INPUT, &["copy.cer is the same certificate as c0.cer"]);
}

#[test]
fn check_certs_refuses_rsa_1024() {
    let dir = Dir::new("check-1024");
    dir.custodian(0);
    dir.custodian(1);
    weak_cert(&dir);
    let out = dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "weak.cer", "c1.cer"]);
    out.fails(
        EXIT_INPUT,
        &["weak.cer: its RSA key is 1024 bits; at least 2048 are required"],
    );
    assert!(!out.stdout.contains("az keyvault"));
}

#[test]
fn check_certs_json() {
    let dir = Dir::new("check-json");
    for i in 0..3 {
        dir.custodian(i);
    }
    let v = dir
        .run(&[
            "sd",
            "check-certs",
            "--json",
            "--quorum",
            "2",
            "c0.cer",
            "c1.cer",
            "c2.cer",
        ])
        .ok()
        .json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["custodians"][2]["x5t_256"], fixtures().x5t[2]);
    assert!(v["az"].as_str().unwrap().contains("--sd-quorum 2"));
}

#[test]
fn check_certs_json_on_failure_still_parses() {
    let dir = Dir::new("check-json-fail");
    dir.custodian(0);
    dir.custodian(1);
    let out = dir.run(&["sd", "check-certs", "--json", "--quorum", "2", "c0.cer", "c1.cer"]);
    out.fails(EXIT_INPUT, &["2 custodians is outside"]);
    let v = out.json();
    assert_eq!(v["ok"], false);
    assert!(v["az"].is_null(), "no az line for a refused set");
    assert!(v["problems"][0].as_str().unwrap().contains("2 custodians"));
}

#[test]
fn show_refuses_an_elliptic_curve_certificate_for_what_it_is() {
    let dir = Dir::new("show-ec");
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ec.key",
            "-out",
            "ec.cer",
            "-days",
            "30",
            "-subj",
            "/CN=ec",
        ],
    );
    dir.run(&["custodian", "show", "ec.cer"]).fails(
        EXIT_INPUT,
        &["the certificate ec.cer cannot be used: its key is elliptic-curve, not RSA"],
    );
}

#[test]
fn show_warns_about_an_expired_and_a_not_yet_valid_certificate() {
    let dir = Dir::new("show-dates");
    let now = OffsetDateTime::now_utc();
    dated_cert(&dir, "old", now - Duration::days(400), 30);
    dated_cert(&dir, "future", now + Duration::days(30), 365);
    dir.run(&["custodian", "show", "old.cer", "future.cer"])
        .ok()
        .stderr_has("warning: old.cer: it expired on")
        .stderr_has("warning: future.cer: it is not valid before");
}

/// An expired certificate's validity reads "expired N days ago", not "-N days left".
#[test]
fn show_says_how_long_ago_a_certificate_expired() {
    let dir = Dir::new("show-expired-ago");
    let now = OffsetDateTime::now_utc();
    dated_cert(&dir, "old", now - Duration::days(400), 30);
    dated_cert(&dir, "future", now + Duration::days(30), 365);
    let out = dir.run(&["custodian", "show", "old.cer"]);
    out.ok().stdout_has("expired 370 days ago)");
    assert!(!out.stdout.contains("days left"), "{}", out.stdout);
    let out = dir.run(&["custodian", "show", "future.cer"]);
    out.ok().stdout_has("(not valid yet)");
    assert!(!out.stdout.contains("days left"), "{}", out.stdout);
}

#[test]
fn check_certs_refuses_an_expired_or_not_yet_valid_certificate() {
    let dir = Dir::new("check-dates");
    dir.custodian(0);
    dir.custodian(1);
    let now = OffsetDateTime::now_utc();
    dated_cert(&dir, "old", now - Duration::days(400), 30);
    dated_cert(&dir, "future", now + Duration::days(30), 365);
    for name in ["old", "future"] {
        let file = format!("{name}.cer");
        let out = dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", &file]);
        // The advice fits the cause: a new certificate, not stronger parameters.
        out.fails(
            EXIT_INPUT,
            &[
                &format!("{file}: it is not valid now ("),
                "what to do: Have the custodian make a new certificate",
            ],
        )
        .stderr_lacks("stronger parameters");
        assert!(!out.stdout.contains("az keyvault"), "no az line for a refused set");
    }
}
