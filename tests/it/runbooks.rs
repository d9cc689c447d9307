//! The ceremony runbooks are run, not just read: every `sh` block of a
//! runbook runs in order, in one shell, in a temporary folder, with this
//! build of `hsm-ceremony` first on the PATH. Three kinds of block:
//!
//! - `sh`: runs as is;
//! - `sh az`: the real Azure CLI (az 2.91.0 from `target/azcli-venv`), signed
//!   in to an emulator by `emulator az-setup`, and Azurite for full backups:
//!   both are put on the PATH. Where az (or, for a runbook that starts it,
//!   Azurite) is not installed, the runbook is skipped with a visible SKIP
//!   line — and fails under CI, where `.ci/run` installs both;
//! - `sh azure`: creates or needs real Azure resources; shown as skipped,
//!   and the text above it says "Real Azure only".
//!
//! Passphrases come from `HSM_CEREMONY_PASSPHRASE`, where a custodian would
//! type theirs. HOME is a folder of the temporary one, and no AZURE_* setting
//! of the caller's reaches the runbook, so the operator's own `~/.azure` is
//! out of reach. After the shell ends, no process started by the runbook may
//! still run: each runbook stops the emulators it started by their process
//! ids (the shell's trap is only a safety net).

use crate::util;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Runs as is.
    Sh,
    /// Runs with the real az (and Azurite) on the PATH, against emulators.
    Az,
    /// Needs real Azure resources: skipped, visibly.
    Azure,
}

struct Block {
    kind: Kind,
    line: usize,
    code: String,
}

/// The fenced `sh` blocks of a Markdown file, in order.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                let kind = match info.trim() {
                    "sh" => Kind::Sh,
                    "sh az" => Kind::Az,
                    "sh azure" => Kind::Azure,
                    "" => continue,
                    other => panic!(
                        "line {}: unknown block type '{other}': use sh, sh az or sh azure",
                        i + 1
                    ),
                };
                current = Some(Block {
                    kind,
                    line: i + 1,
                    code: String::new(),
                });
            }
            (Some(_), Some("")) => out.push(current.take().unwrap()),
            (Some(b), _) => {
                b.code.push_str(line);
                b.code.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    out
}

fn runbook_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("ceremony-runbooks")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tool `.ci/run` installs under the target folder, or the path an
/// environment variable names instead (a path that does not exist hides it).
fn target_tool(var: &str, rel: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    // target/debug/deps/it-HASH -> target/REL.
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.parent()?.join(rel);
    bin.is_file().then_some(bin)
}

fn az_bin() -> Option<PathBuf> {
    target_tool("HSM_CEREMONY_AZ", "azcli-venv/bin/az")
}

fn azurite_bin() -> Option<PathBuf> {
    target_tool("HSM_CEREMONY_AZURITE", "azurite/node_modules/.bin/azurite-blob")
}

/// Processes whose working folder is `dir` or below it: what the runbook
/// started (everything it starts runs in its temporary folder).
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(dir) {
            let cmd = std::fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
                .unwrap_or_default();
            // A zombie has no command line left: it no longer runs.
            if !cmd.is_empty() {
                found.push((pid, cmd));
            }
        }
    }
    found
}

/// What running a runbook's text came to.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    /// Processes the runbook left running (killed since).
    left_running: Vec<(u32, String)>,
    elapsed: Duration,
}

/// Runs every runnable block of `text` in one bash. `az`: the folder of the
/// az executable and Azurite's, put on the PATH for `sh az` blocks.
fn run_text(name: &str, text: &str, tools: &[PathBuf]) -> Run {
    let blocks = blocks(text);
    // The trap is a safety net for a runbook that fails half-way; on success
    // it does nothing, so a runbook that forgets to stop what it started is
    // caught below rather than cleaned up behind its back.
    let mut script = String::from(
        "set -euo pipefail\n\
         trap 'rc=$?; [ $rc -eq 0 ] || kill $(jobs -p) 2>/dev/null; exit $rc' EXIT\n",
    );
    for b in &blocks {
        if b.kind == Kind::Azure {
            let first = b.code.lines().next().unwrap_or("");
            println!("SKIPPED (real Azure only) {name}:{}: {first}", b.line);
            continue;
        }
        script.push_str(&format!(
            "echo \"--- {name}:{} (at ${{SECONDS}} s)\"\n{}",
            b.line, b.code
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    // The canonical path: /proc/PID/cwd shows it so.
    let root = dir.path().canonicalize().unwrap();
    let home = root.join("home");
    std::fs::create_dir(&home).unwrap();
    let mut path_dirs: Vec<PathBuf> = vec![Path::new(util::BIN).parent().unwrap().to_path_buf()];
    path_dirs.extend(tools.iter().map(|t| t.parent().unwrap().to_path_buf()));
    let mut path_var = std::env::join_paths(&path_dirs).unwrap();
    if let Some(p) = std::env::var_os("PATH") {
        path_var.push(":");
        path_var.push(p);
    }
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(&root)
        .env("PATH", path_var)
        .env("HOME", &home)
        .env("HSM_CEREMONY_PASSPHRASE", "runbook rehearsal passphrase")
        .env_remove("HSM_CEREMONY_TOKEN")
        .env_remove("REQUESTS_CA_BUNDLE");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AZURE_") {
            cmd.env_remove(k);
        }
    }
    // Output to files, not pipes: a process the runbook left running would
    // hold a pipe open, and reading it to the end would wait for that process.
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let start = Instant::now();
    let status = cmd.status().unwrap();
    let elapsed = start.elapsed();
    // A process told to stop is given a few seconds to do so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = processes_in(&root);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = processes_in(&root);
    }
    for (pid, _) in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap()).into_owned(),
        left_running: left,
        elapsed,
    }
}

fn run_runbook(name: &str) {
    let text = runbook_text(name);
    let blocks = blocks(&text);
    assert!(
        blocks.iter().any(|b| b.kind != Kind::Azure),
        "{name} has no runnable block"
    );
    let mut tools = Vec::new();
    if blocks.iter().any(|b| b.kind == Kind::Az) {
        let needs_azurite = text.contains("azurite-blob");
        let az = az_bin();
        let azurite = if needs_azurite { azurite_bin() } else { None };
        let missing = match (&az, needs_azurite && azurite.is_none()) {
            (None, _) => Some("az 2.91.0 was not found (target/azcli-venv/bin/az, or HSM_CEREMONY_AZ)"),
            (Some(_), true) => {
                Some("Azurite was not found (target/azurite/node_modules/.bin/azurite-blob, or HSM_CEREMONY_AZURITE)")
            }
            _ => None,
        };
        if let Some(why) = missing {
            assert!(std::env::var_os("CI").is_none(), "{name}: {why}; .ci/run installs it");
            // Past libtest's capture, so the SKIP shows in `cargo test` and .ci/run's log.
            let _ = writeln!(
                std::io::stderr(),
                "SKIP runbook {name}: {why} (its `sh az` blocks need it)"
            );
            return;
        }
        tools.extend(az);
        tools.extend(azurite);
    }
    let run = run_text(name, &text, &tools);
    let marks: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("--- ")).collect();
    let _ = writeln!(
        std::io::stderr(),
        "runbook {name}: {:.1} s (blocks {})",
        run.elapsed.as_secs_f64(),
        marks.join(", ").replace("--- ", "")
    );
    assert!(
        run.ok,
        "runbook {name} failed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.stdout, run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(
        run.left_running.is_empty(),
        "runbook {name} left processes running (its last block must stop what it started, by pid): {:?}",
        run.left_running
    );
}

#[test]
fn activation_runbook_runs() {
    run_runbook("activation.md");
}

/// The laptop proves its binary's cryptography before anything else is done on it.
#[test]
fn activation_runbook_starts_with_the_self_test() {
    let blocks = blocks(&runbook_text("activation.md"));
    let first = blocks.iter().find(|b| b.kind != Kind::Azure).expect("a runnable block");
    assert_eq!(
        first.code.lines().next(),
        Some("hsm-ceremony self-test"),
        "{}",
        first.code
    );
}

#[test]
fn recovery_drill_runbook_runs() {
    run_runbook("recovery-drill.md");
}

#[test]
fn emergency_recovery_runbook_runs() {
    run_runbook("emergency-recovery.md");
}

#[test]
fn rotation_runbook_runs() {
    run_runbook("rotation.md");
}

fn runbook_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ceremony-runbooks");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "README.md")
        .collect();
    names.sort();
    names
}

#[test]
fn every_runbook_is_tested_and_listed() {
    let index = runbook_text("README.md");
    let this = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file!())).unwrap();
    for name in runbook_names() {
        assert!(
            index.contains(&format!("({name})")),
            "{name} is not listed in ceremony-runbooks/README.md"
        );
        assert!(
            this.contains(&format!("run_runbook(\"{name}\")")),
            "{name} has no test in tests/it/runbooks.rs"
        );
    }
}

/// A block the tests never run says so where a reader sees it, and a
/// runbook that starts an emulator ends by stopping it (by its pid).
#[test]
fn real_azure_blocks_are_marked_and_every_runbook_stops_what_it_starts() {
    for name in runbook_names() {
        let text = runbook_text(name.as_str());
        let lines: Vec<&str> = text.lines().collect();
        let blocks = blocks(&text);
        for b in blocks.iter().filter(|b| b.kind == Kind::Azure) {
            let before = lines[b.line.saturating_sub(4)..b.line - 1].join("\n");
            assert!(
                before.contains("Real Azure only"),
                "{name}:{}: a `sh azure` block must be introduced by \"Real Azure only\" just above it",
                b.line
            );
        }
        let runnable: Vec<&Block> = blocks.iter().filter(|b| b.kind != Kind::Azure).collect();
        if runnable
            .iter()
            .any(|b| b.code.contains(" serve ") || b.code.contains("azurite-blob"))
        {
            let last = runnable.last().unwrap();
            assert!(
                last.code.contains("kill \"$"),
                "{name}:{}: the last runnable block must stop the emulators it started by their pids",
                last.line
            );
        }
    }
}

/// The check is real: a runbook that leaves a process behind (here a job of
/// its shell, as `emulator serve &` is) fails, and the process is stopped.
#[test]
fn a_process_left_running_is_caught_and_stopped() {
    let run = run_text("left-running", "```sh\nsleep 300 &\nSLEEP_PID=$!\n```\n", &[]);
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.left_running.len(), 1, "{:?}", run.left_running);
    assert!(run.left_running[0].1.starts_with("sleep 300"), "{:?}", run.left_running);
    let pid = run.left_running[0].0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && !std::fs::read(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .is_empty()
    {
        assert!(Instant::now() < deadline, "the left process {pid} was not stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The README's quick start shows the az path; every command of it is one
/// the activation runbook runs (in the same order), so it cannot drift.
#[test]
fn readme_az_quick_start_is_a_tested_runbook_path() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let marker = "<!-- tested: ceremony-runbooks/activation.md -->";
    let at = readme.find(marker).expect("README: the az quick start's marker");
    let shown = blocks(&readme[at..]);
    let shown = &shown.first().expect("a block after the marker").code;
    let shown = commands(shown);
    assert!(shown
        .iter()
        .any(|c| c.starts_with("az keyvault security-domain download --id")));
    assert!(shown.iter().any(|c| c.contains("emulator az-setup")));
    let run: Vec<String> = blocks(&runbook_text("activation.md"))
        .iter()
        .filter(|b| b.kind != Kind::Azure)
        .flat_map(|b| commands(&b.code))
        .collect();
    let mut rest = run.iter();
    for c in &shown {
        assert!(
            rest.any(|r| r == c),
            "README's az quick start: `{c}` is not run (in this order) by ceremony-runbooks/activation.md"
        );
    }
}

/// A block's commands: continuation lines joined, comments dropped,
/// whitespace collapsed.
fn commands(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in code.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && cur.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push(cur.split_whitespace().collect::<Vec<_>>().join(" "));
                cur.clear();
            }
        }
    }
    out
}

#[test]
fn block_parsing() {
    let md = "text\n```sh\necho a\n```\n```sh azure\naz x\n```\n```sh az\naz y\n```\n```\nplain\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 3);
    assert_eq!((b[0].kind, b[0].code.as_str(), b[0].line), (Kind::Sh, "echo a\n", 2));
    assert_eq!(b[1].kind, Kind::Azure);
    assert_eq!((b[2].kind, b[2].code.as_str()), (Kind::Az, "az y\n"));
    assert_eq!(
        commands("# c\na \\\n   b  c\nd\n"),
        vec!["a b c".to_string(), "d".to_string()]
    );
}
