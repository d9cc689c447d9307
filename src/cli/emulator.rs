//! `hsm-ceremony emulator serve|token`: run an emulated Managed HSM on
//! loopback, and issue bearer tokens for it.

use std::net::SocketAddr;
use std::path::PathBuf;

use hsm_ceremony::emulator::{self, Role};
use hsm_ceremony::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Security-domain download, transfer key and upload.
    Administrator,
    /// Key management.
    CryptoOfficer,
    /// Key use.
    CryptoUser,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Administrator => Role::Administrator,
            RoleArg::CryptoOfficer => Role::CryptoOfficer,
            RoleArg::CryptoUser => Role::CryptoUser,
        }
    }
}

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
    },
    /// Issue a bearer token for a principal and print it.
    #[command(
        after_help = "Example:\n  hsm-ceremony emulator token --state hsm-a --principal ops \\\n      \
        --role administrator --role crypto-officer > admin.token"
    )]
    Token {
        /// The state directory of the instance the token is for.
        #[arg(long = "state", value_name = "DIR")]
        state: PathBuf,
        /// Who the token is for.
        #[arg(long, value_name = "NAME")]
        principal: String,
        /// A local role (repeatable); none gives a principal that every
        /// operation refuses.
        #[arg(long = "role", value_name = "ROLE", value_enum)]
        roles: Vec<RoleArg>,
    },
}

pub fn run(cmd: EmulatorCommand) -> Result<(), Error> {
    match cmd {
        EmulatorCommand::Serve {
            state,
            listen,
            insecure_http,
        } => {
            let mut config = emulator::Config::new(state);
            config.listen = listen;
            config.tls = !insecure_http;
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
            let roles: Vec<Role> = roles.into_iter().map(Role::from).collect();
            let token = emulator::issue_token(&state, &principal, &roles)?;
            crate::out!("{token}");
            Ok(())
        }
    }
}
