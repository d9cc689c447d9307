//! `demo`: the whole offline story runs, end to end, with the real commands.

mod util;

use util::{Dir, EXIT_INPUT};

#[test]
fn demo_runs_and_the_contents_match() {
    let dir = Dir::new("demo");
    let out = dir.run(&["demo"]);
    out.ok()
        .stdout_has("[6/6]")
        .stdout_has("They match")
        .stdout_has("(removed now)");
    // The two fingerprints it compares are printed, and equal.
    let fp = |prefix: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap()
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    let (a, b) = (
        fp("contents fingerprint from the blob:"),
        fp("contents fingerprint from custodians 1 and 2:"),
    );
    assert_eq!(a.len(), 64);
    assert_eq!(a, b);
    dir.assert_files(&[]);
}

#[test]
fn demo_keep_leaves_a_ceremony_to_look_at() {
    let dir = Dir::new("demo-keep");
    dir.run(&["demo", "--keep", "run"]).ok().stdout_has("They match");
    let run = |name: &str| dir.join("run").join(name);
    for name in ["cert_0.key", "cert_1.key", "cert_2.key", "exchange.key"] {
        assert_eq!(util::mode_of(&run(name)), 0o600, "{name}");
    }
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
