//! The ceremony manifest: the parameters of a split, download or rotation
//! (N, M, every certificate thumbprint in order, the custodian set's epoch,
//! a random nonce), signed by each custodian before anything is split, so
//! the parameters cannot be swapped after they agreed (the rekey
//! "bait-and-switch"). A rotation's manifest also names the current
//! custodians, who open the old file: they sign it too, so the set that
//! hands the master key over agrees to whom.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::log::Line;
use super::signing;
use crate::crypto::b64::{b64u, b64u_decode};
use crate::crypto::rng::CryptoRng;
use crate::custodian::cert::Certificate;
use crate::custodian::signer::Signer;
use crate::error::{CertProblem, LogError, ManifestRefusal, ParameterError, Result};
use crate::format::sdfile::SecurityDomain;

/// What the custodians agree to. Its compact JSON is what they sign.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Terms {
    pub version: u32,
    pub purpose: Purpose,
    pub custodians: usize,
    pub quorum: usize,
    /// x5t#S256 of every certificate, in share order.
    pub certificates: Vec<String>,
    /// A rotation's current custodians (x5t#S256), who open the old file.
    /// Absent from other manifests, so their signed bytes are what earlier
    /// versions signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current_certificates: Vec<String>,
    /// The quorum of the security domain the current custodians open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_quorum: Option<usize>,
    /// The custodian set's number; each new set gets the next one.
    pub epoch: u64,
    pub nonce: String,
    pub created: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Signature {
    pub x5t_256: String,
    pub signature: String,
    /// A current custodian's certificate (base64url DER): the security
    /// domain holds only their thumbprints, so the signature carries what
    /// verifies it. Bound to `x5t_256`, which is the hash of these bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
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

/// The custodians who open a security domain: its shares' thumbprints, in
/// share order, and its quorum.
#[derive(Clone, Debug, PartialEq)]
pub struct CurrentSet {
    pub custodians: Vec<String>,
    pub quorum: usize,
}

impl CurrentSet {
    pub fn of(sd: &SecurityDomain) -> CurrentSet {
        CurrentSet {
            custodians: sd.shared_keys.enc_shares.iter().map(|s| s.x5t_256.clone()).collect(),
            quorum: sd.required(),
        }
    }
}

/// What a step expects of the manifest it is given.
pub struct Expected<'a> {
    pub purpose: Purpose,
    /// The step's (new) custodians, in share order, and their quorum.
    pub certs: &'a [Certificate],
    pub quorum: usize,
    /// How many of `certs` must have signed; never fewer than `quorum` count.
    pub signatures: usize,
    /// A rotation's current custodians, read from the file it opens.
    pub current: Option<&'a CurrentSet>,
}

/// What a checked manifest fixes for the step: its epoch and its nonce
/// (recorded in the log, so the same manifest cannot be used twice).
#[derive(Clone, Debug, PartialEq)]
pub struct Signed {
    pub epoch: u64,
    pub nonce: String,
    /// Distinct custodians whose signatures verified, per set.
    pub new_signers: usize,
    pub current_signers: usize,
}

impl Manifest {
    /// The terms of a split or download (`current` is `None`), or of a
    /// rotation to `certs` from the `current` certificates and quorum.
    pub fn new_with_rng<R: CryptoRng + ?Sized>(
        rng: &mut R,
        purpose: Purpose,
        certs: &[Certificate],
        quorum: usize,
        current: Option<(&[Certificate], usize)>,
        epoch: u64,
        now: OffsetDateTime,
    ) -> Result<Manifest> {
        distinct(certs).map_err(ParameterError::SameCustodian)?;
        let (current_certificates, current_quorum) = match (purpose, current) {
            (Purpose::Rotate, None) => return Err(ParameterError::NoCurrentSet.into()),
            (Purpose::Rotate, Some((set, m))) => {
                distinct(set).map_err(ParameterError::SameCurrentCustodian)?;
                if m == 0 || m > set.len() {
                    return Err(ParameterError::CurrentQuorum {
                        quorum: m,
                        custodians: set.len(),
                    }
                    .into());
                }
                (set.iter().map(Certificate::x5t_256).collect(), Some(m))
            }
            (_, Some(_)) => return Err(ParameterError::CurrentSetNotRotation { purpose }.into()),
            (_, None) => (Vec::new(), None),
        };
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Ok(Manifest {
            terms: Terms {
                version: 1,
                purpose,
                custodians: certs.len(),
                quorum,
                certificates: certs.iter().map(Certificate::x5t_256).collect(),
                current_certificates,
                current_quorum,
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
    /// manifest's custodians, new or current, and sign once (one signature
    /// counts for both sets when they are in both).
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
        let current = self.terms.current_certificates.contains(&x5t);
        self.signatures.push(Signature {
            x5t_256: x5t,
            signature,
            certificate: current.then(|| b64u(cert.der())),
        });
        Ok(())
    }

    /// Whether `cert`'s custodian may sign: one of the manifest's custodians
    /// (either set) who has not signed yet (checked before their key is
    /// opened too).
    pub fn check_signer(&self, cert: &Certificate) -> Result<()> {
        let x5t = cert.x5t_256();
        let t = &self.terms;
        if !t.certificates.contains(&x5t) && !t.current_certificates.contains(&x5t) {
            return Err(LogError::NotACustodian { x5t_256: x5t }.into());
        }
        if self.signatures.iter().any(|s| s.x5t_256 == x5t) {
            return Err(LogError::AlreadySigned { x5t_256: x5t }.into());
        }
        Ok(())
    }

    /// Refuses unless the manifest's terms are exactly the step's, enough
    /// distinct custodians of each set signed them, and the log (`lines`,
    /// verified) has neither used its nonce nor seen its epoch or a later one.
    pub fn check(&self, expected: &Expected<'_>, lines: &[Line]) -> std::result::Result<Signed, ManifestRefusal> {
        let t = &self.terms;
        let step = expected.purpose;
        if t.purpose != step {
            return Err(ManifestRefusal::Purpose {
                signed: t.purpose,
                step,
            });
        }
        if t.custodians != expected.certs.len() || t.quorum != expected.quorum {
            return Err(ManifestRefusal::Parameters {
                step,
                signed_quorum: t.quorum,
                signed_custodians: t.custodians,
                quorum: expected.quorum,
                custodians: expected.certs.len(),
            });
        }
        // Signatures are counted per certificate: one person's two would count twice.
        distinct(expected.certs).map_err(|p: CertProblem| ManifestRefusal::Identity(p.text))?;
        let given: Vec<String> = expected.certs.iter().map(Certificate::x5t_256).collect();
        if given != t.certificates {
            return Err(ManifestRefusal::Certificates {
                why: first_difference(&t.certificates, &given),
            });
        }
        match expected.current {
            Some(current) => check_current_terms(t, current)?,
            None if !t.current_certificates.is_empty() || t.current_quorum.is_some() => {
                return Err(ManifestRefusal::UnexpectedCurrentSet { step })
            }
            None => {}
        }
        let (new_signers, current_signers) = self.valid_signers(expected.certs)?;
        let needed = expected.signatures.max(expected.quorum);
        if new_signers.len() < needed {
            return Err(ManifestRefusal::TooFewSignatures {
                signed: new_signers.len(),
                needed,
                unsigned: unsigned(&t.certificates, &new_signers),
            });
        }
        if let Some(current) = expected.current {
            let signed: Vec<String> = current_signers.iter().map(|c| c.x5t_256()).collect();
            let labelled: Vec<(String, Certificate)> = current_signers
                .iter()
                .map(|c| (format!("current custodian {}", c.x5t_256()), c.clone()))
                .collect();
            if let Some(why) = crate::recovery::custodian_identity_problems(&labelled)
                .into_iter()
                .next()
            {
                return Err(ManifestRefusal::Identity(why));
            }
            if signed.len() < current.quorum {
                return Err(ManifestRefusal::TooFewCurrentSignatures {
                    unsigned: unsigned(&t.current_certificates, &signed),
                    signed,
                    needed: current.quorum,
                });
            }
        }
        check_against_log(t, lines)?;
        Ok(Signed {
            epoch: t.epoch,
            nonce: t.nonce.clone(),
            new_signers: new_signers.len(),
            current_signers: current_signers.len(),
        })
    }

    /// The distinct signers whose signatures verify: thumbprints of the new
    /// set, certificates of the current set. Any signature that does not
    /// verify, or is by someone in neither set, refuses the whole manifest.
    fn valid_signers(
        &self,
        certs: &[Certificate],
    ) -> std::result::Result<(Vec<String>, Vec<Certificate>), ManifestRefusal> {
        let t = &self.terms;
        let message = self.signed_bytes();
        let (mut new, mut current): (Vec<String>, Vec<Certificate>) = (Vec::new(), Vec::new());
        for s in &self.signatures {
            let x5t = &s.x5t_256;
            let in_new = certs.iter().find(|c| c.x5t_256() == *x5t);
            let in_current = t.current_certificates.contains(x5t);
            if in_new.is_none() && !in_current {
                return Err(ManifestRefusal::Outsider { x5t_256: x5t.clone() });
            }
            let cert = match (in_new, in_current) {
                (Some(cert), _) => cert.clone(),
                (None, _) => embedded_certificate(s)?,
            };
            if !signing::verify(&cert, &message, &s.signature) {
                return Err(ManifestRefusal::BadSignature { x5t_256: x5t.clone() });
            }
            if in_new.is_some() && !new.contains(x5t) {
                new.push(x5t.clone());
            }
            if in_current && !current.iter().any(|c| c.x5t_256() == *x5t) {
                current.push(cert);
            }
        }
        Ok((new, current))
    }
}

/// The certificate a current custodian's signature carries, which must be
/// the one its thumbprint names.
fn embedded_certificate(s: &Signature) -> std::result::Result<Certificate, ManifestRefusal> {
    let refuse = |why| ManifestRefusal::SignerCertificate {
        x5t_256: s.x5t_256.clone(),
        why,
    };
    let text = s
        .certificate
        .as_deref()
        .ok_or_else(|| refuse("carries no certificate to verify it with"))?;
    let cert = b64u_decode(text, "certificate")
        .ok()
        .and_then(|der| Certificate::from_bytes(&der).ok())
        .ok_or_else(|| refuse("carries a certificate that cannot be read"))?;
    if cert.x5t_256() != s.x5t_256 {
        return Err(refuse("carries another custodian's certificate"));
    }
    Ok(cert)
}

/// A rotation's current set as signed against the security domain's.
fn check_current_terms(t: &Terms, current: &CurrentSet) -> std::result::Result<(), ManifestRefusal> {
    let Some(signed_quorum) = t.current_quorum.filter(|_| !t.current_certificates.is_empty()) else {
        return Err(ManifestRefusal::NoCurrentSet);
    };
    let missing: Vec<String> = current
        .custodians
        .iter()
        .filter(|c| !t.current_certificates.contains(c))
        .cloned()
        .collect();
    let extra: Vec<String> = t
        .current_certificates
        .iter()
        .filter(|c| !current.custodians.contains(c))
        .cloned()
        .collect();
    // A thumbprint listed twice would make the sets equal but not the count.
    let listed_twice = t.current_certificates.len() != current.custodians.len();
    if !missing.is_empty() || !extra.is_empty() || listed_twice {
        return Err(ManifestRefusal::CurrentSetDiffers { missing, extra });
    }
    if signed_quorum != current.quorum {
        return Err(ManifestRefusal::CurrentQuorumDiffers {
            signed: signed_quorum,
            sd: current.quorum,
        });
    }
    Ok(())
}

/// The manifest's nonce unused and its epoch above every epoch a successful
/// step recorded.
fn check_against_log(t: &Terms, lines: &[Line]) -> std::result::Result<(), ManifestRefusal> {
    let ok = || lines.iter().filter(|l| l.entry.outcome.is_ok());
    if let Some(l) = ok().find(|l| l.entry.details.get("manifest_nonce").and_then(|n| n.as_str()) == Some(&t.nonce)) {
        return Err(ManifestRefusal::NonceUsed {
            line: l.seq,
            command: l.entry.command.to_string(),
        });
    }
    match highest_epoch(lines) {
        Some(highest) if t.epoch <= highest => Err(ManifestRefusal::EpochNotAbove {
            epoch: t.epoch,
            highest,
        }),
        _ => Ok(()),
    }
}

/// The highest custodian-set epoch that a successful step recorded.
pub fn highest_epoch(lines: &[Line]) -> Option<u64> {
    lines
        .iter()
        .filter(|l| l.entry.outcome.is_ok())
        .filter_map(|l| l.entry.details.get("epoch").and_then(|e| e.as_u64()))
        .max()
}

/// The thumbprints of `all` not in `signed`.
fn unsigned(all: &[String], signed: &[String]) -> Vec<String> {
    all.iter().filter(|x| !signed.contains(x)).cloned().collect()
}

/// Where two thumbprint lists first differ, by 1-based position.
fn first_difference(signed: &[String], given: &[String]) -> String {
    let at = signed.iter().zip(given).position(|(a, b)| a != b);
    match at {
        Some(i) => format!(
            "certificate {} is {} in the manifest but {} was given",
            i + 1,
            signed[i],
            given[i]
        ),
        None => format!("the manifest lists {}, {} were given", signed.len(), given.len()),
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
    use crate::error::Error;
    use crate::test_support::{custodians, test_rng};

    fn certs(n: usize) -> Vec<Certificate> {
        custodians()[..n].iter().map(|c| c.cert.clone()).collect()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// What a split of `n` custodians, quorum 2, expects of its manifest.
    fn split(certs: &[Certificate], signatures: usize) -> Expected<'_> {
        Expected {
            purpose: Purpose::Split,
            certs,
            quorum: 2,
            signatures,
            current: None,
        }
    }

    fn refusal(m: &Manifest, e: &Expected<'_>) -> String {
        m.check(e, &[]).unwrap_err().to_string()
    }

    #[test]
    fn signed_terms_pass_and_swapped_terms_fail() {
        let c = custodians();
        let set = certs(3);
        let mut m = Manifest::new_with_rng(&mut test_rng(30), Purpose::Split, &set, 2, None, 1, now()).unwrap();
        assert!(refusal(&m, &split(&set, 3)).contains("0 custodian(s) signed it; 3 are required"));
        for cu in &c[..3] {
            m.sign(&cu.key, &cu.cert).unwrap();
        }
        assert!(m.sign(&c[0].key, &c[0].cert).is_err(), "twice");
        assert!(m.sign(&c[3].key, &c[3].cert).is_err(), "outsider");
        let m = Manifest::from_json(m.to_json().as_bytes()).unwrap();
        let signed = m.check(&split(&set, 3), &[]).unwrap();
        assert_eq!((signed.new_signers, signed.current_signers), (3, 0));
        assert!(refusal(
            &m,
            &Expected {
                quorum: 3,
                ..split(&set, 3)
            }
        )
        .contains("2 of 3"));
        let as_rotation = Expected {
            purpose: Purpose::Rotate,
            ..split(&set, 3)
        };
        assert!(refusal(&m, &as_rotation).contains("signed for a split, not a rotate"));
        let swapped = vec![c[0].cert.clone(), c[1].cert.clone(), c[3].cert.clone()];
        let why = refusal(&m, &split(&swapped, 3));
        assert!(why.contains("certificate 3 is"), "{why}");
        let mut edited = m.clone();
        edited.terms.quorum = 3;
        let why = refusal(
            &edited,
            &Expected {
                quorum: 3,
                ..split(&set, 3)
            },
        );
        assert!(why.contains("does not verify"), "terms edited after signing: {why}");
    }

    /// Regression: a twin certificate (custodian 0's modulus, another
    /// exponent) let custodian 0 sign twice and count as two custodians.
    #[test]
    fn one_modulus_signs_once() {
        let c = custodians();
        let twin = crate::test_support::twin_certificate(&c[0].key);
        let set = vec![c[0].cert.clone(), c[1].cert.clone(), twin.clone()];
        let err = Manifest::new_with_rng(&mut test_rng(31), Purpose::Split, &set, 2, None, 1, now()).unwrap_err();
        assert!(err.to_string().contains("certificate 3"), "{err}");
        // A manifest made (or edited) elsewhere is refused at the check too.
        let mut m = Manifest::new_with_rng(&mut test_rng(31), Purpose::Split, &certs(3), 2, None, 1, now()).unwrap();
        m.terms.certificates[2] = twin.x5t_256();
        let twin_key = crate::test_support::twin_key(&c[0].key);
        m.sign(&c[0].key, &c[0].cert).unwrap();
        m.sign(&twin_key, &twin).unwrap();
        assert!(refusal(&m, &split(&set, 2)).contains("the same RSA modulus"));
    }

    /// A manifest as earlier versions wrote it (no current set): its terms
    /// read back and serialise to exactly the bytes its custodians signed,
    /// so a signature made then still verifies.
    #[test]
    fn manifests_without_a_current_set_sign_the_same_bytes_as_before() {
        let text = r#"{
  "terms": {
    "version": 1,
    "purpose": "download",
    "custodians": 3,
    "quorum": 2,
    "certificates": [
      "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
      "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8",
      "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8"
    ],
    "epoch": 1,
    "nonce": "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU",
    "created": "2026-03-01T09:00:00Z"
  },
  "signatures": [
    {
      "x5t_256": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
      "signature": "c2lnbmF0dXJl"
    }
  ]
}"#;
        let m = Manifest::from_json(text.as_bytes()).unwrap();
        assert_eq!(m.to_json(), text, "rewritten by `manifest sign` unchanged");
        assert_eq!(
            String::from_utf8(m.signed_bytes()).unwrap(),
            r#"{"version":1,"purpose":"download","custodians":3,"quorum":2,"certificates":["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8","QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8"],"epoch":1,"nonce":"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU","created":"2026-03-01T09:00:00Z"}"#
        );
        // And a split made today signs what it would have signed before.
        let fresh = Manifest::new_with_rng(&mut test_rng(32), Purpose::Split, &certs(3), 2, None, 1, now()).unwrap();
        let bytes = String::from_utf8(fresh.signed_bytes()).unwrap();
        assert!(!bytes.contains("current"), "{bytes}");
    }

    /// New set c0..c2 (quorum 2) from current set c2..c4 (quorum 2):
    /// custodian 2 is in both.
    fn rotation() -> (Manifest, Vec<Certificate>, CurrentSet) {
        let all = certs(5);
        let (new, current) = (all[..3].to_vec(), all[2..].to_vec());
        let m = Manifest::new_with_rng(
            &mut test_rng(33),
            Purpose::Rotate,
            &new,
            2,
            Some((&current, 2)),
            2,
            now(),
        )
        .unwrap();
        let set = CurrentSet {
            custodians: current.iter().map(Certificate::x5t_256).collect(),
            quorum: 2,
        };
        (m, new, set)
    }

    fn rotate<'a>(new: &'a [Certificate], current: &'a CurrentSet) -> Expected<'a> {
        Expected {
            purpose: Purpose::Rotate,
            certs: new,
            quorum: 2,
            signatures: 3,
            current: Some(current),
        }
    }

    fn signed_by(m: &mut Manifest, who: &[usize]) {
        let c = custodians();
        for &i in who {
            m.sign(&c[i].key, &c[i].cert).unwrap();
        }
    }

    #[test]
    fn a_rotation_needs_both_sets_and_one_in_both_signs_once() {
        let (mut m, new, current) = rotation();
        let c = custodians();
        // Custodian 2 is in both sets: one signature, counted for both.
        signed_by(&mut m, &[0, 1, 2, 3]);
        assert!(m.sign(&c[2].key, &c[2].cert).is_err(), "once, though in both sets");
        assert!(
            m.signatures[0].certificate.is_none(),
            "a new custodian's certificate is given to the step"
        );
        assert!(m.signatures[2].certificate.is_some() && m.signatures[3].certificate.is_some());
        let m = Manifest::from_json(m.to_json().as_bytes()).unwrap();
        let signed = m.check(&rotate(&new, &current), &[]).unwrap();
        assert_eq!((signed.new_signers, signed.current_signers, signed.epoch), (3, 2, 2));
    }

    #[test]
    fn an_outsider_cannot_sign_or_be_slipped_in() {
        let (mut m, new, current) = rotation();
        let outsider = crate::test_support::twin_certificate(&custodians()[0].key);
        let twin_key = crate::test_support::twin_key(&custodians()[0].key);
        let err = m.sign(&twin_key, &outsider).unwrap_err();
        assert!(matches!(err, Error::Log(LogError::NotACustodian { .. })), "{err}");
        signed_by(&mut m, &[0, 1, 2, 3]);
        // A signature added by hand, by someone in neither set, refuses the manifest.
        let mut slipped = m.clone();
        slipped.signatures.push(Signature {
            x5t_256: outsider.x5t_256(),
            signature: signing::sign(&twin_key, &m.signed_bytes()).unwrap(),
            certificate: Some(b64u(outsider.der())),
        });
        let why = refusal(&slipped, &rotate(&new, &current));
        assert!(
            why.contains(&outsider.x5t_256()) && why.contains("none of its custodian sets"),
            "{why}"
        );
    }

    #[test]
    fn a_rotation_without_the_current_set_is_refused() {
        let (_, new, current) = rotation();
        let err = Manifest::new_with_rng(&mut test_rng(34), Purpose::Rotate, &new, 2, None, 2, now()).unwrap_err();
        assert!(err.to_string().contains("current custodians"), "{err}");
        let split_with_current =
            Manifest::new_with_rng(&mut test_rng(34), Purpose::Split, &new, 2, Some((&new, 2)), 2, now());
        assert!(split_with_current
            .unwrap_err()
            .to_string()
            .contains("only a rotate manifest"));
        // A rotate manifest as an earlier version made it: new set only.
        let (mut m, _, _) = rotation();
        m.terms.current_certificates.clear();
        m.terms.current_quorum = None;
        signed_by(&mut m, &[0, 1, 2]);
        let why = m.check(&rotate(&new, &current), &[]).unwrap_err();
        assert!(matches!(why, ManifestRefusal::NoCurrentSet), "{why}");
    }

    #[test]
    fn the_current_set_must_be_the_security_domains() {
        let (mut m, new, current) = rotation();
        signed_by(&mut m, &[0, 1, 2, 3]);
        let c = custodians();
        // The security domain is really c1..c3, quorum 2: c1 is not named, c4 is not its.
        let other = CurrentSet {
            custodians: [1, 2, 3].iter().map(|&i| c[i].cert.x5t_256()).collect(),
            quorum: 2,
        };
        let why = refusal(&m, &rotate(&new, &other));
        assert!(
            why.contains(&format!(
                "in the security domain but not the manifest: {}",
                c[1].cert.x5t_256()
            )) && why.contains(&format!(
                "in the manifest but not the security domain: {}",
                c[4].cert.x5t_256()
            )),
            "{why}"
        );
        let other_quorum = CurrentSet {
            quorum: 3,
            ..current.clone()
        };
        let why = refusal(&m, &rotate(&new, &other_quorum));
        assert!(
            why.contains("current quorum is 2, but the security domain's is 3"),
            "{why}"
        );
    }

    #[test]
    fn too_few_current_signatures_are_refused_by_name() {
        let (mut m, new, current) = rotation();
        let c = custodians();
        // All three new custodians, but only one current one (custodian 2, in both).
        signed_by(&mut m, &[0, 1, 2]);
        let why = refusal(&m, &rotate(&new, &current));
        assert!(why.contains("1 current custodian(s) signed it"), "{why}");
        assert!(
            why.contains(&c[3].cert.x5t_256()) && why.contains(&c[4].cert.x5t_256()),
            "{why}"
        );
        // A current custodian's signature without its certificate cannot count.
        signed_by(&mut m, &[3]);
        let mut bare = m.clone();
        bare.signatures[3].certificate = None;
        assert!(refusal(&bare, &rotate(&new, &current)).contains("carries no certificate"));
        let mut swapped = m.clone();
        swapped.signatures[3].certificate = Some(b64u(c[4].cert.der()));
        assert!(refusal(&swapped, &rotate(&new, &current)).contains("another custodian's certificate"));
        m.check(&rotate(&new, &current), &[]).unwrap();
    }

    #[test]
    fn editing_the_current_set_after_signing_breaks_every_signature() {
        let (mut m, new, current) = rotation();
        signed_by(&mut m, &[0, 1, 2, 3, 4]);
        let mut edited = m.clone();
        edited.terms.current_quorum = Some(3);
        let three = CurrentSet {
            quorum: 3,
            ..current.clone()
        };
        assert!(refusal(&edited, &rotate(&new, &three)).contains("does not verify"));
        let mut dropped = m.clone();
        dropped.terms.current_certificates.pop();
        let two = CurrentSet {
            custodians: current.custodians[..2].to_vec(),
            quorum: 2,
        };
        assert!(refusal(&dropped, &rotate(&new, &two)).contains("does not verify"));
    }

    #[test]
    fn the_log_refuses_a_used_nonce_and_an_old_epoch() {
        use crate::ceremony::log::{Entry, Outcome, Step};
        let (mut m, new, current) = rotation();
        signed_by(&mut m, &[0, 1, 2, 3]);
        let line = |seq, details| Line {
            seq,
            time: String::new(),
            prev: String::new(),
            entry: Entry {
                command: Step::Rotate,
                outcome: Outcome::Ok,
                details,
                ..Default::default()
            },
        };
        let used = [line(
            4,
            serde_json::json!({"epoch": 1, "manifest_nonce": m.terms.nonce}),
        )];
        let why = m.check(&rotate(&new, &current), &used).unwrap_err().to_string();
        assert!(why.contains("already used by line 4"), "{why}");
        let later = [line(1, serde_json::json!({"epoch": 2}))];
        let why = m.check(&rotate(&new, &current), &later).unwrap_err().to_string();
        assert!(why.contains("already has epoch 2"), "{why}");
        // A failed step's epoch and nonce do not count.
        let mut failed = line(1, serde_json::json!({"epoch": 9, "manifest_nonce": m.terms.nonce}));
        failed.entry.outcome = Outcome::Failed("refused".into());
        m.check(&rotate(&new, &current), &[failed]).unwrap();
    }
}
