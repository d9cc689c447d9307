//! The witness's check after a download: the security domain that came back
//! holds exactly what the custodians signed in the manifest — N, M and each
//! share's certificate thumbprint, in order — compared mechanically, line
//! by line, rather than read off two screens at 2 a.m.

use super::manifest::{CurrentSet, Expected, Manifest};
use crate::custodian::cert::Certificate;
use crate::error::{Error, LogError, Result};
use crate::format::sdfile::SecurityDomain;

/// One compared value: what the manifest says and what the file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// `custodians (N)`, `quorum (M)`, `share 1 certificate`, …
    pub what: String,
    pub manifest: String,
    pub found: String,
}

impl Comparison {
    pub fn matches(&self) -> bool {
        self.manifest == self.found
    }
}

/// The certificates `given`, in the manifest's order; refused naming the
/// first certificate the manifest lists and `given` lacks (its signature
/// could not be verified without it).
pub fn manifest_certificates(m: &Manifest, given: &[Certificate]) -> Result<Vec<Certificate>> {
    m.terms
        .certificates
        .iter()
        .enumerate()
        .map(|(i, x5t)| {
            given.iter().find(|c| &c.x5t_256() == x5t).cloned().ok_or_else(|| {
                LogError::ManifestCertificateMissing {
                    position: i + 1,
                    x5t_256: x5t.clone(),
                }
                .into()
            })
        })
        .collect()
}

/// Verifies the manifest's signatures with `given` ([`Manifest::check`]
/// against its own terms: at least `min_signatures` custodians, never fewer
/// than M), then compares `sd` with it. A signature that does not verify is
/// an error; a difference is a [`Comparison`] that does not match (see
/// [`differences`]).
pub fn compare(
    m: &Manifest,
    given: &[Certificate],
    min_signatures: Option<usize>,
    sd: &SecurityDomain,
) -> Result<Vec<Comparison>> {
    let certs = manifest_certificates(m, given)?;
    let t = &m.terms;
    let needed = min_signatures.unwrap_or(t.custodians).max(t.quorum);
    // A rotation's current set is checked against the manifest's own terms:
    // the file inspected is the new one, which no longer names them.
    let current = t.current_quorum.map(|quorum| CurrentSet {
        custodians: t.current_certificates.clone(),
        quorum,
    });
    let expected = Expected {
        purpose: t.purpose,
        certs: &certs,
        quorum: t.quorum,
        signatures: needed,
        current: current.as_ref(),
    };
    // No log lines: the download that used this manifest's nonce is what is inspected.
    m.check(&expected, &[]).map_err(Error::manifest_refused)?;
    let mut out = vec![
        Comparison {
            what: "custodians (N)".into(),
            manifest: t.custodians.to_string(),
            found: sd.share_count().to_string(),
        },
        Comparison {
            what: "quorum (M)".into(),
            manifest: t.quorum.to_string(),
            found: sd.required().to_string(),
        },
    ];
    let shares = &sd.shared_keys.enc_shares;
    let none = || "(none)".to_string();
    for i in 0..t.certificates.len().max(shares.len()) {
        out.push(Comparison {
            what: format!("share {} certificate", i + 1),
            manifest: t.certificates.get(i).cloned().unwrap_or_else(none),
            found: shares.get(i).map(|s| s.x5t_256.clone()).unwrap_or_else(none),
        });
    }
    Ok(out)
}

/// Refuses when any comparison differs, naming each one.
pub fn differences(compared: &[Comparison]) -> Result<()> {
    let differ: Vec<String> = compared
        .iter()
        .filter(|c| !c.matches())
        .map(|c| format!("{}: manifest {}, security domain {}", c.what, c.manifest, c.found))
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(LogError::DiffersFromManifest { differences: differ }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ceremony::manifest::Purpose;
    use crate::format::limits::Profile;
    use crate::recovery;
    use crate::test_support::{custodians, test_rng};
    use time::OffsetDateTime;

    fn certs(idx: &[usize]) -> Vec<Certificate> {
        idx.iter().map(|&i| custodians()[i].cert.clone()).collect()
    }

    fn sd(idx: &[usize], quorum: usize) -> SecurityDomain {
        let mut rng = test_rng(60);
        let master = crate::crypto::secret::MasterKey::generate_with_rng(&mut rng);
        let items = recovery::random_items_with_rng(&mut rng);
        let named: Vec<_> = idx
            .iter()
            .map(|&i| (custodians()[i].name.clone(), custodians()[i].cert.clone()))
            .collect();
        recovery::split_with_rng(&mut rng, &master, &items, &named, quorum, Profile::Local).unwrap()
    }

    fn signed(idx: &[usize], quorum: usize) -> Manifest {
        let now = OffsetDateTime::now_utc();
        let mut m =
            Manifest::new_with_rng(&mut test_rng(61), Purpose::Download, &certs(idx), quorum, None, 1, now).unwrap();
        for &i in idx {
            m.sign(&custodians()[i].key, &custodians()[i].cert).unwrap();
        }
        m
    }

    #[test]
    fn a_matching_download_compares_equal_line_by_line() {
        let m = signed(&[0, 1, 2], 2);
        let c = compare(&m, &certs(&[2, 0, 1]), None, &sd(&[0, 1, 2], 2)).unwrap();
        assert_eq!(c.len(), 5);
        assert!(c.iter().all(Comparison::matches), "{c:?}");
        differences(&c).unwrap();
    }

    #[test]
    fn each_kind_of_difference_is_named() {
        let m = signed(&[0, 1, 2], 2);
        let given = certs(&[0, 1, 2, 3]);
        let differ = |sd: &SecurityDomain| {
            let c = compare(&m, &given, None, sd).unwrap();
            differences(&c).unwrap_err().to_string()
        };
        let e = differ(&sd(&[0, 1, 2], 3));
        assert!(e.contains("quorum (M): manifest 2, security domain 3"), "{e}");
        assert!(!e.contains("share"), "{e}");
        let e = differ(&sd(&[0, 2, 1], 2));
        assert!(
            e.contains("share 2 certificate") && e.contains("share 3 certificate"),
            "{e}"
        );
        assert!(!e.contains("share 1"), "{e}");
        let e = differ(&sd(&[0, 1, 2, 3], 2));
        assert!(e.contains("custodians (N): manifest 3, security domain 4"), "{e}");
        assert!(e.contains("share 4 certificate: manifest (none)"), "{e}");
    }

    #[test]
    fn a_bad_signature_or_a_missing_certificate_is_refused_before_comparing() {
        let mut m = signed(&[0, 1, 2], 2);
        let e = compare(&m, &certs(&[0, 2]), None, &sd(&[0, 1, 2], 2)).unwrap_err();
        assert!(
            matches!(
                &e,
                crate::error::Error::Log(LogError::ManifestCertificateMissing { position: 2, .. })
            ),
            "{e}"
        );
        m.signatures[1].signature = m.signatures[0].signature.clone();
        let e = compare(&m, &certs(&[0, 1, 2]), None, &sd(&[0, 1, 2], 2)).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        // Two of three signatures: enough only when asked for two.
        let mut m = signed(&[0, 1, 2], 2);
        m.signatures.pop();
        assert!(compare(&m, &certs(&[0, 1, 2]), None, &sd(&[0, 1, 2], 2)).is_err());
        compare(&m, &certs(&[0, 1, 2]), Some(2), &sd(&[0, 1, 2], 2)).unwrap();
        m.signatures.pop();
        let e = compare(&m, &certs(&[0, 1, 2]), Some(1), &sd(&[0, 1, 2], 2)).unwrap_err();
        assert!(
            e.to_string().contains("1 custodian(s) signed it; 2 are required"),
            "never fewer than M: {e}"
        );
    }
}
