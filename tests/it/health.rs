//! `sd health`: the verdict and its exit code (0 healthy, 8 at risk, 9
//! cannot recover), per custodian and for the quorum, from certificates and
//! the ceremony log.

use crate::util;

use time::{Duration, OffsetDateTime};
use util::{fixtures, Dir, EXIT_INTEGRITY};

const EXIT_AT_RISK: i32 = 8;
const EXIT_CANNOT_RECOVER: i32 = 9;

fn verify(dir: &Dir, sd: &str, i: usize) {
    let (key, pass) = (format!("c{i}.key"), format!("c{i}.pass"));
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        sd,
        "--key",
        &key,
        "--passphrase-file",
        &pass,
    ])
    .ok();
}

fn health(dir: &Dir, sd: &str, certs: &[&str], extra: &[&str]) -> util::Output {
    let mut args = vec!["sd", "health", sd, "--certs"];
    args.extend(certs);
    args.extend(extra);
    dir.run(&args)
}

/// A day as `--at` takes it, `days` from today.
fn day_from_now(days: i64) -> String {
    let d = (OffsetDateTime::now_utc() + Duration::days(days)).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[test]
fn all_fine_is_healthy_and_exits_0() {
    let dir = Dir::new("health-fine");
    dir.ceremony();
    for i in 0..3 {
        verify(&dir, "sd.json", i);
    }
    let out = health(&dir, "sd.json", &["c0.cer", "c1.cer", "c2.cer"], &[]);
    out.ok()
        .stdout_has("verdict: healthy")
        .stdout_has("3 usable, 2 needed: 1 custodian(s) can be lost")
        .stdout_has("ceremony log ceremony-log.jsonl (3 lines, chain intact)")
        .stdout_has("RSA-2048");
    assert!(!out.stdout.contains("last proof never"), "{}", out.stdout);
    // JSON carries the same, per custodian.
    let j = health(&dir, "sd.json", &["c0.cer", "c1.cer", "c2.cer"], &["--json"]);
    let v = j.ok().json();
    assert_eq!(v["verdict"], "healthy");
    assert_eq!(v["can_lose"], 1);
    assert_eq!(v["required"], 2);
    for (i, c) in v["custodians"].as_array().unwrap().iter().enumerate() {
        assert_eq!(c["x5t_256"], fixtures().x5t[i].as_str());
        assert_eq!(c["usable"], true);
        assert_eq!(c["bits"], 2048);
        assert!(c["days_left"].as_i64().unwrap() >= 363);
        assert!(c["last_proof"].is_string());
    }
}

#[test]
fn a_certificate_expiring_in_ten_days_is_at_risk_and_exits_8() {
    let dir = Dir::new("health-expiring");
    dir.ceremony();
    dir.run(&[
        "custodian",
        "keygen",
        "--name",
        "soon",
        "--days",
        "10",
        "--bits",
        "2048",
        "--insecure-unencrypted-key",
    ])
    .ok();
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "soon.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd3.json",
    ])
    .ok();
    verify(&dir, "sd3.json", 0);
    verify(&dir, "sd3.json", 1);
    dir.run(&["custodian", "verify", "--sd-file", "sd3.json", "--key", "soon.key"])
        .ok();
    let out = health(&dir, "sd3.json", &["c0.cer", "c1.cer", "soon.cer"], &[]);
    out.fails(
        EXIT_AT_RISK,
        &[
            "the quorum is at risk",
            "custodian 3",
            "certificate expires in",
            "renew",
        ],
    )
    .stdout_has("verdict: AT RISK");
    // The two others are fine: only the expiring one is named.
    assert!(
        !out.stderr.contains("custodian 1 ") && !out.stderr.contains("custodian 2 "),
        "{}",
        out.stderr
    );
}

/// Azure's restore does not check certificate dates, so expired
/// certificates are a hygiene problem (exit 8, "rotate"), never "cannot
/// recover" (exit 9): regression for health counting them as lost.
#[test]
fn expired_certificates_are_at_risk_and_exit_8_not_9() {
    let dir = Dir::new("health-expired");
    dir.ceremony();
    dir.run(&[
        "custodian",
        "keygen",
        "--name",
        "long",
        "--days",
        "900",
        "--bits",
        "2048",
        "--insecure-unencrypted-key",
    ])
    .ok();
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "long.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd3.json",
    ])
    .ok();
    let certs = ["c0.cer", "c1.cer", "long.cer"];
    health(&dir, "sd3.json", &certs, &["--no-log"]).ok();
    // 400 days on, two of the three certificates have expired; their shares still open.
    let out = health(&dir, "sd3.json", &certs, &["--no-log", "--at", &day_from_now(400)]);
    out.fails(
        EXIT_AT_RISK,
        &["quorum is at risk", "certificate expired on ", ": rotate"],
    )
    .stderr_lacks("cannot be recovered")
    .stdout_has("verdict: AT RISK")
    .stdout_has("3 usable, 2 needed");
    assert_eq!(
        out.stdout.matches("the certificate expired on ").count(),
        2,
        "{}",
        out.stdout
    );
    // Expiring soon says by when to rotate.
    let out = health(&dir, "sd3.json", &certs, &["--no-log", "--at", &day_from_now(350)]);
    out.fails(EXIT_AT_RISK, &["at risk: rotate before "]);
    // N - M = 1 lost is still recoverable, but at risk: losing one more ends it.
    let out = health(&dir, "sd3.json", &["c0.cer", "long.cer"], &["--no-log"]);
    out.fails(EXIT_AT_RISK, &["losing one more custodian makes recovery impossible"])
        .stdout_has("no certificate was given for this share");
    // What really prevents recovery stays exit 9: too few custodians with a usable key.
    health(&dir, "sd3.json", &["c0.cer"], &["--no-log"]).fails(
        EXIT_CANNOT_RECOVER,
        &[
            "cannot be recovered",
            "only 1 of 3 custodians are usable and 2 are needed",
        ],
    );
    // A date that is not a date is a usage error.
    health(&dir, "sd3.json", &certs, &["--at", "next tuesday"]).fails(util::EXIT_USAGE, &["YYYY-MM-DD"]);
}

#[test]
fn a_custodian_who_never_proved_possession_is_at_risk() {
    let dir = Dir::new("health-unproved");
    dir.ceremony();
    verify(&dir, "sd.json", 0);
    verify(&dir, "sd.json", 1);
    let out = health(&dir, "sd.json", &["c0.cer", "c1.cer", "c2.cer"], &[]);
    out.fails(
        EXIT_AT_RISK,
        &["custodian 3", "has never proved possession", "custodian verify"],
    )
    .stdout_has("last proof never");
    assert!(!out.stderr.contains("custodian 1 ("), "{}", out.stderr);
    // A failed proof is recorded but does not count.
    dir.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", "c2.key"])
        .fails(util::EXIT_USAGE, &[]);
    let out = health(&dir, "sd.json", &["c0.cer", "c1.cer", "c2.cer"], &[]);
    out.fails(EXIT_AT_RISK, &["custodian 3"]);
    verify(&dir, "sd.json", 2);
    health(&dir, "sd.json", &["c0.cer", "c1.cer", "c2.cer"], &[]).ok();
}

#[test]
fn a_broken_log_is_an_error_not_a_verdict() {
    let dir = Dir::new("health-broken-log");
    dir.ceremony();
    for i in 0..3 {
        verify(&dir, "sd.json", i);
    }
    let log = dir.read_string("ceremony-log.jsonl");
    let mut lines: Vec<&str> = log.lines().collect();
    lines.remove(1);
    dir.write(
        "ceremony-log.jsonl",
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    );
    health(&dir, "sd.json", &["c0.cer", "c1.cer", "c2.cer"], &[])
        .fails(EXIT_INTEGRITY, &["ceremony log", "broken at line 2"]);
    // An explicit --log that does not exist is an error too, not "no proofs".
    health(
        &dir,
        "sd.json",
        &["c0.cer", "c1.cer", "c2.cer"],
        &["--log", "missing.jsonl"],
    )
    .fails(6, &["missing.jsonl"]);
}

#[test]
fn a_security_domain_of_a_superseded_epoch_is_flagged() {
    let dir = Dir::new("health-superseded");
    dir.ceremony();
    dir.custodian(3);
    // The log knows sd.json only through the proofs; a split of epoch 1 and a newer set of epoch 2 follow.
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "old.json",
    ])
    .ok();
    for i in 0..3 {
        verify(&dir, "old.json", i);
    }
    health(&dir, "old.json", &["c0.cer", "c1.cer", "c2.cer"], &[]).ok();
    let rotate = [
        "rotate",
        "--sd-file",
        "old.json",
        "--sd-wrapping-keys",
        "c0.key",
        "c1.key",
        "--passphrase-file",
        "c0.pass",
        "--passphrase-file",
        "c1.pass",
        "--new-certs",
        "c1.cer",
        "c2.cer",
        "c3.cer",
        "--quorum",
        "2",
        "--out",
        "new.json",
    ];
    dir.run(&rotate).ok();
    health(&dir, "old.json", &["c0.cer", "c1.cer", "c2.cer"], &[])
        .fails(EXIT_AT_RISK, &["epoch 1, superseded by epoch 2"]);
}
