//! What reaches the terminal: no control character from a file or a command
//! line (a certificate's CN, a file name, a tag, a log field) is printed raw
//! by any command; an unwritable stdout (a full disk, a closed pipe) ends
//! every printing command with exit 6, never a panic; the bash completion
//! completes subcommand flags.

use crate::util;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{Dir, Output, Served, BIN};

/// Moves the cursor up one line and erases it: what a hostile CN would use
/// to rewrite the line above (the fingerprint a custodian reads aloud).
const ESC: &str = "\x1b[1A\x1b[2K";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[track_caller]
fn no_raw_control(out: &Output) {
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains('\u{1b}'),
            "a raw ESC reached {name} of hsm-ceremony {}:\n{text:?}",
            out.args.join(" ")
        );
    }
    assert!(
        out.code != 101 && !out.stderr.contains("panicked"),
        "hsm-ceremony {} panicked:\n{}",
        out.args.join(" "),
        out.stderr
    );
}

/// A custodian certificate whose CN carries `ESC`, saved under a file name
/// that carries it too, with its unencrypted key beside it.
fn evil_custodian(d: &Dir) -> (String, String) {
    let subject = format!("/CN={ESC}evil");
    util::openssl(
        d,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "evil.key", "-out", "evil.cer", "-days", "30",
            "-utf8", "-subj", &subject,
        ],
    );
    let (cer, key) = (format!("{ESC}evil.cer"), format!("{ESC}evil.key"));
    std::fs::rename(d.join("evil.cer"), d.join(&cer)).unwrap();
    std::fs::rename(d.join("evil.key"), d.join(&key)).unwrap();
    d.chmod(&key, 0o600);
    (cer, key)
}

#[test]
fn no_printing_command_passes_a_control_character_through() {
    let d = Dir::new("esc");
    d.ceremony();
    let (cer, key) = evil_custodian(&d);
    let tag = format!("{ESC}tag=item.bin");
    d.write_secret("item.bin", [7u8; 40]);
    let certs = [cer.as_str(), "c1.cer", "c2.cer"];
    // (args, whether it must succeed): the rest may refuse, but not raw.
    let mut runs: Vec<(Vec<String>, bool)> = vec![
        (s(&["custodian", "show", &cer]), true),
        (s(&["custodian", "show", &cer, "--json"]), true),
        ([s(&["sd", "check-certs", "--quorum", "2"]), s(&certs)].concat(), true),
        (
            [
                s(&[
                    "sd",
                    "split",
                    "--quorum",
                    "2",
                    "--random-contents",
                    "--out",
                    "evil-sd.json",
                    "--certs",
                ]),
                s(&certs),
            ]
            .concat(),
            true,
        ),
        (
            [s(&["sd", "inspect", "evil-sd.json", "--certs"]), s(&certs)].concat(),
            true,
        ),
        (
            [s(&["sd", "health", "evil-sd.json", "--certs"]), s(&certs)].concat(),
            false,
        ),
        (
            s(&[
                "custodian",
                "verify",
                "--sd-file",
                "evil-sd.json",
                "--key",
                &key,
                "--cert",
                &cer,
            ]),
            true,
        ),
        (
            s(&[
                "sd",
                "split",
                "--quorum",
                "2",
                "--item",
                &tag,
                "--out",
                "tagged.json",
                "--certs",
                "c0.cer",
                "c1.cer",
                "c2.cer",
            ]),
            false,
        ),
        (s(&["sd", "inspect", "tagged.json"]), false),
        (
            s(&[
                "drill",
                "--sd-file",
                "tagged.json",
                "--sd-wrapping-keys",
                "c0.key",
                "c1.key",
                "--passphrase-file",
                "c0.pass",
                "--passphrase-file",
                "c1.pass",
                "--report",
                &format!("{ESC}report"),
            ]),
            false,
        ),
        (s(&["sd", "inspect", &format!("{ESC}missing.json")]), false),
        (s(&["log", "show", "ceremony-log.jsonl"]), true),
        (s(&["log", "verify", "ceremony-log.jsonl"]), true),
    ];
    runs.push((
        s(&[
            "restore-blob",
            "--sd-file",
            "evil-sd.json",
            "--sd-exchange-key",
            "exchange.cer",
            "--sd-wrapping-keys",
            &key,
            "c1.key",
            "--passphrase-file",
            "c1.pass",
            "--out",
            "blob.json",
        ]),
        false,
    ));
    for (args, must_succeed) in &runs {
        let out = d.run(args);
        no_raw_control(&out);
        if *must_succeed {
            out.ok();
        }
    }
    // The escaped form is shown instead, so the CN can still be read.
    d.run(&["custodian", "show", &cer])
        .ok()
        .stdout_has("CN=\\u{1b}[1A\\u{1b}[2Kevil");
}

/// Where stdout goes for [`run_unwritable`].
#[derive(Clone, Copy, Debug)]
enum Sink {
    DevFull,
    ClosedPipe,
}

/// Runs the binary with stdout unwritable; a command that never fails to
/// print (and so serves forever) is killed after a minute.
fn run_unwritable(d: &Dir, args: &[String], sink: Sink) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(d.path())
        .env_remove("HSM_CEREMONY_PASSPHRASE")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    match sink {
        Sink::DevFull => {
            cmd.stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap());
        }
        Sink::ClosedPipe => {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            cmd.stdout(writer);
        }
    };
    let mut child = cmd.spawn().unwrap();
    let mut err = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            stderr.read_to_string(&mut err).unwrap();
            return (status.code(), err);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "still running after a minute".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every leaf command of the CLI, as its words (`["sd", "inspect"]`), read
/// from the binary's own `--help` pages: the command line is the binary's,
/// the library exports no clap tree to walk.
fn every_command() -> Vec<Vec<String>> {
    fn help(path: &[String]) -> String {
        let out = Command::new(BIN).args(path).arg("--help").output().unwrap();
        assert!(out.status.success(), "{path:?} --help failed");
        String::from_utf8(out.stdout).unwrap()
    }
    fn walk(path: Vec<String>, out: &mut Vec<Vec<String>>) {
        let page = help(&path);
        // A subcommand's name starts its line two spaces in; wrapped
        // descriptions are indented further.
        let subs: Vec<String> = page
            .lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
            .map(str::to_string)
            .collect();
        // A command runnable with or without a subcommand (`drill`,
        // `rotate`) has a first usage line that takes no <COMMAND>.
        let usage = page.lines().find(|l| l.starts_with("Usage: ")).unwrap_or_default();
        if subs.is_empty() || !usage.ends_with("<COMMAND>") {
            out.push(path.clone());
        }
        for sub in subs {
            let mut p = path.clone();
            p.push(sub);
            walk(p, out);
        }
    }
    let mut out = Vec::new();
    walk(Vec::new(), &mut out);
    out.retain(|p| !p.is_empty());
    // The help-page reading must find both kinds of leaf, or the table
    // check below would pass on an empty list.
    for expected in [
        &["drill"][..],
        &["drill", "prepare"],
        &["sd", "inspect"],
        &["completions"],
    ] {
        assert!(out.iter().any(|p| p == expected), "{expected:?} not found in {out:?}");
    }
    out
}

/// The command words of `args` (up to the first flag or file).
fn words_of(args: &[String], known: &[Vec<String>]) -> Vec<String> {
    known
        .iter()
        .filter(|k| args.starts_with(k))
        .max_by_key(|k| k.len())
        .cloned()
        .unwrap_or_default()
}

/// The table: every command that prints, each set up to reach its output.
/// Steps marked `false` only prepare what the next ones need.
fn table(d: &Dir, b: &Served) -> Vec<(Vec<String>, bool)> {
    d.ceremony();
    d.custodian(3);
    d.custodian(4);
    for state in ["A", "C", "D"] {
        util::admin_token(d, state, &format!("{state}.token"));
    }
    let local = |state: &str| {
        s(&[
            "--url",
            &format!("local:{state}"),
            "--token-file",
            &format!("{state}.token"),
        ])
    };
    let pass = |keys: &[&str]| -> Vec<String> {
        keys.iter()
            .flat_map(|k| ["--passphrase-file".to_string(), k.replace(".key", ".pass")])
            .collect()
    };
    let setup = [
        [
            s(&[
                "instance", "download", "--certs", "c0.cer", "c1.cer", "c2.cer", "--quorum", "2", "--out", "a.json",
            ]),
            local("A"),
        ]
        .concat(),
        [s(&["drill", "prepare", "--out", "canary.json"]), local("A")].concat(),
        [s(&["instance", "init-recovery", "--out", "b.cer"]), b.connect.clone()].concat(),
        [
            s(&[
                "restore-blob",
                "--sd-file",
                "a.json",
                "--sd-exchange-key",
                "b.cer",
                "--out",
                "b-blob.json",
                "--sd-wrapping-keys",
                "c0.key",
                "c1.key",
            ]),
            pass(&["c0.key", "c1.key"]),
        ]
        .concat(),
        [
            s(&[
                "rotate",
                "--sd-file",
                "sd.json",
                "--new-certs",
                "c2.cer",
                "c3.cer",
                "c4.cer",
                "--quorum",
                "2",
                "--out",
                "r1.json",
                "--sd-wrapping-keys",
                "c0.key",
                "c1.key",
            ]),
            pass(&["c0.key", "c1.key"]),
        ]
        .concat(),
        s(&[
            "manifest",
            "create",
            "--purpose",
            "download",
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
        ]),
    ];
    for args in &setup {
        d.run(args).ok();
    }
    let verify =
        |key: &str, sd: &str| [s(&["custodian", "verify", "--sd-file", sd, "--key", key]), pass(&[key])].concat();
    let rotate2 = [
        s(&[
            "rotate",
            "--sd-file",
            "sd.json",
            "--new-certs",
            "c2.cer",
            "c3.cer",
            "c4.cer",
            "--quorum",
            "2",
            "--out",
            "r2.json",
            "--sd-wrapping-keys",
            "c0.key",
            "c1.key",
        ]),
        pass(&["c0.key", "c1.key"]),
    ]
    .concat();
    vec![
        (
            [
                s(&["custodian", "keygen", "--name", "kg", "--out-dir", "."]),
                pass(&["c0.key"]),
            ]
            .concat(),
            true,
        ),
        (s(&["custodian", "show", "c0.cer"]), true),
        (verify("c0.key", "sd.json"), true),
        (
            s(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "c2.cer"]),
            true,
        ),
        (s(&["sd", "inspect", "sd.json"]), true),
        (
            s(&[
                "sd",
                "split",
                "--quorum",
                "2",
                "--random-contents",
                "--out",
                "split.json",
                "--certs",
                "c0.cer",
                "c1.cer",
                "c2.cer",
            ]),
            true,
        ),
        (
            s(&["sd", "health", "sd.json", "--certs", "c0.cer", "c1.cer", "c2.cer"]),
            true,
        ),
        (
            util::restore_blob_args(&["c0.key", "c1.key"], &["c0.pass", "c1.pass"], "blob.json"),
            true,
        ),
        (
            [
                s(&[
                    "instance", "download", "--certs", "c0.cer", "c1.cer", "c2.cer", "--quorum", "2", "--out", "c.json",
                ]),
                local("C"),
            ]
            .concat(),
            true,
        ),
        (
            [
                s(&["instance", "upload", "--restore-blob", "b-blob.json"]),
                b.connect.clone(),
            ]
            .concat(),
            true,
        ),
        (
            [
                s(&["instance", "restore-key", "--canary", "canary.json"]),
                b.connect.clone(),
            ]
            .concat(),
            true,
        ),
        (
            [s(&["instance", "init-recovery", "--out", "d.cer"]), local("D")].concat(),
            true,
        ),
        ([s(&["instance", "status"]), local("A")].concat(), true),
        (
            [
                s(&["drill", "prepare", "--name", "canary2", "--out", "canary2.json"]),
                local("A"),
            ]
            .concat(),
            true,
        ),
        (
            [
                s(&["drill", "proofs", "--canary", "canary.json", "--report", "proofs"]),
                local("A"),
            ]
            .concat(),
            true,
        ),
        (
            [
                s(&[
                    "drill",
                    "--sd-file",
                    "sd.json",
                    "--report",
                    "rep",
                    "--sd-wrapping-keys",
                    "c0.key",
                    "c1.key",
                ]),
                pass(&["c0.key", "c1.key"]),
            ]
            .concat(),
            true,
        ),
        (s(&["rotate", "status", "--record", "r1.json.rotation.json"]), true),
        (s(&["rotate", "cancel", "--record", "r1.json.rotation.json"]), true),
        (rotate2, false),
        (verify("c2.key", "r2.json.pending"), false),
        (verify("c3.key", "r2.json.pending"), false),
        (verify("c4.key", "r2.json.pending"), false),
        (s(&["rotate", "finalize", "--record", "r2.json.rotation.json"]), true),
        (
            [
                s(&[
                    "rotate",
                    "--sd-file",
                    "r2.json",
                    "--new-certs",
                    "c0.cer",
                    "c1.cer",
                    "c2.cer",
                    "--quorum",
                    "2",
                ]),
                s(&["--out", "r3.json", "--sd-wrapping-keys", "c2.key", "c3.key"]),
                pass(&["c2.key", "c3.key"]),
            ]
            .concat(),
            true,
        ),
        (
            s(&[
                "manifest",
                "create",
                "--purpose",
                "download",
                "--quorum",
                "2",
                "--epoch",
                "1",
                "--certs",
                "c0.cer",
                "c1.cer",
                "c2.cer",
                "--out",
                "m2.json",
            ]),
            true,
        ),
        (
            [
                s(&["manifest", "sign", "--manifest", "m.json", "--key", "c0.key"]),
                pass(&["c0.key"]),
            ]
            .concat(),
            true,
        ),
        (
            s(&[
                "emulator",
                "token",
                "--state",
                "A",
                "--principal",
                "p",
                "--role",
                "administrator",
            ]),
            true,
        ),
        (s(&["emulator", "serve", "--state", "E"]), true),
        (s(&["emulator", "az-setup", "--state", "B", "--principal", "p"]), true),
        (s(&["log", "verify", "ceremony-log.jsonl"]), true),
        (s(&["log", "show", "ceremony-log.jsonl"]), true),
        (
            s(&[
                "log",
                "destroyed",
                "ceremony-log.jsonl",
                "--copy",
                "safe B",
                "--sha256",
                &"ab".repeat(32),
            ]),
            true,
        ),
        (
            [
                s(&["log", "sign", "ceremony-log.jsonl", "--line", "1", "--key", "c0.key"]),
                pass(&["c0.key"]),
            ]
            .concat(),
            true,
        ),
        (s(&["demo"]), true),
        (s(&["completions", "bash"]), true),
        (s(&["completions", "zsh"]), true),
        (s(&["completions", "fish"]), true),
        (s(&["self-test"]), true),
        (s(&["--help"]), true),
        (s(&["--version"]), true),
        (s(&["sd", "inspect", "--help"]), true),
    ]
}

fn unwritable_stdout_is_exit_6_for_every_command(sink: Sink) {
    let d = Dir::new("unwritable");
    let b = Served::start(&d, "B");
    let runs = table(&d, &b);
    let known = every_command();
    let covered: Vec<Vec<String>> = runs.iter().filter(|r| r.1).map(|(a, _)| words_of(a, &known)).collect();
    let missing: Vec<&Vec<String>> = known.iter().filter(|k| !covered.contains(k)).collect();
    assert!(missing.is_empty(), "commands missing from the table: {missing:?}");
    let mut wrong = Vec::new();
    for (args, under_test) in &runs {
        if !under_test {
            d.run(args).ok();
            continue;
        }
        let (code, err) = run_unwritable(&d, args, sink);
        if code != Some(6) || err.contains("panicked") || !err.contains("cannot write the command's standard output") {
            wrong.push(format!(
                "hsm-ceremony {} ({sink:?}): exit {code:?}\n{err}",
                args.join(" ")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_full_disk_on_stdout_is_exit_6_for_every_command() {
    unwritable_stdout_is_exit_6_for_every_command(Sink::DevFull);
}

#[test]
fn a_closed_pipe_on_stdout_is_exit_6_for_every_command() {
    unwritable_stdout_is_exit_6_for_every_command(Sink::ClosedPipe);
}

/// The bash completion, sourced in bash, completes a subcommand's flags.
#[test]
fn bash_completes_subcommand_flags() {
    let d = Dir::new("bash-completion");
    let script = d.run(&["completions", "bash"]);
    script.ok();
    d.write("hsm-ceremony.bash", &script.stdout);
    let ask = |words: &[&str]| -> Vec<String> {
        let probe = format!(
            "source ./hsm-ceremony.bash\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_hsm__ceremony hsm-ceremony {} {}\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        d.write("probe.sh", probe);
        let out = Command::new("bash")
            .arg("probe.sh")
            .current_dir(d.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        BufReader::new(&out.stdout[..]).lines().map(|l| l.unwrap()).collect()
    };
    let got = ask(&["hsm-ceremony", "restore-blob", "--sd"]);
    for want in ["--sd-file", "--sd-exchange-key", "--sd-wrapping-keys"] {
        assert!(
            got.contains(&want.to_string()),
            "restore-blob --sd completes to {got:?}"
        );
    }
    let got = ask(&["hsm-ceremony", "sd", "check-certs", "--q"]);
    assert!(
        got.contains(&"--quorum".to_string()),
        "sd check-certs --q completes to {got:?}"
    );
    let got = ask(&["hsm-ceremony", "instance", "st"]);
    assert_eq!(got, ["status"], "instance st completes to {got:?}");
}

/// `log show` prints the first 16 hex digits of each file's SHA-256: a log
/// line whose field is shorter (the chain is intact, the line is odd) is
/// shown whole, not a panic.
#[test]
fn log_show_takes_a_short_sha256_field() {
    use hsm_ceremony::ceremony::log::{append, Entry, FileRef, Outcome, Step};
    let d = Dir::new("log-short-sha");
    let log = d.join("ceremony-log.jsonl");
    for sha in ["ab", "", "é9"] {
        let entry = Entry {
            command: Step::Other("sd inspect".into()),
            outcome: Outcome::Ok,
            inputs: vec![FileRef {
                path: format!("{ESC}sd.json\n   9  forged line"),
                sha256: sha.into(),
            }],
            ..Default::default()
        };
        append(&log, entry).unwrap();
    }
    let out = d.run(&["log", "show", "ceremony-log.jsonl"]);
    no_raw_control(&out);
    out.ok().stdout_has("sha256 ab\n").stdout_has("sha256 é9\n");
    // A newline in a field is shown escaped: it cannot forge a line of its own.
    out.stdout_has("sd.json\\n   9  forged line  sha256");
    assert!(!out.stdout.lines().any(|l| l.starts_with("   9")), "{}", out.stdout);
}

/// Every `--json` output names a thumbprint `x5t_256`, the security
/// domain's own field name, never `x5t#S256` in one command and `x5t_256`
/// in the next.
#[test]
fn json_outputs_spell_the_thumbprint_one_way() {
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let d = Dir::new("json-x5t");
    d.ceremony();
    let certs = ["c0.cer", "c1.cer", "c2.cer"];
    let runs = [
        [s(&["custodian", "show", "--json"]), s(&certs)].concat(),
        [s(&["sd", "check-certs", "--json", "--quorum", "2"]), s(&certs)].concat(),
        [s(&["sd", "inspect", "sd.json", "--json", "--certs"]), s(&certs)].concat(),
        [s(&["sd", "health", "sd.json", "--json", "--certs"]), s(&certs)].concat(),
        [
            util::restore_blob_args(&["c0.key", "c1.key"], &["c0.pass", "c1.pass"], "blob.json"),
            s(&["--json"]),
        ]
        .concat(),
    ];
    for args in &runs {
        let out = d.run(args);
        let mut found = Vec::new();
        keys(&out.json(), &mut found);
        assert!(
            !found.iter().any(|k| k.contains('#')),
            "{}: keys {found:?}",
            args.join(" ")
        );
        assert!(
            found.iter().any(|k| k == "x5t_256"),
            "{}: no x5t_256 in {found:?}",
            args.join(" ")
        );
    }
}

/// clap quotes a mistyped flag or value in its usage error: that quote is
/// escaped like every other output (exit 2 still), on a terminal too.
#[test]
fn a_usage_error_quotes_what_was_typed_escaped() {
    let d = Dir::new("usage-error-escaped");
    let evil = format!("{ESC}\r\x07");
    for args in [
        s(&["sd", "inspect", &format!("--bogus{evil}")]),
        s(&["custodian", "keygen", "--name", "a", "--bits", &format!("12{evil}")]),
        s(&[&format!("not-a-command{evil}")]),
    ] {
        let out = d.run(&args);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("\\u{d}"), "the quote is not escaped: {out:?}");
        assert!(!out.stderr.contains('\r') && !out.stderr.contains('\x07'), "{out:?}");
        no_raw_control(&out);
    }
}
