//! New custodian key pairs and their self-signed certificates (rcgen, with
//! the signature made by our RSA key so no other crypto backend is involved).

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
    SigningKey,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::cert::Certificate;
use super::key as keyfile;
use super::signer::{SignError, Signer};
use super::CustodianError;
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::Passphrase;
use crate::error::{Error, Result};
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
    failure: std::cell::RefCell<Option<SignError>>,
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
    let cert = params.self_signed(&signer).map_err(|e| {
        CustodianError::Generation(signer.failure.take().map_or_else(|| e.to_string(), |f| f.to_string()))
    })?;
    Certificate::from_bytes(cert.der())
}

/// A new custodian key as PEM (encrypted unless it has no passphrase) and
/// its self-signed certificate.
pub struct NewKeyFile {
    pub pem: Zeroizing<String>,
    pub cert: Certificate,
}

/// Generates one key per name (`names[i]` with `passphrases[i]`) on all
/// cores, each worker with its own RNG from `rng`; `done` is called as each
/// key is ready (a progress bar). Errors name the key file (`NAME.key`); the
/// first failure in name order is returned, and nothing is written here.
pub fn generate_many<R: CryptoRng>(
    names: &[String],
    bits: usize,
    days: u32,
    passphrases: &[Option<Passphrase>],
    now: OffsetDateTime,
    rng: impl Fn() -> R + Sync,
    done: impl Fn() + Sync,
) -> Result<Vec<NewKeyFile>> {
    assert_eq!(names.len(), passphrases.len(), "one passphrase slot per name");
    let slots: Vec<Mutex<Option<Result<NewKeyFile>>>> = names.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(names.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut rng = rng();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= names.len() {
                        break;
                    }
                    let result = make_one(&mut rng, &names[i], bits, days, passphrases[i].as_ref(), now);
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    done();
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every slot is filled before the scope ends")
        })
        .collect()
}

fn make_one<R: CryptoRng + ?Sized>(
    rng: &mut R,
    name: &str,
    bits: usize,
    days: u32,
    passphrase: Option<&Passphrase>,
    now: OffsetDateTime,
) -> Result<NewKeyFile> {
    let gen_err = |source| Error::Key {
        label: format!("{name}.key"),
        source,
    };
    let key = generate_key_with_rng(rng, bits).map_err(gen_err)?;
    let cert = self_signed_certificate_with_rng(rng, &key, name, days, now).map_err(gen_err)?;
    let pem = match passphrase {
        Some(p) => keyfile::to_encrypted_pem_with_rng(rng, &key, p),
        None => keyfile::to_plain_pem(&key),
    }
    .map_err(gen_err)?;
    Ok(NewKeyFile { pem, cert })
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

    #[test]
    fn many_keys_come_back_in_name_order_each_its_own() {
        let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let seed = AtomicUsize::new(40);
        let count = AtomicUsize::new(0);
        let made = generate_many(
            &names,
            2048,
            30,
            &[None, None],
            OffsetDateTime::now_utc(),
            || test_rng(seed.fetch_add(1, Ordering::Relaxed) as u64),
            || {
                count.fetch_add(1, Ordering::Relaxed);
            },
        )
        .unwrap();
        assert_eq!(count.into_inner(), 2);
        for (name, m) in names.iter().zip(&made) {
            assert!(m.cert.subject.contains(&format!("CN={name}")), "{}", m.cert.subject);
            let key = keyfile::KeyFile::parse(m.pem.as_bytes()).unwrap();
            assert!(matches!(key, keyfile::KeyFile::Plain(_)));
        }
        assert_ne!(made[0].cert.x5t_256(), made[1].cert.x5t_256());
        let refused = generate_many(
            &names[..1],
            1024,
            30,
            &[None],
            OffsetDateTime::now_utc(),
            || test_rng(1),
            || {},
        );
        assert!(matches!(refused, Err(Error::Key { ref label, .. }) if label == "a.key"));
    }
}
