//! `hsm-ceremony emulator serve|token`: run an emulated Managed HSM on
//! loopback, and issue bearer tokens for it.

use std::net::SocketAddr;
use std::path::PathBuf;

use hsm_ceremony::emulator::{self, Role};
use hsm_ceremony::error::Error;

/// `--role`: a built-in role by its real name ("Managed HSM Crypto User"),
/// its short name ("Crypto User"), the command-line form (`crypto-user`)
/// or its id, in any case.
fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| {
        let names: Vec<String> = Role::ALL.iter().map(|r| r.cli_name()).collect();
        format!(
            "'{text}' is not a Managed HSM built-in role; use one of {} (or the real name, \
             e.g. \"Managed HSM Crypto User\", or the role id)",
            names.join(", ")
        )
    })
}

const ROLE_HELP: &str = "Roles (--role takes the real name, e.g. \"Managed HSM Crypto User\", the short name \
\"Crypto User\", the form crypto-user, or the role id; case does not matter):
  administrator                    Managed HSM Administrator: security domain, full backup/restore, roles
  crypto-officer                   Managed HSM Crypto Officer: roles, deleted keys, export; NOT key create/use
  crypto-user                      Managed HSM Crypto User: create, use, back up and restore keys
  policy-administrator             Managed HSM Policy Administrator: role assignments and definitions
  crypto-auditor                   Managed HSM Crypto Auditor: read key attributes
  crypto-service-encryption-user   Managed HSM Crypto Service Encryption User: read, wrap, unwrap
  crypto-service-release-user      Managed HSM Crypto Service Release User: release keys
  backup                           Managed HSM Backup: key and full backups
  restore                          Managed HSM Restore: key and full restores
Each role is assigned to the principal at scope / (see hsm-ceremony-emulator(7)).

Example:
  hsm-ceremony emulator token --state hsm-a --principal ops \\
      --role administrator --role \"Managed HSM Crypto User\" > admin.token";

#[derive(Debug, clap::Subcommand)]
pub enum EmulatorCommand {
    /// Serve an emulated instance until killed. Prints the URL and the CA
    /// certificate to trust.
    #[command(after_help = "Example:\n  hsm-ceremony emulator serve --state hsm-a --listen 127.0.0.1:8443")]
    Serve {
        /// The instance's state directory (created if missing). One
        /// instance per directory.
        #[arg(long = "state", value_name = "DIR")]
        state: PathBuf,
        /// Loopback address to listen on; port 0 picks a free one.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Serve plain HTTP instead of HTTPS (tests only).
        #[arg(long)]
        insecure_http: bool,
        /// Purge protection of the instance's deleted keys, kept in its
        /// state. On by default, as Microsoft recommends; `off` is accepted
        /// only before the instance is activated.
        #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
        purge_protection: Option<String>,
    },
    /// Issue a bearer token for a principal and print it.
    #[command(after_help = ROLE_HELP)]
    Token {
        /// The state directory of the instance the token is for.
        #[arg(long = "state", value_name = "DIR")]
        state: PathBuf,
        /// Who the token is for.
        #[arg(long, value_name = "NAME")]
        principal: String,
        /// A built-in local role, assigned at scope / (repeatable); none
        /// gives a principal that every operation refuses.
        #[arg(long = "role", value_name = "ROLE", value_parser = parse_role)]
        roles: Vec<Role>,
    },
}

pub fn run(cmd: EmulatorCommand) -> Result<(), Error> {
    match cmd {
        EmulatorCommand::Serve {
            state,
            listen,
            insecure_http,
            purge_protection,
        } => {
            let mut config = emulator::Config::new(state);
            config.listen = listen;
            config.tls = !insecure_http;
            config.purge_protection = purge_protection.map(|p| p == "on");
            emulator::serve_blocking(config, |ready| {
                crate::out!("listening on {}", ready.url);
                if let Some(ca) = &ready.ca_pem_path {
                    crate::out!("CA certificate: {}", ca.display());
                }
            })
        }
        EmulatorCommand::Token {
            state,
            principal,
            roles,
        } => {
            let token = emulator::issue_token(&state, &principal, &roles)?;
            crate::out!("{token}");
            Ok(())
        }
    }
}
