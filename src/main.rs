//! The `hsm-ceremony` binary: the command line (src/cli/) — parse,
//! dispatch, prompt, print, map errors to exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
mod cli;

use cli::{errors, Cli};
// `crate::out!` and friends, as the files in src/cli name them.
pub(crate) use cli::output::{note, out, say};

fn main() -> ExitCode {
    cli::harden_process();
    let matches = Cli::command().try_get_matches().unwrap_or_else(|e| cli::clap_exit(e));
    let parsed = Cli::from_arg_matches(&matches).unwrap_or_else(|e| cli::clap_exit(e.format(&mut Cli::command())));
    match cli::run(parsed, cli::asks_for_json(&matches)) {
        Ok(cli::Done::Ok) => ExitCode::SUCCESS,
        Ok(cli::Done::Verdict(verdict, reasons)) => {
            errors::report_verdict(verdict, &reasons);
            ExitCode::from(errors::verdict_exit_code(verdict))
        }
        Err(err) => {
            errors::report(&err);
            ExitCode::from(errors::exit_code(&err))
        }
    }
}
