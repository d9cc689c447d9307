//! `hsm-ceremony`: offline security-domain ceremonies for Azure Key Vault
//! Managed HSM, byte-compatible with the Azure CLI and service.
//!
//! The layers, from the bottom up:
//!
//! - [`crypto`]: the primitives the format names — base64url, the SP 800-108
//!   KDF, A256CBC-HS512, compact JWE, Shamir over GF(257) — and the wrappers
//!   that keep secrets out of logs and wipe them on drop.
//! - [`format`](mod@format): the files — security domain, restore blob, transfer key.
//! - [`custodian`]: custodians' RSA keys and certificates.
//! - [`recovery`]: shares → master key → restore blob; split; rotate.
//! - [`selftest`]: the known-answer tests `hsm-ceremony self-test` runs.
//! - [`files`], [`inputs`]: size-limited reads, atomic never-overwriting
//!   writes, and loading inputs with errors that name the file.
//!
//! None of these knows about the command line or the network. Above them:
//!
//! - [`ceremony`]: the ceremony log, manifests, rotations, drills, health.
//! - `instance`: the HTTP client for a real or emulated instance.
//! - `emulator`: the emulated Managed HSM (server, state, auth, key store).
//! - `demo`: the whole story, each step one of the real commands.
//!
//! Those three, and the commands that use them, exist only with the `network`
//! feature (the default); without it the build is the air-gapped laptop's.
//!
//! The command line (parsing, prompts, output) is the binary's, in src/cli/:
//! the library exports no CLI types.

pub mod ceremony;
pub mod crypto;
pub mod custodian;
#[cfg(feature = "network")]
pub mod demo;
#[cfg(feature = "network")]
pub mod emulator;
pub mod error;
pub mod files;
pub mod format;
pub mod inputs;
#[cfg(feature = "network")]
pub mod instance;
pub mod recovery;
pub mod selftest;

pub use error::{Error, Result};

#[cfg(test)]
pub(crate) mod test_support;
