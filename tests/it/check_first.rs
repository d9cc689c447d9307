//! Check before asking, and record or do nothing: everything that can be
//! checked without a secret (the log takes a line, the output folder takes
//! a file, the keys are distinct, enough and each in the security domain,
//! the signer may sign) is checked before any passphrase is read, and a
//! step whose log cannot take a line leaves no output behind.
//!
//! The passphrases come on `--passphrase-fd 3`, a file this test keeps open
//! too: the child shares its offset, so an offset still at 0 afterwards
//! proves that not a byte was read.

use crate::util;

use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use util::{passphrase, Dir, EXIT_INPUT, EXIT_INTEGRITY, EXIT_QUORUM};

const EXIT_USAGE: i32 = 2;
const EXIT_IO: i32 = 6;

/// Runs `args` in `dir` with the custodians' passphrases on fd 3; returns
/// the output and how many bytes of them the command read.
fn run_with_fd(dir: &Dir, args: &[&str]) -> (util::Output, u64) {
    let mut secrets = tempfile::tempfile().unwrap();
    for i in 0..4 {
        writeln!(secrets, "{}", passphrase(i)).unwrap();
    }
    secrets.rewind().unwrap();
    let fd = secrets.as_raw_fd();
    let mut all = args.to_vec();
    all.extend(["--passphrase-fd", "3"]);
    let out = dir.run_with(&all, |c| {
        // SAFETY: dup2 in the child between fork and exec, on a descriptor open in the parent.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let read = secrets.stream_position().unwrap();
    (out, read)
}

#[track_caller]
fn refused_unasked(dir: &Dir, args: &[&str], code: i32, needles: &[&str]) {
    let (out, read) = run_with_fd(dir, args);
    out.fails(code, needles);
    assert_eq!(
        read, 0,
        "{read} bytes of passphrases were read before the refusal\n{out:?}"
    );
}

fn with_out<'a>(args: &[&'a str], out: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--out", out]);
    v
}

const RESTORE: [&str; 5] = [
    "restore-blob",
    "--sd-file",
    "sd.json",
    "--sd-exchange-key",
    "exchange.cer",
];

/// A 2-of-3 rotation of the ceremony's sd.json onto c0..c2, `--out` to add.
const ROTATE: [&str; 12] = [
    "rotate",
    "--sd-file",
    "sd.json",
    "--sd-wrapping-keys",
    "c0.key",
    "c1.key",
    "--new-certs",
    "c0.cer",
    "c1.cer",
    "c2.cer",
    "--quorum",
    "2",
];

/// Regression: restore-blob (and rotate, drill) opened the first key, asking
/// its passphrase, before finding the same key given twice, too few keys, or
/// a certificate with no share in the file.
#[test]
fn the_keys_of_a_quorum_are_checked_before_any_passphrase() {
    let dir = Dir::new("check-keys");
    dir.ceremony();
    dir.custodian(3);
    std::fs::copy(dir.join("c0.key"), dir.join("copy-of-c0.key")).unwrap();
    util::set_mode(&dir.join("copy-of-c0.key"), 0o600);
    let restore = |keys: &[&'static str]| {
        let mut a = RESTORE.to_vec();
        a.push("--sd-wrapping-keys");
        a.extend(keys);
        with_out(&a, "blob.json")
    };
    refused_unasked(
        &dir,
        &restore(&["c0.key", "c0.key"]),
        EXIT_INPUT,
        &["c0.key is the same key as c0.key"],
    );
    refused_unasked(
        &dir,
        &restore(&["c0.key", "copy-of-c0.key"]),
        EXIT_INPUT,
        &["copy-of-c0.key is the same key as c0.key (a copy of the same file)"],
    );
    refused_unasked(
        &dir,
        &restore(&["c1.key"]),
        EXIT_QUORUM,
        &["only 1 key(s) were given", "2 needed"],
    );
    refused_unasked(
        &dir,
        &restore(&["c0.key", "c3.key"]),
        EXIT_INTEGRITY,
        &["the certificate c3.cer", "has no share in this security domain"],
    );
    dir.assert_absent("blob.json");
    let rotate = [
        "rotate",
        "--sd-file",
        "sd.json",
        "--sd-wrapping-keys",
        "c0.key",
        "c0.key",
        "--new-certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--quorum",
        "2",
        "--out",
        "sd2.json",
    ];
    refused_unasked(&dir, &rotate, EXIT_INPUT, &["the same key as c0.key"]);
    dir.assert_absent("sd2.json.pending");
    let drill = [
        "drill",
        "--sd-file",
        "sd.json",
        "--sd-wrapping-keys",
        "c2.key",
        "c2.key",
        "--instance",
        "local",
        "--report",
        "drills/one",
    ];
    refused_unasked(&dir, &drill, EXIT_INPUT, &["the same key as c2.key"]);
    dir.assert_absent("drills");
    // custodian verify: a certificate with no share is refused before the passphrase.
    let verify = ["custodian", "verify", "--sd-file", "sd.json", "--key", "c3.key"];
    refused_unasked(&dir, &verify, EXIT_INTEGRITY, &["c3.cer", "has no share"]);
}

#[test]
fn an_output_folder_that_cannot_take_the_output_is_found_before_any_passphrase() {
    let dir = Dir::new("check-folder");
    dir.ceremony();
    let mut a = RESTORE.to_vec();
    a.extend(["--sd-wrapping-keys", "c0.key", "c1.key"]);
    refused_unasked(
        &dir,
        &with_out(&a, "no-such-folder/blob.json"),
        EXIT_IO,
        &["the output folder no-such-folder cannot be used", "does not exist"],
    );
    refused_unasked(&dir, &with_out(&a, "sd.json"), EXIT_INPUT, &["sd.json already exists"]);
    let rotate = with_out(&ROTATE, "no-such-folder/sd2.json");
    refused_unasked(
        &dir,
        &rotate,
        EXIT_IO,
        &["the output folder no-such-folder cannot be used"],
    );
}

/// Regression: a log that cannot take a line was only found after the step
/// had done its work (restore-blob wrote its blob, then exited 2). Every
/// logging command now checks it first, asks nothing and writes nothing.
#[test]
fn a_log_that_cannot_be_appended_stops_every_logging_command_before_its_work() {
    let dir = Dir::new("check-log");
    dir.ceremony();
    dir.write("ceremony-log.jsonl", "{\"seq\":1");
    let partial = ["ends in a partial line"];
    let mut restore = RESTORE.to_vec();
    restore.extend(["--sd-wrapping-keys", "c0.key", "c1.key", "--out", "blob.json"]);
    refused_unasked(&dir, &restore, EXIT_USAGE, &partial);
    dir.assert_absent("blob.json");
    let verify = ["custodian", "verify", "--sd-file", "sd.json", "--key", "c0.key"];
    refused_unasked(&dir, &verify, EXIT_USAGE, &partial);
    let keygen = ["custodian", "keygen", "--name", "zed", "--bits", "2048"];
    refused_unasked(&dir, &keygen, EXIT_USAGE, &partial);
    dir.assert_absent("zed.key");
    dir.assert_absent("zed.cer");
    let rotate = with_out(&ROTATE, "sd2.json");
    refused_unasked(&dir, &rotate, EXIT_USAGE, &partial);
    dir.assert_absent("sd2.json.pending");
    let drill = [
        "drill",
        "--sd-file",
        "sd.json",
        "--sd-wrapping-keys",
        "c0.key",
        "c1.key",
        "--instance",
        "local",
        "--report",
        "drill",
    ];
    refused_unasked(&dir, &drill, EXIT_USAGE, &partial);
    dir.assert_absent("drill");
    // Commands without a passphrase write nothing either.
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
        "new.json",
    ])
    .fails(EXIT_USAGE, &partial);
    dir.assert_absent("new.json");
    dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "c2.cer"])
        .fails(EXIT_USAGE, &partial);
    assert_eq!(
        dir.read_string("ceremony-log.jsonl"),
        "{\"seq\":1",
        "the log was changed"
    );
}

/// A symbolic link as the log (or its head) is refused, as outputs are, before anything is asked.
#[test]
fn a_symlinked_log_is_refused_before_anything_is_asked() {
    let dir = Dir::new("check-log-link");
    dir.ceremony();
    dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "c2.cer"])
        .ok();
    std::fs::rename(dir.join("ceremony-log.jsonl"), dir.join("real.jsonl")).unwrap();
    std::os::unix::fs::symlink("real.jsonl", dir.join("ceremony-log.jsonl")).unwrap();
    let verify = ["custodian", "verify", "--sd-file", "sd.json", "--key", "c0.key"];
    refused_unasked(&dir, &verify, EXIT_INPUT, &["ceremony-log.jsonl is a symbolic link"]);
    let sign = ["log", "sign", "ceremony-log.jsonl", "--line", "1", "--key", "c0.key"];
    refused_unasked(&dir, &sign, EXIT_INPUT, &["is a symbolic link"]);
    dir.run(&["log", "verify", "ceremony-log.jsonl"])
        .fails(EXIT_INPUT, &["is a symbolic link"]);
    // The real file, by its own name, is intact and took nothing.
    std::fs::remove_file(dir.join("ceremony-log.jsonl")).unwrap();
    std::fs::rename(dir.join("real.jsonl"), dir.join("ceremony-log.jsonl")).unwrap();
    std::fs::rename(dir.join("ceremony-log.jsonl.head"), dir.join("real.head")).unwrap();
    std::os::unix::fs::symlink("real.head", dir.join("ceremony-log.jsonl.head")).unwrap();
    refused_unasked(&dir, &sign, EXIT_INPUT, &["ceremony-log.jsonl.head is a symbolic link"]);
}

/// manifest sign: a custodian not in the manifest, or one who already
/// signed, is refused before their key is opened.
#[test]
fn manifest_sign_checks_the_signer_before_the_passphrase() {
    let dir = Dir::new("check-manifest");
    dir.ceremony();
    dir.custodian(3);
    dir.run(&[
        "manifest",
        "create",
        "--purpose",
        "split",
        "--quorum",
        "2",
        "--epoch",
        "1",
        "--certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--out",
        "m.json",
    ])
    .ok();
    dir.run(&[
        "manifest",
        "sign",
        "--manifest",
        "m.json",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ])
    .ok();
    let before = dir.read("m.json");
    let again = ["manifest", "sign", "--manifest", "m.json", "--key", "c0.key"];
    refused_unasked(&dir, &again, EXIT_USAGE, &["has already signed this manifest"]);
    let outsider = ["manifest", "sign", "--manifest", "m.json", "--key", "c3.key"];
    refused_unasked(
        &dir,
        &outsider,
        EXIT_USAGE,
        &["is not one of this manifest's custodians"],
    );
    assert_eq!(dir.read("m.json"), before);
}

fn verify_ok_lines(dir: &Dir) -> usize {
    dir.read_string("ceremony-log.jsonl")
        .lines()
        .filter(|l| l.contains("\"command\":\"custodian verify\"") && l.contains("\"outcome\":\"ok\""))
        .count()
}

/// Regression: `custodian verify` printed its proof before recording it, so
/// when stdout could not be written (exit 6) the proof was lost. It is logged
/// first; and a closed stdout never lets printing land in the log.
#[test]
fn a_proof_is_recorded_even_when_stdout_fails() {
    let dir = Dir::new("check-verify-stdout");
    dir.ceremony();
    let verify = [
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ];
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = dir.run_with(&verify, |c| {
        c.stdout(full);
    });
    assert_eq!(out.code, EXIT_IO, "{out:?}");
    assert_eq!(verify_ok_lines(&dir), 1, "the proof was lost\n{out:?}");
    // stdout closed outright (`>&-`): the proof is recorded and the log stays a log.
    let out = dir.run_with(&verify, |c| {
        // SAFETY: closes the child's stdout between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::close(1);
                Ok(())
            });
        }
    });
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(verify_ok_lines(&dir), 2);
    dir.run(&["log", "verify", "ceremony-log.jsonl"]).ok();
}
