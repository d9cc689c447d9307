//! `instance …` and `drill`: activation against a separately started
//! emulator, the manual recovery path, and drills that pass and fail — each
//! leaving its report and log line.

use crate::util;

use util::{Dir, Served, EXIT_INPUT, EXIT_QUORUM, EXIT_USAGE};

fn args(parts: &[&[String]]) -> Vec<String> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Activation by `instance download` on instance A, a canary, then a drill
/// into instance B by URL: the README's "separately started emulator" path.
#[test]
fn drill_against_separately_started_emulators() {
    let dir = Dir::new("drill-url");
    for i in 0..3 {
        dir.custodian(i);
    }
    let a = Served::start(&dir, "a");
    let b = Served::start(&dir, "b");

    dir.run(&args(&[
        &s(&["instance", "download"]),
        &a.connect,
        &s(&[
            "--certs", "c0.cer", "c1.cer", "c2.cer", "--quorum", "2", "--out", "sd.json",
        ]),
    ]))
    .ok()
    .stdout_has("the instance is activated, 2 of 3 custodians");
    dir.run(&s(&[
        "sd", "inspect", "sd.json", "--certs", "c0.cer", "c1.cer", "c2.cer",
    ]))
    .ok()
    .stdout_has("quorum        2 of 3 custodians");
    dir.run(&args(&[&s(&["instance", "status"]), &a.connect]))
        .ok()
        .stdout_has("download (activation)  Success");
    dir.run(&args(&[
        &s(&["drill", "prepare"]),
        &a.connect,
        &s(&["--out", "canary.json"]),
    ]))
    .ok()
    .stdout_has("backed up to canary.json");

    dir.run(&args(&[
        &s(&[
            "drill",
            "--sd-file",
            "sd.json",
            "--sd-wrapping-keys",
            "c1.key",
            "c2.key",
        ]),
        &s(&["--passphrase-file", "c1.pass", "--passphrase-file", "c2.pass"]),
        &s(&[
            "--instance",
            &b.url,
            "--ca",
            &b.ca,
            "--token-file",
            "b.token",
            "--canary",
            "canary.json",
        ]),
        &s(&["--report", "evidence"]),
    ]))
    .ok()
    .stdout_has("drill PASSED");
    let report = util::read_json(&dir.join("evidence/drill-report.json"));
    assert_eq!(report["outcome"], "passed");
    assert_eq!(report["instance"], b.url.as_str());
    assert_eq!(report["quorum"], 2);
    let x5t = |i: usize| {
        let der = util::pem_der(&dir.read_string(&format!("c{i}.cer")));
        util::b64u(&util::sha256(&der))
    };
    let who: Vec<&str> = report["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["x5t_256"].as_str().unwrap())
        .collect();
    assert_eq!(who, [x5t(1), x5t(2)]);
    assert!(dir
        .read_string("evidence/drill-report.md")
        .contains("# Recovery drill: PASSED"));
    // B is now a clone: it refuses a second recovery.
    dir.run(&args(&[
        &s(&["instance", "init-recovery"]),
        &b.connect,
        &s(&["--out", "again.cer"]),
    ]))
    .fails(7, &["400"]);
    dir.assert_absent("again.cer");
    // Nothing secret is in the evidence.
    let evidence = dir.read_string("evidence/drill-report.json") + &dir.read_string("evidence/drill-report.md");
    for i in 0..3 {
        assert!(!evidence.contains(&util::passphrase(i)));
    }
    // The log beside the security domain recorded the download and the drill, with the participants.
    let log = dir.read_string("ceremony-log.jsonl");
    assert!(log.contains("\"command\":\"instance download\""), "{log}");
    let drill_line = log
        .lines()
        .find(|l| l.contains("\"command\":\"drill\""))
        .expect("a drill line");
    assert!(drill_line.contains(&x5t(1)) && drill_line.contains(&x5t(2)) && drill_line.contains("\"outcome\":\"ok\""));
}

/// The manual recovery path, step by step, as a runbook types it.
#[test]
fn manual_recovery_with_init_recovery_restore_blob_and_upload() {
    let dir = Dir::new("manual-recovery");
    dir.ceremony();
    let c = Served::start(&dir, "c");
    dir.run(&args(&[
        &s(&["instance", "init-recovery"]),
        &c.connect,
        &s(&["--sd-exchange-key", "x.cer"]),
    ]))
    .ok()
    .stdout_has("the instance's exchange key");
    dir.run(&s(&[
        "restore-blob",
        "--sd-file",
        "sd.json",
        "--sd-exchange-key",
        "x.cer",
        "--sd-wrapping-keys",
        "c0.key",
        "c2.key",
        "--passphrase-file",
        "c0.pass",
        "--passphrase-file",
        "c2.pass",
        "--out",
        "blob.json",
    ]))
    .ok();
    dir.run(&args(&[
        &s(&["instance", "upload"]),
        &c.connect,
        &s(&["--restore-blob", "blob.json"]),
    ]))
    .ok()
    .stdout_has("upload succeeded");
    dir.run(&args(&[&s(&["instance", "status", "--json"]), &c.connect]))
        .ok()
        .stdout_has("\"upload\": \"Success\"");
}

/// Too few custodians: the drill fails with the quorum exit code, and still
/// leaves its report and a failed log line.
#[test]
fn a_failed_drill_still_leaves_evidence() {
    let dir = Dir::new("drill-fails");
    dir.ceremony();
    // One custodian alone: the quorum is 2, and c0's passphrase does not open c1's key.
    let alone = |report: &str, extra: &[&str]| {
        let mut a = vec![
            "drill",
            "--sd-file",
            "sd.json",
            "--sd-wrapping-keys",
            "c0.key",
            "c1.key",
        ];
        a.extend(["--passphrase-file", "c0.pass", "--report", report]);
        a.extend_from_slice(extra);
        dir.run(&a)
    };
    alone("evidence", &[])
        .fails(EXIT_QUORUM, &["not enough custodians"])
        .stdout_has("drill FAILED");
    let report = util::read_json(&dir.join("evidence/drill-report.json"));
    // --json prints the same report on standard output, for a scheduler.
    let out = alone("evidence-json", &["--json"]);
    out.fails(EXIT_QUORUM, &["not enough custodians"]);
    let printed = out.json();
    assert_eq!(printed["outcome"], "failed");
    assert_eq!(printed, util::read_json(&dir.join("evidence-json/drill-report.json")));
    assert_eq!(report["outcome"], "failed");
    let steps = report["steps"].as_array().unwrap();
    assert!(steps
        .iter()
        .any(|st| st["name"] == "open a quorum of shares" && st["outcome"].as_str().unwrap().starts_with("failed")));
    assert!(
        !steps.iter().any(|st| st["name"] == "upload and wait for Success"),
        "no step after the failure ran"
    );
    let log = dir.read_string("ceremony-log.jsonl");
    assert!(
        log.lines()
            .any(|l| l.contains("\"command\":\"drill\"") && l.contains("\"outcome\":\"failed: not enough")),
        "{log}"
    );
    // The report folder is never reused.
    dir.run(&s(&[
        "drill",
        "--sd-file",
        "sd.json",
        "--sd-wrapping-keys",
        "c0.key",
        "c1.key",
        "--passphrase-file",
        "c0.pass",
        "--passphrase-file",
        "c1.pass",
        "--report",
        "evidence",
    ]))
    .fails(3, &["already exists"]);
}

/// A canary from another security domain does not restore: the drill says so.
#[test]
fn a_canary_from_another_security_domain_fails_the_drill() {
    let dir = Dir::new("drill-wrong-canary");
    dir.ceremony();
    // Instance D is activated with its own security domain (c0, c1, c2 again, so a different master key).
    let d = Served::start(&dir, "d");
    dir.run(&args(&[
        &s(&["--no-log", "instance", "download"]),
        &d.connect,
        &s(&[
            "--certs",
            "c0.cer",
            "c1.cer",
            "c2.cer",
            "--quorum",
            "2",
            "--out",
            "other-sd.json",
        ]),
    ]))
    .ok();
    dir.run(&args(&[
        &s(&["drill", "prepare"]),
        &d.connect,
        &s(&["--out", "canary.json"]),
    ]))
    .ok();
    dir.run(&s(&[
        "drill",
        "--sd-file",
        "sd.json",
        "--sd-wrapping-keys",
        "c0.key",
        "c1.key",
        "--passphrase-file",
        "c0.pass",
        "--passphrase-file",
        "c1.pass",
        "--canary",
        "canary.json",
        "--report",
        "evidence",
    ]))
    .fails(7, &["did NOT restore"])
    .stdout_has("drill FAILED");
    let report = util::read_json(&dir.join("evidence/drill-report.json"));
    assert!(
        report["canary"].as_str().unwrap().contains("did NOT restore"),
        "{}",
        report["canary"]
    );
    let upload = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "upload and wait for Success")
        .cloned();
    assert_eq!(
        upload.unwrap()["outcome"],
        "ok",
        "the recovery itself worked; only the canary failed"
    );
}

#[test]
fn instance_commands_need_a_token_and_never_take_one_as_a_flag() {
    let dir = Dir::new("instance-token");
    dir.ceremony();
    dir.run_with(&s(&["instance", "status", "--url", "https://127.0.0.1:9"]), |c| {
        c.env_remove("HSM_CEREMONY_TOKEN");
    })
    .fails(EXIT_USAGE, &["no bearer token", "--token-file"]);
    dir.run(&s(&[
        "instance",
        "status",
        "--url",
        "https://127.0.0.1:9",
        "--token",
        "x",
    ]))
    .fails(EXIT_USAGE, &["--token"]);
    dir.write_secret("t", "abc");
    dir.run(&s(&[
        "instance",
        "status",
        "--url",
        "http://example.com",
        "--token-file",
        "t",
    ]))
    .fails(
        EXIT_INPUT,
        &["plain http is only allowed to a local emulator", "what to do"],
    );
}
