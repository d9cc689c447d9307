//! The minimal key store behind the canary key: RSA keys with versions,
//! Key Vault key bundles, and backups sealed (AES-256-GCM) under a key
//! derived from the security domain, so only a clone of the instance can
//! restore them. Stored in `keys.json` (0600) — except while the instance
//! holds contents learned from an upload, or has no state folder: then the
//! store lives in memory only (see [`super::state`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::error::ApiError;
use super::SecretText;
use crate::crypto::b64::{b64u, b64u_decode};
use crate::crypto::rng::CryptoRng;
use crate::error::{Error, Result};
use crate::files::{self, Mode};

pub const KEYS_FILE: &str = "keys.json";
const MAX_KEYS_BYTES: u64 = 16 * 1024 * 1024;
const BACKUP_MAGIC: &[u8; 8] = b"HSMEMUKB";
const BACKUP_AAD: &[u8] = b"hsm-ceremony emulator key backup v1";
const NONCE_LEN: usize = 12;
pub const DEFAULT_KEY_OPS: [&str; 6] = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"];
pub(crate) const KNOWN_KEY_OPS: [&str; 8] = [
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

/// One version of a key, as stored and as carried inside a backup.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyVersion {
    version: String,
    /// PKCS#8 DER, base64url.
    pkcs8: SecretText,
    key_ops: Vec<String>,
    enabled: bool,
    created: u64,
    updated: u64,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

// Explicit, since it copies the private key: each store change builds the next map in full.
impl Clone for KeyVersion {
    fn clone(&self) -> Self {
        KeyVersion {
            version: self.version.clone(),
            pkcs8: self.pkcs8.clone(),
            key_ops: self.key_ops.clone(),
            enabled: self.enabled,
            created: self.created,
            updated: self.updated,
            tags: self.tags.clone(),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    format: u32,
    keys: BTreeMap<String, Vec<KeyVersion>>,
}

#[derive(Serialize)]
struct KeysFileRef<'a> {
    format: u32,
    keys: &'a BTreeMap<String, Vec<KeyVersion>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupContents {
    name: String,
    versions: Vec<KeyVersion>,
}

/// What a new key is to be (parsed from the create request by
/// `request::parse`): checked before any key is drawn.
pub struct KeySpec {
    pub(crate) bits: usize,
    pub(crate) key_ops: Vec<String>,
    pub(crate) enabled: bool,
    pub(crate) tags: BTreeMap<String, String>,
}

/// Key names as Key Vault allows them: 1 to 127 letters, digits and '-'.
pub fn check_name(name: &str) -> std::result::Result<(), ApiError> {
    if !name.is_empty() && name.len() <= 127 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "'{name}' is not a valid key name (1 to 127 letters, digits or '-')"
        )))
    }
}

/// Draws the RSA key for `spec` (slow; done outside any lock).
pub fn generate<R: CryptoRng + ?Sized>(
    rng: &mut R,
    spec: &KeySpec,
) -> std::result::Result<Zeroizing<Vec<u8>>, ApiError> {
    use pkcs8::EncodePrivateKey;
    let key = rsa::PrivateKey::new(rng, spec.bits).map_err(ApiError::internal)?;
    let der = key.to_pkcs8_der().map_err(ApiError::internal)?;
    Ok(Zeroizing::new(der.as_bytes().to_vec()))
}

pub(crate) struct KeyStore {
    /// `None`: in memory only.
    path: Option<PathBuf>,
    keys: BTreeMap<String, Vec<KeyVersion>>,
}

fn public_parts(v: &KeyVersion) -> std::result::Result<(Vec<u8>, Vec<u8>), ApiError> {
    use pkcs8::DecodePrivateKey;
    let der = Zeroizing::new(b64u_decode(v.pkcs8.expose(), "key").map_err(ApiError::internal)?);
    let key = rsa::PrivateKey::from_pkcs8_der(&der).map_err(ApiError::internal)?;
    Ok((key.n_bytes().to_vec(), key.e_bytes().to_vec()))
}

fn bundle(origin: &str, name: &str, v: &KeyVersion) -> std::result::Result<Value, ApiError> {
    let (n, e) = public_parts(v)?;
    let mut out = json!({
        "key": {
            "kid": format!("{origin}/keys/{name}/{}", v.version),
            "kty": "RSA-HSM",
            "key_ops": v.key_ops,
            "n": b64u(&n),
            "e": b64u(&e),
        },
        "attributes": {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": "Recoverable",
            "recoverableDays": 90,
            "exportable": false,
        },
    });
    if !v.tags.is_empty() {
        out["tags"] = json!(v.tags);
    }
    Ok(out)
}

impl KeyStore {
    pub fn in_memory() -> KeyStore {
        KeyStore {
            path: None,
            keys: BTreeMap::new(),
        }
    }

    pub fn open(state_dir: &Path) -> Result<KeyStore> {
        let path = state_dir.join(KEYS_FILE);
        if !path.exists() {
            return Ok(KeyStore {
                path: Some(path),
                keys: BTreeMap::new(),
            });
        }
        let bytes = Zeroizing::new(files::read_limited(&path, MAX_KEYS_BYTES, "emulator key store")?);
        let file: KeysFile = crate::format::json::from_slice(&bytes)
            .map_err(|e| Error::Usage(format!("{} is not a key store of this emulator: {e}", path.display())))?;
        if file.format != 1 {
            return Err(Error::Usage(format!(
                "{} has format {}, only 1 is understood",
                path.display(),
                file.format
            )));
        }
        Ok(KeyStore {
            path: Some(path),
            keys: file.keys,
        })
    }

    /// Adopts `next`, writing it first when `persist` (and there is a file).
    /// A store larger than [`MAX_KEYS_BYTES`] is refused even in memory: a
    /// written one would stop the next start, a held one would grow without bound.
    fn commit(&mut self, next: BTreeMap<String, Vec<KeyVersion>>, persist: bool) -> std::result::Result<(), ApiError> {
        let file = KeysFile { format: 1, keys: next };
        let bytes = Zeroizing::new(serde_json::to_vec(&file).expect("plain data serialises"));
        if bytes.len() as u64 > MAX_KEYS_BYTES {
            return Err(ApiError {
                status: hyper::StatusCode::FORBIDDEN,
                code: "QuotaExceeded",
                message: format!(
                    "the key store would be {} bytes, more than this emulator's limit of {MAX_KEYS_BYTES}; \
                     nothing was changed (use fewer or smaller tags, or fewer keys)",
                    bytes.len()
                ),
            });
        }
        if let (Some(path), true) = (&self.path, persist) {
            files::replace(path, &bytes, Mode::Private).map_err(ApiError::internal)?;
        }
        let mut file = file;
        self.keys = std::mem::take(&mut file.keys);
        Ok(())
    }

    /// Adds a new version of `name` (creating the key if new); written only when `persist`.
    #[allow(clippy::too_many_arguments)]
    pub fn create<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        origin: &str,
        name: &str,
        spec: KeySpec,
        pkcs8: &[u8],
        now: u64,
        persist: bool,
    ) -> std::result::Result<Value, ApiError> {
        let mut version = [0u8; 16];
        rng.fill_bytes(&mut version);
        let v = KeyVersion {
            version: hex::encode(version),
            pkcs8: SecretText::new(b64u(pkcs8)),
            key_ops: spec.key_ops,
            enabled: spec.enabled,
            created: now,
            updated: now,
            tags: spec.tags,
        };
        let mut next = self.keys.clone();
        next.entry(name.to_string()).or_default().push(v.clone());
        self.commit(next, persist)?;
        bundle(origin, name, &v)
    }

    fn find(&self, name: &str, version: Option<&str>) -> std::result::Result<&KeyVersion, ApiError> {
        let missing = || {
            ApiError::not_found(
                "KeyNotFound",
                format!("a key named '{name}' was not found in this instance"),
            )
        };
        let versions = self.keys.get(name).ok_or_else(missing)?;
        match version {
            None => versions.last().ok_or_else(missing),
            Some(want) => versions
                .iter()
                .find(|v| v.version == want)
                .ok_or_else(|| ApiError::not_found("KeyNotFound", format!("the key '{name}' has no version '{want}'"))),
        }
    }

    pub fn get(&self, origin: &str, name: &str, version: Option<&str>) -> std::result::Result<Value, ApiError> {
        bundle(origin, name, self.find(name, version)?)
    }

    /// The whole store (every key, version, attribute and tag, and whatever
    /// else the store holds) as its serde state, for a full backup.
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let file = KeysFileRef {
            format: 1,
            keys: &self.keys,
        };
        Zeroizing::new(serde_json::to_vec(&file).expect("plain data serialises"))
    }

    /// Replaces the whole store with an [`export`](Self::export)ed state
    /// (a full restore); written only when `persist`. Refused whole when
    /// the state does not parse or a key in it is unusable.
    pub fn import(&mut self, state: &[u8], persist: bool) -> std::result::Result<(), ApiError> {
        let file: KeysFile = crate::format::json::from_slice(state)
            .map_err(|e| ApiError::bad_request(format!("the backup's key store is malformed: {e}")))?;
        if file.format != 1 {
            return Err(ApiError::bad_request(format!(
                "the backup's key store has format {}, only 1 is understood",
                file.format
            )));
        }
        for (name, versions) in &file.keys {
            check_name(name)?;
            for v in versions {
                public_parts(v)?;
            }
        }
        self.commit(file.keys, persist)
    }

    /// Restores one key, every version of it, from an
    /// [`export`](Self::export)ed state (a selective key restore),
    /// replacing the versions the store holds under that name; written only when `persist`.
    pub fn import_key(&mut self, state: &[u8], name: &str, persist: bool) -> std::result::Result<(), ApiError> {
        let mut file: KeysFile = crate::format::json::from_slice(state)
            .map_err(|e| ApiError::bad_request(format!("the backup's key store is malformed: {e}")))?;
        let versions = file
            .keys
            .remove(name)
            .ok_or_else(|| ApiError::not_found("KeyNotFound", format!("the backup holds no key named '{name}'")))?;
        for v in &versions {
            public_parts(v)?;
        }
        let mut next = self.keys.clone();
        next.insert(name.to_string(), versions);
        self.commit(next, persist)
    }

    /// Every version of `name`, sealed under `sealing_key`.
    pub fn backup<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        name: &str,
        sealing_key: &[u8; 32],
    ) -> std::result::Result<String, ApiError> {
        self.find(name, None)?;
        let contents = BackupContents {
            name: name.to_string(),
            versions: self.keys[name].clone(),
        };
        let plain = Zeroizing::new(serde_json::to_vec(&contents).expect("plain data serialises"));
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let cipher = Aes256Gcm::new_from_slice(sealing_key).expect("32-byte key");
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &plain,
                    aad: BACKUP_AAD,
                },
            )
            .map_err(|_| ApiError::internal("AES-GCM sealing failed"))?;
        let mut blob = Vec::with_capacity(8 + NONCE_LEN + sealed.len());
        blob.extend_from_slice(BACKUP_MAGIC);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(b64u(&blob))
    }

    /// Restores a backup made by an instance with the same security domain;
    /// written only when `persist`.
    pub fn restore(
        &mut self,
        origin: &str,
        blob_b64u: &str,
        sealing_key: &[u8; 32],
        persist: bool,
    ) -> std::result::Result<Value, ApiError> {
        let blob =
            b64u_decode(blob_b64u, "backup").map_err(|_| ApiError::bad_request("the key backup is not base64url"))?;
        if blob.len() < 8 + NONCE_LEN + 16 || &blob[..8] != BACKUP_MAGIC {
            return Err(ApiError::bad_request("the value is not a key backup of this emulator"));
        }
        let nonce: [u8; NONCE_LEN] = blob[8..8 + NONCE_LEN].try_into().expect("length checked");
        let cipher = Aes256Gcm::new_from_slice(sealing_key).expect("32-byte key");
        let plain = Zeroizing::new(
            cipher
                .decrypt(&nonce.into(), Payload { msg: &blob[8 + NONCE_LEN..], aad: BACKUP_AAD })
                .map_err(|_| {
                    ApiError::bad_request(
                        "the key backup does not open here: it was made by an instance with another security domain, or it was altered",
                    )
                })?,
        );
        let contents: BackupContents = crate::format::json::from_slice(&plain)
            .map_err(|e| ApiError::bad_request(format!("the key backup is malformed: {e}")))?;
        check_name(&contents.name)?;
        let last = contents
            .versions
            .last()
            .cloned()
            .ok_or_else(|| ApiError::bad_request("the key backup holds no version"))?;
        if self.keys.contains_key(&contents.name) {
            return Err(ApiError::conflict(format!(
                "a key named '{}' already exists in this instance",
                contents.name
            )));
        }
        public_parts(&last)?;
        let mut next = self.keys.clone();
        let mut contents = contents;
        next.insert(contents.name.clone(), std::mem::take(&mut contents.versions));
        self.commit(next, persist)?;
        bundle(origin, &contents.name, &last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{rsa_2048, test_rng};

    fn spec() -> KeySpec {
        KeySpec {
            bits: 2048,
            key_ops: DEFAULT_KEY_OPS.iter().map(|s| s.to_string()).collect(),
            enabled: true,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn backup_restores_only_under_the_same_domain_key() {
        use pkcs8::EncodePrivateKey;
        let pkcs8 = rsa_2048().to_pkcs8_der().unwrap();
        let dir_a = tempfile::tempdir().unwrap();
        let mut a = KeyStore::open(dir_a.path()).unwrap();
        let created = a
            .create(
                &mut test_rng(1),
                "https://a",
                "canary",
                spec(),
                pkcs8.as_bytes(),
                100,
                true,
            )
            .unwrap();
        assert_eq!(created["key"]["kty"], "RSA-HSM");
        assert!(created["key"]["kid"]
            .as_str()
            .unwrap()
            .starts_with("https://a/keys/canary/"));
        let blob = a.backup(&mut test_rng(2), "canary", &[7; 32]).unwrap();

        let dir_b = tempfile::tempdir().unwrap();
        let mut b = KeyStore::open(dir_b.path()).unwrap();
        let err = b.restore("https://b", &blob, &[8; 32], true).unwrap_err();
        assert_eq!(err.status, hyper::StatusCode::BAD_REQUEST);
        assert!(err.message.contains("another security domain"));
        assert!(b.get("https://b", "canary", None).is_err(), "nothing restored");
        let restored = b.restore("https://b", &blob, &[7; 32], true).unwrap();
        assert_eq!(restored["key"]["n"], created["key"]["n"]);
        assert_eq!(
            b.restore("https://b", &blob, &[7; 32], true).unwrap_err().status,
            hyper::StatusCode::CONFLICT
        );
        // Survives reopening.
        let b2 = KeyStore::open(dir_b.path()).unwrap();
        assert_eq!(
            b2.get("https://b", "canary", None).unwrap()["key"]["n"],
            created["key"]["n"]
        );
        // A flipped byte is refused.
        let mut raw = b64u_decode(&blob, "b").unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let mut c = KeyStore::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(c.restore("https://c", &b64u(&raw), &[7; 32], true).is_err());
    }

    #[test]
    fn a_restore_not_persisted_is_held_in_memory_only() {
        use pkcs8::EncodePrivateKey;
        let pkcs8 = rsa_2048().to_pkcs8_der().unwrap();
        let mut a = KeyStore::in_memory();
        a.create(
            &mut test_rng(1),
            "https://a",
            "canary",
            spec(),
            pkcs8.as_bytes(),
            1,
            true,
        )
        .unwrap();
        let blob = a.backup(&mut test_rng(2), "canary", &[7; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut b = KeyStore::open(dir.path()).unwrap();
        b.restore("https://b", &blob, &[7; 32], false).unwrap();
        assert!(b.get("https://b", "canary", None).is_ok());
        assert!(!dir.path().join(KEYS_FILE).exists(), "nothing was written");
    }

    #[test]
    fn key_names() {
        assert!(check_name("canary-1").is_ok());
        assert!(check_name(&"a".repeat(127)).is_ok());
        assert!(check_name(&"a".repeat(128)).is_err());
        assert!(check_name("").is_err());
        assert!(check_name("bad/name").is_err());
    }
}
