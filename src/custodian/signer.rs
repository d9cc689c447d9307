//! What signs for a custodian: RSA PKCS#1 v1.5 over SHA-256, made by a key in
//! memory or by a key on a PKCS#11 token ([`super::token::TokenKey`]).

use rsa::pkcs1v15::Pkcs1v15Sign;
use sha2::{Digest, Sha256};

use super::token::TokenError;

/// Why a custodian's key could not sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key in memory refused (a key too small for the digest).
    #[error("signing failed: {0}")]
    Rsa(#[source] rsa::Error),
    /// The token key refused, or the token failed (names token and key).
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// A custodian's signing key, wherever it lives.
pub trait Signer {
    /// The RSASSA-PKCS1-v1_5 signature with SHA-256 over `message` (the
    /// signer hashes).
    fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
    /// The public half, to pair the key with its certificate.
    fn public_key(&self) -> rsa::PublicKey;
}

impl Signer for rsa::PrivateKey {
    fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message))
            .map_err(SignError::Rsa)
    }
    fn public_key(&self) -> rsa::PublicKey {
        self.to_public_key()
    }
}
