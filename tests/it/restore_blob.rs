//! `restore-blob`: a quorum of custodians re-encrypts the security domain's
//! contents for an exchange key. The blob is checked by opening it the way an
//! instance does, through the library.

use crate::util;

use std::path::Path;

use hsm_ceremony::crypto::secret::Passphrase;
use hsm_ceremony::inputs;
use hsm_ceremony::recovery::{contents_fingerprint, open_restore_blob, CustodianKey, Quorum};
use util::{fixtures, mutate_jwe, passphrase, Dir, EXIT_INPUT, EXIT_INTEGRITY, EXIT_QUORUM};

/// `restore-blob` on `sd.json` for `exchange.cer` into `blob.json`, with
/// `keys` and then `extra` arguments.
fn restore(dir: &Dir, keys: &[&str], extra: &[&str]) -> util::Output {
    let mut args = util::restore_blob_args(keys, &[], "blob.json");
    args.extend(extra.iter().map(|a| a.to_string()));
    dir.run(&args)
}

/// Per-key passphrase files for custodians `ids`.
fn pass_files(ids: &[usize]) -> Vec<String> {
    ids.iter()
        .flat_map(|i| ["--passphrase-file".to_string(), format!("c{i}.pass")])
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The fingerprint of the contents of the shared security domain, opened by
/// custodians 1 and 2 through the library (not by the binary).
fn sd_contents_fingerprint() -> String {
    let f = fixtures();
    let sd = inputs::security_domain(&f.path("sd.json")).unwrap();
    let mut quorum = Quorum::new(&sd);
    let keys: Vec<CustodianKey> = [1, 2]
        .iter()
        .map(|&i| {
            let key = inputs::key_file(&f.path(&format!("c{i}.key")))
                .unwrap()
                .into_key(Some(&Passphrase::new(passphrase(i))))
                .unwrap();
            let cert = inputs::certificate(&f.path(&format!("c{i}.cer"))).unwrap();
            CustodianKey::from_rsa(format!("c{i}.key"), key, Some((format!("c{i}.cer"), cert)))
        })
        .collect();
    for k in &keys {
        quorum.add(k).unwrap();
    }
    contents_fingerprint(&quorum.finish().unwrap().items)
}

/// Opens `blob` with the exchange key, as the target instance would.
fn blob_contents_fingerprint(blob: &Path) -> String {
    let f = fixtures();
    let blob = inputs::restore_blob(blob).unwrap();
    let key = inputs::key_file(&f.path("exchange.key"))
        .unwrap()
        .into_key(None)
        .unwrap();
    let cert = inputs::certificate(&f.path("exchange.cer")).unwrap();
    contents_fingerprint(&open_restore_blob(&blob, &key, &cert).unwrap())
}

#[test]
fn two_of_three_make_a_blob_with_the_same_contents() {
    let dir = Dir::new("restore-happy");
    dir.ceremony();
    let out = restore(&dir, &["c0.key", "c1.key"], &strs(&pass_files(&[0, 1])));
    out.ok()
        .stdout_has("share x=1 opened for c0.key (certificate c0.cer) (1 of 2 needed)")
        .stdout_has("share x=2 opened for c1.key (certificate c1.cer) (2 of 2 needed)")
        .stdout_has("wrote blob.json: 3 data items re-encrypted for exchange key exchange.cer");
    dir.assert_no_temp();

    let text = dir.read_string("blob.json");
    // Python's default separators and the spec's key order, as the Azure CLI writes it.
    assert!(
        text.starts_with(r#"{"EncData": {"data": [{"compact_jwe": ""#),
        "{}",
        &text[..60]
    );
    assert!(text.contains(r#""}, {"compact_jwe": ""#));
    assert!(text.contains(r#""tag": "hsm_backup"}"#));
    assert!(text.contains(r#"], "kdf": "sp108_kdf"}, "WrappedKey": {"enc_key": ""#));
    assert!(
        text.ends_with(&format!(r#"", "x5t_256": "{}"}}}}"#, exchange_x5t())),
        "{}",
        &text[text.len() - 80..]
    );
    assert!(!text.contains(r#"":""#) && !text.contains(r#"",""#) && !text.contains('\n'));
    assert!(text.find("\"EncData\"").unwrap() < text.find("\"WrappedKey\"").unwrap());

    // The instance opens it to exactly what the security domain holds.
    assert_eq!(
        blob_contents_fingerprint(&dir.join("blob.json")),
        sd_contents_fingerprint()
    );
    // ...under a fresh master key: no item ciphertext is carried over.
    let sd = util::read_json(&dir.join("sd.json"));
    let blob = util::read_json(&dir.join("blob.json"));
    for i in 0..3 {
        let (a, b) = (&sd["EncData"]["data"][i], &blob["EncData"]["data"][i]);
        assert_eq!(a["tag"], b["tag"]);
        assert_ne!(a["compact_jwe"], b["compact_jwe"]);
    }
}

fn exchange_x5t() -> String {
    let der = util::pem_der(&std::fs::read_to_string(fixtures().path("exchange.cer")).unwrap());
    util::b64u(&util::sha256(&der))
}

/// With --json, standard output is the JSON alone (the narrative of which
/// shares opened is dropped), so a script can parse it.
#[test]
fn json_output_is_json_alone() {
    let dir = Dir::new("restore-json");
    dir.ceremony();
    let p = pass_files(&[0, 1]);
    let mut extra = strs(&p);
    extra.push("--json");
    let v = restore(&dir, &["c0.key", "c1.key"], &extra).ok().json();
    assert_eq!(v["out"], "blob.json");
    assert_eq!(v["custodians"].as_array().unwrap().len(), 2);
}

#[test]
fn azure_flag_name_for_the_output() {
    let dir = Dir::new("restore-alias");
    dir.ceremony();
    let mut args = vec![
        "restore-blob",
        "--sd-file",
        "sd.json",
        "--sd-exchange-key",
        "exchange.cer",
        "--sd-wrapping-keys",
        "c2.key",
        "c0.key",
        "--sd-file-restore-blob",
        "azure-name.json",
    ];
    let p = pass_files(&[2, 0]);
    args.extend(strs(&p));
    dir.run(&args).ok().stdout_has("wrote azure-name.json");
    assert_eq!(
        blob_contents_fingerprint(&dir.join("azure-name.json")),
        sd_contents_fingerprint()
    );
}

#[test]
fn passwords_compat_works_with_a_warning() {
    let dir = Dir::new("restore-passwords");
    dir.ceremony();
    // As in an `az` runbook: --passwords followed by further flags.
    let (p1, p2) = (passphrase(1), passphrase(2));
    let args = [
        "restore-blob",
        "--sd-file",
        "sd.json",
        "--sd-wrapping-keys",
        "c1.key",
        "c2.key",
        "--passwords",
        &p1,
        &p2,
        "--sd-exchange-key",
        "exchange.cer",
        "--sd-file-restore-blob",
        "blob.json",
    ];
    let out = dir.run(&args);
    out.ok()
        .stderr_has("warning: --passwords puts passphrases on the command line");
    assert_eq!(
        blob_contents_fingerprint(&dir.join("blob.json")),
        sd_contents_fingerprint()
    );
}

/// Regression: `--passwords` used to swallow the flags after it as passwords.
#[test]
fn passwords_does_not_swallow_following_flags() {
    let dir = Dir::new("restore-passwords-flags");
    dir.ceremony();
    let (p0, p1) = (passphrase(0), passphrase(1));
    let out = restore(&dir, &["c0.key", "c1.key", "--passwords", &p0, &p1], &[]);
    out.ok();
    assert_eq!(
        blob_contents_fingerprint(&dir.join("blob.json")),
        sd_contents_fingerprint()
    );
    std::fs::remove_file(dir.join("blob.json")).unwrap();
    // A password that starts with '-' can still be given with '='.
    dir.copy(&["c3.key"]);
    let p0 = format!("--passwords={p0}");
    let out = restore(&dir, &["c3.key", "c0.key"], &["--passwords=-not-a-flag", &p0]);
    assert_ne!(out.code, 0);
    out.stderr_has("the key c3.key cannot be used: the passphrase does not open it");
}

#[test]
fn only_as_many_keys_as_the_quorum_are_opened() {
    let dir = Dir::new("restore-lazy");
    dir.ceremony();
    // The third key's passphrase file does not exist: it must never be read.
    let out = restore(
        &dir,
        &["c0.key", "c1.key", "c2.key"],
        &[
            "--passphrase-file",
            "c0.pass",
            "--passphrase-file",
            "c1.pass",
            "--passphrase-file",
            "never-read.pass",
        ],
    );
    out.ok().stdout_has("Quorum met; 1 remaining key(s) not needed.");
    assert!(
        !out.stdout.contains("c2.key"),
        "the third key was not touched: {}",
        out.stdout
    );
    assert!(dir.exists("blob.json"));
    // Control: the same missing file for a key that is needed is an error.
    std::fs::remove_file(dir.join("blob.json")).unwrap();
    let out = restore(
        &dir,
        &["c0.key", "c1.key"],
        &["--passphrase-file", "c0.pass", "--passphrase-file", "never-read.pass"],
    );
    out.fails(EXIT_QUORUM, &["never-read.pass"]);
    dir.assert_absent("blob.json");
}

#[test]
fn keys_without_any_certificate_find_their_shares() {
    let dir = Dir::new("restore-no-cer");
    dir.copy(&["sd.json", "exchange.cer", "c2.key", "c2.pass", "c1.key", "c1.pass"]);
    let out = restore(&dir, &["c2.key", "c1.key"], &strs(&pass_files(&[2, 1])));
    out.ok()
        .stdout_has("share x=3 opened for c2.key (1 of 2 needed)")
        .stdout_has("share x=2 opened for c1.key (2 of 2 needed)");
    assert_eq!(
        blob_contents_fingerprint(&dir.join("blob.json")),
        sd_contents_fingerprint()
    );
}

#[test]
fn certificates_given_with_cert_pair_keys_by_content() {
    let dir = Dir::new("restore-cert-pool");
    dir.copy(&["sd.json", "exchange.cer", "c0.key", "c0.pass", "c2.key", "c2.pass"]);
    std::fs::copy(fixtures().path("c0.cer"), dir.join("first.pem")).unwrap();
    std::fs::copy(fixtures().path("c2.cer"), dir.join("second.pem")).unwrap();
    let p = pass_files(&[0, 2]);
    let mut extra = strs(&p);
    extra.extend(["--cert", "second.pem", "first.pem"]);
    restore(&dir, &["c0.key", "c2.key"], &extra)
        .ok()
        .stdout_has("opened for c0.key (certificate first.pem)")
        .stdout_has("opened for c2.key (certificate second.pem)");
}

#[test]
fn wrong_passphrase_names_the_key_and_writes_nothing() {
    let dir = Dir::new("restore-wrong-pass");
    dir.ceremony();
    let out = restore(
        &dir,
        &["c0.key", "c1.key"],
        &["--passphrase-file", "c1.pass", "--passphrase-file", "c1.pass"],
    );
    assert_ne!(out.code, 0);
    out.fails(
        EXIT_QUORUM,
        &[
            "the key c0.key cannot be used: the passphrase does not open it",
            "1 share(s) opened",
        ],
    );
    dir.assert_absent("blob.json");
}

/// The shared SD with one byte of share `index`'s ciphertext flipped, as `sd.json`.
fn tamper_share(dir: &Dir, index: usize) {
    let mut sd = util::read_json(&fixtures().path("sd.json"));
    let share = &mut sd["SharedKeys"]["enc_shares"][index]["enc_key"];
    *share = mutate_jwe(share.as_str().unwrap(), 3, |ct| ct[5] ^= 0x01).into();
    dir.write("sd.json", serde_json::to_string(&sd).unwrap());
}

#[test]
fn tampered_share_names_the_certificate() {
    let dir = Dir::new("restore-tampered");
    dir.ceremony();
    tamper_share(&dir, 0);
    let out = restore(&dir, &["c0.key", "c1.key"], &strs(&pass_files(&[0, 1])));
    out.fails(
        EXIT_QUORUM,
        &[
            "the share of c0.key (certificate c0.cer) failed its integrity check",
            "1 share(s) opened",
            "2 needed",
        ],
    );
    dir.assert_absent("blob.json");
    // Custodian verify names it too, with exit code 4.
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ])
    .fails(
        EXIT_INTEGRITY,
        &["the share of c0.key (certificate c0.cer) failed its integrity check"],
    );
}

#[test]
fn tampered_share_is_skipped_when_a_third_custodian_is_there() {
    let dir = Dir::new("restore-tampered-3");
    dir.ceremony();
    tamper_share(&dir, 0);
    let out = restore(&dir, &["c0.key", "c1.key", "c2.key"], &strs(&pass_files(&[0, 1, 2])));
    out.ok()
        .stderr_has("warning: the share of c0.key (certificate c0.cer) failed its integrity check")
        .stderr_has("going on with the next key")
        .stdout_has("share x=3 opened for c2.key (certificate c2.cer) (2 of 2 needed)");
    assert_eq!(
        blob_contents_fingerprint(&dir.join("blob.json")),
        sd_contents_fingerprint()
    );
}

#[test]
fn too_few_shares_says_how_many_whose_and_how_many_needed() {
    let dir = Dir::new("restore-too-few");
    dir.ceremony();
    // Fewer keys than the quorum: refused before any passphrase is read.
    let out = restore(&dir, &["c2.key"], &["--passphrase-file", "c2.pass"]);
    out.fails(
        EXIT_QUORUM,
        &["only 1 key(s) were given", "2 needed", "nothing was asked"],
    );
    dir.assert_absent("blob.json");
    // Enough keys, but one does not open (c2's passphrase for both): one share opened, whose, how many needed.
    let out = restore(&dir, &["c0.key", "c2.key"], &["--passphrase-file", "c2.pass"]);
    out.fails(
        EXIT_QUORUM,
        &["not enough custodians: 1 share(s) opened (c2.key (certificate c2.cer)), 2 needed"],
    );
    dir.assert_absent("blob.json");
}

#[test]
fn the_same_custodian_counts_once() {
    let dir = Dir::new("restore-twice");
    dir.ceremony();
    // Refused before its passphrase is read: the same key given twice is one custodian.
    let out = restore(&dir, &["c1.key", "c1.key"], &["--passphrase-file", "c1.pass"]);
    out.fails(
        EXIT_INPUT,
        &["c1.key is the same key as c1.key (the same file); each custodian's key is given once"],
    );
    dir.assert_absent("blob.json");
}

#[test]
fn a_key_whose_certificate_is_not_in_the_sd() {
    let dir = Dir::new("restore-outsider");
    dir.ceremony();
    dir.custodian(3);
    // Its .cer says so before anyone is asked a passphrase: refused, whoever else came.
    for keys in [&["c3.key", "c0.key"][..], &["c3.key", "c0.key", "c1.key"]] {
        let passes: Vec<usize> = keys.iter().map(|k| k[1..2].parse().unwrap()).collect();
        let out = restore(&dir, keys, &strs(&pass_files(&passes)));
        out.fails(
            EXIT_INTEGRITY,
            &["the certificate c3.cer", "has no share in this security domain"],
        );
        dir.assert_absent("blob.json");
    }
}

/// Regression: a key beside another custodian's `.cer` was skipped with a
/// warning and the run ended as "not enough custodians" (exit 5) instead of
/// stopping on the mix-up (exit 4).
#[test]
fn a_key_that_does_not_match_its_cer_stops_the_run() {
    let dir = Dir::new("restore-mismatch");
    dir.ceremony();
    // c0.key now sits beside c1's certificate.
    std::fs::copy(dir.join("c1.cer"), dir.join("c0.cer")).unwrap();
    let out = restore(&dir, &["c0.key", "c1.key", "c2.key"], &strs(&pass_files(&[0, 1, 2])));
    out.fails(
        EXIT_INTEGRITY,
        &[
            "the key c0.key does not belong to the certificate c0.cer",
            "Pair each key with its own certificate",
        ],
    );
    dir.assert_absent("blob.json");
}

#[test]
fn existing_output_is_untouched() {
    let dir = Dir::new("restore-exists");
    dir.ceremony();
    dir.write("blob.json", "earlier blob");
    // Refused before any passphrase is read (the files given do not exist).
    let out = restore(
        &dir,
        &["c0.key", "c1.key"],
        &["--passphrase-file", "nope0", "--passphrase-file", "nope1"],
    );
    out.fails(EXIT_INPUT, &["blob.json already exists; it is never overwritten"]);
    assert_eq!(dir.read_string("blob.json"), "earlier blob");
    dir.assert_no_temp();
}

#[test]
fn output_that_is_a_directory_is_refused() {
    let dir = Dir::new("restore-out-dir");
    dir.ceremony();
    std::fs::create_dir(dir.join("blob.json")).unwrap();
    restore(&dir, &["c0.key", "c1.key"], &strs(&pass_files(&[0, 1])))
        .fails(EXIT_INPUT, &["blob.json is a directory, not a file"]);
    assert!(dir.join("blob.json").is_dir());
    assert_eq!(std::fs::read_dir(dir.join("blob.json")).unwrap().count(), 0);
    dir.assert_no_temp();
}

#[test]
fn weak_or_wrong_exchange_keys_are_refused() {
    let dir = Dir::new("restore-bad-exchange");
    dir.ceremony();
    util::openssl(
        &dir,
        &[
            "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", "weak.key", "-out", "weak.cer", "-days", "30",
            "-subj", "/CN=weak",
        ],
    );
    let p = pass_files(&[0, 1]);
    let run = |exchange: &str| {
        let mut args = vec![
            "restore-blob",
            "--sd-file",
            "sd.json",
            "--sd-exchange-key",
            exchange,
            "--sd-wrapping-keys",
            "c0.key",
            "c1.key",
        ];
        args.extend(["--out", "blob.json"]);
        args.extend(strs(&p));
        dir.run(&args)
    };
    run("weak.cer").fails(
        EXIT_INPUT,
        &["the certificate weak.cer cannot be used: its RSA key is 1024 bits"],
    );
    dir.assert_absent("blob.json");
    run("exchange.key").fails(
        EXIT_INPUT,
        &["the certificate exchange.key cannot be used: it is not a certificate"],
    );
    dir.assert_absent("blob.json");
    run("sd.json").fails(EXIT_INPUT, &["sd.json", "not a certificate"]);
    dir.assert_absent("blob.json");
}

/// Regression: a group-readable key in restore-blob was skipped with a
/// warning, and the `chmod 600` advice never reached the operator.
#[test]
fn group_readable_key_is_refused_with_chmod_advice() {
    let dir = Dir::new("restore-0644");
    dir.ceremony();
    dir.chmod("c1.key", 0o644);
    let out = restore(&dir, &["c0.key", "c1.key", "c2.key"], &strs(&pass_files(&[0, 1, 2])));
    out.fails(
        EXIT_INPUT,
        &["c1.key can be read by other users of this machine", "chmod 600 c1.key"],
    );
    dir.assert_absent("blob.json");
}

#[test]
fn passphrases_from_an_inherited_descriptor() {
    let dir = Dir::new("restore-fd");
    dir.ceremony();
    dir.write("secrets", format!("{}\n{}\n", passphrase(2), passphrase(0)));
    // `--passphrase-fd 3 3<secrets`, as the help shows it, through a shell.
    let script = format!(
        "exec '{}' restore-blob --sd-file sd.json --sd-exchange-key exchange.cer --sd-wrapping-keys c2.key c0.key --out blob.json --passphrase-fd 3 3<secrets",
        util::BIN
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env_remove("HSM_CEREMONY_PASSPHRASE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        blob_contents_fingerprint(&dir.join("blob.json")),
        sd_contents_fingerprint()
    );
    // One line short: the second key's passphrase is missing, and that is said.
    dir.remove("blob.json");
    dir.write("short", format!("{}\n", passphrase(2)));
    let out = std::process::Command::new("sh")
        .args(["-c", &script.replace("3<secrets", "3<short")])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(util::EXIT_USAGE));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--passphrase-fd ran out of lines before the passphrase for c0.key"));
    dir.assert_absent("blob.json");
    // Regression: a descriptor with no newline (here /dev/zero) was read
    // without limit, until memory ran out; now bounded like a passphrase file.
    let out = std::process::Command::new("sh")
        .args(["-c", &script.replace("3<secrets", "3</dev/zero")])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(util::EXIT_USAGE), "{stderr}");
    assert!(
        stderr.contains("--passphrase-fd: the line for c2.key is longer than 65536 bytes"),
        "{stderr}"
    );
    dir.assert_absent("blob.json");
}

#[test]
fn passwords_must_be_one_per_key() {
    let dir = Dir::new("restore-passwords-count");
    dir.ceremony();
    let p0 = passphrase(0);
    restore(&dir, &["c0.key", "c1.key"], &["--passwords", &p0])
        .fails(util::EXIT_USAGE, &["--passwords has 1 entries for 2 key(s)"]);
    dir.assert_absent("blob.json");
}

#[test]
fn output_in_a_missing_folder_is_an_io_error_and_leaves_nothing() {
    let dir = Dir::new("restore-no-folder");
    dir.ceremony();
    let mut args = vec![
        "restore-blob",
        "--sd-file",
        "sd.json",
        "--sd-exchange-key",
        "exchange.cer",
        "--sd-wrapping-keys",
        "c0.key",
        "c1.key",
    ];
    let p = pass_files(&[0, 1]);
    args.extend(strs(&p));
    args.extend(["--out", "missing/blob.json"]);
    dir.run(&args).fails(
        6,
        &[
            "the output folder missing cannot be used for missing/blob.json",
            "does not exist",
        ],
    );
    assert!(!dir.exists("missing"));
    dir.assert_no_temp();
}

#[test]
fn output_that_is_a_dangling_symlink_is_not_followed() {
    let dir = Dir::new("restore-symlink");
    dir.ceremony();
    std::os::unix::fs::symlink(dir.join("elsewhere.json"), dir.join("blob.json")).unwrap();
    restore(&dir, &["c0.key", "c1.key"], &strs(&pass_files(&[0, 1])))
        .fails(EXIT_INPUT, &["blob.json already exists; it is never overwritten"]);
    assert!(!dir.exists("elsewhere.json"), "the link's target was created");
    assert!(std::fs::symlink_metadata(dir.join("blob.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    dir.assert_no_temp();
}

#[test]
fn share_order_in_the_file_does_not_matter() {
    let dir = Dir::new("restore-reordered");
    dir.ceremony();
    let mut sd = util::read_json(&dir.join("sd.json"));
    sd["SharedKeys"]["enc_shares"].as_array_mut().unwrap().reverse();
    dir.remove("sd.json");
    dir.write("sd.json", serde_json::to_vec(&sd).unwrap());
    restore(&dir, &["c0.key", "c2.key"], &strs(&pass_files(&[0, 2])))
        .ok()
        .stdout_has("share x=1 opened for c0.key")
        .stdout_has("share x=3 opened for c2.key");
    assert_eq!(
        blob_contents_fingerprint(&dir.join("blob.json")),
        sd_contents_fingerprint()
    );
}

/// Regression: a file (made elsewhere) with two shares for two certificates of
/// one key let that key's holder meet a 2-of-3 quorum alone, by giving the key
/// twice beside each certificate. One key counts once.
#[test]
fn one_key_counts_once_whatever_its_certificates() {
    use hsm_ceremony::crypto::{jwe, rng::os_rng};
    let dir = Dir::new("restore-one-key-twice");
    dir.ceremony();
    std::fs::create_dir(dir.join("again")).unwrap();
    util::openssl(
        &dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "c0.key",
            "-passin",
            "file:c0.pass",
            "-subj",
            "/CN=again",
            "-days",
            "30",
            "-out",
            "again/c0.cer",
        ],
    );
    std::fs::copy(dir.join("c0.pass"), dir.join("again/c0.pass")).unwrap();
    // The same key, re-encrypted: another file, so only the quorum's own check can see it is one custodian.
    util::openssl(
        &dir,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            "c0.key",
            "-passin",
            "file:c0.pass",
            "-passout",
            "file:again/c0.pass",
            "-out",
            "again/c0.key",
        ],
    );
    util::set_mode(&dir.join("again/c0.key"), 0o600);
    // Share 3 (custodian 2's) re-encrypted to custodian 0's key under the second certificate.
    let f = fixtures();
    let sd = inputs::security_domain(&f.path("sd.json")).unwrap();
    let key2 = inputs::key_file(&f.path("c2.key"))
        .unwrap()
        .into_key(Some(&Passphrase::new(passphrase(2))))
        .unwrap();
    let share2 = sd.share_jwe(2).unwrap().decrypt_with(&key2).unwrap();
    let again = inputs::certificate(&dir.join("again/c0.cer")).unwrap();
    let enc_key =
        jwe::encrypt_rsa_oaep256_with_rng(&mut os_rng(), &again.rsa_public_key().unwrap(), share2.expose()).unwrap();
    let mut v = util::read_json(&dir.join("sd.json"));
    v["SharedKeys"]["enc_shares"][2] = serde_json::json!({"enc_key": enc_key, "x5t_256": again.x5t_256()});
    dir.remove("sd.json");
    dir.write("sd.json", serde_json::to_vec(&v).unwrap());

    let out = restore(&dir, &["c0.key", "again/c0.key"], &["--passphrase-file", "c0.pass"]);
    out.fails(
        EXIT_QUORUM,
        &[
            "the share of again/c0.key (certificate again/c0.cer) was already opened",
            "1 share(s) opened",
        ],
    );
    dir.assert_absent("blob.json");
    // Control: with a second, real custodian the same file recovers.
    restore(&dir, &["c0.key", "c1.key"], &strs(&pass_files(&[0, 1]))).ok();
}
