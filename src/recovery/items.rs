//! The data items: their per-item keys, decryption and re-encryption under a master key, and their fingerprint.

use sha2::Sha256;

use crate::crypto::jwe::{self};
use crate::crypto::kdf::sp108_kdf;
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::{MasterKey, SecretBytes};
use crate::error::{RecoveryError, Result};
use crate::format::sdfile::{self, DataItem, EncData};

/// One data item in the clear: its tag and opaque contents.
pub struct PlainItem {
    pub tag: String,
    pub plaintext: SecretBytes,
}

/// The 64-byte content key of an item: `KDF(master, label = tag, "", 512)`.
fn item_key(master: &MasterKey, tag: &str) -> zeroize::Zeroizing<[u8; 64]> {
    let k = sp108_kdf(master.expose(), tag.as_bytes(), b"", 512);
    let mut out = zeroize::Zeroizing::new([0u8; 64]);
    out.copy_from_slice(&k);
    out
}

/// Opens every data item under `master`.
pub fn decrypt_items(enc_data: &EncData, master: &MasterKey) -> Result<Vec<PlainItem>> {
    enc_data
        .data
        .iter()
        .map(|item| {
            let jwe = sdfile::item_jwe(item).map_err(|source| RecoveryError::ItemMalformed {
                tag: item.tag.clone(),
                source,
            })?;
            let plaintext = jwe
                .decrypt_with_key(&item_key(master, &item.tag)[..])
                .map_err(|source| RecoveryError::ItemIntegrity {
                    tag: item.tag.clone(),
                    source,
                })?;
            Ok(PlainItem {
                tag: item.tag.clone(),
                plaintext,
            })
        })
        .collect()
}

/// Encrypts items under `master`, same tags and order, fresh IVs.
pub fn encrypt_items_with_rng<R: CryptoRng + ?Sized>(rng: &mut R, items: &[PlainItem], master: &MasterKey) -> EncData {
    EncData {
        data: items
            .iter()
            .map(|item| DataItem {
                compact_jwe: jwe::encrypt_dir_with_rng(
                    rng,
                    &item_key(master, &item.tag),
                    &item.tag,
                    item.plaintext.expose(),
                ),
                tag: item.tag.clone(),
            })
            .collect(),
        kdf: sdfile::KDF.into(),
    }
}

/// Random contents with the real tags and realistic sizes (for local
/// instances and rehearsals): ciphertexts of 8192, 880 and 2960 bytes.
pub fn random_items_with_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Vec<PlainItem> {
    sdfile::REAL_ITEMS
        .iter()
        .map(|(tag, ct_len)| {
            // PKCS#7 always adds 1..=16 bytes; a full block of padding keeps the size exact.
            let mut bytes = vec![0u8; ct_len - 16];
            rng.fill_bytes(&mut bytes);
            PlainItem {
                tag: tag.to_string(),
                plaintext: SecretBytes::new(bytes),
            }
        })
        .collect()
}

pub(super) fn check_items(items: &[PlainItem]) -> Result<()> {
    check_item_tags(&items.iter().map(|i| i.tag.as_str()).collect::<Vec<_>>())
}

/// At least one tag, each non-empty and given once: checked on the tags
/// alone, so a caller can refuse them before reading any item's file.
pub fn check_item_tags(tags: &[&str]) -> Result<()> {
    if tags.is_empty() {
        return Err(RecoveryError::NoItems.into());
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tags[..i].contains(tag) {
            return Err(RecoveryError::ItemTag { tag: tag.to_string() }.into());
        }
    }
    Ok(())
}

/// SHA-256 of items' tags and contents: equal fingerprints mean equal contents,
/// without showing them.
pub fn contents_fingerprint(items: &[PlainItem]) -> String {
    use sha2::Digest;
    let mut h = Sha256::new();
    for item in items {
        h.update((item.tag.len() as u64).to_be_bytes());
        h.update(item.tag.as_bytes());
        h.update((item.plaintext.len() as u64).to_be_bytes());
        h.update(item.plaintext.expose());
    }
    hex::encode(h.finalize())
}
