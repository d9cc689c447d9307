//! The integration tests, one binary in ripgrep's style: each module is an
//! area, run against the real `hsm-ceremony` binary in temporary folders
//! (`util`: the harness and the shared custodians; `common`: the emulator
//! tests' in-process instance and raw requests). One binary links once and
//! makes the test custodians once for every area.

// The modules marked `network` test the emulator, the instance client and
// the commands that use them, which only the default build has.
#[cfg(feature = "network")]
mod common;
mod util;

mod bad_input;
mod ceremony_log;
mod certs;
mod check_first;
mod crash_safety;
#[cfg(feature = "network")]
mod demo;
#[cfg(feature = "network")]
mod drill;
#[cfg(feature = "network")]
mod emulator;
#[cfg(feature = "network")]
mod emulator_authority;
#[cfg(feature = "network")]
mod emulator_backup;
#[cfg(feature = "network")]
mod emulator_cli;
#[cfg(feature = "network")]
mod emulator_keys;
#[cfg(feature = "network")]
mod emulator_kill;
#[cfg(feature = "network")]
mod emulator_rbac;
mod health;
mod hostile;
mod inspect;
#[cfg(feature = "network")]
mod instance_errors;
mod keygen;
mod layers;
mod offline;
mod openssl_interop;
mod output_safety;
mod pkcs11;
mod prompts;
#[cfg(feature = "network")]
mod rbac_matrix;
mod release;
mod restore_blob;
mod rotation;
mod runbooks;
mod secret_hygiene;
mod spec_conformance;
mod split;
mod verify;
