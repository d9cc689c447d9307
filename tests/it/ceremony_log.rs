//! The ceremony log through the real binary: ceremony commands append to it,
//! `log verify` catches every edit, deletion, reordering and truncation and
//! names the first broken line, `log show` prints the timeline, `log sign`
//! countersigns, and two writers appending at once leave one chain.

use crate::util;

use std::path::Path;
use std::process::{Command, Stdio};

use hsm_ceremony::ceremony::log::{self as ceremony_log, Entry, Outcome, Step};
use serde_json::{json, Value};
use util::{fixtures, Dir, BIN, EXIT_INTEGRITY};

const LOG: &str = "ceremony-log.jsonl";

/// A five-line log made by real ceremony steps, a failed one included.
fn ceremony_log(dir: &Dir) {
    dir.ceremony();
    dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "c2.cer"])
        .ok();
    for i in [0, 1] {
        let (key, pass) = (format!("c{i}.key"), format!("c{i}.pass"));
        dir.run(&[
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            &key,
            "--passphrase-file",
            &pass,
        ])
        .ok();
    }
    dir.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", "exchange.key"])
        .fails(EXIT_INTEGRITY, &[]);
    dir.run(&util::restore_blob_args(
        &["c0.key", "c1.key"],
        &["c0.pass", "c1.pass"],
        "blob.json",
    ))
    .ok();
}

fn lines_of(dir: &Dir) -> Vec<Value> {
    dir.read_string(LOG)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `log verify` on `text` (the head file kept as it is) and returns the
/// line it names as broken; fails the test if the log is accepted.
#[track_caller]
fn broken_line(dir: &Dir, text: &str, what: &str) -> u64 {
    dir.write("tampered.jsonl", text);
    std::fs::copy(dir.join("ceremony-log.jsonl.head"), dir.join("tampered.jsonl.head")).unwrap();
    let out = dir.run(&["log", "verify", "tampered.jsonl"]);
    assert_eq!(out.code, EXIT_INTEGRITY, "{what} went unnoticed:\n{}", out.stdout);
    let rest = out
        .stderr
        .split("is broken at line ")
        .nth(1)
        .unwrap_or_else(|| panic!("{what}: no line named:\n{}", out.stderr));
    assert!(
        out.stderr.contains("what to do: Keep the log as evidence"),
        "{}",
        out.stderr
    );
    rest.split(':').next().unwrap().parse().unwrap()
}

fn join(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn ceremony_steps_are_recorded_without_secrets() {
    let dir = Dir::new("log-steps");
    ceremony_log(&dir);
    let lines = lines_of(&dir);
    let commands: Vec<&str> = lines.iter().map(|l| l["command"].as_str().unwrap()).collect();
    assert_eq!(
        commands,
        [
            "sd check-certs",
            "custodian verify",
            "custodian verify",
            "custodian verify",
            "restore-blob"
        ]
    );
    let x5t = &fixtures().x5t;
    assert_eq!(lines[0]["thumbprints"], json!(x5t[..3]));
    assert_eq!(lines[1]["thumbprints"], json!([x5t[0]]));
    assert_eq!(lines[2]["thumbprints"], json!([x5t[1]]));
    assert!(
        lines[3]["outcome"].as_str().unwrap().starts_with("failed: "),
        "{}",
        lines[3]
    );
    assert_eq!(lines[4]["outcome"], "ok");
    assert_eq!(lines[4]["thumbprints"], json!([x5t[0], x5t[1]]));
    let sha = |name: &str| {
        util::sha256(&dir.read(name))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(lines[4]["inputs"][0]["sha256"], sha("sd.json"));
    assert_eq!(lines[4]["inputs"][1]["sha256"], sha("exchange.cer"));
    assert_eq!(lines[4]["outputs"][0]["sha256"], sha("blob.json"));
    let text = dir.read_string(LOG);
    for i in 0..3 {
        assert!(!text.contains(&util::passphrase(i)), "a passphrase is in the log");
    }
    assert!(!text.contains("PRIVATE KEY") && !text.contains("enc_shares"));
    dir.run(&["log", "verify", LOG])
        .ok()
        .stdout_has("5 lines, chain intact");
    // --no-log records nothing; --log chooses the file.
    dir.run(&[
        "sd",
        "check-certs",
        "--quorum",
        "2",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--no-log",
    ])
    .ok();
    assert_eq!(lines_of(&dir).len(), 5);
    dir.run(&[
        "sd",
        "check-certs",
        "--quorum",
        "2",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--log",
        "other.jsonl",
    ])
    .ok();
    assert_eq!(lines_of(&dir).len(), 5);
    dir.run(&["log", "verify", "other.jsonl"]).ok().stdout_has("1 lines");
}

#[test]
fn log_show_prints_the_timeline() {
    let dir = Dir::new("log-show");
    ceremony_log(&dir);
    let out = dir.run(&["log", "show", LOG]);
    out.ok();
    let lines = lines_of(&dir);
    let mut at = 0;
    for l in &lines {
        let head = format!(
            "{:>4}  {}  {}",
            l["seq"].as_u64().unwrap(),
            l["time"].as_str().unwrap(),
            l["command"].as_str().unwrap()
        );
        let pos = out.stdout[at..]
            .find(&head)
            .unwrap_or_else(|| panic!("{head:?} missing or out of order:\n{}", out.stdout));
        at += pos + head.len();
    }
    assert!(out.stdout.contains(&format!("custodian {}", fixtures().x5t[0])));
    assert!(out.stdout.contains("out blob.json"));
    assert!(out.stdout.contains("failed: "));
    let json = dir.run(&["log", "show", LOG, "--json"]).ok().json();
    assert_eq!(json.as_array().unwrap().len(), 5);
    // A broken log is not shown as if it were sound.
    let text = dir.read_string(LOG);
    dir.write(LOG, text.replacen("\"seq\":2", "\"seq\":7", 1));
    dir.run(&["log", "show", LOG])
        .fails(EXIT_INTEGRITY, &["broken at line 2"]);
}

#[test]
fn every_mutation_of_every_line_is_caught_and_located() {
    let dir = Dir::new("log-mutations");
    ceremony_log(&dir);
    let text = dir.read_string(LOG);
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len() as u64;
    // Byte flips spread over every line (the library's unit test flips every byte in-process).
    let total: usize = text.len();
    let stride = (total / 400).max(1);
    let mut start = 0usize;
    for (k, line) in lines.iter().enumerate() {
        let k = k as u64 + 1;
        let mut j = (k as usize * 3) % stride;
        while j < line.len() {
            let mut bytes = text.as_bytes().to_vec();
            let b = &mut bytes[start + j];
            *b = if *b == b'0' {
                b'1'
            } else if *b == b'x' {
                b'y'
            } else {
                b'x'
            };
            let mutated = String::from_utf8(bytes).unwrap();
            let at = broken_line(&dir, &mutated, &format!("a flip at byte {j} of line {k}"));
            assert!(at == k || at == k + 1, "a flip in line {k} was reported at line {at}");
            j += stride;
        }
        start += line.len() + 1;
    }
    // Edits a forger would make, keeping the JSON valid and canonical: each is
    // caught at the edited line's successor (whose prev no longer matches), or
    // for the last line by the head file.
    let failure = format!(
        "\"outcome\":{}",
        serde_json::to_string(&lines_of(&dir)[3]["outcome"]).unwrap()
    );
    let edits: [(usize, &str, &str); 4] = [
        (3, &failure, "\"outcome\":\"ok\""),
        (1, &fixtures().x5t[0], &fixtures().x5t[3]),
        (2, "\"time\":\"2", "\"time\":\"1"),
        (4, "\"outcome\":\"ok\"", "\"outcome\":\"ko\""),
    ];
    for (idx, from, to) in edits {
        let mut v = lines.clone();
        let edited = v[idx].replacen(from, to, 1);
        assert_ne!(edited, v[idx]);
        v[idx] = &edited;
        let at = broken_line(&dir, &join(&v), &format!("editing line {}", idx + 1));
        let expect = if idx as u64 + 1 == n { n } else { idx as u64 + 2 };
        assert_eq!(at, expect, "editing line {}", idx + 1);
    }
}

#[test]
fn deletion_reordering_and_truncation_are_caught() {
    let dir = Dir::new("log-structure");
    ceremony_log(&dir);
    let text = dir.read_string(LOG);
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    for k in 0..n {
        let mut v = lines.clone();
        v.remove(k);
        let at = broken_line(&dir, &join(&v), &format!("deleting line {}", k + 1));
        assert_eq!(at as usize, k + 1, "deleting line {}", k + 1);
    }
    for k in 0..n - 1 {
        let mut v = lines.clone();
        v.swap(k, k + 1);
        assert_eq!(broken_line(&dir, &join(&v), "swapping") as usize, k + 1);
    }
    let mut v = lines.clone();
    v.reverse();
    assert_eq!(broken_line(&dir, &join(&v), "reversing"), 1);
    // Truncation: whole lines from the end, mid-line, everything.
    for keep in 0..n {
        let at = broken_line(&dir, &join(&lines[..keep]), &format!("keeping {keep} lines"));
        assert_eq!(at as usize, keep + 1);
    }
    for cut in [1, 10, lines[n - 1].len()] {
        let at = broken_line(&dir, &text[..text.len() - cut], &format!("cutting {cut} bytes"));
        assert_eq!(at as usize, n);
    }
    // A duplicated line, and the head file removed.
    let mut v = lines.clone();
    v.insert(2, lines[1]);
    assert_eq!(broken_line(&dir, &join(&v), "duplicating line 2"), 3);
    std::fs::remove_file(dir.join("ceremony-log.jsonl.head")).unwrap();
    dir.run(&["log", "verify", LOG]).fails(
        EXIT_INTEGRITY,
        &["broken at line 6", ".head file beside the log is missing"],
    );
}

#[test]
fn log_sign_countersigns_and_a_forged_countersignature_fails() {
    let dir = Dir::new("log-sign");
    ceremony_log(&dir);
    dir.run(&[
        "log",
        "sign",
        LOG,
        "--line",
        "2",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ])
    .ok()
    .stdout_has("line 2 countersigned by c0.key");
    dir.run(&["log", "verify", LOG])
        .ok()
        .stdout_has("6 lines, chain intact");
    let genuine = lines_of(&dir)[5].clone();
    assert_eq!(genuine["command"], "log sign");
    assert_eq!(genuine["thumbprints"], json!([fixtures().x5t[0]]));
    // A line that does not exist cannot be signed.
    dir.run(&[
        "log",
        "sign",
        LOG,
        "--line",
        "99",
        "--key",
        "c1.key",
        "--passphrase-file",
        "c1.pass",
    ])
    .fails(util::EXIT_USAGE, &["no line 99"]);

    // Forgeries appended through the library keep the chain intact; only the signature check catches them.
    let forge = |name: &str, change: &dyn Fn(&mut Value)| {
        std::fs::copy(dir.join(LOG), dir.join(name)).unwrap();
        std::fs::copy(dir.join("ceremony-log.jsonl.head"), dir.join(&format!("{name}.head"))).unwrap();
        let mut both = json!({"details": genuine["details"].clone(), "thumbprints": genuine["thumbprints"].clone()});
        change(&mut both);
        ceremony_log::append(
            &dir.join(name),
            Entry {
                command: Step::LogSign,
                thumbprints: serde_json::from_value(both["thumbprints"].clone()).unwrap(),
                outcome: Outcome::Ok,
                details: both["details"].clone(),
                ..Default::default()
            },
        )
        .unwrap();
        dir.run(&["log", "verify", name])
    };
    // The genuine signature, replayed as-is, verifies: the check is not vacuous.
    forge("replay.jsonl", &|_| {}).ok();
    // c0's signature of line 2 claimed for line 3.
    forge("other-line.jsonl", &|v| v["details"]["line"] = json!(3)).fails(
        EXIT_INTEGRITY,
        &["broken at line 7", "countersignature of line 3 does not verify"],
    );
    // c0's signature presented as c1's (c1's certificate and thumbprint).
    let c1_der = util::pem_der(&std::fs::read_to_string(fixtures().path("c1.cer")).unwrap());
    forge("other-custodian.jsonl", &|v| {
        v["details"]["certificate"] = json!(util::b64u(&c1_der));
        v["thumbprints"] = json!([fixtures().x5t[1]]);
    })
    .fails(EXIT_INTEGRITY, &["countersignature of line 2 does not verify"]);
    // A flipped signature byte.
    forge("flipped.jsonl", &|v| {
        let s = v["details"]["signature"].as_str().unwrap().to_string();
        let mut sig = util::b64u_decode(&s);
        sig[10] ^= 1;
        v["details"]["signature"] = json!(util::b64u(&sig));
    })
    .fails(EXIT_INTEGRITY, &["does not verify"]);
    // A thumbprint that is not the certificate's.
    forge("mismatch.jsonl", &|v| v["thumbprints"] = json!([fixtures().x5t[2]]))
        .fails(EXIT_INTEGRITY, &["its thumbprint is not its certificate's"]);
}

/// Runs `hsm-ceremony --log LOG sd check-certs …` `n` times in a row in `dir`.
fn append_many(dir: &Path, log: &str, certs: &[&str], n: usize) {
    for i in 0..n {
        let status = Command::new(BIN)
            .args(["-q", "--log", log, "sd", "check-certs", "--quorum", "2"])
            .args(certs)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "append {i} failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
}

/// Two processes at once (the threads of `ceremony::log`'s unit test prove
/// the lock at volume; this proves it across processes).
#[test]
fn two_writers_appending_100_lines_each_leave_one_chain_of_200() {
    let dir = Dir::new("log-concurrent");
    dir.copy(&["c0.cer", "c1.cer", "c2.cer", "c3.cer"]);
    let a = ["c0.cer", "c1.cer", "c2.cer"];
    let b = ["c3.cer", "c2.cer", "c1.cer"];
    std::thread::scope(|s| {
        s.spawn(|| append_many(dir.path(), "shared.jsonl", &a, 100));
        s.spawn(|| append_many(dir.path(), "shared.jsonl", &b, 100));
    });
    dir.run(&["log", "verify", "shared.jsonl"])
        .ok()
        .stdout_has("200 lines, chain intact");
    let lines: Vec<Value> = dir
        .read_string("shared.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 200);
    let from = |first: &str| lines.iter().filter(|l| l["inputs"][0]["path"] == first).count();
    assert_eq!((from("c0.cer"), from("c3.cer")), (100, 100));
    // The writers really overlapped: their lines interleave.
    let switches = lines
        .windows(2)
        .filter(|w| w[0]["inputs"][0]["path"] != w[1]["inputs"][0]["path"])
        .count();
    assert!(switches > 2, "the two writers hardly overlapped ({switches} switches)");
}

/// A step killed after its line was written but before the head was updated
/// leaves a log that still verifies, and the next step carries on the chain.
#[test]
fn a_step_killed_between_its_line_and_the_head_leaves_a_valid_log() {
    let dir = Dir::new("log-kill-append");
    dir.ceremony();
    dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "c2.cer"])
        .ok();
    let head = dir.read("ceremony-log.jsonl.head");
    let out = dir.run_with(
        &["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "c2.cer"],
        |c| {
            c.env("HSM_CEREMONY_KILL_AT", "log:line-written");
        },
    );
    assert_eq!(
        out.code, -1,
        "not killed (a binary built without the test-hooks feature?): {out:?}"
    );
    assert_eq!(
        dir.read("ceremony-log.jsonl.head"),
        head,
        "the head was not left behind"
    );
    assert_eq!(lines_of(&dir).len(), 2);
    dir.run(&["log", "verify", LOG])
        .ok()
        .stdout_has("2 lines, chain intact");
    dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "c2.cer"])
        .ok();
    dir.run(&["log", "verify", LOG])
        .ok()
        .stdout_has("3 lines, chain intact");
    // Removing the interrupted line and the one after is still caught.
    let text = dir.read_string(LOG);
    let first: String = text.lines().take(1).map(|l| format!("{l}\n")).collect();
    assert_eq!(broken_line(&dir, &first, "removing the last two lines"), 2);
}
