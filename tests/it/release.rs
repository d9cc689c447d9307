//! What the ceremony laptop checks before anything else: `self-test` (the
//! known-answer tests, exit 4 on any failure) and `--version` (commit, tree,
//! Cargo.lock hash, features), against the tree this test runs in.

use crate::util;

use util::{Dir, EXIT_INTEGRITY};

const KATS: [&str; 6] = [
    "sp800-108-kdf",
    "a256cbc-hs512",
    "rsa-oaep-256",
    "shamir-gf257",
    "pkcs8-pbes2",
    "os-rng",
];

#[test]
fn self_test_prints_each_known_answer_test_and_passes() {
    let d = Dir::new("self-test-ok");
    let out = d.run(&["self-test"]);
    out.ok();
    for id in KATS {
        assert!(
            out.stdout.lines().any(|l| l.starts_with("ok ") && l.contains(id)),
            "{id} not reported ok:\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
    // It runs anywhere and leaves nothing behind (no ceremony log either).
    assert!(d.listing().is_empty(), "{:?}", d.listing());
}

/// Each known-answer test, when its answer is corrupted (a `test-hooks`
/// switch the release binary lacks), makes the whole run fail with exit 4,
/// names itself, and the other tests still run and pass.
#[test]
fn a_failing_known_answer_test_exits_4_and_is_named() {
    let d = Dir::new("self-test-fail");
    for bad in KATS {
        let out = d.run_with(&["self-test"], |c| {
            c.env("HSM_CEREMONY_SELFTEST_CORRUPT", bad);
        });
        out.fails(EXIT_INTEGRITY, &["self-test failed", bad, "must not be used"]);
        for id in KATS {
            let want = if id == bad { "FAIL " } else { "ok " };
            assert!(
                out.stdout.lines().any(|l| l.starts_with(want) && l.contains(id)),
                "corrupting {bad}: {id} is not '{want}'\n{}",
                out.stdout
            );
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_commit_tree_lock_hash_and_features() {
    let d = Dir::new("version");
    let out = d.run(&["--version"]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        concat!("hsm-ceremony ", env!("CARGO_PKG_VERSION")),
        "{}",
        out.stdout
    );
    let lock = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    assert_eq!(
        lines[2],
        format!("Cargo.lock sha256: {}", hex::encode(util::sha256(&lock)))
    );
    // The test binary is the default build with the test hooks on, and says so.
    assert_eq!(
        lines[3],
        "features: network, test-hooks (a test build: not for a ceremony)"
    );
    let commit = lines[1].strip_prefix("commit: ").expect("a commit line");
    let (hash, tree) = commit.split_once(' ').unwrap();
    assert!(tree == "(clean tree)" || tree == "(dirty tree)", "{commit}");
    // Where the tests run in a git checkout, it is that checkout's commit.
    match git(&["rev-parse", "HEAD"]) {
        Some(head) if std::env::var_os("HSM_CEREMONY_COMMIT").is_none() => assert_eq!(hash, head),
        _ => assert!(hash == "unknown" || hash.len() == 40, "{commit}"),
    }
    // -V stays the short form clap gives, the man pages' VERSION.
    let short = d.run(&["-V"]);
    short.ok();
    assert_eq!(short.stdout.trim(), concat!("hsm-ceremony ", env!("CARGO_PKG_VERSION")));
}
