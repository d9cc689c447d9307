//! Custodians: their RSA wrapping keys and self-signed certificates, read
//! and written in the forms OpenSSL and the Azure CLI use.

pub mod cert;
pub mod key;
pub mod keygen;
mod keyref;
pub mod pairing;
pub mod pem;
pub mod signer;
pub mod token;

use thiserror::Error;

pub use keyref::KeyRef;

/// Why a certificate or key file could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CustodianError {
    #[error("it is not a certificate in PEM or DER form: {0}")]
    NotACertificate(String),
    #[error("it is not a private key in PEM or DER form (PKCS#8, encrypted PKCS#8 or PKCS#1): {0}")]
    NotAKey(String),
    /// A certificate where a private key is asked for: a mix-up of files, not a bad key.
    #[error("it is a certificate, not a private key")]
    CertificateNotKey,
    #[error("its key is {0}, not RSA")]
    NotRsa(String),
    #[error("its RSA key is {bits} bits; at least {min} are required")]
    WeakKey { bits: usize, min: usize },
    #[error("its RSA key is not valid: {0}")]
    InvalidRsa(String),
    #[error("it is encrypted and needs a passphrase")]
    NeedsPassphrase,
    #[error("the passphrase does not open it")]
    WrongPassphrase,
    #[error("it is encrypted in the legacy OpenSSL format (Proc-Type: 4,ENCRYPTED), which is not supported")]
    LegacyEncryption,
    #[error("its encryption asks for {0}; it is refused before any work")]
    KdfTooCostly(String),
    #[error("it is encrypted with {0}, which is not supported")]
    UnsupportedEncryption(String),
    #[error("{0}")]
    Generation(String),
}
