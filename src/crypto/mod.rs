//! Cryptographic primitives of the security-domain format, named as its
//! reference page names them (`man/hsm-ceremony-security-domain.5`).
//!
//! Nothing here reads files, prompts or talks to a network.

pub mod b64;
pub mod cbc_hs512;
pub mod jwe;
pub mod kdf;
pub mod oaep;
pub mod rng;
pub mod secret;
pub mod shamir;

use thiserror::Error;

/// What went wrong inside a primitive. Higher layers add which file or
/// custodian it concerns.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("{what} is not valid base64url")]
    Base64 { what: &'static str },
    #[error("a compact JWE must have 5 parts separated by '.', this one has {0}")]
    JweParts(usize),
    #[error("the JWE header is not valid: {0}")]
    JweHeader(String),
    #[error("the JWE uses algorithm '{0}', which is refused")]
    RefusedAlg(String),
    #[error("the JWE uses content encryption '{0}', only A256CBC-HS512 is accepted")]
    RefusedEnc(String),
    #[error("the JWE header has a 'crit' member; no JWE extension is understood here")]
    CritHeader,
    #[error("the JWE {part} is {got} bytes, it must be {want}")]
    JwePartLength {
        part: &'static str,
        got: usize,
        want: usize,
    },
    #[error("the JWE is expected to use '{want}' but uses '{got}'")]
    WrongAlg { want: &'static str, got: String },
    #[error("integrity check failed: the authentication tag does not match")]
    Integrity,
    #[error("the RSA key could not unwrap the content key (wrong key, or the data was altered)")]
    Unwrap,
    /// A token could not do the unwrap for a reason other than the key: it
    /// went away, or lacks the mechanism.
    #[error("{0}")]
    Token(String),
    #[error("RSA encryption failed: {0}")]
    RsaEncrypt(String),
    #[error("the share is malformed: {0}")]
    ShareMalformed(String),
    #[error("the shares are inconsistent: {0}")]
    SharesInconsistent(String),
    #[error("invalid Shamir parameters: {0}")]
    ShamirParams(String),
}
