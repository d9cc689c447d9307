//! The `hsm-ceremony` binary: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use hsm_ceremony::cli::{self, errors, Cli};

fn main() -> ExitCode {
    cli::harden_process();
    cli::report_output_failures();
    let matches = Cli::command().get_matches();
    let parsed = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    match cli::run(parsed, cli::asks_for_json(&matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            errors::report(&err);
            ExitCode::from(errors::exit_code(&err))
        }
    }
}
