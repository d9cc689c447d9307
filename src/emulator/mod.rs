//! The emulated Managed HSM: a local HTTPS server that answers the
//! data-plane requests of the security-domain ceremony closely enough for
//! the Azure SDK and CLI (`man/hsm-ceremony-emulator.7`).
//!
//! One instance is one state directory, holding:
//! `instance.json` (life cycle, security-domain contents, exchange key; 0600),
//! `keys.json` (key store; 0600), `tokens.json` (hashed tokens; 0600),
//! `rbac.json` (role assignments and custom roles; 0600), `settings.json` (0600),
//! `tls.json` (server key and certificates; 0600) and `ca.pem`.
//!
//! Download on an already activated instance wraps the *same* security
//! domain (master key and contents) to the new certificates, so existing key
//! backups keep restoring; download on a recovering instance is refused.

mod authority;
mod az_setup;
mod backup;
mod error;
mod handle;
mod keys;
pub mod rbac;
mod request;
mod server;
pub mod state;
mod storage;
mod tls;

pub use authority::{register_client, ServicePrincipal, CLIENTS_FILE, EXPIRES_IN, MAX_TOKEN_BODY};
pub use az_setup::{az_setup, shell_quote, AzSetup, AZ_CONFIG_DIR, CLOUD_NAME, SECRET_FILE, URL_FILE};
pub use rbac::{decide_in, issue_token, BearerToken, DataAction, Decision, Role};
pub use request::{preflight, API_VERSIONS};
pub use server::{serve_blocking, spawn, Config, InProcess, Ready, RunningEmulator, IN_PROCESS_ORIGIN};
pub use state::{inspect, InstanceSummary, OpStatus, OperationStatus, Status};
pub use tls::CA_FILE;

/// Seconds since the Unix epoch, as Key Vault's attributes carry them.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Secret text as the state files carry it (a private key or plaintext in
/// base64url): no `Debug`, copied only by an explicit `clone`, wiped on
/// drop, and (de)serialised as a plain JSON string.
pub(crate) struct SecretText(zeroize::Zeroizing<String>);

impl SecretText {
    pub fn new(text: String) -> SecretText {
        SecretText(zeroize::Zeroizing::new(text))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Clone for SecretText {
    fn clone(&self) -> Self {
        SecretText(self.0.clone())
    }
}

impl serde::Serialize for SecretText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(SecretText::new)
    }
}
