//! Custodian private keys: PKCS#8 (plain or passphrase-encrypted) and
//! traditional PKCS#1, in PEM or DER, as `openssl req -newkey rsa:N` makes
//! them. Written as encrypted PKCS#8 (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC),
//! which OpenSSL and the Azure CLI's Python both read.

use pkcs8::pkcs5::pbes2;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncryptedPrivateKeyInfoRef, ObjectIdentifier, PrivateKeyInfoRef};
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

use super::pem;
use super::CustodianError;
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::Passphrase;
use crate::format::limits::MIN_RSA_BITS;

/// OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// Below this an encrypted key opens with a warning: each passphrase guess is cheap.
pub const WEAK_PBKDF2_ITERATIONS: u32 = 100_000;
/// Past this a key is refused unopened: ten million is RFC 8018's figure for
/// "especially critical keys"; more is a file made to burn CPU.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// scrypt caps: N at most 2^20, at most 1 GiB of memory (128·N·r), and at
/// most 4 GiB of mixing in all (128·N·r·p), so a hostile file can neither
/// abort the process on an allocation nor keep it busy for minutes.
pub const MAX_SCRYPT_N: u64 = 1 << 20;
pub const MAX_SCRYPT_MEMORY: u64 = 1 << 30;
pub const MAX_SCRYPT_WORK: u64 = 4 << 30;

/// Refused when a new key is encrypted; a short passphrase is the weak link.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A key file as read, before any passphrase is applied.
// Short-lived, one per key file: boxing the key would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum KeyFile {
    Plain(rsa::PrivateKey),
    /// DER of an `EncryptedPrivateKeyInfo`.
    Encrypted(Zeroizing<Vec<u8>>),
}

impl KeyFile {
    pub fn parse(bytes: &[u8]) -> Result<KeyFile, CustodianError> {
        match pem::decode_first_block(bytes) {
            Some(Err(e)) if e == "legacy-encrypted" => Err(CustodianError::LegacyEncryption),
            Some(Err(e)) => Err(CustodianError::NotAKey(e)),
            Some(Ok((label, der))) => match label.as_str() {
                "PRIVATE KEY" => Ok(KeyFile::Plain(from_pkcs8(&der)?)),
                "ENCRYPTED PRIVATE KEY" => {
                    let info = EncryptedPrivateKeyInfoRef::try_from(&der[..])
                        .map_err(|e| CustodianError::NotAKey(e.to_string()))?;
                    encryption_weaknesses(&info.encryption_algorithm)?;
                    Ok(KeyFile::Encrypted(der))
                }
                "RSA PRIVATE KEY" => Ok(KeyFile::Plain(from_pkcs1(&der)?)),
                "CERTIFICATE" => Err(CustodianError::CertificateNotKey),
                other => Err(CustodianError::NotAKey(format!("it holds a PEM '{other}' block"))),
            },
            None => {
                if let Ok(info) = EncryptedPrivateKeyInfoRef::try_from(bytes) {
                    encryption_weaknesses(&info.encryption_algorithm)?;
                    Ok(KeyFile::Encrypted(Zeroizing::new(bytes.to_vec())))
                } else if PrivateKeyInfoRef::try_from(bytes).is_ok() {
                    Ok(KeyFile::Plain(from_pkcs8(bytes)?))
                } else if x509_parser::parse_x509_certificate(bytes).is_ok() {
                    Err(CustodianError::CertificateNotKey)
                } else {
                    from_pkcs1(bytes)
                        .map(KeyFile::Plain)
                        .map_err(|_| CustodianError::NotAKey("neither PEM nor a DER private key".into()))
                }
            }
        }
    }

    pub fn is_encrypted(&self) -> bool {
        matches!(self, KeyFile::Encrypted(_))
    }

    /// Why the file's encryption is weak (few PBKDF2 iterations, DES or
    /// 3DES), one line each; empty for a plain key. The key still opens:
    /// the caller says so, and how to re-encrypt it.
    pub fn warnings(&self) -> Vec<String> {
        match self {
            KeyFile::Plain(_) => Vec::new(),
            KeyFile::Encrypted(der) => EncryptedPrivateKeyInfoRef::try_from(&der[..])
                .ok()
                .and_then(|info| encryption_weaknesses(&info.encryption_algorithm).ok())
                .unwrap_or_default(),
        }
    }

    /// The key, decrypting with `passphrase` when the file is encrypted.
    pub fn into_key(self, passphrase: Option<&Passphrase>) -> Result<rsa::PrivateKey, CustodianError> {
        match self {
            KeyFile::Plain(key) => Ok(key),
            KeyFile::Encrypted(der) => {
                let pass = passphrase.ok_or(CustodianError::NeedsPassphrase)?;
                let info = EncryptedPrivateKeyInfoRef::try_from(&der[..])
                    .map_err(|e| CustodianError::NotAKey(e.to_string()))?;
                // A wrong passphrase shows as bad padding or garbage DER; both mean the same here.
                let doc = info
                    .decrypt(pass.expose().as_bytes())
                    .map_err(|_| CustodianError::WrongPassphrase)?;
                from_pkcs8(doc.as_bytes()).map_err(|e| match e {
                    CustodianError::NotAKey(_) => CustodianError::WrongPassphrase,
                    other => other,
                })
            }
        }
    }
}

/// Refuses encryption parameters that would cost more than any real key
/// (read from the file, so checked before any passphrase is asked or any
/// memory is allocated); returns the weaknesses of the rest.
fn encryption_weaknesses(scheme: &pkcs8::pkcs5::EncryptionScheme) -> Result<Vec<String>, CustodianError> {
    use pkcs8::pkcs5::pbes2::{EncryptionScheme as Cipher, Kdf};
    let params = match scheme {
        pkcs8::pkcs5::EncryptionScheme::Pbes2(params) => params,
        pkcs8::pkcs5::EncryptionScheme::Pbes1(_) => {
            return Err(CustodianError::UnsupportedEncryption(
                "PBES1 (DES or RC2 with MD5 or SHA-1)".into(),
            ))
        }
        other => {
            return Err(CustodianError::UnsupportedEncryption(format!(
                "the scheme {}",
                other.oid()
            )))
        }
    };
    let mut weak = Vec::new();
    match &params.kdf {
        Kdf::Pbkdf2(p) => {
            if p.iteration_count > MAX_PBKDF2_ITERATIONS {
                return Err(CustodianError::KdfTooCostly(format!(
                    "{} PBKDF2 iterations, more than the {MAX_PBKDF2_ITERATIONS} accepted",
                    p.iteration_count
                )));
            }
            if p.iteration_count < WEAK_PBKDF2_ITERATIONS {
                weak.push(format!(
                    "it is encrypted with only {} PBKDF2 iteration(s) (fewer than {WEAK_PBKDF2_ITERATIONS}), \
                     so a stolen copy gives way to passphrase guessing quickly",
                    p.iteration_count
                ));
            }
        }
        Kdf::Scrypt(s) => {
            let (n, r, p) = (s.cost_parameter, u64::from(s.block_size), u64::from(s.parallelization));
            // The KDF takes log2(N) and would panic on N = 0; r or p of 0 are meaningless.
            if n < 2 || !n.is_power_of_two() {
                return Err(CustodianError::NotAKey(format!(
                    "its scrypt N = {n} is not a power of two above 1"
                )));
            }
            if r == 0 || p == 0 {
                return Err(CustodianError::NotAKey(format!(
                    "its scrypt r = {r} and p = {p} must both be at least 1"
                )));
            }
            let memory = 128u128 * u128::from(n) * u128::from(r);
            let work = memory * u128::from(p);
            let why = if n > MAX_SCRYPT_N {
                Some(format!("scrypt N = {n}, more than the {MAX_SCRYPT_N} accepted"))
            } else if memory > u128::from(MAX_SCRYPT_MEMORY) {
                Some(format!(
                    "{memory} bytes of scrypt memory (128·N·r, N = {n}, r = {r}), more than the {MAX_SCRYPT_MEMORY} accepted"
                ))
            } else if work > u128::from(MAX_SCRYPT_WORK) {
                Some(format!(
                    "{work} bytes of scrypt mixing (128·N·r·p, N = {n}, r = {r}, p = {p}), more than the {MAX_SCRYPT_WORK} accepted"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(CustodianError::KdfTooCostly(why));
            }
        }
        other => {
            return Err(CustodianError::UnsupportedEncryption(format!(
                "the key derivation {}",
                other.oid()
            )))
        }
    }
    // Single DES is not compiled in: such a file fails to decrypt.
    if let Cipher::DesEde3Cbc { .. } = params.encryption {
        weak.push("it is encrypted with 3DES (DES-EDE3-CBC), a 64-bit block cipher long retired".into());
    }
    Ok(weak)
}

fn from_pkcs8(der: &[u8]) -> Result<rsa::PrivateKey, CustodianError> {
    let info = PrivateKeyInfoRef::try_from(der).map_err(|e| CustodianError::NotAKey(e.to_string()))?;
    if info.algorithm.oid != RSA_ENCRYPTION {
        return Err(CustodianError::NotRsa(format!("of algorithm {}", info.algorithm.oid)));
    }
    checked(rsa::PrivateKey::from_pkcs8_der(der).map_err(|e| CustodianError::InvalidRsa(e.to_string()))?)
}

fn from_pkcs1(der: &[u8]) -> Result<rsa::PrivateKey, CustodianError> {
    use pkcs1::DecodeRsaPrivateKey;
    checked(rsa::PrivateKey::from_pkcs1_der(der).map_err(|e| CustodianError::InvalidRsa(e.to_string()))?)
}

/// Refuses keys below 2048 bits and keys whose parts do not add up.
fn checked(key: rsa::PrivateKey) -> Result<rsa::PrivateKey, CustodianError> {
    let bits = key.n().bit_width() as usize;
    if bits < MIN_RSA_BITS {
        return Err(CustodianError::WeakKey {
            bits,
            min: MIN_RSA_BITS,
        });
    }
    key.validate().map_err(|e| CustodianError::InvalidRsa(e.to_string()))?;
    Ok(key)
}

/// A passphrase refused for being too short to resist an offline guess
/// (length is the one rule: a custodian can meet it with words they remember).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters (this one has {chars})")]
pub struct PassphraseTooShort {
    pub chars: usize,
}

/// Refuses passphrases too short to resist an offline guess.
pub fn check_passphrase_strength(pass: &Passphrase) -> Result<(), PassphraseTooShort> {
    let chars = pass.expose().chars().count();
    if chars < MIN_PASSPHRASE_CHARS {
        return Err(PassphraseTooShort { chars });
    }
    Ok(())
}

/// `-----BEGIN ENCRYPTED PRIVATE KEY-----` under `passphrase`.
pub fn to_encrypted_pem_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &rsa::PrivateKey,
    passphrase: &Passphrase,
) -> Result<Zeroizing<String>, CustodianError> {
    let der = key
        .to_pkcs8_der()
        .map_err(|e| CustodianError::Generation(e.to_string()))?;
    let info = PrivateKeyInfoRef::try_from(der.as_bytes()).map_err(|e| CustodianError::Generation(e.to_string()))?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut salt);
    rng.fill_bytes(&mut iv);
    let params = pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, iv)
        .map_err(|e| CustodianError::Generation(e.to_string()))?;
    let enc = info
        .encrypt_with_params(params, passphrase.expose().as_bytes())
        .map_err(|e| CustodianError::Generation(e.to_string()))?;
    Ok(pem::encode("ENCRYPTED PRIVATE KEY", enc.as_bytes()))
}

/// `-----BEGIN PRIVATE KEY-----`, unencrypted (only on explicit request).
pub fn to_plain_pem(key: &rsa::PrivateKey) -> Result<Zeroizing<String>, CustodianError> {
    let der = key
        .to_pkcs8_der()
        .map_err(|e| CustodianError::Generation(e.to_string()))?;
    Ok(pem::encode("PRIVATE KEY", der.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{rsa_2048, test_rng};

    #[test]
    fn encrypted_round_trip_and_wrong_passphrase() {
        let key = rsa_2048();
        let pass = Passphrase::new("correct horse battery".into());
        let pem = to_encrypted_pem_with_rng(&mut test_rng(9), key, &pass).unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let file = KeyFile::parse(pem.as_bytes()).unwrap();
        assert!(file.is_encrypted());
        let back = KeyFile::parse(pem.as_bytes()).unwrap().into_key(Some(&pass)).unwrap();
        assert_eq!(back.n(), key.n());
        let wrong = Passphrase::new("incorrect horse battery".into());
        assert_eq!(file.into_key(Some(&wrong)).err(), Some(CustodianError::WrongPassphrase));
        assert_eq!(
            KeyFile::parse(pem.as_bytes()).unwrap().into_key(None).err(),
            Some(CustodianError::NeedsPassphrase)
        );
    }

    #[test]
    fn plain_pkcs8_and_pkcs1_in_pem_and_der() {
        use pkcs1::EncodeRsaPrivateKey;
        let key = rsa_2048();
        let pkcs8_pem = to_plain_pem(key).unwrap();
        let pkcs8_der = key.to_pkcs8_der().unwrap();
        let pkcs1_pem = key.to_pkcs1_pem(pkcs1::LineEnding::LF).unwrap();
        let pkcs1_der = key.to_pkcs1_der().unwrap();
        for bytes in [
            pkcs8_pem.as_bytes(),
            pkcs8_der.as_bytes(),
            pkcs1_pem.as_bytes(),
            pkcs1_der.as_bytes(),
        ] {
            let k = KeyFile::parse(bytes).unwrap().into_key(None).unwrap();
            assert_eq!(k.n(), key.n());
        }
    }

    #[test]
    fn not_keys() {
        assert!(matches!(KeyFile::parse(b"hello"), Err(CustodianError::NotAKey(_))));
        let legacy = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(KeyFile::parse(legacy).err(), Some(CustodianError::LegacyEncryption));
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(KeyFile::parse(cert).err(), Some(CustodianError::CertificateNotKey));
    }

    #[test]
    fn short_passphrases_are_refused() {
        assert_eq!(
            check_passphrase_strength(&Passphrase::new("short".into())),
            Err(PassphraseTooShort { chars: 5 })
        );
        assert!(check_passphrase_strength(&Passphrase::new("twelve chars".into())).is_ok());
    }
}
