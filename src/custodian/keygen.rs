//! New custodian key pairs and their self-signed certificates (rcgen, with
//! the signature made by our RSA key so no other crypto backend is involved).

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
    SigningKey,
};
use time::{Duration, OffsetDateTime};

use super::cert::Certificate;
use super::signer::Signer;
use super::CustodianError;
use crate::crypto::rng::CryptoRng;
use crate::format::limits::MIN_RSA_BITS;

/// Key sizes offered; 3072 is the default (128-bit security).
pub const ALLOWED_BITS: [usize; 3] = [2048, 3072, 4096];
pub const DEFAULT_BITS: usize = 3072;
/// Longest validity accepted for a custodian certificate.
pub const MAX_DAYS: u32 = 3650;

pub fn generate_key_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    bits: usize,
) -> Result<rsa::PrivateKey, CustodianError> {
    if bits < MIN_RSA_BITS || !ALLOWED_BITS.contains(&bits) {
        return Err(CustodianError::Generation(format!(
            "{bits}-bit RSA is not offered; choose 2048, 3072 or 4096"
        )));
    }
    rsa::PrivateKey::new(rng, bits).map_err(|e| CustodianError::Generation(e.to_string()))
}

/// rcgen's view of a custodian's key; the signature is made by [`Signer`].
struct CertSigner<'a> {
    key: &'a dyn Signer,
    public_der: Vec<u8>,
    /// Why the signer failed: rcgen's error type cannot carry it.
    failure: std::cell::RefCell<Option<String>>,
}

impl PublicKeyData for CertSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl SigningKey for CertSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign_sha256(msg).map_err(|why| {
            *self.failure.borrow_mut() = Some(why);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A self-signed certificate for `key` with CN = `name`, valid from `now`
/// for `days` days.
pub fn self_signed_certificate_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &rsa::PrivateKey,
    name: &str,
    days: u32,
    now: OffsetDateTime,
) -> Result<Certificate, CustodianError> {
    self_signed_certificate_by_with_rng(rng, key, name, days, now)
}

/// As [`self_signed_certificate_with_rng`], signed by any [`Signer`] (a
/// token key signs on the token).
pub fn self_signed_certificate_by_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &dyn Signer,
    name: &str,
    days: u32,
    now: OffsetDateTime,
) -> Result<Certificate, CustodianError> {
    use pkcs1::EncodeRsaPublicKey;
    if days == 0 || days > MAX_DAYS {
        return Err(CustodianError::Generation(format!(
            "a validity of {days} days is outside 1 to {MAX_DAYS}"
        )));
    }
    let public_der = key
        .public_key()
        .to_pkcs1_der()
        .map_err(|e| CustodianError::Generation(e.to_string()))?
        .into_vec();
    let signer = CertSigner {
        key,
        public_der,
        failure: Default::default(),
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days as i64);
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::DigitalSignature];
    let cert = params
        .self_signed(&signer)
        .map_err(|e| CustodianError::Generation(signer.failure.take().unwrap_or_else(|| e.to_string())))?;
    Certificate::from_bytes(cert.der())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{rsa_2048, test_rng};

    #[test]
    fn certificate_carries_the_key_and_name() {
        let key = rsa_2048();
        let now = OffsetDateTime::now_utc();
        let cert = self_signed_certificate_with_rng(&mut test_rng(10), key, "alice", 365, now).unwrap();
        assert!(cert.subject.contains("CN=alice"), "{}", cert.subject);
        assert!(cert.matches(&key.to_public_key()));
        assert_eq!(cert.bits, 2048);
        assert!((364..=365).contains(&cert.days_left(now)));
        assert_eq!(
            Certificate::from_bytes(cert.to_pem().as_bytes()).unwrap().der(),
            cert.der()
        );
    }

    #[test]
    fn weak_or_odd_parameters_are_refused() {
        assert!(generate_key_with_rng(&mut test_rng(11), 1024).is_err());
        assert!(generate_key_with_rng(&mut test_rng(11), 2500).is_err());
        let now = OffsetDateTime::now_utc();
        assert!(self_signed_certificate_with_rng(&mut test_rng(12), rsa_2048(), "a", 0, now).is_err());
        assert!(self_signed_certificate_with_rng(&mut test_rng(12), rsa_2048(), "a", 4000, now).is_err());
    }
}
