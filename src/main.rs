//! The `hsm-ceremony` binary: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use hsm_ceremony::cli::{self, errors, Cli};

fn main() -> ExitCode {
    cli::harden_process();
    let matches = Cli::command().try_get_matches().unwrap_or_else(|e| cli::clap_exit(e));
    let parsed = Cli::from_arg_matches(&matches).unwrap_or_else(|e| cli::clap_exit(e.format(&mut Cli::command())));
    match cli::run(parsed, cli::asks_for_json(&matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            errors::report(&err);
            ExitCode::from(errors::exit_code(&err))
        }
    }
}
