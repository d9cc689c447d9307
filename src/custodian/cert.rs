//! Custodian and exchange certificates: parsing, thumbprints, the checks
//! Azure makes at download, and dates.

use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use spki::DecodePublicKey;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::pem;
use super::CustodianError;
use crate::crypto::b64::{b64u, b64u_decode};
use crate::format::limits::MIN_RSA_BITS;
use crate::format::transfer_key::Jwk;

/// A certificate ending within this many days is flagged whenever a
/// custodian's certificate is shown or checked for a download: a quarter is
/// the time it takes to arrange a rotation.
pub const EXPIRY_NOTICE_DAYS: i64 = 90;

/// A certificate ending within this many days puts the quorum at risk in
/// `sd health`: the rotation is due now.
pub const EXPIRY_RISK_DAYS: i64 = 30;

/// A certificate date as the tool shows it.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// One finding of [`Certificate::problems`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertIssue {
    /// The RSA key is shorter than Azure accepts.
    WeakKey { bits: usize },
    /// `now` is before the certificate's start.
    NotYetValid,
    /// The certificate ended (a day or more) before `now`.
    Expired,
    /// It ends in `days` days, within the notice asked for.
    ExpiresSoon { days: i64 },
}

impl CertIssue {
    /// Whether the dates exclude `now` (a download refuses such a certificate).
    pub fn is_out_of_dates(&self) -> bool {
        matches!(self, CertIssue::NotYetValid | CertIssue::Expired)
    }
}

/// A parsed X.509 certificate with an RSA key.
#[derive(Clone, Debug)]
pub struct Certificate {
    der: Vec<u8>,
    pub subject: String,
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Modulus size in bits.
    pub bits: usize,
    public_key_der: Vec<u8>,
    /// The RSA modulus, big-endian without leading zeros: the custodian's identity.
    modulus: Vec<u8>,
}

impl Certificate {
    /// Reads a certificate from PEM (`CERTIFICATE`) or DER bytes. The key
    /// must be RSA; its size is checked separately so weak certificates can
    /// still be shown.
    pub fn from_bytes(bytes: &[u8]) -> Result<Certificate, CustodianError> {
        let der = match pem::decode_first_block(bytes) {
            Some(Ok((label, der))) if label == "CERTIFICATE" => der.to_vec(),
            Some(Ok((label, _))) => {
                return Err(CustodianError::NotACertificate(format!(
                    "it holds a PEM '{label}' block"
                )))
            }
            Some(Err(e)) => return Err(CustodianError::NotACertificate(e)),
            None => bytes.to_vec(),
        };
        let (rest, x509) =
            X509Certificate::from_der(&der).map_err(|e| CustodianError::NotACertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CustodianError::NotACertificate(format!(
                "{} stray bytes follow the certificate",
                rest.len()
            )));
        }
        let spki = x509.public_key();
        let (bits, modulus) = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let start = rsa.modulus.iter().position(|&b| b != 0).unwrap_or(rsa.modulus.len());
                (rsa.key_size(), rsa.modulus[start..].to_vec())
            }
            Ok(PublicKey::EC(_)) => return Err(CustodianError::NotRsa("elliptic-curve".into())),
            Ok(_) => {
                return Err(CustodianError::NotRsa(format!(
                    "of algorithm {}",
                    spki.algorithm.algorithm
                )))
            }
            Err(e) => {
                return Err(CustodianError::NotACertificate(format!(
                    "its public key cannot be read: {e}"
                )))
            }
        };
        let cert = Certificate {
            subject: x509.subject().to_string(),
            serial: x509.raw_serial_as_string(),
            not_before: x509.validity().not_before.to_datetime(),
            not_after: x509.validity().not_after.to_datetime(),
            bits,
            public_key_der: spki.raw.to_vec(),
            modulus,
            der: der.clone(),
        };
        Ok(cert)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn to_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.der).to_string()
    }

    /// `x5t_256` / `x5t#S256`: b64u(SHA-256(DER)), as in the security domain.
    pub fn x5t_256(&self) -> String {
        b64u(&Sha256::digest(&self.der))
    }

    /// SHA-256 of the DER in hex, as `openssl x509 -fingerprint -sha256` shows it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// The RSA public key, refused below 2048 bits (the service's floor).
    pub fn rsa_public_key(&self) -> Result<rsa::PublicKey, CustodianError> {
        if self.bits < MIN_RSA_BITS {
            return Err(CustodianError::WeakKey {
                bits: self.bits,
                min: MIN_RSA_BITS,
            });
        }
        rsa::PublicKey::from_public_key_der(&self.public_key_der).map_err(|e| CustodianError::InvalidRsa(e.to_string()))
    }

    /// Whether `key` is the private half of this certificate's key.
    pub fn matches(&self, key: &rsa::PublicKey) -> bool {
        match rsa::PublicKey::from_public_key_der(&self.public_key_der) {
            Ok(mine) => mine.n() == key.n() && mine.e() == key.e(),
            Err(_) => false,
        }
    }

    /// Whether two certificates belong to one custodian: the same RSA
    /// modulus. The exponent does not count: whoever can decrypt for one
    /// exponent knows the factors, so holds the private key for any other.
    pub fn same_custodian_as(&self, other: &Certificate) -> bool {
        !self.modulus.is_empty() && self.modulus == other.modulus
    }

    /// Days from `now` until the certificate expires (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    /// What is wrong with the certificate at `now`, by the one policy every
    /// command applies: an RSA key below [`MIN_RSA_BITS`] (Azure refuses
    /// it), dates that do not cover `now`, or an end within
    /// `expiry_notice_days` ([`EXPIRY_NOTICE_DAYS`] or [`EXPIRY_RISK_DAYS`]).
    pub fn problems(&self, now: OffsetDateTime, expiry_notice_days: i64) -> Vec<CertIssue> {
        let mut issues = Vec::new();
        if self.bits < MIN_RSA_BITS {
            issues.push(CertIssue::WeakKey { bits: self.bits });
        }
        let days = self.days_left(now);
        if now < self.not_before {
            issues.push(CertIssue::NotYetValid);
        } else if days < 0 {
            issues.push(CertIssue::Expired);
        } else if days < expiry_notice_days {
            issues.push(CertIssue::ExpiresSoon { days });
        }
        issues
    }

    /// [`Certificate::problems`] with the custodian-facing notice period
    /// ([`EXPIRY_NOTICE_DAYS`]), each as a sentence about "it".
    pub fn warnings(&self, now: OffsetDateTime) -> Vec<String> {
        self.problems(now, EXPIRY_NOTICE_DAYS)
            .into_iter()
            .map(|issue| match issue {
                CertIssue::WeakKey { bits } => {
                    format!("its RSA key is {bits} bits; Azure refuses keys below {MIN_RSA_BITS}")
                }
                CertIssue::NotYetValid => format!("it is not valid before {}", rfc3339(self.not_before)),
                CertIssue::Expired => format!("it expired on {}", rfc3339(self.not_after)),
                CertIssue::ExpiresSoon { days } => format!("it expires in {days} days ({})", rfc3339(self.not_after)),
            })
            .collect()
    }

    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// The JWK that a download request or a transfer-key response carries.
    pub fn to_jwk(&self) -> Result<Jwk, CustodianError> {
        let key = self.rsa_public_key()?;
        let sha1 = sha1::Sha1::digest(&self.der);
        Ok(Jwk::for_certificate(
            &self.der,
            &key.n_bytes(),
            &key.e_bytes(),
            &sha1,
            &Sha256::digest(&self.der),
        ))
    }

    /// The certificate of a JWK, checked against the JWK's own `n` and `e`.
    pub fn from_jwk(jwk: &Jwk) -> Result<Certificate, CustodianError> {
        let der = jwk
            .certificate_der()
            .map_err(|e| CustodianError::NotACertificate(e.to_string()))?;
        let cert = Certificate::from_bytes(&der)?;
        let key = cert.rsa_public_key()?;
        let same = |field: &str, mine: &[u8]| -> Result<(), CustodianError> {
            let theirs = b64u_decode(field, "a JWK member").map_err(|e| CustodianError::InvalidRsa(e.to_string()))?;
            let strip = |b: &[u8]| {
                b.iter()
                    .position(|&x| x != 0)
                    .map(|i| b[i..].to_vec())
                    .unwrap_or_default()
            };
            if strip(&theirs) == strip(mine) {
                Ok(())
            } else {
                Err(CustodianError::InvalidRsa(
                    "the JWK's n/e do not match the key of its own certificate (x5c)".into(),
                ))
            }
        };
        same(&jwk.n, &key.n_bytes())?;
        same(&jwk.e, &key.e_bytes())?;
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::custodians;
    use time::Duration;

    /// One policy, two notice periods: the same certificate is flagged at
    /// 40 days left under the 90-day notice and not under the 30-day one;
    /// the dates' ends are judged the same way by both.
    #[test]
    fn problems_follow_one_policy_with_the_notice_given() {
        let c = &custodians()[0].cert;
        let soon = c.not_after - Duration::days(40);
        assert_eq!(
            c.problems(soon, EXPIRY_NOTICE_DAYS),
            [CertIssue::ExpiresSoon { days: 40 }]
        );
        assert!(c.problems(soon, EXPIRY_RISK_DAYS).is_empty());
        let after = c.not_after + Duration::days(2);
        assert_eq!(c.problems(after, EXPIRY_RISK_DAYS), [CertIssue::Expired]);
        let before = c.not_before - Duration::seconds(1);
        assert_eq!(c.problems(before, EXPIRY_NOTICE_DAYS), [CertIssue::NotYetValid]);
        assert!(CertIssue::Expired.is_out_of_dates() && !CertIssue::ExpiresSoon { days: 1 }.is_out_of_dates());
        let mut weak = c.clone();
        weak.bits = 1024;
        assert_eq!(
            weak.problems(soon, EXPIRY_RISK_DAYS),
            [CertIssue::WeakKey { bits: 1024 }]
        );
    }
}
