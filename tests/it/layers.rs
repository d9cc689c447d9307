//! The layering the code is read by: the format, crypto, custodian, recovery
//! and ceremony layers know nothing of the command line, the terminal or the
//! network, so they can be reviewed (and reused) on their own.

use crate::util;

/// The library layers below the CLI, the instance client and the emulator.
const LIBRARY: [&str; 8] = [
    "src/format/",
    "src/crypto/",
    "src/custodian/",
    "src/ceremony/",
    "src/recovery/",
    "src/files.rs",
    "src/inputs.rs",
    "src/error.rs",
];
/// What those layers must not name and the compiler would not catch: the
/// CLI crates (dependencies of the one package, so the library could use
/// them), and printing (the CLI decides what is said). `crate::cli` needs no
/// entry: the command line is the binary's, so the library cannot name it.
/// The network layers need none either: `cargo build --no-default-features`
/// (in .ci/run) has no emulator, instance client or networking crate to
/// name, so only a `network` cfg could smuggle one in.
const FORBIDDEN: [&str; 6] = [
    "feature = \"network\"",
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

/// Every byte the program prints goes through src/cli/output.rs, which
/// escapes control characters and turns an unwritable stdout into exit 6:
/// a raw print macro anywhere else would bypass both.
#[test]
fn nothing_prints_outside_the_output_module() {
    let raw = [
        "println!",
        "eprintln!",
        "print!",
        "eprint!",
        "std::io::stdout()",
        "std::io::stderr()",
        "io::stdout()",
        "io::stderr()",
        "dbg!",
    ];
    // The build script talks to cargo on its stdout; it is not the program.
    let (checked, offenders) = util::src_lines_naming(|rel| rel != "src/cli/output.rs" && rel != "src/build.rs", &raw);
    assert!(checked > 40, "only {checked} source files found");
    // Doc comments may name the macros they warn about.
    let offenders: Vec<&String> = offenders
        .iter()
        .filter(|l| !l.split_once(": ").map(|(_, rest)| rest).unwrap_or("").contains("///"))
        .collect();
    assert!(
        offenders.is_empty(),
        "print through crate::out!/say!/note! or cli::output instead:\n{}",
        offenders.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
}

/// Workflows live in the library; the CLI parses, prompts and prints. What
/// the compiler cannot see is the CLI doing a workflow's work itself: running
/// threads (keygen's parallel generation is `custodian::keygen`), hashing or
/// reading an input by hand (one read, one hash, in `inputs`), or spelling a
/// log step's outcome as text (`Outcome`).
#[test]
fn the_cli_runs_no_workflow_of_its_own() {
    let workflow = [
        "std::thread",
        "thread::scope",
        "thread::spawn",
        "available_parallelism",
        "\"failed: ",
    ];
    let (checked, offenders) = util::src_lines_naming(|rel| rel.starts_with("src/cli/"), &workflow);
    assert!(checked > 15, "only {checked} CLI files found");
    assert!(
        offenders.is_empty(),
        "workflow code in the CLI:\n{}",
        offenders.join("\n")
    );
    let reading = ["Sha256::", "sha2::", "read_limited"];
    let (_, offenders) = util::src_lines_naming(|rel| rel.starts_with("src/cli/"), &reading);
    assert!(
        offenders.is_empty(),
        "read and hash inputs through hsm_ceremony::inputs:\n{}",
        offenders.join("\n")
    );
}

/// One read, one hash: every workflow that reads a security domain or a
/// restore blob records or reports it, so it reads it with the SHA-256 of the
/// bytes parsed (`*_hashed`) and never fingerprints the path a second time:
/// a file replaced between the two reads would be logged as proven by a
/// check it never had.
#[test]
fn recorded_inputs_are_hashed_from_the_bytes_parsed() {
    let unhashed = ["inputs::security_domain(", "inputs::restore_blob("];
    let (checked, offenders) = util::src_lines_naming(|rel| rel != "src/inputs.rs", &unhashed);
    assert!(checked > 30, "only {checked} source files found");
    // (A step may fingerprint a file before parsing it, for a failure to name
    // it, if `record::parsed` replaces that fingerprint once parsed.)
    let rehashed = ["refs(&[sd_path", "refs(&[&args.restore_blob"];
    let (_, rehashing) = util::src_lines_naming(|rel| rel.starts_with("src/cli/"), &rehashed);
    let all: Vec<String> = offenders.into_iter().chain(rehashing).collect();
    assert!(
        all.is_empty(),
        "read with inputs::*_hashed and record that hash (record::parsed, FileRef::parsed):\n{}",
        all.join("\n")
    );
}
