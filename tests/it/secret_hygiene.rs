//! Secret hygiene: every command that handles secrets runs with a master key,
//! shares, data items and passphrases the test knows, and nothing it prints
//! or writes (stdout, stderr, the ceremony log, every file in its folder)
//! holds any of them in any encoding — hex (lower, upper), base64 (standard,
//! URL-safe, padded or not, at every byte alignment) or raw bytes. Private
//! keys are written 0600, and the process runs without core dumps.

use crate::util;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use hsm_ceremony::crypto::jwe;
use hsm_ceremony::crypto::secret::{MasterKey, SecretBytes};
use hsm_ceremony::crypto::shamir;
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::format::sdfile::{self, EncShare, SecurityDomain, SharedKeys};
use hsm_ceremony::recovery::{self, PlainItem};
use rand::SeedableRng;
use util::{passphrase, Dir, Served, BIN};

/// One secret and the strings and byte runs that would betray it.
struct Secret {
    what: String,
    needles: Vec<Vec<u8>>,
}

/// The encodings of `bytes` to look for. Needles are 24-byte (or longer)
/// windows so a partial print is caught too, and base64 is taken at all
/// three byte alignments (a secret inside a larger encoded buffer).
fn secret(what: &str, bytes: &[u8]) -> Secret {
    let core = &bytes[..bytes.len().min(24)];
    let mut needles = vec![
        core.to_vec(),
        hex::encode(core).into_bytes(),
        hex::encode_upper(core).into_bytes(),
    ];
    for shift in 0..3 {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(core);
        for engine in [&STANDARD, &URL_SAFE] {
            let enc = engine.encode(&shifted);
            // Skip the characters mixed with the padding bytes, and the last
            // quantum (which depends on what follows the secret).
            let start = if shift == 0 { 0 } else { 4 };
            let end = (enc.trim_end_matches('=').len() / 4) * 4 - 4;
            needles.push(enc.as_bytes()[start..end].to_vec());
        }
    }
    Secret {
        what: what.to_string(),
        needles,
    }
}

fn text_secret(what: &str, text: &str) -> Secret {
    let mut s = secret(what, text.as_bytes());
    // A passphrase is short: look for the whole of it, raw.
    s.needles.push(text.as_bytes().to_vec());
    s
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() >= 8 && hay.windows(needle.len()).any(|w| w == needle)
}

/// Fails naming the secret and where it was found.
#[track_caller]
fn assert_clean(label: &str, bytes: &[u8], secrets: &[Secret]) {
    for s in secrets {
        for n in &s.needles {
            assert!(
                !find(bytes, n),
                "{label} holds {} (as {:?})",
                s.what,
                String::from_utf8_lossy(n)
            );
        }
    }
}

/// Every file under `dir` (recursively).
fn scan_tree(dir: &Path, secrets: &[Secret], skip: &[&str]) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            n += scan_tree(&e.path(), secrets, skip);
        } else {
            assert_clean(&e.path().display().to_string(), &fs::read(e.path()).unwrap(), secrets);
            n += 1;
        }
    }
    n
}

struct Known {
    secrets: Vec<Secret>,
}

/// A 2-of-3 security domain for c0..c2 whose master key, shares and items
/// the test chose, written as `sd.json` in `d`.
fn known_security_domain(d: &Dir) -> Known {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ec7);
    let master_bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(73).wrapping_add(0x91)).collect();
    let master = MasterKey::from_slice(&master_bytes).unwrap();
    let shares = shamir::split_with_rng(&mut rng, master.expose(), 3, 2).unwrap();
    let items: Vec<(String, Vec<u8>)> = sdfile::REAL_ITEMS
        .iter()
        .enumerate()
        .map(|(k, (tag, len))| {
            let plain: Vec<u8> = (0..*len).map(|i| ((i * 31 + k * 7 + 3) % 251) as u8).collect();
            (tag.to_string(), plain)
        })
        .collect();
    let plain_items: Vec<PlainItem> = items
        .iter()
        .map(|(tag, p)| PlainItem {
            tag: tag.clone(),
            plaintext: SecretBytes::new(p.clone()),
        })
        .collect();
    let mut enc_shares = Vec::new();
    for (i, share) in shares.iter().enumerate() {
        let cert = Certificate::from_bytes(&d.read(&format!("c{i}.cer"))).unwrap();
        enc_shares.push(EncShare {
            enc_key: jwe::encrypt_rsa_oaep256_with_rng(&mut rng, &cert.rsa_public_key().unwrap(), &share.to_bytes())
                .unwrap(),
            x5t_256: cert.x5t_256(),
        });
    }
    let sd = SecurityDomain {
        enc_data: recovery::encrypt_items_with_rng(&mut rng, &plain_items, &master),
        shared_keys: SharedKeys {
            enc_shares,
            key_algorithm: sdfile::KEY_ALGORITHM.into(),
            required: 2,
        },
        version: sdfile::VERSION,
    };
    sd.validate().unwrap();
    d.remove("sd.json");
    d.write("sd.json", sd.to_json());
    let mut secrets = vec![secret("the master key", &master_bytes)];
    for (i, s) in shares.iter().enumerate() {
        secrets.push(secret(&format!("share {}", i + 1), &s.to_bytes()));
        // Each 16-bit word's value bytes without x: the share values alone.
        let values: Vec<u8> = s.to_bytes().chunks(2).map(|w| w[0]).collect();
        secrets.push(secret(&format!("share {} values", i + 1), &values));
    }
    for (tag, p) in &items {
        secrets.push(secret(&format!("item {tag} (start)"), &p[..48]));
        secrets.push(secret(&format!("item {tag} (end)"), &p[p.len() - 48..]));
    }
    for i in 0..5 {
        secrets.push(text_secret(&format!("passphrase {i}"), &passphrase(i)));
    }
    secrets.push(text_secret("the new custodian's passphrase", NEW_PASSPHRASE));
    Known { secrets }
}

const NEW_PASSPHRASE: &str = "new custodian 7f3a zebra quartz lantern";

#[test]
fn no_command_prints_or_writes_a_secret() {
    let d = Dir::new("hygiene");
    d.ceremony();
    d.custodian(3);
    let known = known_security_domain(&d);
    d.write_secret("new.pass", format!("{NEW_PASSPHRASE}\n"));
    d.chmod("new.pass", 0o600);
    d.write_secret(
        "item.bin",
        b"public item contents, not a secret of this test\n".repeat(4),
    );

    let runs: Vec<Vec<&str>> = vec![
        vec![
            "custodian",
            "keygen",
            "--name",
            "newc",
            "--bits",
            "2048",
            "--passphrase-file",
            "new.pass",
        ],
        vec!["custodian", "show", "newc.cer"],
        vec![
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            "c0.key",
            "--passphrase-file",
            "c0.pass",
        ],
        vec![
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            "c1.key",
            "--passphrase-file",
            "c0.pass",
        ],
        vec![
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            "c2.key",
            "--passphrase-file",
            "c2.pass",
            "--json",
        ],
        vec!["sd", "inspect", "sd.json", "--certs", "c0.cer", "c1.cer", "c2.cer"],
        vec!["sd", "inspect", "sd.json", "--json"],
        vec![
            "sd",
            "split",
            "--certs",
            "c0.cer",
            "c1.cer",
            "newc.cer",
            "--quorum",
            "2",
            "--item",
            "hsm_backup=item.bin",
            "--out",
            "split.json",
        ],
        vec![
            "restore-blob",
            "--sd-file",
            "sd.json",
            "--sd-exchange-key",
            "exchange.cer",
            "--sd-wrapping-keys",
            "c0.key",
            "c1.key",
            "--passphrase-file",
            "c0.pass",
            "--passphrase-file",
            "c1.pass",
            "--out",
            "blob.json",
        ],
        // The Azure CLI's --passwords: on the command line by the user's choice, never echoed.
        vec![
            "restore-blob",
            "--sd-file",
            "sd.json",
            "--sd-exchange-key",
            "exchange.cer",
            "--sd-wrapping-keys",
            "c1.key",
            "c2.key",
            "--passwords",
            "custodian 1 correct horse battery staple",
            "custodian 2 correct horse battery staple",
            "--out",
            "blob2.json",
            "--json",
        ],
        // A wrong passphrase: the error names the key, not what was typed.
        vec![
            "restore-blob",
            "--sd-file",
            "sd.json",
            "--sd-exchange-key",
            "exchange.cer",
            "--sd-wrapping-keys",
            "c1.key",
            "c2.key",
            "--passwords",
            "custodian 0 correct horse battery staple",
            "custodian 1 correct horse battery staple",
            "--out",
            "blob3.json",
        ],
        vec![
            "rotate",
            "--sd-file",
            "sd.json",
            "--sd-wrapping-keys",
            "c0.key",
            "c2.key",
            "--passphrase-file",
            "c0.pass",
            "--passphrase-file",
            "c2.pass",
            "--new-certs",
            "c1.cer",
            "c3.cer",
            "newc.cer",
            "--quorum",
            "2",
            "--out",
            "rotated.json",
        ],
        vec!["rotate", "status", "--record", "rotated.json.rotation.json"],
        vec![
            "custodian",
            "verify",
            "--sd-file",
            "rotated.json.pending",
            "--key",
            "newc.key",
            "--passphrase-file",
            "new.pass",
        ],
        vec!["log", "verify", "ceremony-log.jsonl"],
        vec!["log", "show", "ceremony-log.jsonl"],
    ];
    let mut ok = 0;
    for args in &runs {
        let out = d.run(args);
        assert!(
            out.code != 101 && !out.stderr.contains("panicked"),
            "{args:?} panicked: {}",
            out.stderr
        );
        ok += usize::from(out.code == 0);
        assert_clean(&format!("stdout of {args:?}"), out.stdout.as_bytes(), &known.secrets);
        assert_clean(&format!("stderr of {args:?}"), out.stderr.as_bytes(), &known.secrets);
    }
    // All but the two deliberate wrong passphrases succeed: the scan covered real work.
    assert_eq!(ok, runs.len() - 2, "a command meant to succeed failed");
    assert!(d.exists("blob.json") && d.exists("blob2.json") && d.exists("rotated.json.pending"));
    // The passphrase files hold the passphrases by design; everything else is scanned.
    let files = scan_tree(
        d.path(),
        &known.secrets,
        &["c0.pass", "c1.pass", "c2.pass", "c3.pass", "new.pass"],
    );
    assert!(files >= 20, "only {files} files scanned");
    assert!(d.exists("ceremony-log.jsonl"), "the log was scanned");

    for key in ["newc.key", "c0.key"] {
        assert_eq!(d.mode(key), 0o600, "{key} is not 0600");
    }
    // A group-readable key is refused with advice, before any passphrase is asked.
    d.chmod("c0.key", 0o640);
    d.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ])
    .fails(util::EXIT_INPUT, &["c0.key", "chmod 600"]);
}

#[test]
fn the_demo_keeps_its_passphrases_out_of_its_output() {
    let d = Dir::new("hygiene-demo");
    let out = d.run(&["demo", "--keep", "run"]);
    out.ok();
    let run = d.join("run");
    let mut secrets = Vec::new();
    for e in fs::read_dir(&run).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "passphrase") {
            let text = fs::read_to_string(&p).unwrap();
            secrets.push(text_secret(&p.display().to_string(), text.trim()));
        }
        if p.extension().is_some_and(|x| x == "key") {
            assert_eq!(util::mode_of(&p), 0o600, "{} is not 0600", p.display());
        }
    }
    assert!(secrets.len() >= 3, "the demo wrote no passphrase files");
    assert_clean("demo stdout", out.stdout.as_bytes(), &secrets);
    assert_clean("demo stderr", out.stderr.as_bytes(), &secrets);
    let names: Vec<String> = secrets.iter().map(|s| s.what.clone()).collect();
    let skip: Vec<&str> = names
        .iter()
        .map(|n| Path::new(n).file_name().unwrap().to_str().unwrap())
        .collect();
    scan_tree(&run, &secrets, &skip);
}

#[test]
fn a_running_process_cannot_dump_core() {
    let d = Dir::new("hygiene-core");
    let mut child = Command::new(BIN)
        .args(["--no-log", "emulator", "serve", "--insecure-http", "--state"])
        .arg(d.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it is serving: hardening happens first thing in main.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 || line.contains("http://") {
            break;
        }
    }
    let limits = fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(
        &fields[4..6],
        &["0", "0"],
        "core dumps are not disabled (soft and hard): {core}"
    );
    assert!(status.contains("State:"), "the process was not running");
}

/// The scanner itself: a secret embedded at any offset, in any encoding, is found.
#[test]
fn the_scanner_finds_every_encoding_at_every_offset() {
    let key: Vec<u8> = (0..32u8).map(|i| i ^ 0xa7).collect();
    let s = [secret("k", &key)];
    for pad in 0..3 {
        let mut buf = vec![0x42u8; pad];
        buf.extend_from_slice(&key);
        buf.extend_from_slice(b"trailing");
        let encodings: Vec<Vec<u8>> = vec![
            buf.clone(),
            hex::encode(&buf).into_bytes(),
            hex::encode_upper(&buf).into_bytes(),
            STANDARD.encode(&buf).into_bytes(),
            URL_SAFE.encode(&buf).into_bytes(),
            URL_SAFE_NO_PAD.encode(&buf).into_bytes(),
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(&buf)
                .into_bytes(),
        ];
        for (i, e) in encodings.iter().enumerate() {
            let hit = s[0].needles.iter().any(|n| find(e, n));
            assert!(hit, "encoding {i} at offset {pad} was missed");
        }
    }
    assert!(!s[0]
        .needles
        .iter()
        .any(|n| find(b"nothing secret here at all, nothing", n)));
}

/// The known security domain of [`known_security_domain`], recovered into a
/// served instance (`orig/`) that then backs up a canary key, as `drill
/// prepare` does on production: what a drill needs to run every step.
fn drill_fixture(d: &Dir) -> Known {
    d.ceremony();
    let known = known_security_domain(d);
    d.remove("exchange.cer");
    let orig = Served::start(d, "orig");
    orig.run(d, &["instance", "init-recovery", "--out", "exchange.cer"])
        .ok();
    d.run(&util::restore_blob_args(
        &["c0.key", "c1.key"],
        &["c0.pass", "c1.pass"],
        "blob.json",
    ))
    .ok();
    orig.run(d, &["instance", "upload", "--restore-blob", "blob.json"]).ok();
    orig.run(d, &["drill", "prepare", "--out", "canary.json"]).ok();
    // The served instance held the contents in memory only: restarted, it is
    // recovering again, and says why.
    drop(orig);
    let orig = Served::start(d, "orig");
    orig.run(d, &["instance", "status"])
        .ok()
        .stdout_has("recovered contents are kept in memory only; upload the restore blob again");
    known
}

const DRILL: [&str; 13] = [
    "drill",
    "--sd-file",
    "sd.json",
    "--sd-wrapping-keys",
    "c0.key",
    "c2.key",
    "--passphrase-file",
    "c0.pass",
    "--passphrase-file",
    "c2.pass",
    "--canary",
    "canary.json",
    "--report",
];

const PASS_FILES: [&str; 3] = ["c0.pass", "c1.pass", "c2.pass"];

/// Prints a SKIP line past libtest's capture (shown in `.ci/run`'s log).
fn skip(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// Why `strace -f` cannot run here, if it cannot.
fn strace_unavailable() -> Option<String> {
    match Command::new("strace").args(["-f", "-o", "/dev/null", "true"]).output() {
        Err(e) => Some(format!("strace cannot be started: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "ptrace is not permitted: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// The buffers of one strace line (`-xx`: every byte as `\xNN`), decoded.
fn strace_buffers(line: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("\"\\x") {
        let body = &rest[start + 1..];
        let end = body.find('"').unwrap_or(body.len());
        let hex: String = body[..end].split("\\x").collect();
        out.push(hex::decode(&hex).unwrap_or_else(|e| panic!("undecodable buffer in {line}: {e}")));
        rest = &body[end.min(body.len())..];
        rest = rest.get(1..).unwrap_or("");
    }
    out
}

/// Every write of the whole process tree of a local drill, traced by
/// `strace -f`: no buffer written to any file, pipe, socket or terminal holds
/// the master key, a share, a data item or a passphrase in any encoding.
#[test]
fn a_local_drill_writes_no_secret_in_any_syscall() {
    const TEST: &str = "a_local_drill_writes_no_secret_in_any_syscall";
    if let Some(why) = strace_unavailable() {
        skip(TEST, &why);
        return;
    }
    let d = Dir::new("hygiene-strace");
    let known = drill_fixture(&d);
    let trace = d.join("writes.trace");
    let calls = "write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,sendmmsg";
    let mut args: Vec<String> = DRILL.iter().map(|s| s.to_string()).collect();
    args.push("rep".into());
    let out = Command::new("strace")
        .args(["-f", "-qq", "-xx", "-s", "16777216", "-e"])
        .arg(format!("trace={calls}"))
        .arg("-o")
        .arg(&trace)
        .arg(BIN)
        .args(&args)
        .current_dir(d.path())
        .env_remove("HSM_CEREMONY_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("drill PASSED"),
        "the traced drill failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("drill stdout", &out.stdout, &known.secrets);
    assert_clean("drill stderr", &out.stderr, &known.secrets);

    let text = fs::read_to_string(&trace).unwrap();
    let names: Vec<&str> = calls.split(',').collect();
    let mut writes = 0;
    let mut bytes = 0;
    // Per (pid, fd): a secret split across two writes is caught too.
    let mut streams: std::collections::BTreeMap<(String, String), Vec<u8>> = Default::default();
    for line in text.lines() {
        let mut fields = line.splitn(2, ' ');
        let (pid, call) = (fields.next().unwrap_or(""), fields.next().unwrap_or("").trim_start());
        let name = call.split('(').next().unwrap_or("");
        if !names.contains(&name) {
            // `<... write resumed>` lines carry no buffer; anything else is not a write.
            assert!(
                call.starts_with("<...") || call.starts_with("+++") || call.starts_with("---"),
                "unexpected trace line: {line}"
            );
            continue;
        }
        writes += 1;
        let fd = call[name.len() + 1..].split(',').next().unwrap_or("").to_string();
        for buf in strace_buffers(call) {
            assert_clean(&format!("{name} by process {pid} to fd {fd}"), &buf, &known.secrets);
            bytes += buf.len();
            streams
                .entry((pid.to_string(), fd.clone()))
                .or_default()
                .extend_from_slice(&buf);
        }
    }
    for ((pid, fd), all) in &streams {
        assert_clean(&format!("all writes of process {pid} to fd {fd}"), all, &known.secrets);
    }
    // The trace saw the drill's real output: its report, its log line.
    let report = d.read("rep/drill-report.json");
    assert!(
        streams.values().any(|s| find(s, &report[..64])),
        "the report's write was not traced"
    );
    assert!(writes >= 10, "only {writes} writes traced");
    println!("{TEST}: {writes} writes ({bytes} bytes) traced, none holds a secret");
    scan_tree(d.path(), &known.secrets, &[&PASS_FILES[..], &["writes.trace"]].concat());
}

/// A local drill killed (SIGKILL, SIGTERM, SIGHUP) at each of its kill
/// points leaves nothing in TMPDIR and no secret anywhere: the recovered
/// instance lived in memory only.
#[test]
fn a_killed_local_drill_leaves_nothing_behind() {
    use std::os::unix::process::ExitStatusExt;
    let d = Dir::new("hygiene-kill");
    let known = drill_fixture(&d);
    let points = hsm_ceremony::ceremony::rotation::DRILL_KILL_POINTS;
    let signals = [("KILL", 9), ("TERM", 15), ("HUP", 1)];
    let mut runs = 0;
    for point in points {
        for (name, number) in signals {
            let tmp = d.join(&format!("tmp-{runs}"));
            fs::create_dir(&tmp).unwrap();
            let mut args: Vec<String> = DRILL.iter().map(|s| s.to_string()).collect();
            args.push(format!("rep-{runs}"));
            let out = Command::new(BIN)
                .args(&args)
                .current_dir(d.path())
                .env("TMPDIR", &tmp)
                .env("HSM_CEREMONY_KILL_AT", point)
                .env("HSM_CEREMONY_KILL_SIGNAL", name)
                .env_remove("HSM_CEREMONY_PASSPHRASE")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(
                out.status.signal(),
                Some(number),
                "the drill was not killed by SIG{name} at {point} (a binary without the test-hooks feature?): {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let left: Vec<_> = fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
            assert!(left.is_empty(), "SIG{name} at {point} left {left:?} in TMPDIR");
            assert_clean(&format!("stdout at {point}"), &out.stdout, &known.secrets);
            assert_clean(&format!("stderr at {point}"), &out.stderr, &known.secrets);
            runs += 1;
        }
    }
    let files = scan_tree(d.path(), &known.secrets, &PASS_FILES);
    assert!(files >= 10, "only {files} files scanned");
    println!(
        "a_killed_local_drill_leaves_nothing_behind: {} kill points x {} signals",
        points.len(),
        signals.len()
    );
}
