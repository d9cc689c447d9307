//! The layering the code is read by: the format, crypto, custodian, recovery
//! and ceremony layers know nothing of the command line, the terminal or the
//! network, so they can be reviewed (and reused) on their own.

mod util;

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
    let (checked, offenders) = util::src_lines_naming(|rel| LIBRARY.iter().any(|l| rel.starts_with(l)), &FORBIDDEN);
    assert!(checked > 25, "only {checked} library files found");
    assert!(
        offenders.is_empty(),
        "the library layers name what is above them:\n{}",
        offenders.join("\n")
    );
}
