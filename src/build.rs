//! Build script: what `hsm-ceremony --version` reports about the build, so
//! the team at the ceremony can check the binary against the commit it was
//! meant to be: the git commit, whether the tree was dirty, and the SHA-256
//! of the Cargo.lock compiled. No time, path or host name goes in, so two
//! builds of one commit stay bit-identical.
//!
//! A tree without git (a `git archive` or a vendored copy) takes the commit
//! and dirty flag from HSM_CEREMONY_COMMIT and HSM_CEREMONY_DIRTY, which
//! `.ci/release` sets; they also override git when set.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=src/build.rs");
    // An edited source file makes the tree dirty without touching git's index.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-env-changed=HSM_CEREMONY_COMMIT");
    println!("cargo:rerun-if-env-changed=HSM_CEREMONY_DIRTY");

    let lock = std::fs::read(root.join("Cargo.lock")).expect("Cargo.lock is part of the source tree");
    println!(
        "cargo:rustc-env=HSM_CEREMONY_LOCK_SHA256={}",
        hex(&Sha256::digest(&lock))
    );

    // Only a git work tree that is this crate's own root: a vendored copy
    // inside some other repository must not report that repository's commit.
    let toplevel = git(&root, &["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let own_repo = toplevel.is_some_and(|t| t.canonicalize().ok() == root.canonicalize().ok());
    if own_repo {
        // A new commit, a checkout or a staged change moves one of these.
        for name in ["HEAD", "index", "logs/HEAD"] {
            if let Some(path) = git(&root, &["rev-parse", "--git-path", name]) {
                println!("cargo:rerun-if-changed={}", root.join(path).display());
            }
        }
    }
    let commit = std::env::var("HSM_CEREMONY_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| own_repo.then(|| git(&root, &["rev-parse", "HEAD"])).flatten())
        .unwrap_or_else(|| "unknown".into());
    let dirty = match std::env::var("HSM_CEREMONY_DIRTY").ok().as_deref() {
        Some("true") => "dirty",
        Some("false") => "clean",
        _ if own_repo => match git(&root, &["status", "--porcelain"]) {
            Some(s) if s.is_empty() => "clean",
            Some(_) => "dirty",
            None => "unknown",
        },
        _ => "unknown",
    };
    println!("cargo:rustc-env=HSM_CEREMONY_COMMIT={commit}");
    println!("cargo:rustc-env=HSM_CEREMONY_TREE={dirty}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
