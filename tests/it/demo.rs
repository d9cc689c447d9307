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
        .stdout_has("| restore the canary key | ok |")
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
    let canary = report["canary"].as_str().unwrap();
    assert!(
        canary.contains("restored as /keys/drill-canary/") && canary.ends_with(" on the in-process instance"),
        "{canary}"
    );
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
