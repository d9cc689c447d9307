//! Man pages and shell completions, generated from the one clap definition.

use std::path::Path;

use clap::{Args, CommandFactory, ValueEnum};

use super::Cli;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  hsm-ceremony completions bash > /etc/bash_completion.d/hsm-ceremony")]
pub struct CompletionsArgs {
    pub shell: Shell,
}

pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "hsm-ceremony", &mut std::io::stdout());
    Ok(())
}

/// Writes one man page per command into `dir` (what `man/` holds).
pub fn write_man_pages(dir: &Path) -> Result<()> {
    clap_mangen::generate_to(Cli::command(), dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })
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

    /// The checked-in pages in `man/` must be what the code generates.
    /// Regenerate with: UPDATE_MAN=1 cargo test man_pages_are_current
    #[test]
    fn man_pages_are_current() {
        let fresh = tempfile::tempdir().unwrap();
        write_man_pages(fresh.path()).unwrap();
        let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        if std::env::var_os("UPDATE_MAN").is_some() {
            let _ = std::fs::remove_dir_all(&checked_in);
            std::fs::create_dir_all(&checked_in).unwrap();
            write_man_pages(&checked_in).unwrap();
        }
        let names = |dir: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
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
    }
}
