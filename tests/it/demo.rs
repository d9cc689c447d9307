//! `demo`: the whole offline story runs, end to end, with the real commands.

use crate::util;

use util::{Dir, EXIT_INPUT};

#[test]
fn demo_runs_the_whole_story_and_the_drill_passes() {
    let dir = Dir::new("demo");
    let out = dir.run(&["demo"]);
    out.ok()
        .stdout_has("[7/7]")
        .stdout_has("instance A: in process, state")
        .stdout_has("share x=3 of 3 opens")
        .stdout_has("| full restore from the canary set's backup | ok |")
        .stdout_has("| compare the inventory with the canary file | ok |")
        .stdout_has("- unwrap the DEK wrapped under drill-canary-rsa (RSA-OAEP-256): ok")
        .stdout_has("- verify the original's signature with drill-canary-ec (ES256): ok")
        .stdout_has("## What it did not prove")
        .stdout_has("# Recovery drill: PASSED")
        .stdout_has("the recovery works")
        .stdout_has("(removed now)");
    dir.assert_files(&[]);
}

#[test]
fn demo_keep_leaves_a_ceremony_to_look_at() {
    let dir = Dir::new("demo-keep");
    dir.run(&["demo", "--keep", "run"]).ok().stdout_has("drill PASSED");
    let run = |name: &str| dir.join("run").join(name);
    for name in ["cert_0.key", "cert_1.key", "cert_2.key", "admin.token"] {
        assert_eq!(util::mode_of(&run(name)), 0o600, "{name}");
    }
    // The drill's evidence names the security domain by its fingerprint and the two custodians by thumbprint.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run("drill-report/drill-report.json")).unwrap()).unwrap();
    assert_eq!(report["outcome"], "passed");
    let sd = std::fs::read(run("sd.json")).unwrap();
    use sha2::Digest;
    assert_eq!(report["sd_sha256"], hex::encode(sha2::Sha256::digest(&sd)));
    assert_eq!(report["participants"].as_array().unwrap().len(), 2);
    // The report lists the inventory before and after the full restore, and each proof.
    let canary = util::read_json(&run("canary.json"));
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}/{}", e["name"].as_str().unwrap(), e["version"].as_str().unwrap()))
            .collect()
    };
    let before = names(&report["inventory_before"]);
    assert_eq!(before.len(), 3);
    for k in ["drill-canary-aes/", "drill-canary-ec/", "drill-canary-rsa/"] {
        assert!(before.iter().any(|n| n.starts_with(k)), "{k} in {before:?}");
    }
    assert_eq!(before, names(&canary["inventory"]));
    assert_eq!(names(&report["inventory_after"]), before);
    let proofs: Vec<(&str, &str)> = report["proofs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        proofs,
        [
            ("unwrap the DEK wrapped under drill-canary-rsa (RSA-OAEP-256)", "ok"),
            ("unwrap the DEK wrapped under drill-canary-aes (A256KW)", "ok"),
            ("verify the original's signature with drill-canary-ec (ES256)", "ok"),
            ("sign anew with drill-canary-ec and verify (ES256)", "ok"),
        ]
    );
    assert_eq!(report["proven"].as_array().unwrap().len(), 4);
    // The full backup went to the demo's own folder, and is what the drill restored.
    let folder = canary["backup"]["folder"].as_str().unwrap();
    assert!(run("drill-backups").join(folder).join("backup.hsmemu").is_file());
    assert_eq!(report["backup"], canary["backup"]["folder_url"]);
    // What it left is usable by the other commands.
    dir.run(&[
        "sd",
        "inspect",
        "run/sd.json",
        "--certs",
        "run/cert_0.cer",
        "run/cert_1.cer",
        "run/cert_2.cer",
    ])
    .ok()
    .stdout_has("quorum        2 of 3 custodians")
    .stdout_has("run/cert_2.cer");
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "run/sd.json",
        "--key",
        "run/cert_1.key",
        "--passphrase-file",
        "run/cert_1.passphrase",
    ])
    .ok()
    .stdout_has("share x=2 of 3 opens");
    // Regression: --keep never reuses a folder, and says so ("already exists",
    // not "is a directory, not a file").
    let before = std::fs::read_dir(dir.join("run")).unwrap().count();
    dir.run(&["demo", "--keep", "run"])
        .fails(EXIT_INPUT, &["error: run already exists", "Choose another output path"]);
    assert_eq!(std::fs::read_dir(dir.join("run")).unwrap().count(), before);
}
