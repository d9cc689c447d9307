//! A custodian's proof of possession (`custodian verify`): their key opens
//! a well-formed share addressed to it. No quorum, nothing reconstructed.

use super::{open_share, CustodianKey};
use crate::custodian::cert::Certificate;
use crate::error::{Error, Result};
use crate::format::sdfile::SecurityDomain;

/// What a proof of possession established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Possession {
    /// The share's x coordinate.
    pub x: u8,
    /// Its 1-based position in the security domain.
    pub position: usize,
    /// The security domain's share count N.
    pub of: usize,
    /// Its quorum M.
    pub required: usize,
    /// The certificate the share is addressed to.
    pub x5t_256: String,
    /// The custodian as messages name them (key, and certificate if any).
    pub who: String,
}

/// Proves that `key` opens its share of `sd`. `given` is a certificate the
/// custodian named for this key (its label and itself): it must be the
/// key's own, so that a certificate lying beside the key cannot stand in
/// for the one they meant; `key_label` names the key as they gave it.
pub fn prove_possession(
    sd: &SecurityDomain,
    key: &CustodianKey,
    key_label: &str,
    given: Option<(&str, &Certificate)>,
) -> Result<Possession> {
    if let Some((cert_label, cert)) = given {
        if !cert.matches(&key.public_key) {
            return Err(Error::KeyCertMismatch {
                key: key_label.to_string(),
                cert: cert_label.to_string(),
            });
        }
    }
    let opened = open_share(sd, key)?;
    Ok(Possession {
        x: opened.x(),
        position: opened.index + 1,
        of: sd.share_count(),
        required: sd.required(),
        x5t_256: opened.x5t_256.clone(),
        who: key.who(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RecoveryError;
    use crate::format::limits::Profile;
    use crate::recovery::{random_items_with_rng, split_with_rng};
    use crate::test_support::{custodians, test_rng};

    fn sd_for(custodians_in: &[usize]) -> SecurityDomain {
        let mut rng = test_rng(60);
        let master = crate::crypto::secret::MasterKey::generate_with_rng(&mut rng);
        let items = random_items_with_rng(&mut rng);
        let certs: Vec<(String, Certificate)> = custodians_in
            .iter()
            .map(|&i| (custodians()[i].name.clone(), custodians()[i].cert.clone()))
            .collect();
        split_with_rng(&mut rng, &master, &items, &certs, 2, Profile::Azure).unwrap()
    }

    fn key(i: usize, with_cert: bool) -> CustodianKey {
        let c = &custodians()[i];
        CustodianKey::from_rsa(
            format!("{}.key", c.name),
            c.key.clone(),
            with_cert.then(|| (format!("{}.cer", c.name), c.cert.clone())),
        )
    }

    #[test]
    fn a_key_proves_its_own_share_with_or_without_its_certificate() {
        let sd = sd_for(&[0, 1, 2]);
        let c = &custodians()[1];
        for with_cert in [false, true] {
            let p = prove_possession(&sd, &key(1, with_cert), "k", Some(("c", &c.cert))).unwrap();
            assert_eq!((p.position, p.of, p.required), (2, 3, 2));
            assert_eq!(p.x5t_256, c.cert.x5t_256());
            assert_eq!(p.x, open_share(&sd, &key(1, false)).unwrap().x());
            assert_eq!(p.who, key(1, with_cert).who());
        }
    }

    #[test]
    fn another_custodians_certificate_is_refused_by_the_labels_given() {
        let sd = sd_for(&[0, 1, 2]);
        let other = &custodians()[2].cert;
        let refused = prove_possession(&sd, &key(1, false), "alice.key", Some(("bob.cer", other)));
        assert!(
            matches!(refused, Err(Error::KeyCertMismatch { ref key, ref cert }) if key == "alice.key" && cert == "bob.cer"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_key_without_a_share_proves_nothing() {
        let sd = sd_for(&[0, 1, 2]);
        let outsider = custodians().len() - 1;
        assert!(outsider > 2, "the test custodians include one outside the set");
        let refused = prove_possession(&sd, &key(outsider, true), "k", None);
        assert!(
            matches!(refused, Err(Error::Recovery(RecoveryError::CertNotInSd { .. }))),
            "{refused:?}"
        );
    }
}
