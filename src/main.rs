//! The `hsm-ceremony` binary: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use hsm_ceremony::cli::{self, errors, Cli};

fn main() -> ExitCode {
    cli::harden_process();
    cli::report_output_failures();
    let parsed = Cli::parse();
    match cli::run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            errors::report(&err);
            ExitCode::from(errors::exit_code(&err))
        }
    }
}
