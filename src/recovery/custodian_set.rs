//! The checks a custodian set passes: one distinct person per certificate, the quorum within limits, every certificate in the security domain.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::custodian::cert::{rfc3339, CertIssue, Certificate, EXPIRY_NOTICE_DAYS};
use crate::custodian::KeyRef;
use crate::error::{CertCause, CertProblem, Error, RecoveryError, Result};
use crate::files::read_limited;
use crate::format::limits::{self, Profile, MAX_KEY_FILE_BYTES};
use crate::format::sdfile::SecurityDomain;

/// What `sd check-certs` finds in a custodian set before a split.
#[derive(Debug, Default)]
pub struct CertSetCheck {
    /// What stops the split, each with its cause (for its advice).
    pub problems: Vec<CertProblem>,
    /// What does not stop it (an expiry within the notice period), per file.
    pub warnings: Vec<String>,
}

impl CertSetCheck {
    /// The set's verdict as an error: every problem, or none.
    pub fn into_result(self) -> Result<Vec<String>> {
        if self.problems.is_empty() {
            Ok(self.warnings)
        } else {
            Err(RecoveryError::CertsNotReady(self.problems).into())
        }
    }
}

/// Checks `certs` (labelled by file) as the custodian set of a split with
/// `quorum` at `now`: the quorum within `profile`'s limits, one distinct
/// custodian per certificate, a usable RSA key and dates covering `now` for
/// each; an end within [`EXPIRY_NOTICE_DAYS`] is a warning.
pub fn check_certs(
    certs: &[(String, Certificate)],
    quorum: usize,
    profile: Profile,
    now: OffsetDateTime,
) -> CertSetCheck {
    let mut check = CertSetCheck::default();
    let problem = |cause, text| CertProblem { cause, text };
    if let Err(why) = limits::check_quorum(certs.len(), quorum, profile) {
        check.problems.push(problem(CertCause::Quorum, why));
    }
    check.problems.extend(custodian_identity_causes(certs));
    for (label, cert) in certs {
        if let Err(e) = cert.rsa_public_key() {
            check.problems.push(problem(CertCause::Key, format!("{label}: {e}")));
        }
        if cert
            .problems(now, EXPIRY_NOTICE_DAYS)
            .iter()
            .any(CertIssue::is_out_of_dates)
        {
            check.problems.push(problem(
                CertCause::NotValid,
                format!(
                    "{label}: it is not valid now ({} to {})",
                    rfc3339(cert.not_before),
                    rfc3339(cert.not_after)
                ),
            ));
        } else {
            check
                .warnings
                .extend(cert.warnings(now).into_iter().map(|w| format!("{label}: {w}")));
        }
    }
    check
}

/// Refuses, before any secret is asked, a key given twice among `keys`
/// (files or `pkcs11:` URIs): the same URI, the same file by another path,
/// or a copy of the same file. (The same key in two different files is
/// caught when they are opened.) One custodian must not count twice.
pub fn check_distinct_keys(keys: &[KeyRef]) -> Result<()> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for key in keys {
        let label = key.to_string();
        let mut ids: Vec<(String, &'static str)> = Vec::new();
        match key {
            // The canonical form: the same key however its attributes are ordered.
            KeyRef::Token(uri) => ids.push((format!("uri:{uri}"), "the same token key")),
            KeyRef::File(p) => {
                if let Ok(real) = std::fs::canonicalize(p) {
                    ids.push((format!("path:{}", real.display()), "the same file"));
                }
                // Unreadable files are left to the opening, which names why.
                if let Ok(bytes) = read_limited(p, 4 * MAX_KEY_FILE_BYTES, "key file") {
                    ids.push((
                        format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
                        "a copy of the same file",
                    ));
                }
            }
        }
        for (id, why) in ids {
            if let Some((first, _)) = seen.iter().find(|(_, i)| *i == id) {
                return Err(RecoveryError::DuplicateKey {
                    first: first.clone(),
                    second: label,
                    why,
                }
                .into());
            }
            seen.push((label.clone(), id));
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::custodians;

    fn labelled(n: usize) -> Vec<(String, Certificate)> {
        custodians()[..n]
            .iter()
            .map(|c| (c.name.clone(), c.cert.clone()))
            .collect()
    }

    #[test]
    fn a_key_given_twice_is_refused_by_path_copy_or_uri() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| KeyRef::File(dir.path().join(name));
        let (a, b, copy) = (file("a.key"), file("b.key"), file("copy.key"));
        for (k, bytes) in [(&a, b"key a"), (&b, b"key b"), (&copy, b"key a")] {
            std::fs::write(k.file().unwrap(), bytes).unwrap();
        }
        assert!(check_distinct_keys(&[a.clone(), b.clone()]).is_ok());
        let why = |keys: &[KeyRef]| match check_distinct_keys(keys) {
            Err(Error::Recovery(RecoveryError::DuplicateKey { why, .. })) => why,
            other => panic!("{other:?}"),
        };
        let again = KeyRef::File(dir.path().join(".").join("a.key"));
        assert_eq!(why(&[a.clone(), again]), "the same file");
        assert_eq!(why(&[a.clone(), b, copy]), "a copy of the same file");
        let uri = |text: &str| KeyRef::parse(text.as_ref()).unwrap();
        let (first, same) = (
            uri("pkcs11:token=t;object=k?module-path=/m.so"),
            uri("pkcs11:object=k;token=t?module-path=/m.so&pin-source=/run/pin"),
        );
        assert_eq!(why(&[first, same]), "the same token key");
    }

    #[test]
    fn check_certs_lists_every_problem_with_its_cause_and_warns_of_expiry() {
        let now = OffsetDateTime::now_utc();
        assert!(check_certs(&labelled(3), 2, Profile::Azure, now).into_result().is_ok());
        let mut certs = labelled(3);
        certs.push(("again.cer".into(), certs[0].1.clone()));
        let check = check_certs(&certs, 5, Profile::Azure, now);
        let causes: Vec<CertCause> = check.problems.iter().map(|p| p.cause).collect();
        assert_eq!(causes, [CertCause::Quorum, CertCause::Duplicate]);
        // The test certificates run 365 days: 300 days on, they warn; 400 days on, they stop the split.
        let later = check_certs(&labelled(3), 2, Profile::Azure, now + time::Duration::days(300));
        assert!(later.problems.is_empty());
        assert_eq!(later.warnings.len(), 3);
        assert!(
            later.warnings[0].starts_with("custodian0: it expires in"),
            "{:?}",
            later.warnings
        );
        let expired = check_certs(&labelled(3), 2, Profile::Azure, now + time::Duration::days(400));
        assert!(expired.problems.iter().all(|p| p.cause == CertCause::NotValid));
        assert!(matches!(
            expired.into_result(),
            Err(Error::Recovery(RecoveryError::CertsNotReady(p))) if p.len() == 3
        ));
    }
}
