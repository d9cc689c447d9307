//! The ceremony manifest: the parameters of a split, download or rotation
//! (N, M, every certificate thumbprint in order, the custodian set's epoch,
//! a random nonce), signed by each custodian before anything is split, so
//! the parameters cannot be swapped after they agreed (the rekey
//! "bait-and-switch").

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::signing;
use crate::crypto::b64::b64u;
use crate::crypto::rng::CryptoRng;
use crate::custodian::cert::Certificate;
use crate::custodian::signer::Signer;
use crate::error::{CertProblem, LogError, ParameterError, Result};

/// What the custodians agree to. Its compact JSON is what they sign.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Terms {
    pub version: u32,
    pub purpose: Purpose,
    pub custodians: usize,
    pub quorum: usize,
    /// x5t#S256 of every certificate, in share order.
    pub certificates: Vec<String>,
    /// The custodian set's number; each new set gets the next one.
    pub epoch: u64,
    pub nonce: String,
    pub created: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Signature {
    pub x5t_256: String,
    pub signature: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub terms: Terms,
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

/// The step a manifest's custodians agree to; on disk its lowercase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Purpose {
    Split,
    Download,
    Rotate,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [Purpose::Split, Purpose::Download, Purpose::Rotate];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Split => "split",
            Purpose::Download => "download",
            Purpose::Rotate => "rotate",
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
            format!("purpose '{s}' is not one of {}", all.join(", "))
        })
    }
}

impl Manifest {
    pub fn new_with_rng<R: CryptoRng + ?Sized>(
        rng: &mut R,
        purpose: Purpose,
        certs: &[Certificate],
        quorum: usize,
        epoch: u64,
        now: OffsetDateTime,
    ) -> Result<Manifest> {
        distinct(certs).map_err(ParameterError::SameCustodian)?;
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Ok(Manifest {
            terms: Terms {
                version: 1,
                purpose,
                custodians: certs.len(),
                quorum,
                certificates: certs.iter().map(Certificate::x5t_256).collect(),
                epoch,
                nonce: b64u(&nonce),
                created: now
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("UTC times format"),
            },
            signatures: Vec::new(),
        })
    }

    pub fn from_json(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        crate::format::json::from_slice(bytes)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }

    fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.terms).expect("plain data serialises")
    }

    /// Adds `cert`'s custodian's signature. They must be one of the
    /// manifest's custodians, and sign once.
    pub fn sign(&mut self, key: &dyn Signer, cert: &Certificate) -> Result<()> {
        if !cert.matches(&key.public_key()) {
            return Err(LogError::SignerKeyMismatch.into());
        }
        self.check_signer(cert)?;
        let x5t = cert.x5t_256();
        let signature = signing::sign(key, &self.signed_bytes()).map_err(|source| LogError::Sign {
            what: "the manifest".into(),
            source: Box::new(source),
        })?;
        self.signatures.push(Signature {
            x5t_256: x5t,
            signature,
        });
        Ok(())
    }

    /// Whether `cert`'s custodian may sign: one of the manifest's custodians
    /// who has not signed yet (checked before their key is opened too).
    pub fn check_signer(&self, cert: &Certificate) -> Result<()> {
        let x5t = cert.x5t_256();
        if !self.terms.certificates.contains(&x5t) {
            return Err(LogError::NotACustodian { x5t_256: x5t }.into());
        }
        if self.signatures.iter().any(|s| s.x5t_256 == x5t) {
            return Err(LogError::AlreadySigned { x5t_256: x5t }.into());
        }
        Ok(())
    }

    /// Refuses unless the manifest's terms are exactly these parameters and
    /// at least `min_signatures` distinct custodians of the set signed them.
    pub fn check(&self, purpose: Purpose, certs: &[Certificate], quorum: usize, min_signatures: usize) -> Result<()> {
        let refuse = |reason: String| Err(LogError::ManifestRefused { reason }.into());
        let t = &self.terms;
        if t.purpose != purpose {
            return refuse(format!("it was signed for a {}, not a {purpose}", t.purpose));
        }
        if t.custodians != certs.len() || t.quorum != quorum {
            return refuse(format!(
                "it says {} of {} custodians, but this {purpose} is {quorum} of {}",
                t.quorum,
                t.custodians,
                certs.len()
            ));
        }
        // Signatures are counted per certificate: one person's two would count twice.
        if let Err(problem) = distinct(certs) {
            return refuse(problem.text);
        }
        let given: Vec<String> = certs.iter().map(Certificate::x5t_256).collect();
        if given != t.certificates {
            return refuse("its certificates (or their order) differ from the ones given".into());
        }
        let message = self.signed_bytes();
        let mut valid: Vec<&str> = Vec::new();
        for s in &self.signatures {
            match certs.iter().find(|c| c.x5t_256() == s.x5t_256) {
                Some(cert) if signing::verify(cert, &message, &s.signature) => {
                    if !valid.contains(&s.x5t_256.as_str()) {
                        valid.push(&s.x5t_256);
                    }
                }
                _ => {
                    return refuse(format!(
                        "the signature of {} does not verify: the terms were changed after signing",
                        s.x5t_256
                    ))
                }
            }
        }
        if valid.len() < min_signatures {
            return refuse(format!(
                "{} custodian(s) signed it; {min_signatures} are required",
                valid.len()
            ));
        }
        Ok(())
    }
}

/// The shared identity check, certificates named by position and thumbprint.
fn distinct(certs: &[Certificate]) -> std::result::Result<(), CertProblem> {
    let labelled: Vec<(String, Certificate)> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("certificate {} ({})", i + 1, c.x5t_256()), c.clone()))
        .collect();
    match crate::recovery::custodian_identity_causes(&labelled).into_iter().next() {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{custodians, test_rng};

    fn certs(n: usize) -> Vec<Certificate> {
        custodians()[..n].iter().map(|c| c.cert.clone()).collect()
    }

    #[test]
    fn signed_terms_pass_and_swapped_terms_fail() {
        let c = custodians();
        let mut m = Manifest::new_with_rng(
            &mut test_rng(30),
            Purpose::Split,
            &certs(3),
            2,
            1,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert!(m.check(Purpose::Split, &certs(3), 2, 3).is_err(), "no signatures yet");
        for cu in &c[..3] {
            m.sign(&cu.key, &cu.cert).unwrap();
        }
        assert!(m.sign(&c[0].key, &c[0].cert).is_err(), "twice");
        assert!(m.sign(&c[3].key, &c[3].cert).is_err(), "outsider");
        let m = Manifest::from_json(m.to_json().as_bytes()).unwrap();
        m.check(Purpose::Split, &certs(3), 2, 3).unwrap();
        assert!(m.check(Purpose::Split, &certs(3), 3, 3).is_err(), "other quorum");
        assert!(m.check(Purpose::Rotate, &certs(3), 2, 3).is_err(), "other purpose");
        let swapped = vec![c[0].cert.clone(), c[1].cert.clone(), c[3].cert.clone()];
        assert!(m.check(Purpose::Split, &swapped, 2, 3).is_err(), "other certificate");
        let mut edited = m.clone();
        edited.terms.quorum = 3;
        assert!(
            edited.check(Purpose::Split, &certs(3), 3, 3).is_err(),
            "terms edited after signing"
        );
    }

    /// Regression: a twin certificate (custodian 0's modulus, another
    /// exponent) let custodian 0 sign twice and count as two custodians.
    #[test]
    fn one_modulus_signs_once() {
        let c = custodians();
        let twin = crate::test_support::twin_certificate(&c[0].key);
        let set = vec![c[0].cert.clone(), c[1].cert.clone(), twin.clone()];
        let now = OffsetDateTime::now_utc();
        let err = Manifest::new_with_rng(&mut test_rng(31), Purpose::Split, &set, 2, 1, now).unwrap_err();
        assert!(err.to_string().contains("certificate 3"), "{err}");
        // A manifest made (or edited) elsewhere is refused at the check too.
        let mut m = Manifest::new_with_rng(&mut test_rng(31), Purpose::Split, &certs(3), 2, 1, now).unwrap();
        m.terms.certificates[2] = twin.x5t_256();
        let twin_key = crate::test_support::twin_key(&c[0].key);
        m.sign(&c[0].key, &c[0].cert).unwrap();
        m.sign(&twin_key, &twin).unwrap();
        let err = m.check(Purpose::Split, &set, 2, 2).unwrap_err();
        assert!(err.to_string().contains("the same RSA modulus"), "{err}");
    }
}
