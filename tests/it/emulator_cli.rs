//! `hsm-ceremony emulator token|serve` as a user runs them: output, exit
//! codes, and the files left in the state directory.

use assert_cmd::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hsm-ceremony"))
}

#[test]
fn token_prints_only_the_token_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("inst");
    let out = bin()
        .args([
            "emulator",
            "token",
            "--principal",
            "alice",
            "--role",
            "administrator",
            "--role",
            "crypto-user",
            "--state",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].starts_with("hsmemu_") && lines[0].len() > 40);
    let stored = std::fs::read_to_string(state.join("tokens.json")).unwrap();
    assert!(!stored.contains(lines[0]));
    assert!(stored.contains("\"Crypto User\"") && stored.contains("alice"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join("tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn bad_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    bin()
        .args(["emulator", "token", "--principal", "x", "--role", "owner", "--state"])
        .arg(dir.path())
        .assert()
        .code(2);
    bin()
        .args(["emulator", "token", "--principal", "has space", "--state"])
        .arg(dir.path())
        .assert()
        .code(2);
    let out = bin()
        .args(["emulator", "serve", "--listen", "0.0.0.0:0", "--state"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    assert!(out.stdout.is_empty(), "nothing is listening, so nothing is announced");
}
