//! Custodian signatures with their wrapping key: RSA PKCS#1 v1.5 over SHA-256
//! (deterministic, and what `openssl dgst -sha256 -sign` makes). Used for the
//! manifest and for countersigning log lines. The key is any [`Signer`]: a
//! key file in memory or a key on a PKCS#11 token.

use rsa::pkcs1v15::Pkcs1v15Sign;
use sha2::{Digest, Sha256};

use crate::crypto::b64::{b64u, b64u_decode};
use crate::custodian::cert::Certificate;
use crate::custodian::signer::{SignError, Signer};

pub fn sign(key: &dyn Signer, message: &[u8]) -> Result<String, SignError> {
    key.sign_sha256(message).map(|s| b64u(&s))
}

/// Whether `signature` (b64u) is `cert`'s key's signature over `message`.
pub fn verify(cert: &Certificate, message: &[u8], signature: &str) -> bool {
    let Ok(sig) = b64u_decode(signature, "signature") else {
        return false;
    };
    let Ok(public) = cert.rsa_public_key() else {
        return false;
    };
    public
        .verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message), &sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::custodians;

    #[test]
    fn sign_and_verify() {
        let c = &custodians()[0];
        let s = sign(&c.key, b"manifest").unwrap();
        assert!(verify(&c.cert, b"manifest", &s));
        assert!(!verify(&c.cert, b"manifesT", &s));
        assert!(!verify(&custodians()[1].cert, b"manifest", &s));
    }
}
