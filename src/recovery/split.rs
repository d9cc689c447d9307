//! Splitting a master key to a custodian set, and rotation: the same key and items split afresh to a new set.

use super::custodian_set::check_custodian_set;
use super::items::{check_items, decrypt_items, encrypt_items_with_rng, PlainItem};
use super::quorum::Recovered;
use crate::crypto::jwe::{self};
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::MasterKey;
use crate::crypto::shamir::{self};
use crate::custodian::cert::Certificate;
use crate::error::{Error, RecoveryError, Result};
use crate::format::limits::Profile;
use crate::format::sdfile::{self, EncShare, SecurityDomain, SharedKeys};

/// Splits `master` M-of-N to `certs` (in order) and encrypts `items` under it.
pub fn split_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    master: &MasterKey,
    items: &[PlainItem],
    certs: &[(String, Certificate)],
    quorum: usize,
    profile: Profile,
) -> Result<SecurityDomain> {
    check_custodian_set(certs, quorum, profile)?;
    check_items(items)?;
    let shares = shamir::split_with_rng(rng, master.expose(), certs.len() as u8, quorum as u8)
        .map_err(|source| RecoveryError::SplitParameters { source })?;
    let mut enc_shares = Vec::with_capacity(certs.len());
    for ((label, cert), share) in certs.iter().zip(&shares) {
        let public = cert.rsa_public_key().map_err(|source| Error::Certificate {
            label: label.clone(),
            source,
        })?;
        let enc_key = jwe::encrypt_rsa_oaep256_with_rng(rng, &public, &share.to_bytes()).map_err(|source| {
            RecoveryError::Encrypt {
                what: format!("the share for {label}"),
                source,
            }
        })?;
        enc_shares.push(EncShare {
            enc_key,
            x5t_256: cert.x5t_256(),
        });
    }
    let sd = SecurityDomain {
        enc_data: encrypt_items_with_rng(rng, items, master),
        shared_keys: SharedKeys {
            enc_shares,
            key_algorithm: sdfile::KEY_ALGORITHM.into(),
            required: quorum as u64,
        },
        version: sdfile::VERSION,
    };
    sd.validate().map_err(|source| RecoveryError::SelfCheck { source })?;
    Ok(sd)
}

/// Rotation: the recovered master key split afresh (new random polynomials)
/// to a new custodian set, the data items carried over unchanged, so the new
/// file restores to exactly the same contents.
pub fn rotate_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    old: &SecurityDomain,
    recovered: &Recovered,
    certs: &[(String, Certificate)],
    quorum: usize,
    profile: Profile,
) -> Result<SecurityDomain> {
    let mut sd = split_with_rng(rng, &recovered.master_key, &recovered.items, certs, quorum, profile)?;
    sd.enc_data = old.enc_data.clone();
    // The carried-over items must open under the key just split.
    decrypt_items(&sd.enc_data, &recovered.master_key)?;
    Ok(sd)
}
