//! The full backup's one blob: the key store's whole state and the RBAC
//! state, sealed (AES-256-GCM) under the key derived from the security
//! domain, like single-key backups but with its own magic and associated
//! data, so neither opens as the other. An instance holding another
//! security domain cannot open it; a truncated or altered blob is refused.
//!
//! Layout: `HSMEMUFB` (8 bytes), a 12-byte nonce, then the sealed JSON
//! [`Contents`].

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::rng::CryptoRng;
use crate::emulator::error::ApiError;
use crate::emulator::rbac::assignments::RbacFile;
use crate::emulator::SecretText;

const MAGIC: &[u8; 8] = b"HSMEMUFB";
const AAD: &[u8] = b"hsm-ceremony emulator full backup v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// What a full backup holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Contents {
    pub format: u32,
    /// Unix seconds when the backup was taken.
    pub created: u64,
    /// The key store's exported state (`KeyStore::export`): JSON text,
    /// held as a secret (it carries the private keys).
    pub keys: SecretText,
    /// Role assignments and custom role definitions, whole (the built-in
    /// definitions are the same on every instance).
    pub rbac: RbacFile,
}

/// Seals `contents` under `key`.
pub(crate) fn seal<R: CryptoRng + ?Sized>(
    rng: &mut R,
    contents: &Contents,
    key: &[u8; 32],
) -> Result<Vec<u8>, ApiError> {
    let plain = Zeroizing::new(serde_json::to_vec(contents).expect("plain data serialises"));
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let sealed = Aes256Gcm::new_from_slice(key)
        .expect("32-byte key")
        .encrypt(&nonce.into(), Payload { msg: &plain, aad: AAD })
        .map_err(|_| ApiError::internal("AES-GCM sealing failed"))?;
    let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a blob [`seal`] made under the same key.
pub(crate) fn open(blob: &[u8], key: &[u8; 32]) -> Result<Contents, ApiError> {
    if blob.len() < MAGIC.len() + NONCE_LEN + TAG_LEN || &blob[..MAGIC.len()] != MAGIC {
        return Err(ApiError::bad_request(
            "the folder's blob is not a full backup of this emulator (wrong magic or truncated)",
        ));
    }
    let nonce: [u8; NONCE_LEN] = blob[MAGIC.len()..MAGIC.len() + NONCE_LEN]
        .try_into()
        .expect("length checked");
    let plain = Zeroizing::new(
        Aes256Gcm::new_from_slice(key)
            .expect("32-byte key")
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: &blob[MAGIC.len() + NONCE_LEN..],
                    aad: AAD,
                },
            )
            .map_err(|_| {
                ApiError::bad_request(
                    "the full backup does not open here: it was made by an instance with another security domain, \
                     or it was altered or truncated",
                )
            })?,
    );
    let contents: Contents = crate::format::json::from_slice(&plain)
        .map_err(|e| ApiError::bad_request(format!("the full backup is malformed: {e}")))?;
    if contents.format != 1 {
        return Err(ApiError::bad_request(format!(
            "the full backup has format {}, only 1 is understood",
            contents.format
        )));
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test_rng;

    fn contents() -> Contents {
        Contents {
            format: 1,
            created: 7,
            keys: SecretText::new(r#"{"format":1,"keys":{}}"#.into()),
            rbac: RbacFile {
                format: 1,
                assignments: vec![crate::emulator::rbac::assignments::Assignment {
                    name: "00000000-0000-0000-0000-000000000001".into(),
                    scope: "/".into(),
                    role: "a290e904-7015-4bba-90c8-60543313cdb4".into(),
                    principal: "alice".into(),
                }],
                custom_roles: Vec::new(),
            },
        }
    }

    #[test]
    fn a_sealed_backup_opens_under_its_domain_key_only() {
        let blob = seal(&mut test_rng(1), &contents(), &[7; 32]).unwrap();
        let back = open(&blob, &[7; 32]).unwrap();
        assert_eq!(back.keys.expose(), r#"{"format":1,"keys":{}}"#);
        assert_eq!(back.rbac.assignments, contents().rbac.assignments);
        let e = open(&blob, &[8; 32]).err().unwrap();
        assert!(e.message.contains("another security domain"), "{}", e.message);
        // The plaintext is not in the blob.
        assert!(!String::from_utf8_lossy(&blob).contains("alice"));
    }

    #[test]
    fn truncated_tampered_or_foreign_blobs_are_refused() {
        let blob = seal(&mut test_rng(2), &contents(), &[7; 32]).unwrap();
        for cut in [0, 7, 8, 20, 35, blob.len() - 1] {
            assert!(open(&blob[..cut], &[7; 32]).is_err(), "cut at {cut}");
        }
        for at in [0, 9, 25, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[at] ^= 1;
            assert!(open(&bad, &[7; 32]).is_err(), "flipped byte {at}");
        }
        let e = open(b"HSMEMUKB-a single key backup is not a full one", &[7; 32])
            .err()
            .unwrap();
        assert!(e.message.contains("not a full backup"), "{}", e.message);
    }
}
