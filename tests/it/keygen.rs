//! `custodian keygen`: the files it writes, their modes and forms, and what it
//! refuses without writing anything.

use crate::util;

use util::{Dir, EXIT_INPUT, EXIT_USAGE};

const PASS: &str = "a passphrase of some length";

/// The `x5t#S256` line of keygen's or show's text output.
fn printed_x5t(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("x5t#S256"))
        .expect("an x5t#S256 line");
    line.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn single_custodian_with_passphrase_file() {
    let dir = Dir::new("keygen-single");
    dir.write_secret("alice.pass", format!("{PASS}\n"));
    let out = dir.run(&[
        "custodian",
        "keygen",
        "--name",
        "alice",
        "--bits",
        "2048",
        "--passphrase-file",
        "alice.pass",
    ]);
    out.ok().stdout_has("custodian alice");
    assert_eq!(dir.mode("alice.key"), 0o600, "the private key is for its owner only");
    let key = dir.read_string("alice.key");
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"), "{key}");
    assert!(!key.contains("BEGIN PRIVATE KEY"));
    let cer = dir.read_string("alice.cer");
    assert!(cer.starts_with("-----BEGIN CERTIFICATE-----\n") && cer.trim_end().ends_with("-----END CERTIFICATE-----"));
    dir.assert_files(&[
        "alice.cer",
        "alice.key",
        "alice.pass",
        "ceremony-log.jsonl",
        "ceremony-log.jsonl.head",
    ]);

    // The printed thumbprint is the certificate's, as `show` and the SD name it.
    let x5t = printed_x5t(&out.stdout);
    assert_eq!(x5t, util::b64u(&util::sha256(&util::pem_der(&cer))));

    // The ceremony log records both files by fingerprint and the thumbprint, never the passphrase or the key.
    let log = dir.read_string("ceremony-log.jsonl");
    assert_eq!(log.lines().count(), 1);
    let line: serde_json::Value = serde_json::from_str(log.trim_end()).unwrap();
    assert_eq!(line["command"], "custodian keygen");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["thumbprints"], serde_json::json!([x5t]));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let outputs: Vec<&str> = line["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["sha256"].as_str().unwrap())
        .collect();
    assert!(outputs.contains(&hex(&util::sha256(key.as_bytes())).as_str()));
    assert!(outputs.contains(&hex(&util::sha256(cer.as_bytes())).as_str()));
    assert!(!log.contains(PASS) && !log.contains("PRIVATE KEY"));
    let show = dir.run(&["custodian", "show", "alice.cer"]);
    show.ok().stdout_has("CN=alice").stdout_has("RSA-2048");
    assert_eq!(printed_x5t(&show.stdout), x5t);
}

#[test]
fn batch_of_three_with_prefix() {
    let dir = Dir::new("keygen-batch");
    dir.write_secret("p", PASS);
    let out = dir.run(&[
        "custodian",
        "keygen",
        "--count",
        "3",
        "--prefix",
        "cert_",
        "--bits",
        "2048",
        "--passphrase-file",
        "p",
        "--json",
    ]);
    let list = out.ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    for (i, made) in list.iter().enumerate() {
        assert_eq!(made["name"], format!("cert_{i}"));
        assert_eq!(made["encrypted"], true);
        assert_eq!(made["bits"], 2048);
    }
    dir.assert_files(&[
        "cert_0.cer",
        "cert_0.key",
        "cert_1.cer",
        "cert_1.key",
        "cert_2.cer",
        "cert_2.key",
        "ceremony-log.jsonl",
        "ceremony-log.jsonl.head",
        "p",
    ]);
    // Three distinct custodians, not one key three times.
    let x: Vec<&str> = list.iter().map(|m| m["x5t_256"].as_str().unwrap()).collect();
    assert!(x[0] != x[1] && x[1] != x[2] && x[0] != x[2], "{x:?}");
}

#[test]
fn refuses_existing_output_and_changes_nothing() {
    let dir = Dir::new("keygen-exists");
    dir.write_secret("p", PASS);
    dir.write("bob.cer", "not mine to overwrite");
    let out = dir.run(&[
        "custodian",
        "keygen",
        "--name",
        "bob",
        "--bits",
        "2048",
        "--passphrase-file",
        "p",
    ]);
    out.fails(EXIT_INPUT, &["bob.cer", "already exists"]);
    assert_eq!(dir.read_string("bob.cer"), "not mine to overwrite");
    dir.assert_absent("bob.key");
    dir.assert_files(&["bob.cer", "p"]);

    // In a batch, one taken name stops the whole batch before anything is made.
    dir.write("cert_1.key", "taken");
    let out = dir.run(&[
        "custodian",
        "keygen",
        "--count",
        "3",
        "--prefix",
        "cert_",
        "--bits",
        "2048",
        "--passphrase-file",
        "p",
    ]);
    out.fails(EXIT_INPUT, &["cert_1.key"]);
    dir.assert_files(&["bob.cer", "cert_1.key", "p"]);
}

#[test]
fn weak_passphrase_is_refused_and_no_files_are_made() {
    let dir = Dir::new("keygen-weak-pass");
    dir.write_secret("p", "short11char\n");
    let out = dir.run(&[
        "custodian",
        "keygen",
        "--name",
        "carol",
        "--bits",
        "2048",
        "--passphrase-file",
        "p",
    ]);
    out.fails(EXIT_INPUT, &["carol", "at least 12 characters", "has 11"]);
    dir.assert_files(&["p"]);
}

#[test]
fn rsa_1024_is_refused() {
    let dir = Dir::new("keygen-1024");
    dir.write_secret("p", PASS);
    let out = dir.run(&[
        "custodian",
        "keygen",
        "--name",
        "dave",
        "--bits",
        "1024",
        "--passphrase-file",
        "p",
    ]);
    assert_eq!(out.code, EXIT_USAGE, "{out:?}");
    out.stderr_has("'1024' is not offered")
        .stderr_has("below 2048 is refused");
    dir.assert_files(&["p"]);
}

#[test]
fn no_passphrase_source_and_no_terminal_is_a_usage_error() {
    let dir = Dir::new("keygen-no-tty");
    let out = dir.run(&["custodian", "keygen", "--name", "erin", "--bits", "2048"]);
    out.fails(
        EXIT_USAGE,
        &["no terminal", "--passphrase-file", "HSM_CEREMONY_PASSPHRASE"],
    );
    dir.assert_files(&[]);
}

#[test]
fn passphrase_from_environment_is_used() {
    let dir = Dir::new("keygen-env");
    let out = dir.run_with(&["custodian", "keygen", "--name", "env", "--bits", "2048"], |c| {
        c.env("HSM_CEREMONY_PASSPHRASE", PASS);
    });
    out.ok();
    dir.write_secret("p", PASS);
    // The key opens with that passphrase.
    util::openssl(&dir, &["pkey", "-in", "env.key", "-passin", "file:p", "-noout"]);
}

#[test]
fn insecure_unencrypted_key_is_plain_pkcs8_and_warned() {
    let dir = Dir::new("keygen-plain");
    let out = dir.run(&[
        "custodian",
        "keygen",
        "--name",
        "rehearsal",
        "--bits",
        "2048",
        "--insecure-unencrypted-key",
    ]);
    out.ok().stderr_has("UNENCRYPTED").stdout_has("UNENCRYPTED");
    let key = dir.read_string("rehearsal.key");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
    assert_eq!(dir.mode("rehearsal.key"), 0o600);
}

#[test]
fn bad_names_days_and_folders_are_refused() {
    let dir = Dir::new("keygen-bad-args");
    dir.write_secret("p", PASS);
    let base = ["custodian", "keygen", "--bits", "2048", "--passphrase-file", "p"];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        dir.run(&a)
    };
    with(&["--name", "../escape"]).fails(EXIT_USAGE, &["'../escape' is not a usable custodian name"]);
    with(&["--name", "x", "--days", "4000"]).fails(EXIT_INPUT, &["--days 4000"]);
    with(&["--name", "x", "--out-dir", "missing"]).fails(EXIT_USAGE, &["missing", "does not exist"]);
    with(&["--count", "11", "--prefix", "c"]).fails(EXIT_USAGE, &["--count 11"]);
    dir.write_secret("q", PASS);
    with(&["--count", "3", "--prefix", "c", "--passphrase-file", "q"])
        .fails(EXIT_USAGE, &["2 --passphrase-file options were given for 3 key(s)"]);
    dir.remove("q");
    dir.assert_files(&["p"]);
}

#[test]
fn quiet_prints_only_the_thumbprint() {
    let dir = Dir::new("keygen-quiet");
    let out = dir.run(&[
        "-q",
        "custodian",
        "keygen",
        "--name",
        "q",
        "--bits",
        "2048",
        "--insecure-unencrypted-key",
    ]);
    let lines: Vec<&str> = out.ok().stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].trim_start().starts_with("x5t#S256"));
    assert_eq!(
        printed_x5t(&out.stdout),
        util::b64u(&util::sha256(&util::pem_der(&dir.read_string("q.cer"))))
    );
}

#[test]
fn key_is_0600_whatever_the_umask() {
    let dir = Dir::new("keygen-umask");
    dir.write_secret("p", PASS);
    let script = format!(
        "umask 000; exec '{}' custodian keygen --name loose --bits 2048 --passphrase-file p",
        util::BIN
    );
    let status = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(dir.mode("loose.key"), 0o600);
    assert_eq!(dir.mode("loose.cer"), 0o644);
}
