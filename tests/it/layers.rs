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
    assert!(
        offenders.is_empty(),
        "read with inputs::*_hashed and record that hash (record::parsed, FileRef::parsed):\n{}",
        offenders.join("\n")
    );
}

/// The inputs a CLI step fingerprints by path (`record::refs`) rather than
/// by the bytes it parsed. Each is either replaced by `record::parsed` once
/// parsed (fingerprinted first so a step failing before the parse still names
/// it), or a second read still to be moved to an `inputs::*_hashed` reader.
/// The list only shrinks: an entry that no longer matches fails too.
const INPUTS_BY_PATH: [(&str, &str); 5] = [
    // Replaced by record::parsed: the security domain and --cert.
    ("src/cli/custodian.rs", "inputs: record::refs(&input_files)"),
    // Replaced by record::parsed: the security domain and the exchange key.
    (
        "src/cli/restore.rs",
        "inputs: record::refs(&[&args.sd_file, &args.sd_exchange_key])",
    ),
    // Replaced by record::parsed: the certificates.
    ("src/cli/sd.rs", "inputs: record::refs(&args.certs"),
    // Replaced by record::parsed in ManifestCheck::check (inputs::manifest_hashed): the manifest.
    ("src/cli/sd.rs", "recorded.extend(record::refs(args.manifest.manifest"),
    ("src/cli/rotate.rs", "inputs.extend(record::refs("),
];

#[test]
fn inputs_recorded_by_path_are_only_the_known_ones() {
    let (checked, lines) = util::src_lines_naming(|rel| rel.starts_with("src/cli/"), &["record::refs("]);
    assert!(checked > 15, "only {checked} CLI files found");
    // What a step wrote is fingerprinted after writing it: not a second read.
    let inputs: Vec<&String> = lines.iter().filter(|l| !l.contains("outputs")).collect();
    let known = |l: &str| {
        INPUTS_BY_PATH
            .iter()
            .any(|(f, text)| l.starts_with(&format!("{f}:")) && l.contains(text))
    };
    let unknown: Vec<&str> = inputs.iter().map(|l| l.as_str()).filter(|l| !known(l)).collect();
    assert!(
        unknown.is_empty(),
        "inputs recorded by a second read of their path; read them with inputs::*_hashed and record that hash \
         (record::parsed, FileRef::parsed):\n{}",
        unknown.join("\n")
    );
    let stale: Vec<String> = INPUTS_BY_PATH
        .iter()
        .filter(|(f, text)| {
            !inputs
                .iter()
                .any(|l| l.starts_with(&format!("{f}:")) && l.contains(text))
        })
        .map(|(f, text)| format!("{f}: {text}"))
        .collect();
    assert!(
        stale.is_empty(),
        "no longer in the source; drop from INPUTS_BY_PATH:\n{}",
        stale.join("\n")
    );
}

/// The workflows that moved out of the CLI, by what their code does, so it
/// cannot grow back there: a token keygen's removal of what it made and a
/// custodian set's all-or-nothing write (`custodian::keygen`), the proof of
/// possession (`recovery::prove_possession`), the activation download with
/// its wait and atomic write (`instance::Download`), and the demo's setup
/// between its commands (`hsm_ceremony::demo`).
#[test]
fn the_moved_workflows_do_not_grow_back_in_the_cli() {
    let moved = [
        // Objects made on a token, and files made by a step, removed again.
        "discard(",
        "destroy_object",
        "token::generate",
        "remove_file",
        // Opening a share, or pairing a key with its certificate by hand.
        "open_share(",
        ".matches(&",
        // Asking an instance for its security domain, waiting on it, saving it.
        ".download(&",
        "download_status(",
        "sd.as_bytes()",
        "sleep(",
        "Instant::",
        "poll_",
        ".poll(",
        // Making folders and secrets.
        "create_dir",
        "symlink_metadata",
        "fill_bytes(",
    ];
    // The man-page test replaces stale pages in man/ (`UPDATE_MAN=1`): a test, not a step.
    let man_pages = "std::fs::remove_file(checked_in.join(stale)).unwrap();";
    let (checked, offenders) = util::src_lines_naming(|rel| rel.starts_with("src/cli/"), &moved);
    assert!(checked > 15, "only {checked} CLI files found");
    let offenders: Vec<&String> = offenders.iter().filter(|l| !l.ends_with(man_pages)).collect();
    assert!(
        offenders.is_empty(),
        "workflow code in the CLI (call the library's):\n{}",
        offenders.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
    // The scan sees the library's own code of each kind, so it would see it here.
    let (_, in_library) = util::src_lines_naming(
        |rel| {
            [
                "src/custodian/keygen.rs",
                "src/recovery/possession.rs",
                "src/instance/download.rs",
                "src/instance/client.rs",
                "src/demo.rs",
            ]
            .contains(&rel)
        },
        &moved,
    );
    for name in [
        "discard(",
        "remove_file",
        "open_share(",
        ".matches(&",
        ".download(&",
        "sleep(",
        "create_dir",
        "fill_bytes(",
    ] {
        assert!(
            in_library.iter().any(|l| l.contains(&format!(": {name}: "))),
            "{name} is no longer found where it moved: {in_library:#?}"
        );
    }
}
