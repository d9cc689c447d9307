//! `instance …` and `drill`: activation against a separately started
//! emulator, the manual recovery path, and drills that pass and fail — each
//! leaving its report and log line.

use crate::util;

use serde_json::json;

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
        .stdout_has("activation             Active")
        .stdout_has("download (activation)  Success (The resource is active.)");
    dir.run(&args(&[
        &s(&["drill", "prepare"]),
        &a.connect,
        &s(&["--out", "canary.json"]),
    ]))
    .ok()
    .stdout_has("canary set drill-canary-rsa, drill-canary-ec, drill-canary-aes created on")
    .stdout_has("canary file canary.json");
    assert_eq!(dir.mode("drill-backups"), 0o700);
    let canary = util::read_json(&dir.join("canary.json"));
    assert_canary_holds_no_secret(&dir, &a, "a", &canary);

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
    .stdout_has("proof: verify the original's signature with drill-canary-ec (ES256): ok")
    .stdout_has("drill PASSED");
    let report = util::read_json(&dir.join("evidence/drill-report.json"));
    assert_eq!(report["outcome"], "passed");
    assert_eq!(report["instance"], b.url.as_str());
    assert_eq!(report["emulated"], true);
    assert_eq!(report["quorum"], 2);
    assert_eq!(report["sd_sha256"], hex::encode(util::sha256(&dir.read("sd.json"))));
    // The inventory after the full restore is the one recorded before the backup.
    assert_eq!(report["inventory_before"], canary["inventory"]);
    assert_eq!(report["inventory_after"], canary["inventory"]);
    assert_eq!(canary["inventory"].as_array().unwrap().len(), 3);
    let proofs = report["proofs"].as_array().unwrap();
    assert_eq!(proofs.len(), 4);
    assert!(proofs.iter().all(|p| p["outcome"] == "ok"), "{proofs:?}");
    assert!(report["not_proven"].as_array().unwrap().iter().any(|n| n
        .as_str()
        .unwrap()
        .contains("a backup from a real Azure Managed HSM cannot restore here")));
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
    let md = dir.read_string("evidence/drill-report.md");
    for want in [
        "# Recovery drill: PASSED",
        "## Inventory",
        "| full restore from the canary set's backup | ok |",
        "- unwrap the DEK wrapped under drill-canary-aes (A256KW): ok",
        "## What this drill proved",
        "## What it did not prove",
    ] {
        assert!(md.contains(want), "{want}\n{md}");
    }
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
    let status = |c: &Served| dir.run(&args(&[&s(&["instance", "status", "--json"]), &c.connect]));
    let fresh = status(&c).ok().json();
    assert_eq!(
        (&fresh["activation"], &fresh["download"], &fresh["upload"]),
        (&json!("NotActivated"), &json!("none"), &json!("none"))
    );
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
    assert_eq!(
        status(&c).ok().json()["activation"],
        "NotActivated",
        "a transfer key activates nothing"
    );
    dir.run(&args(&[
        &s(&["instance", "upload"]),
        &c.connect,
        &s(&["--restore-blob", "blob.json"]),
    ]))
    .ok()
    .stdout_has("upload succeeded");
    let up = status(&c).ok().json();
    assert_eq!(
        (&up["activation"], &up["upload"], &up["upload_details"]),
        (&json!("Active"), &json!("Success"), &json!("The resource is active."))
    );
    // Recovered contents live in the serving process only: after a restart
    // the activation has failed, and the status says what to do.
    drop(c);
    let c = Served::start(&dir, "c");
    let after = status(&c).ok().json();
    assert_eq!(
        (&after["activation"], &after["upload"]),
        (&json!("Failed"), &json!("Failed"))
    );
    assert!(
        after["upload_details"]
            .as_str()
            .unwrap()
            .contains("upload the restore blob again"),
        "{after}"
    );
    dir.run(&args(&[&s(&["instance", "status"]), &c.connect]))
        .ok()
        .stdout_has("activation             Failed");
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

/// The canary file holds public material only: no string of the original's
/// key store (private keys are long base64url strings; names and versions
/// are short), and not the DEK, which the test unwraps on the original.
fn assert_canary_holds_no_secret(dir: &Dir, served: &Served, state: &str, canary: &serde_json::Value) {
    let text = dir.read_string("canary.json");
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(m) => m.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut store = Vec::new();
    strings(&util::read_json(&dir.join(&format!("{state}/keys.json"))), &mut store);
    let long: Vec<&String> = store.iter().filter(|s| s.len() >= 40).collect();
    assert!(long.len() >= 3, "the key store holds the canaries' private parts");
    for s in long {
        assert!(
            !text.contains(s.as_str()),
            "the canary file holds a string of the key store"
        );
    }
    let token = dir.read_string(&format!("{state}.token"));
    let client = hsm_ceremony::instance::InstanceClient::new(
        &served.url,
        hsm_ceremony::crypto::secret::BearerToken::new(token.trim().to_string()),
        Some(&dir.join(&served.ca)),
    )
    .unwrap();
    let rsa = &canary["keys"]["rsa"];
    let wrapped = canary["wrapped_deks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["key"] == "rsa")
        .unwrap();
    let dek = client
        .unwrap_key(
            rsa["name"].as_str().unwrap(),
            rsa["version"].as_str().unwrap(),
            "RSA-OAEP-256",
            &util::b64u_decode(wrapped["value"].as_str().unwrap()),
        )
        .unwrap();
    assert_eq!(canary["dek_sha256"], hex::encode(util::sha256(&dek)));
    for enc in [util::b64u(&dek), hex::encode(&dek)] {
        assert!(!text.contains(&enc), "the DEK is in the canary file");
    }
}

/// A ceremony folder whose original is the in-process instance `local:orig`
/// (admin token `orig.token`), activated 2 of 3 into `orig-sd.json`; with
/// the `--url … --token-file …` arguments that reach it.
fn local_original(name: &str) -> (Dir, Vec<String>) {
    let dir = Dir::new(name);
    dir.ceremony();
    util::admin_token(&dir, "orig", "orig.token");
    let local = s(&["--url", "local:orig", "--token-file", "orig.token"]);
    dir.run(&args(&[
        &s(&["--no-log", "instance", "download"]),
        &local,
        &s(&[
            "--certs",
            "c0.cer",
            "c1.cer",
            "c2.cer",
            "--quorum",
            "2",
            "--out",
            "orig-sd.json",
        ]),
    ]))
    .ok();
    (dir, local)
}

/// `--instance local` after a local original (`local:DIR`): the full backup
/// goes to a folder beside the canary file and restores into the in-memory
/// instance; a --sas-file for that folder, and an old canary file, are
/// refused before anyone is asked anything.
#[test]
fn a_local_drill_restores_the_full_backup_of_a_local_original() {
    let (dir, local) = local_original("drill-local");
    dir.run(&args(&[
        &s(&["drill", "prepare"]),
        &local,
        &s(&["--name", "canary-q4", "--out", "canary.json"]),
    ]))
    .ok()
    .stdout_has("canary set canary-q4-rsa, canary-q4-ec, canary-q4-aes");
    let drill = |extra: &[&str]| {
        let mut a = s(&[
            "drill",
            "--sd-file",
            "orig-sd.json",
            "--sd-wrapping-keys",
            "c0.key",
            "c2.key",
            "--passphrase-file",
            "c0.pass",
            "--passphrase-file",
            "c2.pass",
            "--canary",
        ]);
        a.extend(s(extra));
        dir.run(&a)
    };
    dir.write_secret("x.sas", "sv=2021&sig=abc");
    drill(&["canary.json", "--sas-file", "x.sas", "--report", "r0"])
        .fails(EXIT_USAGE, &["is a local folder, which takes no SAS token"]);
    dir.write(
        "old-canary.json",
        r#"{"version":1,"instance":"https://a","name":"c","kid":"k","key_version":"v","created":"t","backup":"b"}"#,
    );
    drill(&["old-canary.json", "--report", "r1"]).fails(
        EXIT_INPUT,
        &[
            "old-canary.json",
            "single-key canary (version 1)",
            "run `hsm-ceremony drill prepare`",
        ],
    );
    for r in ["r0", "r1"] {
        dir.assert_absent(r);
    }
    let out = drill(&["canary.json", "--report", "r2", "--json"]);
    out.ok();
    let report = out.json();
    assert_eq!(report["outcome"], "passed");
    assert_eq!(
        report["instance"],
        "local emulated instance, in process, in memory only"
    );
    let names: Vec<&str> = report["inventory_after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["canary-q4-aes", "canary-q4-ec", "canary-q4-rsa"]);
    // A canary file whose inventory was edited (a tag changed) fails at the comparison, naming the key.
    let mut edited = util::read_json(&dir.join("canary.json"));
    edited["inventory"][0]["tags"]["hsm-ceremony-canary"] = "edited".into();
    dir.write("edited.json", serde_json::to_vec(&edited).unwrap());
    drill(&["edited.json", "--report", "r3"])
        .fails(
            7,
            &["inventory differs from the canary file's", "changed: canary-q4-aes/"],
        )
        .stdout_has("drill FAILED");
    let report = util::read_json(&dir.join("r3/drill-report.json"));
    assert!(report["proofs"].as_array().unwrap().is_empty());
}

/// On a URL that is not an emulator, `drill prepare` needs a --storage and
/// a confirmation, and says what it would create before anything is sent.
#[test]
fn prepare_on_a_real_managed_hsm_asks_first() {
    let dir = Dir::new("drill-prepare-real");
    let url = "https://contoso.managedhsm.azure.net";
    dir.run(&s(&["drill", "prepare", "--url", url, "--out", "canary.json"]))
        .fails(
            EXIT_USAGE,
            &["--storage is required for https://contoso.managedhsm.azure.net"],
        );
    let storage = "https://acct.blob.core.windows.net/backups";
    dir.run(&s(&[
        "drill",
        "prepare",
        "--url",
        url,
        "--storage",
        storage,
        "--out",
        "canary.json",
    ]))
    .fails(
        EXIT_USAGE,
        &["is a storage container: give its SAS token with --sas-file"],
    );
    dir.write_secret("b.sas", "sv=2021&sig=abc");
    let out = dir.run_with(
        &s(&[
            "drill",
            "prepare",
            "--url",
            url,
            "--storage",
            storage,
            "--sas-file",
            "b.sas",
            "--out",
            "canary.json",
        ]),
        |c| {
            c.env_remove("HSM_CEREMONY_TOKEN");
        },
    );
    // Refused for want of --yes, not for want of a token: nothing was read or sent.
    out.fails(EXIT_USAGE, &["is not an emulator: confirm creating the canary keys there with --yes"])
        .stderr_has("creates three keys on https://contoso.managedhsm.azure.net: drill-canary-rsa, drill-canary-ec, drill-canary-aes, tagged hsm-ceremony-canary")
        .stderr_has("delete the three keys after the drill")
        .stderr_lacks("sig=abc");
    dir.assert_absent("canary.json");
    dir.assert_absent("drill-backups");
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
    let restore = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "full restore from the canary set's backup")
        .cloned()
        .unwrap();
    assert!(
        restore["outcome"].as_str().unwrap().contains("does not open here"),
        "{restore}"
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

/// `drill proofs`: the canary proofs alone against an instance that holds
/// the canary set (here the original itself, as a recovered instance would
/// after its full restore): no quorum, no upload, no restore.
#[test]
fn drill_proofs_against_an_instance_recovered_by_hand() {
    let (dir, local) = local_original("drill-proofs");
    dir.run(&args(&[
        &s(&["drill", "prepare"]),
        &local,
        &s(&["--out", "canary.json"]),
    ]))
    .ok();
    let proofs = |canary: &str, report: &str| {
        dir.run(&args(&[
            &s(&["drill", "proofs"]),
            &local,
            &s(&["--canary", canary, "--report", report]),
        ]))
    };
    proofs("canary.json", "ok")
        .ok()
        .stdout_has("proof: sign anew with drill-canary-ec and verify (ES256): ok")
        .stdout_has("drill proofs PASSED: report in ok/drill-report.json");
    let report = util::read_json(&dir.join("ok/drill-report.json"));
    assert_eq!(report["outcome"], "passed");
    assert_eq!(report["proofs_only"], true);
    assert_eq!(report["instance"], "local:orig");
    assert_eq!(report["participants"], json!([]));
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "start or reach the target instance",
            "compare the inventory with the canary file",
            "HSM-side proofs with the restored keys"
        ]
    );
    assert!(report["proofs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["outcome"] == "ok"));
    let not = report["not_proven"].to_string();
    assert!(
        not.contains("no share was opened and nothing was uploaded in this run"),
        "{not}"
    );
    assert!(not.contains("no backup was restored in this run"), "{not}");
    let md = dir.read_string("ok/drill-report.md");
    assert!(md.starts_with("# Canary proofs: PASSED"), "{md}");
    let log = dir.read_string("ceremony-log.jsonl");
    let line = log
        .lines()
        .find(|l| l.contains("\"command\":\"drill proofs\""))
        .expect("a drill proofs line");
    assert!(
        line.contains("\"outcome\":\"ok\"") && !line.contains("\"thumbprints\""),
        "{line}"
    );

    // The EC canary at a version the instance does not have: missing, nothing proven of the keys.
    let mut other = util::read_json(&dir.join("canary.json"));
    let v = "0123456789abcdef0123456789abcdef";
    let ec = other["keys"]["ec"]["version"].as_str().unwrap().to_string();
    other["keys"]["ec"]["version"] = v.into();
    for e in other["inventory"].as_array_mut().unwrap() {
        if e["version"] == ec.as_str() {
            e["version"] = v.into();
        }
    }
    dir.write("missing.json", serde_json::to_vec(&other).unwrap());
    proofs("missing.json", "missing")
        .fails(
            7,
            &[
                "inventory differs from the canary file's",
                &format!("drill-canary-ec/{v}"),
            ],
        )
        .stdout_has("drill proofs FAILED");
    let report = util::read_json(&dir.join("missing/drill-report.json"));
    assert_eq!(report["outcome"], "failed");
    assert_eq!(report["proven"], json!([]));
    assert!(report["proofs"].as_array().unwrap().is_empty());
    assert!(report["not_proven"]
        .to_string()
        .contains("the HSM-side proofs did not all pass"));

    // A URL where no instance answers: the report says so, and the exit is non-zero.
    let out = dir.run(&s(&[
        "drill",
        "proofs",
        "--url",
        "https://127.0.0.1:9",
        "--token-file",
        "orig.token",
        "--canary",
        "canary.json",
        "--report",
        "nowhere",
    ]));
    assert_ne!(out.code, 0);
    out.stdout_has("drill proofs FAILED");
    let report = util::read_json(&dir.join("nowhere/drill-report.json"));
    assert_eq!(report["proven"], json!([]));
    assert!(
        report["steps"][1]["outcome"].as_str().unwrap().starts_with("failed"),
        "{report}"
    );
}

/// On a real Managed HSM, `drill proofs` says what it will do with the
/// canary keys and asks first, before any token is read.
#[test]
fn drill_proofs_on_a_real_managed_hsm_asks_first() {
    let (dir, local) = local_original("drill-proofs-real");
    dir.run(&args(&[
        &s(&["drill", "prepare"]),
        &local,
        &s(&["--out", "canary.json"]),
    ]))
    .ok();
    let out = dir.run_with(
        &s(&[
            "drill",
            "proofs",
            "--url",
            "https://contoso.managedhsm.azure.net",
            "--canary",
            "canary.json",
            "--report",
            "r",
        ]),
        |c| {
            c.env_remove("HSM_CEREMONY_TOKEN");
        },
    );
    // Refused for want of --yes, not for want of a token: nothing was read or sent.
    out.fails(
        EXIT_USAGE,
        &["https://contoso.managedhsm.azure.net is not an emulator: confirm running the canary proofs there with --yes"],
    )
    .stderr_has("drill proofs uses the canary keys on https://contoso.managedhsm.azure.net")
    .stderr_has("It creates, changes and deletes nothing.");
    dir.assert_absent("r");
}

/// `drill prepare --inventory digests`: the canary file names no key but
/// its own, and `drill proofs` still matches every key version.
#[test]
fn a_canary_of_digests_names_no_production_key() {
    let (dir, local) = local_original("drill-digests");
    // A first canary set stands in for the production keys.
    dir.run(&args(&[
        &s(&["drill", "prepare"]),
        &local,
        &s(&["--name", "payroll", "--out", "first.json"]),
    ]))
    .ok();
    dir.run(&args(&[
        &s(&["drill", "prepare"]),
        &local,
        &s(&["--inventory", "digests", "--out", "canary.json"]),
    ]))
    .ok();
    let text = dir.read_string("canary.json");
    assert!(!text.contains("payroll"), "{text}");
    let canary = util::read_json(&dir.join("canary.json"));
    assert_eq!(canary["inventory"].as_array().unwrap().len(), 3);
    assert_eq!(canary["inventory_digests"].as_array().unwrap().len(), 6);
    let out = dir.run(&args(&[
        &s(&["drill", "proofs"]),
        &local,
        &s(&["--canary", "canary.json", "--report", "r", "--json"]),
    ]));
    out.ok();
    let report = out.json();
    assert_eq!(report["outcome"], "passed");
    assert_eq!(report["inventory_digests"], 6);
    assert!(
        report["proven"][0].as_str().unwrap().contains("(6 key versions"),
        "{report}"
    );
    dir.run(&s(&[
        "drill",
        "prepare",
        "--url",
        "local:orig",
        "--inventory",
        "names",
        "--out",
        "x.json",
    ]))
    .fails(EXIT_USAGE, &["--inventory", "names"]);
}
