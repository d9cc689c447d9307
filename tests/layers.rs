//! The layering the code is read by: the format, crypto, custodian, recovery
//! and ceremony layers know nothing of the command line, the terminal or the
//! network, so they can be reviewed (and reused) on their own.

mod util;

use std::fs;
use std::path::Path;

/// The library layers below the CLI, the instance client and the emulator.
const LIBRARY: [&str; 8] = [
    "src/format/",
    "src/crypto/",
    "src/custodian/",
    "src/ceremony/",
    "src/recovery.rs",
    "src/files.rs",
    "src/inputs.rs",
    "src/error.rs",
];
/// What those layers must not name: the layers above them, the CLI crates,
/// and printing (the CLI decides what is said).
const FORBIDDEN: [&str; 8] = [
    "crate::cli",
    "crate::instance",
    "crate::emulator",
    "clap",
    "dialoguer",
    "indicatif",
    "println!",
    "eprintln!",
];

#[test]
fn the_library_layers_know_nothing_of_the_cli_or_the_network() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = util::rust_files(&root.join("src"));
    let mut checked = 0;
    let mut offenders = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if !LIBRARY.iter().any(|l| rel.starts_with(l)) {
            continue;
        }
        checked += 1;
        for (n, line) in fs::read_to_string(f).unwrap().lines().enumerate() {
            if let Some(name) = FORBIDDEN.iter().find(|name| line.contains(*name)) {
                offenders.push(format!("{rel}:{}: {name}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(checked > 25, "only {checked} library files found");
    assert!(
        offenders.is_empty(),
        "the library layers name what is above them:\n{}",
        offenders.join("\n")
    );
}
