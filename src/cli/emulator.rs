//! `hsm-ceremony emulator serve|token|az-setup`: run an emulated Managed
//! HSM on loopback, issue bearer tokens for it, and sign the real Azure CLI
//! in to it.

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
    /// Print POSIX shell lines that sign the real Azure CLI in to a served
    /// emulator, for `eval`.
    ///
    /// The lines set AZURE_CONFIG_DIR to a private folder (0700) inside the
    /// state folder, so your own ~/.azure and real Azure login are never
    /// touched; trust the emulator's CA (REQUESTS_CA_BUNDLE); register and
    /// select a custom cloud whose Microsoft Entra endpoint is the
    /// emulator's own; and `az login --service-principal` with a secret
    /// created now for PRINCIPAL (kept in a 0600 file in that folder, read
    /// by the login line: it is never printed). The emulator must be
    /// serving the state folder (its URL is read from there), unless --url
    /// is given. Then `az keyvault security-domain ... --id URL` and
    /// `az keyvault key ... --id URL/keys/NAME` reach the emulator.
    #[command(
        name = "az-setup",
        after_help = "Example:\n  hsm-ceremony emulator serve --state hsm-a &\n  \
        eval \"$(hsm-ceremony emulator az-setup --state hsm-a --principal ops)\"\n  \
        az keyvault security-domain download --id https://127.0.0.1:PORT \\\n      \
        --sd-wrapping-keys c0.cer c1.cer c2.cer --sd-quorum 2 --security-domain-file sd.json\n\n\
        The setting lasts for the shell that ran eval; open a new shell (or unset AZURE_CONFIG_DIR \
        REQUESTS_CA_BUNDLE) to use your real az login again."
    )]
    AzSetup {
        /// The state folder of the served instance.
        #[arg(long = "state", value_name = "DIR")]
        state: PathBuf,
        /// The emulator principal az signs in as.
        #[arg(long, value_name = "NAME")]
        principal: String,
        /// A built-in local role, assigned at scope / (repeatable, the
        /// forms `emulator token` takes); none given means administrator and
        /// crypto-user, what a whole ceremony and its key drill need.
        #[arg(long = "role", value_name = "ROLE", value_parser = parse_role)]
        roles: Vec<Role>,
        /// The emulator's URL (https://127.0.0.1:PORT); by default the one
        /// the server serving DIR recorded there.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
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
            // The one place a token is printed: it is this command's output.
            crate::out!("{}", token.expose());
            Ok(())
        }
        EmulatorCommand::AzSetup {
            state,
            principal,
            roles,
            url,
        } => {
            let roles: Vec<Role> = if roles.is_empty() {
                vec![Role::Administrator, Role::CryptoUser]
            } else {
                roles
            };
            let setup = emulator::az_setup(&state, &principal, &roles, url.as_deref())?;
            crate::out!(
                "# az signs in to {} as '{principal}' (client id {})",
                setup.url,
                setup.client_id
            );
            for line in &setup.lines {
                crate::out!("{line}");
            }
            Ok(())
        }
    }
}
