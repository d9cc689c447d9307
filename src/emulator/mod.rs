//! The emulated Managed HSM: a local HTTPS server that answers the
//! data-plane requests of the security-domain ceremony closely enough for
//! the Azure SDK and CLI (`man/hsm-ceremony-emulator.7`).
//!
//! One instance is one state directory, holding:
//! `instance.json` (life cycle, security-domain contents, exchange key; 0600),
//! `keys.json` (key store; 0600), `tokens.json` (hashed tokens; 0600),
//! `tls.json` (server key and certificates; 0600) and `ca.pem`.
//!
//! Download on an already activated instance wraps the *same* security
//! domain (master key and contents) to the new certificates, so existing key
//! backups keep restoring; download on a recovering instance is refused.

pub mod auth;
mod error;
mod keys;
mod routes;
mod server;
pub mod state;
mod tls;

pub use auth::{issue_token, Role};
pub use routes::{preflight, API_VERSIONS};
pub use server::{serve_blocking, spawn, Config, InProcess, Ready, RunningEmulator, IN_PROCESS_ORIGIN};
pub use state::{inspect, InstanceSummary, OpStatus, Operation, Status};
pub use tls::CA_FILE;

/// Seconds since the Unix epoch, as Key Vault's attributes carry them.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
