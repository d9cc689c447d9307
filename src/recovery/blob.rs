//! The restore blob: the items re-encrypted under a fresh key wrapped to an instance's exchange key, and how an instance opens it.

use super::items::{check_items, decrypt_items, encrypt_items_with_rng, PlainItem};
use crate::crypto::jwe::{self, CompactJwe, KeyUnwrapper};
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::MasterKey;
use crate::crypto::CryptoError;
use crate::custodian::cert::Certificate;
use crate::error::{Error, RecoveryError, Result};
use crate::format::restore_blob::{RestoreBlob, WrappedKey};

/// The restore blob for `exchange`: a fresh master key, the items under it,
/// and that key wrapped with RSA-OAEP-256 to the exchange certificate.
pub fn build_restore_blob_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    items: &[PlainItem],
    exchange: &Certificate,
) -> Result<RestoreBlob> {
    check_items(items)?;
    let public = exchange.rsa_public_key().map_err(|source| Error::Certificate {
        label: "the exchange key".into(),
        source,
    })?;
    let fresh = MasterKey::generate_with_rng(rng);
    let enc_data = encrypt_items_with_rng(rng, items, &fresh);
    let enc_key =
        jwe::encrypt_rsa_oaep256_with_rng(rng, &public, fresh.expose()).map_err(|source| RecoveryError::Encrypt {
            what: "the restore blob's master key".into(),
            source,
        })?;
    Ok(RestoreBlob {
        enc_data,
        wrapped_key: WrappedKey {
            enc_key,
            x5t_256: exchange.x5t_256(),
        },
    })
}

/// What an instance does with an uploaded blob: check it is for its exchange
/// key, unwrap the master key, open every item.
pub fn open_restore_blob(
    blob: &RestoreBlob,
    exchange_key: &dyn KeyUnwrapper,
    exchange_cert: &Certificate,
) -> Result<Vec<PlainItem>> {
    let ours = exchange_cert.x5t_256();
    if blob.wrapped_key.x5t_256 != ours {
        return Err(RecoveryError::WrongExchangeKey {
            blob: blob.wrapped_key.x5t_256.clone(),
            ours,
        }
        .into());
    }
    let jwe: CompactJwe = blob
        .wrapped_key_jwe()
        .map_err(|source| RecoveryError::BlobMalformed { source })?;
    let key = jwe
        .decrypt_with(exchange_key)
        .map_err(|source| RecoveryError::ShareIntegrity {
            who: "the wrapped master key".into(),
            source,
        })?;
    let master = MasterKey::from_slice(key.expose()).ok_or_else(|| RecoveryError::ShareIntegrity {
        who: "the wrapped master key".into(),
        source: CryptoError::ShareMalformed(format!("it is {} bytes, not 32", key.len())),
    })?;
    decrypt_items(&blob.enc_data, &master)
}
