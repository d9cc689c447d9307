//! Man pages and shell completions, generated from the one clap definition.

#[cfg(all(test, feature = "network"))]
use std::path::Path;

use clap::{Args, CommandFactory, ValueEnum};

use super::Cli;
#[cfg(all(test, feature = "network"))]
use hsm_ceremony::error::Error;
use hsm_ceremony::error::Result;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  hsm-ceremony completions bash > /etc/bash_completion.d/hsm-ceremony")]
pub struct CompletionsArgs {
    /// The shell to print completions for.
    pub shell: Shell,
}

pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Generated into memory: clap_complete panics when its writer fails
    // (a closed pipe, a full disk); the output layer reports that instead.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "hsm-ceremony", &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    let script = match args.shell {
        Shell::Bash => bash_fixed(&script),
        Shell::Zsh | Shell::Fish => script,
    };
    super::output::stdout_bytes(script.as_bytes());
    Ok(())
}

/// clap_complete's bash script (clap-rs issue 6421) names each subcommand's
/// `case` arm after the binary name with its `-` mangled as `__subcmd__`,
/// while the dispatch loop sets the unmangled `hsm__ceremony__...`: no arm
/// ever matches, so no subcommand's flags complete. Renaming the arms joins
/// the two up again.
fn bash_fixed(script: &str) -> String {
    script.replace("hsm__subcmd__ceremony__subcmd__", "hsm__ceremony__subcmd__")
}

/// Writes one man page per command into `dir` (what `man/` holds), each
/// with the exit codes (the top page lists them in its help text already).
/// Only the man-page test writes them (UPDATE_MAN=1), in the default build.
#[cfg(all(test, feature = "network"))]
pub fn write_man_pages(dir: &Path) -> Result<()> {
    let failed = |source| Error::Write {
        path: dir.to_path_buf(),
        source,
    };
    // The pages name the version only: --version's commit and lock hash would change them with every commit.
    clap_mangen::generate_to(Cli::command().long_version(None::<&str>), dir).map_err(failed)?;
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let path = entry.map_err(failed)?.path();
        // Only the generated pages: the hand-written reference pages (5, 7) are left alone.
        let generated = path.extension().is_some_and(|e| e == "1");
        if generated && path.file_name().is_some_and(|n| n != "hsm-ceremony.1") {
            let page = std::fs::read_to_string(&path).map_err(failed)?;
            std::fs::write(&path, with_exit_status(&page)).map_err(failed)?;
        }
    }
    Ok(())
}

/// `page` with an EXIT STATUS section before its VERSION section.
#[cfg(all(test, feature = "network"))]
fn with_exit_status(page: &str) -> String {
    let mut section = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in super::errors::EXIT_CODES {
        section += &format!(".TP\n{code}\n{}\n", meaning.replace('-', "\\-"));
    }
    match page.find(".SH VERSION") {
        Some(at) => format!("{}{section}{}", &page[..at], &page[at..]),
        None => format!("{page}{section}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command a person runs shows an example in its --help.
    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: String, missing: &mut Vec<String>) {
            let leaves: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| c.get_name() != "help").collect();
            let has_example = cmd
                .get_after_help()
                .map(|h| h.to_string().contains("Example"))
                .unwrap_or(false);
            if (leaves.is_empty() || cmd.is_args_conflicts_with_subcommands_set()) && !has_example {
                missing.push(path.clone());
            }
            for sub in leaves {
                walk(sub, format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "hsm-ceremony".into(), &mut missing);
        assert!(missing.is_empty(), "commands without an example in --help: {missing:?}");
    }

    /// Every flag and argument says what it is, in --help and the man pages.
    #[test]
    fn every_argument_is_described() {
        fn walk(cmd: &clap::Command, path: String, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = ["help", "version"].contains(&arg.get_id().as_str());
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
                walk(sub, format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let mut cli = Cli::command();
        cli.build();
        walk(&cli, "hsm-ceremony".into(), &mut missing);
        assert!(missing.is_empty(), "arguments without a description: {missing:#?}");
    }

    /// The checked-in pages in `man/` must be what the code generates.
    /// Regenerate with: UPDATE_MAN=1 cargo test man_pages_are_current
    /// (they document the default build, network commands included).
    #[cfg(feature = "network")]
    #[test]
    fn man_pages_are_current() {
        let fresh = tempfile::tempdir().unwrap();
        write_man_pages(fresh.path()).unwrap();
        let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        // Section 1 is generated; the reference pages (sections 5 and 7) are written by hand.
        let names = |dir: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".1"))
                .collect();
            v.sort();
            v
        };
        if std::env::var_os("UPDATE_MAN").is_some() {
            for stale in names(&checked_in) {
                std::fs::remove_file(checked_in.join(stale)).unwrap();
            }
            write_man_pages(&checked_in).unwrap();
        }
        assert_eq!(
            names(fresh.path()),
            names(&checked_in),
            "man/ lists other pages than the code makes: run UPDATE_MAN=1 cargo test man_pages_are_current"
        );
        for name in names(fresh.path()) {
            let a = std::fs::read(fresh.path().join(&name)).unwrap();
            let b = std::fs::read(checked_in.join(&name)).unwrap();
            assert!(
                a == b,
                "man/{name} differs from the code: run UPDATE_MAN=1 cargo test man_pages_are_current"
            );
        }
        assert!(names(fresh.path()).contains(&"hsm-ceremony-restore-blob.1".to_string()));
        let page = std::fs::read_to_string(fresh.path().join("hsm-ceremony-restore-blob.1")).unwrap();
        assert!(page.contains(".SH \"EXIT STATUS\"\n.TP\n0\nsuccess\n"), "{page}");
    }
}
