//! The command line: clap definitions (one file per command group), prompts
//! and output. Everything that is not parsing, asking or printing lives in
//! the library layers below.

pub mod custodian;
#[cfg(feature = "network")]
pub mod demo;
pub mod docs;
#[cfg(feature = "network")]
pub mod drill;
#[cfg(feature = "network")]
pub mod emulator;
pub mod errors;
#[cfg(feature = "network")]
pub mod instance;
pub mod keys;
pub mod log;
pub mod manifest;
pub mod output;
pub mod passphrase;
pub mod record;
pub mod restore;
pub mod rotate;
pub mod sd;
pub mod selftest;

use clap::{Parser, Subcommand};

use hsm_ceremony::error::Result;

fn after_help() -> String {
    let codes: String = errors::EXIT_CODES
        .iter()
        .map(|(code, meaning)| format!("  {code}  {meaning}\n"))
        .collect();
    // The ceremony-only build has no demo to start with.
    let start = if cfg!(feature = "network") {
        "hsm-ceremony demo"
    } else {
        "hsm-ceremony custodian keygen --help"
    };
    format!("Exit codes:\n{codes}\nStart with: {start}")
}

#[cfg(feature = "network")]
macro_rules! build_features {
    () => {
        "network"
    };
}
#[cfg(not(feature = "network"))]
macro_rules! build_features {
    () => {
        "ceremony-only (no network)"
    };
}
#[cfg(feature = "test-hooks")]
macro_rules! test_hooks {
    () => {
        ", test-hooks (a test build: not for a ceremony)"
    };
}
#[cfg(not(feature = "test-hooks"))]
macro_rules! test_hooks {
    () => {
        ""
    };
}

/// What `--version` prints: enough to check a binary against the commit,
/// lock file and build it should be (src/build.rs computes the first three).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("HSM_CEREMONY_COMMIT"),
    " (",
    env!("HSM_CEREMONY_TREE"),
    " tree)\nCargo.lock sha256: ",
    env!("HSM_CEREMONY_LOCK_SHA256"),
    "\nfeatures: ",
    build_features!(),
    test_hooks!(),
);

/// Offline security-domain ceremonies for Azure Key Vault Managed HSM.
#[derive(Parser, Debug)]
#[command(name = "hsm-ceremony", version, long_version = LONG_VERSION, about, after_help = after_help(), propagate_version = true)]
pub struct Cli {
    /// Print only results, warnings and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The ceremony log to append to, or for `sd health` to read (default:
    /// ceremony-log.jsonl beside the security domain, or in the output folder).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<std::path::PathBuf>,
    /// Do not record this step in the ceremony log.
    #[arg(long, global = true, conflicts_with = "log")]
    pub no_log: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Custodian keys and certificates: keygen, show, verify.
    #[command(subcommand)]
    Custodian(custodian::CustodianCommand),
    /// Security-domain files: check-certs, inspect, split, health.
    #[command(subcommand)]
    Sd(sd::SdCommand),
    /// Open a quorum of shares and write the restore blob for an exchange key.
    RestoreBlob(restore::RestoreBlobArgs),
    #[cfg(feature = "network")]
    /// Talk to an instance: download (activation), init-recovery, upload, status.
    #[command(subcommand)]
    Instance(instance::InstanceCommand),
    #[cfg(feature = "network")]
    /// Rehearse a recovery: a quorum recovers a new instance, the canary set's full backup restores there, its keys prove themselves; leaves a report.
    #[command(long_about = drill::LONG_ABOUT)]
    Drill(drill::DrillCmd),
    /// Re-split the master key to a new custodian set, verified before it takes effect.
    Rotate(rotate::RotateCmd),
    /// The terms custodians sign before a split, download or rotation.
    // `ceremony manifest` is the name the rotation design used for `manifest create`.
    #[command(subcommand, alias = "ceremony")]
    Manifest(manifest::ManifestCommand),
    #[cfg(feature = "network")]
    /// Run an emulated Managed HSM on loopback, and issue tokens for it.
    #[command(subcommand)]
    Emulator(emulator::EmulatorCommand),
    /// The hash-chained ceremony log: verify, show, sign.
    #[command(subcommand)]
    Log(log::LogCommand),
    #[cfg(feature = "network")]
    /// Run a whole ceremony and recovery in a temporary folder, no prompts.
    #[command(after_help = "Example:\n  hsm-ceremony demo\n  hsm-ceremony demo --keep ./demo-run")]
    Demo(demo::DemoArgs),
    /// Print shell completions for bash, zsh or fish.
    Completions(docs::CompletionsArgs),
    /// Run the known-answer tests of the cryptography; first thing on the ceremony laptop.
    SelfTest(selftest::SelfTestArgs),
}

/// How a command that did not fail ended: `sd health`'s verdict is a
/// result with its own exit code, not an error.
pub enum Done {
    Ok,
    Verdict(hsm_ceremony::ceremony::health::Verdict, Vec<String>),
}

/// Runs the parsed command; `json` (see [`asks_for_json`]) keeps standard
/// output for the JSON alone.
pub fn run(cli: Cli, json: bool) -> Result<Done> {
    output::set_quiet(cli.quiet || json);
    record::set(record::LogChoice {
        log: cli.log.clone(),
        no_log: cli.no_log,
    });
    match cli.command {
        Command::Custodian(cmd) => custodian::run(cmd).map(|()| Done::Ok),
        Command::Sd(cmd) => sd::run(cmd),
        Command::RestoreBlob(args) => restore::run(&args).map(|()| Done::Ok),
        Command::Rotate(cmd) => rotate::run(cmd).map(|()| Done::Ok),
        #[cfg(feature = "network")]
        Command::Instance(cmd) => instance::run(cmd).map(|()| Done::Ok),
        #[cfg(feature = "network")]
        Command::Drill(cmd) => drill::run(cmd).map(|()| Done::Ok),
        Command::Manifest(cmd) => manifest::run(cmd).map(|()| Done::Ok),
        Command::Log(cmd) => log::run(cmd).map(|()| Done::Ok),
        #[cfg(feature = "network")]
        Command::Emulator(cmd) => emulator::run(cmd).map(|()| Done::Ok),
        #[cfg(feature = "network")]
        Command::Demo(args) => demo::run(&args).map(|()| Done::Ok),
        Command::Completions(args) => docs::completions(&args).map(|()| Done::Ok),
        Command::SelfTest(args) => selftest::run(&args).map(|()| Done::Ok),
    }
}

/// Whether the command that runs (the innermost subcommand) was given
/// `--json`: any command that offers the flag, with no list to keep up.
pub fn asks_for_json(matches: &clap::ArgMatches) -> bool {
    match matches.subcommand() {
        Some((_, sub)) => asks_for_json(sub),
        None => matches
            .try_get_one::<bool>("json")
            .ok()
            .flatten()
            .copied()
            .unwrap_or(false),
    }
}

/// Prints clap's help, version or usage error and exits with its code;
/// clap's own `exit` ignores a failed write and exits 0 even when --help
/// went nowhere (a full disk).
pub fn clap_exit(e: clap::Error) -> ! {
    if e.use_stderr() {
        // A usage error quotes what was typed: escaped like every other output.
        let text = e.render().to_string();
        output::stderr_line(text.trim_end_matches('\n'));
    } else if let Err(io) = e.print() {
        output::fail(
            if e.use_stderr() {
                "standard error"
            } else {
                "standard output"
            },
            &io,
        );
    }
    std::process::exit(e.exit_code());
}

/// Keeps secrets out of core dumps and away from same-user debuggers, and
/// gives a closed standard stream (`>&-`) /dev/null: otherwise the next file
/// opened (the ceremony log, an output) would get descriptor 1 and receive
/// what is printed.
pub fn harden_process() {
    #[cfg(unix)]
    for fd in 0..3 {
        // SAFETY: fcntl only queries; open takes a NUL-terminated constant and
        // returns the lowest free descriptor, which is `fd` here.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls with constant arguments.
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn json(args: &[&str]) -> bool {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        asks_for_json(&matches)
    }

    #[test]
    fn json_is_read_from_the_command_that_runs() {
        assert!(json(&["hsm-ceremony", "sd", "inspect", "sd.json", "--json"]));
        assert!(json(&[
            "hsm-ceremony",
            "rotate",
            "status",
            "--record",
            "r.json",
            "--json"
        ]));
        assert!(!json(&["hsm-ceremony", "sd", "inspect", "sd.json"]));
        assert!(!json(&["hsm-ceremony", "log", "verify", "l.jsonl"]));
    }

    #[cfg(feature = "network")]
    #[test]
    fn json_is_read_from_the_network_command_that_runs() {
        assert!(json(&[
            "hsm-ceremony",
            "drill",
            "--sd-file",
            "sd.json",
            "--sd-wrapping-keys",
            "a.key",
            "--report",
            "r",
            "--json"
        ]));
        assert!(!json(&[
            "hsm-ceremony",
            "drill",
            "prepare",
            "--url",
            "local:a",
            "--out",
            "c.json"
        ]));
        assert!(!json(&["hsm-ceremony", "demo"]));
    }

    /// The air-gapped build cannot be talked into opening a connection:
    /// the commands that would are not there to parse.
    #[cfg(not(feature = "network"))]
    #[test]
    fn the_ceremony_build_has_no_network_command() {
        for cmd in ["instance", "drill", "demo", "emulator"] {
            let err = Cli::command().try_get_matches_from(["hsm-ceremony", cmd]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::InvalidSubcommand, "{cmd}");
        }
    }
}
