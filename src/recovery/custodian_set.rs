//! The checks a custodian set passes: one distinct person per certificate, the quorum within limits, every certificate in the security domain.

use crate::custodian::cert::Certificate;
use crate::error::{CertCause, CertProblem, Error, RecoveryError, Result};
use crate::format::limits::{self, Profile};
use crate::format::sdfile::SecurityDomain;

/// Refuses, before any secret is asked, a certificate that has no share in
/// `sd`: a custodian brought for the wrong security domain.
pub fn check_certs_have_shares(sd: &SecurityDomain, certs: &[(String, Certificate)]) -> Result<()> {
    match certs.iter().find(|(_, c)| sd.share_index(&c.x5t_256()).is_none()) {
        Some((label, c)) => Err(RecoveryError::CertNotInSd {
            cert: label.clone(),
            x5t_256: c.x5t_256(),
        }
        .into()),
        None => Ok(()),
    }
}

/// Why `certs` are not one custodian each, one line per pair: the same
/// certificate twice, or two certificates of one RSA modulus (whatever their
/// exponents), either of which gives one person two shares. The one
/// identity check behind split, rotate, download, check-certs and manifests.
pub fn custodian_identity_problems(certs: &[(String, Certificate)]) -> Vec<String> {
    custodian_identity_causes(certs).into_iter().map(|p| p.text).collect()
}

/// As [`custodian_identity_problems`], each with its cause, so each gets
/// its own advice.
pub fn custodian_identity_causes(certs: &[(String, Certificate)]) -> Vec<CertProblem> {
    let mut problems = Vec::new();
    for (i, (label, cert)) in certs.iter().enumerate() {
        if let Some((other, _)) = certs[..i].iter().find(|(_, c)| c.der() == cert.der()) {
            problems.push(CertProblem {
                cause: CertCause::Duplicate,
                text: format!("{label} is the same certificate as {other}; each custodian needs their own"),
            });
        } else if let Some((other, _)) = certs[..i].iter().find(|(_, c)| c.same_custodian_as(cert)) {
            problems.push(CertProblem {
                cause: CertCause::SameKey,
                text: format!(
                    "{label} has the same key as {other} (the same RSA modulus): one person would hold two shares; \
                     each custodian needs their own key"
                ),
            });
        }
    }
    problems
}

/// Refuses `certs` unless each is a distinct custodian (see
/// [`custodian_identity_problems`]).
pub fn check_distinct_custodians(certs: &[(String, Certificate)]) -> Result<()> {
    match custodian_identity_causes(certs).into_iter().next() {
        Some(problem) => Err(RecoveryError::CertsNotReady(vec![problem]).into()),
        None => Ok(()),
    }
}

/// The checks a new custodian set must pass before a split: N and M within
/// `profile`'s limits, one distinct RSA key of at least 2048 bits each.
/// Rotation runs them before any custodian is asked for a passphrase.
pub fn check_custodian_set(certs: &[(String, Certificate)], quorum: usize, profile: Profile) -> Result<()> {
    let refused = |cause, text| RecoveryError::CertsNotReady(vec![crate::error::CertProblem { cause, text }]);
    limits::check_quorum(certs.len(), quorum, profile).map_err(|why| refused(CertCause::Quorum, why))?;
    check_distinct_custodians(certs)?;
    for (label, cert) in certs {
        cert.rsa_public_key().map_err(|source| Error::Certificate {
            label: label.clone(),
            source,
        })?;
    }
    Ok(())
}
