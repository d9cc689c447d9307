//! The recovery engine: open custodians' shares, rebuild the master key,
//! open the data items, and re-encrypt them — for a target instance (the
//! restore blob, security-domain(5), RESTORE BLOB) or for a new custodian set (split, rotate).
//!
//! The master key lives only in a [`MasterKey`](crate::crypto::secret::MasterKey)
//! (wiped on drop); shares only in [`Share`](crate::crypto::shamir::Share)s. Nothing here writes files.

mod blob;
mod custodian_set;
mod items;
mod possession;
mod quorum;
mod split;

pub use blob::*;
pub use custodian_set::*;
pub use items::*;
pub use possession::*;
pub use quorum::*;
pub use split::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::jwe;
    use crate::crypto::secret::MasterKey;
    use crate::crypto::shamir;
    use crate::custodian::cert::Certificate;
    use crate::error::{Error, RecoveryError};
    use crate::format::limits::Profile;
    use crate::format::restore_blob::RestoreBlob;
    use crate::format::sdfile::SecurityDomain;
    use crate::test_support::{custodians, test_rng};

    fn setup(n: usize, m: usize) -> (SecurityDomain, MasterKey, Vec<PlainItem>) {
        let mut rng = test_rng(20);
        let master = MasterKey::generate_with_rng(&mut rng);
        let items = random_items_with_rng(&mut rng);
        let certs: Vec<(String, Certificate)> = custodians()[..n]
            .iter()
            .map(|c| (c.name.clone(), c.cert.clone()))
            .collect();
        let sd = split_with_rng(&mut rng, &master, &items, &certs, m, Profile::Azure).unwrap();
        (sd, master, items)
    }

    fn key(i: usize, with_cert: bool) -> CustodianKey {
        let c = &custodians()[i];
        CustodianKey::from_rsa(
            c.name.clone(),
            c.key.clone(),
            with_cert.then(|| (format!("{}.cer", c.name), c.cert.clone())),
        )
    }

    /// A foreign file whose shares 0 and 1 go to one RSA modulus (under two
    /// exponents, so two different public keys and certificates): the key
    /// holder opens both, and must still count once.
    #[test]
    fn two_shares_of_one_modulus_count_once() {
        use rsa::traits::PrivateKeyParts;
        let (mut sd, _, _) = setup(3, 2);
        let c = custodians();
        let primes: Vec<_> = c[0].key.primes().iter().map(|p| p.as_ref().clone()).collect();
        let twin =
            rsa::PrivateKey::from_p_q(primes[0].clone(), primes[1].clone(), rsa::BoxedUint::from(65539u32)).unwrap();
        let mut rng = test_rng(31);
        let twin_cert = crate::custodian::keygen::self_signed_certificate_with_rng(
            &mut rng,
            &twin,
            "twin",
            365,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let share1 = sd.share_jwe(1).unwrap().decrypt_with(&c[1].key).unwrap();
        sd.shared_keys.enc_shares[1] = crate::format::sdfile::EncShare {
            enc_key: jwe::encrypt_rsa_oaep256_with_rng(&mut rng, &twin.to_public_key(), share1.expose()).unwrap(),
            x5t_256: twin_cert.x5t_256(),
        };
        let mut q = Quorum::new(&sd);
        q.add(&key(0, true)).unwrap();
        let again = CustodianKey::from_rsa("twin.key", twin, Some(("twin.cer".into(), twin_cert)));
        let err = q.add(&again).map(|_| ()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::Recovery(RecoveryError::DuplicateCustodian { .. })),
            "{text}"
        );
        assert!(text.contains("twin.key") && text.contains(&c[0].name), "{text}");
        assert!(!q.is_met());
    }

    #[test]
    fn quorum_recovers_and_blob_opens_to_the_same_contents() {
        let (sd, master, items) = setup(3, 2);
        let sd = SecurityDomain::from_json(sd.to_json().as_bytes()).unwrap();
        let mut q = Quorum::new(&sd);
        q.add(&key(2, true)).unwrap();
        assert!(!q.is_met());
        q.add(&key(0, false)).unwrap();
        assert!(q.is_met());
        let rec = q.finish().unwrap();
        assert_eq!(rec.master_key.expose(), master.expose());
        assert_eq!(contents_fingerprint(&rec.items), contents_fingerprint(&items));

        let exchange = &custodians()[4];
        let blob = build_restore_blob_with_rng(&mut test_rng(21), &rec.items, &exchange.cert).unwrap();
        let blob = RestoreBlob::from_json(blob.to_json().as_bytes()).unwrap();
        let opened = open_restore_blob(&blob, &exchange.key, &exchange.cert).unwrap();
        assert_eq!(contents_fingerprint(&opened), contents_fingerprint(&items));
        let text = blob.to_json();
        assert!(!text.contains(&hex::encode(master.expose())));
        // Another instance's exchange key is refused by thumbprint.
        let other = &custodians()[3];
        assert!(matches!(
            open_restore_blob(&blob, &other.key, &other.cert),
            Err(Error::Recovery(RecoveryError::WrongExchangeKey { .. }))
        ));
    }

    /// A custodian whose key opens no share is skipped and the next one
    /// tried; a key set up wrongly stops the gathering before anyone else is
    /// asked; keys after the quorum is met are never opened.
    #[test]
    fn gathering_skips_a_custodian_but_stops_on_a_setup_error() {
        let (sd, master, _) = setup(3, 2);
        let mut asked = Vec::new();
        let mut events = Vec::new();
        let rec = gather_quorum(
            &sd,
            4,
            |i| {
                asked.push(i);
                Ok(key([3, 0, 1, 2][i], false))
            },
            |e| events.push(format!("{e:?}")),
        )
        .unwrap();
        assert_eq!(rec.master_key.expose(), master.expose());
        assert_eq!(asked, [0, 1, 2]);
        assert!(events[0].starts_with("Skipped { index: 0"), "{events:?}");
        assert!(events[1].starts_with("Opened { x: 1"), "{events:?}");
        assert_eq!(events[3], "Met { remaining: 1 }");

        let mut asked = Vec::new();
        let err = gather_quorum(
            &sd,
            3,
            |i| {
                asked.push(i);
                if i == 1 {
                    Err(Error::KeyCertMismatch {
                        key: "c1.key".into(),
                        cert: "c1.cer".into(),
                    }
                    .into())
                } else {
                    Ok(key(i, false))
                }
            },
            |_| {},
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::KeyCertMismatch { .. }));
        assert_eq!(asked, [0, 1]);

        // The opener's own stop (a passphrase option that cannot work) stops too.
        let mut asked = Vec::new();
        let err = gather_quorum(
            &sd,
            3,
            |i| {
                asked.push(i);
                Err(OpenFailure::Stop(Error::Usage(
                    "--passphrase-file given 5 times".into(),
                )))
            },
            |_| {},
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::Usage(_)));
        assert_eq!(asked, [0]);
    }

    #[test]
    fn too_few_custodians_name_who_opened() {
        let (sd, _, _) = setup(3, 3);
        let mut q = Quorum::new(&sd);
        q.add(&key(0, true)).unwrap();
        let err = q.add(&key(3, false)).err().unwrap();
        assert!(matches!(err, Error::Recovery(RecoveryError::KeyOpensNoShare { .. })));
        q.record_failure(&err);
        let err = q.finish().err().unwrap();
        let msg = err.to_string();
        assert!(matches!(
            err,
            Error::Recovery(RecoveryError::NotEnoughShares { needed: 3, .. })
        ));
        assert!(
            msg.contains("1 share(s) opened") && msg.contains(&custodians()[0].name) && msg.contains("3 needed"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_pairings_are_named() {
        let (sd, _, _) = setup(3, 2);
        let c = &custodians();
        let mismatched = CustodianKey::from_rsa("k0", c[0].key.clone(), Some(("c1.cer".into(), c[1].cert.clone())));
        assert!(matches!(
            open_share(&sd, &mismatched),
            Err(Error::KeyCertMismatch { .. })
        ));
        let outsider = CustodianKey::from_rsa("k3", c[3].key.clone(), Some(("c3.cer".into(), c[3].cert.clone())));
        assert!(matches!(
            open_share(&sd, &outsider),
            Err(Error::Recovery(RecoveryError::CertNotInSd { .. }))
        ));
        let mut q = Quorum::new(&sd);
        q.add(&key(1, true)).unwrap();
        assert!(matches!(
            q.add(&key(1, false)),
            Err(Error::Recovery(RecoveryError::DuplicateCustodian { .. }))
        ));
    }

    #[test]
    fn a_replaced_share_is_caught_by_the_items() {
        // Anyone holding the public certificate can encrypt a bogus share to it.
        let (mut sd, _, _) = setup(3, 2);
        let bogus = shamir::split_with_rng(&mut test_rng(22), &[9u8; 32], 3, 2).unwrap();
        let public = custodians()[1].cert.rsa_public_key().unwrap();
        sd.shared_keys.enc_shares[1].enc_key =
            jwe::encrypt_rsa_oaep256_with_rng(&mut test_rng(23), &public, &bogus[1].to_bytes()).unwrap();
        let mut q = Quorum::new(&sd);
        q.add(&key(0, true)).unwrap();
        q.add(&key(1, true)).unwrap();
        let err = q.finish().err().unwrap();
        assert!(
            matches!(err, Error::Recovery(RecoveryError::SharesInconsistent { .. })),
            "{err}"
        );
    }

    #[test]
    fn tampered_share_is_named() {
        let (mut sd, _, _) = setup(3, 2);
        let parts: Vec<String> = sd.shared_keys.enc_shares[0]
            .enc_key
            .split('.')
            .map(String::from)
            .collect();
        let mut ct = crate::crypto::b64::b64u_decode(&parts[3], "c").unwrap();
        ct[5] ^= 1;
        let tampered = [
            parts[0].clone(),
            parts[1].clone(),
            parts[2].clone(),
            crate::crypto::b64::b64u(&ct),
            parts[4].clone(),
        ]
        .join(".");
        sd.shared_keys.enc_shares[0].enc_key = tampered;
        let err = open_share(&sd, &key(0, true)).err().unwrap();
        assert!(matches!(err, Error::Recovery(RecoveryError::ShareIntegrity { .. })));
        assert!(err.to_string().contains(&custodians()[0].name));
    }

    #[test]
    fn rotation_keeps_contents_and_locks_out_the_old_set() {
        let (old, master, items) = setup(3, 2);
        let mut q = Quorum::new(&old);
        q.add(&key(0, true)).unwrap();
        q.add(&key(1, true)).unwrap();
        let rec = q.finish().unwrap();
        let c = custodians();
        let new_certs: Vec<(String, Certificate)> = c[2..5].iter().map(|c| (c.name.clone(), c.cert.clone())).collect();
        let new = rotate_with_rng(&mut test_rng(25), &old, &rec, &new_certs, 3, Profile::Azure).unwrap();
        assert!(
            new.to_json().contains(&old.enc_data.data[0].compact_jwe),
            "items carried over unchanged"
        );
        assert_ne!(
            new.shared_keys.enc_shares[0].enc_key,
            old.shared_keys.enc_shares[2].enc_key
        );
        let mut q = Quorum::new(&new);
        for i in 2..5 {
            q.add(&key(i, true)).unwrap();
        }
        let again = q.finish().unwrap();
        assert_eq!(again.master_key.expose(), master.expose());
        assert_eq!(contents_fingerprint(&again.items), contents_fingerprint(&items));
        assert!(matches!(
            open_share(&new, &key(0, true)),
            Err(Error::Recovery(RecoveryError::CertNotInSd { .. }))
        ));
        assert!(matches!(
            open_share(&new, &key(1, false)),
            Err(Error::Recovery(RecoveryError::KeyOpensNoShare { .. }))
        ));
    }

    #[test]
    fn split_refuses_weak_or_duplicate_sets() {
        let c = custodians();
        let mut rng = test_rng(24);
        let master = MasterKey::generate_with_rng(&mut rng);
        let items = random_items_with_rng(&mut rng);
        let two: Vec<(String, Certificate)> = c[..2].iter().map(|c| (c.name.clone(), c.cert.clone())).collect();
        assert!(split_with_rng(&mut rng, &master, &items, &two, 2, Profile::Azure).is_err());
        assert!(split_with_rng(&mut rng, &master, &items, &two, 2, Profile::Local).is_ok());
        let dup = vec![two[0].clone(), two[1].clone(), two[0].clone()];
        assert!(split_with_rng(&mut rng, &master, &items, &dup, 2, Profile::Azure).is_err());
    }

    /// Regression: a second certificate of custodian 0's modulus under e=3
    /// passed every check, so custodian 0 alone held 2 of the 3 shares.
    #[test]
    fn one_modulus_under_two_exponents_is_one_custodian() {
        use rsa::traits::PublicKeyParts;
        let c = custodians();
        let twin = crate::test_support::twin_certificate(&c[0].key);
        let twin_key = twin.rsa_public_key().unwrap();
        assert_eq!(twin_key.n(), c[0].key.n());
        assert_ne!(twin_key.e(), c[0].key.e());
        let set = vec![
            ("a.cer".to_string(), c[0].cert.clone()),
            ("b.cer".to_string(), c[1].cert.clone()),
            ("twin.cer".to_string(), twin),
        ];
        let problems = custodian_identity_problems(&set);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("twin.cer has the same key as a.cer"),
            "{}",
            problems[0]
        );
        let mut rng = test_rng(25);
        let master = MasterKey::generate_with_rng(&mut rng);
        let items = random_items_with_rng(&mut rng);
        let err = split_with_rng(&mut rng, &master, &items, &set, 2, Profile::Azure)
            .err()
            .unwrap();
        assert!(err.to_string().contains("twin.cer has the same key as a.cer"), "{err}");
        assert!(custodian_identity_problems(&set[..2]).is_empty());
    }
}
