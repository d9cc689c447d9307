//! `hsm-ceremony` (emulator branch): a minimal dispatcher for the emulator
//! commands; the main checkout's `main.rs` replaces this on merge.

use std::process::ExitCode;

use clap::Parser;

mod cli {
    pub mod emulator;
}

#[derive(Parser)]
#[command(
    name = "hsm-ceremony",
    version,
    about = "Offline security-domain ceremonies for Azure Key Vault Managed HSM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run an emulated Managed HSM on loopback.
    #[command(subcommand)]
    Emulator(cli::emulator::EmulatorCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Emulator(cmd) => cli::emulator::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e.kind() {
                hsm_ceremony::ErrorKind::Input => 2,
                hsm_ceremony::ErrorKind::Integrity => 3,
                hsm_ceremony::ErrorKind::Quorum => 4,
                hsm_ceremony::ErrorKind::Io => 5,
                hsm_ceremony::ErrorKind::Instance => 6,
            })
        }
    }
}
