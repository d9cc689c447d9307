//! The ceremony runbooks are run, not just read: every `sh` block of a
//! runbook runs in order, in one shell, in a temporary folder, with this
//! build of `hsm-ceremony` first on the PATH. Blocks marked `sh azure` need a
//! real Managed HSM and are skipped — visibly. Passphrases come from
//! `HSM_CEREMONY_PASSPHRASE`, where a custodian would type theirs.

use crate::util;

use std::path::{Path, PathBuf};
use std::process::Command;

struct Block {
    azure: bool,
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
                let info = info.trim();
                if info == "sh" || info == "sh azure" {
                    current = Some(Block {
                        azure: info == "sh azure",
                        line: i + 1,
                        code: String::new(),
                    });
                } else if !info.is_empty() {
                    panic!("line {}: unknown block type '{info}': use sh or sh azure", i + 1);
                }
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

fn run_runbook(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("ceremony-runbooks")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let blocks = blocks(&text);
    assert!(blocks.iter().any(|b| !b.azure), "{name} has no runnable block");
    let mut script = String::from(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    for b in &blocks {
        if b.azure {
            let first = b.code.lines().next().unwrap_or("");
            println!("SKIPPED (needs a real Managed HSM) {name}:{}: {first}", b.line);
            continue;
        }
        script.push_str(&format!("echo '--- {name}:{}'\n{}", b.line, b.code));
    }
    let dir = tempfile::tempdir().unwrap();
    let bin_dir: PathBuf = Path::new(util::BIN).parent().unwrap().to_path_buf();
    let path_var = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path_var)
        .env("HSM_CEREMONY_PASSPHRASE", "runbook rehearsal passphrase")
        .env_remove("HSM_CEREMONY_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "runbook {name} failed (exit {:?}).\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn activation_runbook_runs() {
    run_runbook("activation.md");
}

/// The laptop proves its binary's cryptography before anything else is done on it.
#[test]
fn activation_runbook_starts_with_the_self_test() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ceremony-runbooks/activation.md");
    let blocks = blocks(&std::fs::read_to_string(path).unwrap());
    let first = blocks.iter().find(|b| !b.azure).expect("a runnable block");
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

#[test]
fn every_runbook_is_tested_and_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ceremony-runbooks");
    let index = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let this = std::fs::read_to_string(file!()).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name == "README.md" {
            continue;
        }
        assert!(
            index.contains(&format!("({name})")),
            "{name} is not listed in ceremony-runbooks/README.md"
        );
        assert!(
            this.contains(&format!("run_runbook(\"{name}\")")),
            "{name} has no test in tests/runbooks.rs"
        );
    }
}

#[test]
fn block_parsing() {
    let md = "text\n```sh\necho a\n```\n```sh azure\naz x\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].azure, b[0].code.as_str(), b[0].line), (false, "echo a\n", 2));
    assert!(b[1].azure);
}
