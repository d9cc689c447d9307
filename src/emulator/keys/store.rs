//! The key store: every key with all its versions, the soft-deleted keys and
//! the rotation policies, written to `keys.json` (0600) as one atomic
//! snapshot per change — except while the instance holds contents learned
//! from an upload, or has no state folder: then the store lives in memory
//! only (see [`super::super::state`]). Single-key backups are sealed
//! (AES-256-GCM) under a key derived from the security domain, so only a
//! clone of the instance can restore them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use super::super::error::ApiError;
use super::super::SecretText;
use super::bundle::{self, View, RECOVERABLE_DAYS};
use super::crypto::{Curve, Kty, Material};
use super::spec::{KeySpec, PolicySpec, Update};
use crate::crypto::b64::{b64u, b64u_decode};
use crate::crypto::rng::CryptoRng;
use crate::error::{EmulatorError, Result};
use crate::files::{self, Mode};

pub const KEYS_FILE: &str = "keys.json";
const MAX_KEYS_BYTES: u64 = 16 * 1024 * 1024;
const BACKUP_MAGIC: &[u8; 8] = b"HSMEMUKB";
const BACKUP_AAD: &[u8] = b"hsm-ceremony emulator key backup v1";
const NONCE_LEN: usize = 12;
/// Format 1 held RSA keys only (`pkcs8`); 2 adds key types, validity, deleted keys and policies.
const FORMAT: u32 = 2;
/// The service's page size when `maxresults` is not given, and its maximum.
pub const MAX_RESULTS: usize = 25;

fn rsa_kty() -> Kty {
    Kty::Rsa
}

/// One version of a key, as stored and as carried inside a backup.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVersion {
    pub version: String,
    #[serde(default = "rsa_kty")]
    pub kty: Kty,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<Curve>,
    /// base64url of the PKCS#8 DER (RSA), the private scalar (EC) or the key (oct).
    #[serde(alias = "pkcs8")]
    material: SecretText,
    pub key_ops: Vec<String>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    pub created: u64,
    pub updated: u64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The material decoded once (an RSA key validated and its CRT values
    /// computed), in memory only: decoding PKCS#8 on every signature cost
    /// more than the signature. Never serialised; dropped (and wiped, as
    /// the key types wipe themselves) with the version, or on soft delete.
    #[serde(skip)]
    parsed: OnceLock<Arc<Material>>,
}

// Explicit, since it copies the private key: each store change builds the
// next state in full. The decoded material is shared, not decoded again.
impl Clone for KeyVersion {
    fn clone(&self) -> Self {
        KeyVersion {
            version: self.version.clone(),
            kty: self.kty,
            crv: self.crv,
            material: self.material.clone(),
            key_ops: self.key_ops.clone(),
            enabled: self.enabled,
            nbf: self.nbf,
            exp: self.exp,
            created: self.created,
            updated: self.updated,
            tags: self.tags.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

impl KeyVersion {
    /// The decoded material, decoded on first use only.
    pub fn material(&self) -> std::result::Result<Arc<Material>, ApiError> {
        if let Some(m) = self.parsed.get() {
            return Ok(m.clone());
        }
        let m = Arc::new(self.decode()?);
        // Callers hold the store's lock, so no other decoding races this one.
        let _ = self.parsed.set(m.clone());
        Ok(m)
    }

    /// The material decoded afresh and not kept (a deleted key's).
    fn decode(&self) -> std::result::Result<Material, ApiError> {
        let bytes = Zeroizing::new(b64u_decode(self.material.expose(), "key").map_err(ApiError::internal)?);
        Material::from_stored(self.kty, self.crv, &bytes)
    }
}

/// A soft-deleted key: every version, kept until purged.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletedKey {
    pub versions: Vec<KeyVersion>,
    pub deleted: u64,
    pub scheduled_purge: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RotationPolicy>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeAction {
    /// `timeAfterCreate` or `timeBeforeExpiry`.
    pub trigger: String,
    pub duration: String,
    /// `Rotate` or `Notify`.
    pub action: String,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationPolicy {
    pub actions: Vec<LifetimeAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<String>,
    pub created: u64,
    pub updated: u64,
}

/// Everything the store holds: what a full backup carries ([`KeyStore::export`]).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contents {
    pub keys: BTreeMap<String, Vec<KeyVersion>>,
    #[serde(default)]
    pub deleted: BTreeMap<String, DeletedKey>,
    #[serde(default)]
    pub policies: BTreeMap<String, RotationPolicy>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    format: u32,
    keys: BTreeMap<String, Vec<KeyVersion>>,
    #[serde(default)]
    deleted: BTreeMap<String, DeletedKey>,
    #[serde(default)]
    policies: BTreeMap<String, RotationPolicy>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupContents {
    name: String,
    versions: Vec<KeyVersion>,
}

/// Which page of a list: at most `max` items after the name or version `after`.
pub struct Page {
    pub max: usize,
    pub after: Option<String>,
}

/// A page of items, and the position to continue from when there are more.
pub struct Listed {
    pub items: Vec<Value>,
    pub next: Option<String>,
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

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("KeyNotFound", format!("A key with (name/id) {name} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command."))
}

fn deleted_not_found(name: &str) -> ApiError {
    ApiError::not_found("KeyNotFound", format!("Deleted Key not found: {name}"))
}

fn in_deleted_state(name: &str) -> ApiError {
    ApiError::conflict(format!(
        "Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."
    ))
}

fn paged<T>(all: impl Iterator<Item = (String, T)>, page: &Page, render: impl Fn(T) -> Value) -> Listed {
    let mut items = Vec::new();
    let mut next = None;
    for (pos, item) in all.filter(|(pos, _)| page.after.as_ref().is_none_or(|a| pos > a)) {
        if items.len() == page.max {
            next = Some(pos);
            break;
        }
        items.push((pos, render(item)));
    }
    // The continuation is the last item returned: the next page starts after it.
    let next = next.and(items.last().map(|(p, _)| p.clone()));
    Listed {
        items: items.into_iter().map(|(_, v)| v).collect(),
        next,
    }
}

pub(crate) struct KeyStore {
    /// `None`: in memory only.
    path: Option<PathBuf>,
    c: Contents,
}

/// Key versions are ordered by creation; their ids are random, so a version
/// list is paged by its position, zero-padded so positions sort as strings.
fn position(i: usize) -> String {
    format!("{i:08}")
}

impl KeyStore {
    pub fn in_memory() -> KeyStore {
        KeyStore {
            path: None,
            c: Contents::default(),
        }
    }

    pub fn open(state_dir: &Path) -> Result<KeyStore> {
        let path = state_dir.join(KEYS_FILE);
        if !path.exists() {
            return Ok(KeyStore {
                path: Some(path),
                c: Contents::default(),
            });
        }
        let bytes = Zeroizing::new(files::read_limited(&path, MAX_KEYS_BYTES, "emulator key store")?);
        let file: KeysFile = crate::format::json::from_slice(&bytes).map_err(|why| EmulatorError::Corrupt {
            path: path.clone(),
            what: "key store",
            why,
        })?;
        if !(1..=FORMAT).contains(&file.format) {
            return Err(EmulatorError::UnknownFormat {
                path: path.to_path_buf(),
                format: u64::from(file.format),
            }
            .into());
        }
        Ok(KeyStore {
            path: Some(path),
            c: Contents {
                keys: file.keys,
                deleted: file.deleted,
                policies: file.policies,
            },
        })
    }

    /// Adopts `next`, writing it first when `persist` (and there is a file).
    /// A store larger than [`MAX_KEYS_BYTES`] is refused even in memory: a
    /// written one would stop the next start, a held one would grow without bound.
    fn commit(&mut self, next: Contents, persist: bool) -> std::result::Result<(), ApiError> {
        let file = KeysFile {
            format: FORMAT,
            keys: next.keys,
            deleted: next.deleted,
            policies: next.policies,
        };
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
        self.c = Contents {
            keys: file.keys,
            deleted: file.deleted,
            policies: file.policies,
        };
        Ok(())
    }

    /// The whole store (every key with all versions, attributes and tags,
    /// the soft-deleted keys and the rotation policies) as its serde state
    /// (`keys.json`'s format), for a full backup.
    pub fn export(&self) -> Zeroizing<Vec<u8>> {
        let file = KeysFile {
            format: FORMAT,
            keys: self.c.keys.clone(),
            deleted: self.c.deleted.clone(),
            policies: self.c.policies.clone(),
        };
        Zeroizing::new(serde_json::to_vec(&file).expect("plain data serialises"))
    }

    fn parse_export(state: &[u8]) -> std::result::Result<Contents, ApiError> {
        let file: KeysFile = crate::format::json::from_slice(state)
            .map_err(|e| ApiError::bad_request(format!("the backup's key store is malformed: {e}")))?;
        if !(1..=FORMAT).contains(&file.format) {
            return Err(ApiError::bad_request(format!(
                "the backup's key store has format {}, only 1 and {FORMAT} are understood",
                file.format
            )));
        }
        let contents = Contents {
            keys: file.keys,
            deleted: file.deleted,
            policies: file.policies,
        };
        for (name, versions, live) in contents
            .keys
            .iter()
            .map(|(n, vs)| (n, vs, true))
            .chain(contents.deleted.iter().map(|(n, d)| (n, &d.versions, false)))
        {
            check_name(name)?;
            if versions.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "the backup's key '{name}' has no version"
                )));
            }
            for v in versions {
                // A live key stays decoded for use; a deleted one is only checked.
                if live {
                    v.material().map(drop)?;
                } else {
                    v.decode().map(drop)?;
                }
            }
        }
        Ok(contents)
    }

    /// Replaces the whole store with an [`export`](Self::export)ed state (a
    /// full restore); written only when `persist`. Refused whole when the
    /// state does not parse or a key in it is unusable.
    pub fn import(&mut self, state: &[u8], persist: bool) -> std::result::Result<(), ApiError> {
        let contents = Self::parse_export(state)?;
        self.commit(contents, persist)
    }

    /// Restores one key, every version of it (and its rotation policy),
    /// from an [`export`](Self::export)ed state (a selective key restore),
    /// replacing the versions the store holds under that name; refused
    /// while the name is soft-deleted here. Written only when `persist`.
    pub fn import_key(&mut self, state: &[u8], name: &str, persist: bool) -> std::result::Result<(), ApiError> {
        let mut contents = Self::parse_export(state)?;
        let versions = contents
            .keys
            .remove(name)
            .ok_or_else(|| ApiError::not_found("KeyNotFound", format!("the backup holds no key named '{name}'")))?;
        if self.c.deleted.contains_key(name) {
            return Err(in_deleted_state(name));
        }
        let mut next = self.c.clone();
        next.keys.insert(name.to_string(), versions);
        match contents.policies.remove(name) {
            Some(p) => next.policies.insert(name.to_string(), p),
            None => next.policies.remove(name),
        };
        self.commit(next, persist)
    }

    /// A new version of `name` from `spec` and its `material`; the key must
    /// already exist when `existing` (rotate), and must not be soft-deleted.
    #[allow(clippy::too_many_arguments)]
    pub fn add_version<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        view: &View,
        name: &str,
        spec: KeySpec,
        material: Material,
        existing: bool,
        now: u64,
        persist: bool,
    ) -> std::result::Result<Value, ApiError> {
        if self.c.deleted.contains_key(name) {
            return Err(in_deleted_state(name));
        }
        if existing && !self.c.keys.contains_key(name) {
            return Err(not_found(name));
        }
        let mut version = [0u8; 16];
        rng.fill_bytes(&mut version);
        let stored = material.to_stored()?;
        let v = KeyVersion {
            version: hex::encode(version),
            kty: spec.kty,
            crv: spec.crv,
            material: SecretText::new(b64u(&stored)),
            key_ops: spec.key_ops,
            enabled: spec.enabled,
            nbf: spec.nbf,
            exp: spec.exp,
            created: now,
            updated: now,
            tags: spec.tags,
            parsed: OnceLock::from(Arc::new(material)),
        };
        let mut next = self.c.clone();
        next.keys.entry(name.to_string()).or_default().push(v.clone());
        self.commit(next, persist)?;
        Ok(bundle::key_bundle(view, name, &v, &*v.material()?))
    }

    /// What a rotation of `name` creates: the latest version's type, size,
    /// curve, operations and tags, with `exp` from the policy's `expiryTime`.
    pub fn rotation_spec(&self, name: &str, now: u64) -> std::result::Result<KeySpec, ApiError> {
        if self.c.deleted.contains_key(name) {
            return Err(in_deleted_state(name));
        }
        let last = self.find(name, None)?;
        let material = last.material()?;
        let exp = match self.c.policies.get(name).and_then(|p| p.expiry_time.as_deref()) {
            Some(e) => Some(now + super::spec::duration_secs("expiryTime", e)?),
            None => None,
        };
        Ok(KeySpec {
            kty: last.kty,
            bits: material.bits().unwrap_or(0),
            crv: last.crv,
            key_ops: last.key_ops.clone(),
            enabled: true,
            nbf: None,
            exp,
            tags: last.tags.clone(),
        })
    }

    fn find(&self, name: &str, version: Option<&str>) -> std::result::Result<&KeyVersion, ApiError> {
        let versions = self.c.keys.get(name).ok_or_else(|| not_found(name))?;
        match version {
            None => versions.last().ok_or_else(|| not_found(name)),
            Some(want) => versions
                .iter()
                .find(|v| v.version == want)
                .ok_or_else(|| not_found(&format!("{name}/{want}"))),
        }
    }

    pub fn get(&self, view: &View, name: &str, version: Option<&str>) -> std::result::Result<Value, ApiError> {
        let v = self.find(name, version)?;
        Ok(bundle::key_bundle(view, name, v, &*v.material()?))
    }

    /// The key version for a cryptographic operation `op` (a `key_ops`
    /// name), refused as the service refuses it: an operation missing from
    /// `key_ops` always; on a disabled, expired or not yet valid key, the
    /// private-key operations (decrypt, sign, unwrapKey) — the public-key
    /// ones stay allowed, as the service allows them.
    pub fn for_operation(
        &self,
        view: &View,
        name: &str,
        version: Option<&str>,
        op: &str,
        now: u64,
    ) -> std::result::Result<(String, Arc<Material>), ApiError> {
        let v = self.find(name, version)?;
        if !v.key_ops.iter().any(|o| o == op) {
            return Err(ApiError::forbidden_because(
                "Forbidden/KeyOperationForbidden",
                format!("Operation {op} is not permitted on this key."),
            ));
        }
        if matches!(op, "decrypt" | "sign" | "unwrapKey") {
            if !v.enabled {
                return Err(ApiError::forbidden_because(
                    "Forbidden/KeyDisabled",
                    format!("Operation {op} is not allowed on a disabled key."),
                ));
            }
            if v.exp.is_some_and(|exp| now >= exp) {
                return Err(ApiError::forbidden_because(
                    "Forbidden/KeyExpired",
                    format!("Operation {op} is not allowed on an expired key."),
                ));
            }
            if v.nbf.is_some_and(|nbf| now < nbf) {
                return Err(ApiError::forbidden_because(
                    "Forbidden/KeyNotYetValid",
                    format!("Operation {op} is not allowed on a key that is not yet valid."),
                ));
            }
        }
        Ok((view.kid(name, &v.version), v.material()?))
    }

    pub fn list(&self, view: &View, page: &Page) -> Listed {
        let all = self
            .c
            .keys
            .iter()
            .filter_map(|(name, vs)| vs.last().map(|v| (name.clone(), (name, v))));
        paged(all, page, |(name, v)| bundle::key_item(view, name, v, false))
    }

    pub fn versions(&self, view: &View, name: &str, page: &Page) -> std::result::Result<Listed, ApiError> {
        let versions = self.c.keys.get(name).ok_or_else(|| not_found(name))?;
        let all = versions.iter().enumerate().map(|(i, v)| (position(i), v));
        Ok(paged(all, page, |v| bundle::key_item(view, name, v, true)))
    }

    /// `PATCH`: only the fields given change; `updated` moves.
    pub fn update(
        &mut self,
        view: &View,
        name: &str,
        version: Option<&str>,
        update: Update,
        now: u64,
        persist: bool,
    ) -> std::result::Result<Value, ApiError> {
        let want = self.find(name, version)?.version.clone();
        let mut next = self.c.clone();
        let v = next
            .keys
            .get_mut(name)
            .and_then(|vs| vs.iter_mut().find(|v| v.version == want))
            .expect("found above");
        if let Some(ops) = update.key_ops {
            v.key_ops = ops;
        }
        if let Some(e) = update.enabled {
            v.enabled = e;
        }
        if update.nbf.is_some() {
            v.nbf = update.nbf;
        }
        if update.exp.is_some() {
            v.exp = update.exp;
        }
        if let (Some(nbf), Some(exp)) = (v.nbf, v.exp) {
            if exp <= nbf {
                return Err(ApiError::bad_request(format!(
                    "attributes.exp ({exp}) must be later than attributes.nbf ({nbf})"
                )));
            }
        }
        if let Some(tags) = update.tags {
            v.tags = tags;
        }
        v.updated = now;
        let v = v.clone();
        self.commit(next, persist)?;
        Ok(bundle::key_bundle(view, name, &v, &*v.material()?))
    }

    /// Soft delete: the key with all its versions (and policy) moves to the
    /// deleted keys, recoverable for [`RECOVERABLE_DAYS`].
    pub fn delete(&mut self, view: &View, name: &str, now: u64, persist: bool) -> std::result::Result<Value, ApiError> {
        let mut next = self.c.clone();
        let mut versions = next.keys.remove(name).ok_or_else(|| not_found(name))?;
        let last = versions.last().expect("a stored key has a version").material()?;
        // A deleted key is used for nothing: it keeps no decoded material.
        for v in &mut versions {
            v.parsed = OnceLock::new();
        }
        let d = DeletedKey {
            versions,
            deleted: now,
            scheduled_purge: now + RECOVERABLE_DAYS * 86_400,
            policy: next.policies.remove(name),
        };
        next.deleted.insert(name.to_string(), d.clone());
        self.commit(next, persist)?;
        let v = d.versions.last().expect("a stored key has a version");
        Ok(bundle::deleted_bundle(view, name, &d, v, &last))
    }

    /// A deleted key whose purge date has passed is gone, as the service purges it then.
    fn find_deleted(&self, name: &str, now: u64) -> std::result::Result<&DeletedKey, ApiError> {
        self.c
            .deleted
            .get(name)
            .filter(|d| d.scheduled_purge > now)
            .ok_or_else(|| deleted_not_found(name))
    }

    pub fn get_deleted(&self, view: &View, name: &str, now: u64) -> std::result::Result<Value, ApiError> {
        let d = self.find_deleted(name, now)?;
        let last = d.versions.last().ok_or_else(|| deleted_not_found(name))?;
        Ok(bundle::deleted_bundle(view, name, d, last, &last.decode()?))
    }

    pub fn list_deleted(&self, view: &View, page: &Page, now: u64) -> Listed {
        let all = self
            .c
            .deleted
            .iter()
            .filter(|(_, d)| d.scheduled_purge > now)
            .filter_map(|(name, d)| d.versions.last().map(|v| (name.clone(), (name, d, v))));
        paged(all, page, |(name, d, v)| bundle::deleted_item(view, name, d, v))
    }

    pub fn recover(
        &mut self,
        view: &View,
        name: &str,
        now: u64,
        persist: bool,
    ) -> std::result::Result<Value, ApiError> {
        self.find_deleted(name, now)?;
        let mut next = self.c.clone();
        let d = next.deleted.remove(name).expect("found above");
        if let Some(p) = d.policy {
            next.policies.insert(name.to_string(), p);
        }
        let material = d.versions.last().expect("a stored key has a version").material()?;
        let last = d.versions.last().cloned().expect("a stored key has a version");
        next.keys.insert(name.to_string(), d.versions);
        self.commit(next, persist)?;
        Ok(bundle::key_bundle(view, name, &last, &material))
    }

    /// Permanent deletion of a soft-deleted key, refused under purge protection.
    pub fn purge(&mut self, view: &View, name: &str, now: u64, persist: bool) -> std::result::Result<(), ApiError> {
        self.find_deleted(name, now)?;
        if view.purge_protection {
            return Err(ApiError::forbidden(format!(
                "Operation \"purge\" is not allowed because purge protection is enabled for this managed HSM. \
                 The key '{name}' will be purged automatically after its scheduled purge date. \
                 (This emulator instance was started with purge protection on; it can be turned off only before activation.)"
            )));
        }
        let mut next = self.c.clone();
        next.deleted.remove(name);
        self.commit(next, persist)
    }

    pub fn policy(&self, view: &View, name: &str) -> std::result::Result<Value, ApiError> {
        self.find(name, None)?;
        Ok(bundle::rotation_policy(view, name, self.c.policies.get(name)))
    }

    pub fn set_policy(
        &mut self,
        view: &View,
        name: &str,
        spec: PolicySpec,
        now: u64,
        persist: bool,
    ) -> std::result::Result<Value, ApiError> {
        self.find(name, None)?;
        let created = self.c.policies.get(name).map_or(now, |p| p.created);
        let policy = RotationPolicy {
            actions: spec
                .actions
                .into_iter()
                .map(|(trigger, duration, action)| LifetimeAction {
                    trigger,
                    duration,
                    action,
                })
                .collect(),
            expiry_time: spec.expiry_time,
            created,
            updated: now,
        };
        let mut next = self.c.clone();
        next.policies.insert(name.to_string(), policy.clone());
        self.commit(next, persist)?;
        Ok(bundle::rotation_policy(view, name, Some(&policy)))
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
            versions: self.c.keys[name].clone(),
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
        view: &View,
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
        if contents.versions.is_empty() {
            return Err(ApiError::bad_request("the key backup holds no version"));
        }
        if self.c.deleted.contains_key(&contents.name) {
            return Err(in_deleted_state(&contents.name));
        }
        if self.c.keys.contains_key(&contents.name) {
            return Err(ApiError::conflict(format!(
                "a key named '{}' already exists in this instance",
                contents.name
            )));
        }
        for v in &contents.versions {
            v.material()?;
        }
        let last = contents.versions.last().cloned().expect("checked above");
        let mut next = self.c.clone();
        let mut contents = contents;
        next.keys
            .insert(contents.name.clone(), std::mem::take(&mut contents.versions));
        self.commit(next, persist)?;
        Ok(bundle::key_bundle(view, &contents.name, &last, &*last.material()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{rsa_2048, test_rng};

    const A: View = View {
        origin: "https://a",
        purge_protection: true,
    };
    const B: View = View {
        origin: "https://b",
        purge_protection: false,
    };

    fn spec(kty: Kty, crv: Option<Curve>) -> KeySpec {
        KeySpec {
            kty,
            bits: if kty == Kty::Oct { 256 } else { 2048 },
            crv,
            key_ops: super::super::spec::default_key_ops(kty),
            enabled: true,
            nbf: None,
            exp: None,
            tags: BTreeMap::new(),
        }
    }

    fn rsa() -> Material {
        Material::Rsa(Box::new(rsa_2048().clone()))
    }

    /// Material is not `Clone` (a copy of a private key is made on purpose only).
    fn copy(m: &Material) -> Material {
        Material::from_stored(m.kty(), m.curve(), &m.to_stored().unwrap()).unwrap()
    }

    fn add(store: &mut KeyStore, view: &View, name: &str, s: KeySpec, m: &Material) -> Value {
        store
            .add_version(&mut test_rng(1), view, name, s, copy(m), false, 100, true)
            .unwrap()
    }

    #[test]
    fn backup_restores_only_under_the_same_domain_key() {
        let dir_a = tempfile::tempdir().unwrap();
        let mut a = KeyStore::open(dir_a.path()).unwrap();
        let created = add(&mut a, &A, "canary", spec(Kty::Rsa, None), &rsa());
        assert_eq!(created["key"]["kty"], "RSA-HSM");
        assert_eq!(created["attributes"]["recoveryLevel"], "Recoverable");
        assert!(created["key"]["kid"]
            .as_str()
            .unwrap()
            .starts_with("https://a/keys/canary/"));
        let blob = a.backup(&mut test_rng(2), "canary", &[7; 32]).unwrap();

        let dir_b = tempfile::tempdir().unwrap();
        let mut b = KeyStore::open(dir_b.path()).unwrap();
        let err = b.restore(&B, &blob, &[8; 32], true).unwrap_err();
        assert_eq!(err.status, hyper::StatusCode::BAD_REQUEST);
        assert!(err.message.contains("another security domain"));
        assert!(b.get(&B, "canary", None).is_err(), "nothing restored");
        let restored = b.restore(&B, &blob, &[7; 32], true).unwrap();
        assert_eq!(restored["key"]["n"], created["key"]["n"]);
        assert_eq!(restored["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
        assert_eq!(
            b.restore(&B, &blob, &[7; 32], true).unwrap_err().status,
            hyper::StatusCode::CONFLICT
        );
        // Survives reopening.
        let b2 = KeyStore::open(dir_b.path()).unwrap();
        assert_eq!(b2.get(&B, "canary", None).unwrap()["key"]["n"], created["key"]["n"]);
        // A flipped byte is refused.
        let mut raw = b64u_decode(&blob, "b").unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let mut c = KeyStore::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(c.restore(&B, &b64u(&raw), &[7; 32], true).is_err());
    }

    #[test]
    fn key_material_is_decoded_once_kept_in_memory_only_and_dropped_on_delete() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = KeyStore::open(dir.path()).unwrap();
        add(&mut s, &A, "k", spec(Kty::Rsa, None), &rsa());
        let use_key = |s: &KeyStore| s.for_operation(&A, "k", None, "sign", 100).unwrap().1;
        let stored = std::fs::read(dir.path().join(KEYS_FILE)).unwrap();
        let exported = s.export();
        let first = use_key(&s);
        assert!(Arc::ptr_eq(&first, &use_key(&s)), "decoded once, not per operation");
        assert_eq!(
            std::fs::read(dir.path().join(KEYS_FILE)).unwrap(),
            stored,
            "a use writes nothing"
        );
        assert_eq!(s.export(), exported, "the decoded key is not serialised");
        // A change of attributes keeps it: the material is the same.
        let tag = Update {
            key_ops: None,
            enabled: None,
            nbf: None,
            exp: None,
            tags: Some(BTreeMap::from([("t".to_string(), "1".to_string())])),
        };
        s.update(&A, "k", None, tag, 200, true).unwrap();
        assert!(Arc::ptr_eq(&first, &use_key(&s)));
        // Reopened, the store decodes afresh.
        let reopened = KeyStore::open(dir.path()).unwrap();
        assert!(!Arc::ptr_eq(&first, &use_key(&reopened)));
        // A deleted key keeps no decoded material; recovered, it decodes again.
        s.delete(&A, "k", 300, true).unwrap();
        s.get_deleted(&A, "k", 300).unwrap();
        assert!(s.c.deleted["k"].versions.iter().all(|v| v.parsed.get().is_none()));
        s.recover(&A, "k", 300, true).unwrap();
        assert!(!Arc::ptr_eq(&first, &use_key(&s)));
        // A full restore replaces it.
        let before = use_key(&s);
        let state = s.export();
        s.import(&state, true).unwrap();
        assert!(!Arc::ptr_eq(&before, &use_key(&s)));
    }

    #[test]
    fn a_format_1_store_still_opens() {
        use pkcs8::EncodePrivateKey;
        let dir = tempfile::tempdir().unwrap();
        let der = rsa_2048().to_pkcs8_der().unwrap();
        let old = serde_json::json!({"format": 1, "keys": {"canary": [{
            "version": "v1", "pkcs8": b64u(der.as_bytes()), "key_ops": ["sign"],
            "enabled": true, "created": 1, "updated": 1, "tags": {}
        }]}});
        std::fs::write(dir.path().join(KEYS_FILE), old.to_string()).unwrap();
        let s = KeyStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&A, "canary", None).unwrap()["key"]["kty"], "RSA-HSM");
    }

    #[test]
    fn a_restore_not_persisted_is_held_in_memory_only() {
        let mut a = KeyStore::in_memory();
        add(&mut a, &A, "canary", spec(Kty::Rsa, None), &rsa());
        let blob = a.backup(&mut test_rng(2), "canary", &[7; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut b = KeyStore::open(dir.path()).unwrap();
        b.restore(&B, &blob, &[7; 32], false).unwrap();
        assert!(b.get(&B, "canary", None).is_ok());
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

    #[test]
    fn lists_page_with_a_continuation_and_lose_nothing() {
        let mut s = KeyStore::in_memory();
        let oct = Material::generate(&mut test_rng(5), Kty::Oct, 256, None).unwrap();
        for i in 0..7 {
            add(&mut s, &A, &format!("k{i}"), spec(Kty::Oct, None), &oct);
        }
        for _ in 0..4 {
            add(&mut s, &A, "k3", spec(Kty::Oct, None), &oct);
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s.list(
                &A,
                &Page {
                    max: 3,
                    after: after.clone(),
                },
            );
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().map(|i| i["kid"].as_str().unwrap().to_string()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let want: Vec<String> = (0..7).map(|i| format!("https://a/keys/k{i}")).collect();
        assert_eq!(seen, want);
        // Exactly one full page: no continuation.
        assert!(s.list(&A, &Page { max: 7, after: None }).next.is_none());
        let v1 = s.versions(&A, "k3", &Page { max: 2, after: None }).unwrap();
        assert_eq!(v1.items.len(), 2);
        let v2 = s
            .versions(
                &A,
                "k3",
                &Page {
                    max: 2,
                    after: v1.next.clone(),
                },
            )
            .unwrap();
        let v3 = s
            .versions(
                &A,
                "k3",
                &Page {
                    max: 2,
                    after: v2.next.clone(),
                },
            )
            .unwrap();
        assert_eq!((v2.items.len(), v3.items.len(), v3.next.is_none()), (2, 1, true));
        assert!(s.versions(&A, "nope", &Page { max: 2, after: None }).is_err());
    }

    #[test]
    fn soft_delete_recover_and_purge_protection() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = KeyStore::open(dir.path()).unwrap();
        let ec = Material::generate(&mut test_rng(5), Kty::Ec, 0, Some(Curve::P256)).unwrap();
        add(&mut s, &A, "k", spec(Kty::Ec, Some(Curve::P256)), &ec);
        let d = s.delete(&A, "k", 1000, true).unwrap();
        assert_eq!(d["recoveryId"], "https://a/deletedkeys/k");
        assert_eq!(d["deletedDate"], 1000);
        assert_eq!(d["scheduledPurgeDate"], 1000 + 90 * 86_400);
        assert_eq!(d["key"]["crv"], "P-256");
        assert_eq!(s.get(&A, "k", None).unwrap_err().code, "KeyNotFound");
        // The name cannot be reused while it is deleted.
        let err = s
            .add_version(
                &mut test_rng(1),
                &A,
                "k",
                spec(Kty::Ec, Some(Curve::P256)),
                copy(&ec),
                false,
                2000,
                true,
            )
            .unwrap_err();
        assert_eq!(err.status, hyper::StatusCode::CONFLICT);
        assert_eq!(s.list_deleted(&A, &Page { max: 25, after: None }, 2000).items.len(), 1);
        // Purge protection refuses the purge; the key stays recoverable.
        let err = s.purge(&A, "k", 2000, true).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (403, "Forbidden"));
        assert!(s.get_deleted(&A, "k", 2000).is_ok());
        // Survives a restart while deleted, then recovers with its policy.
        let mut s = KeyStore::open(dir.path()).unwrap();
        assert!(s.get_deleted(&A, "k", 2000).is_ok());
        let r = s.recover(&A, "k", 2000, true).unwrap();
        assert_eq!(r["key"]["x"], d["key"]["x"]);
        assert!(s.get_deleted(&A, "k", 2000).is_err());
        // Without purge protection the purge goes through, and the name is free again.
        s.delete(&B, "k", 3000, true).unwrap();
        s.purge(&B, "k", 3000, true).unwrap();
        assert_eq!(
            s.get_deleted(&B, "k", 3000).unwrap_err().status,
            hyper::StatusCode::NOT_FOUND
        );
        add(&mut s, &B, "k", spec(Kty::Ec, Some(Curve::P256)), &ec);
        // Past its scheduled purge date a deleted key is gone.
        s.delete(&A, "k", 4000, true).unwrap();
        assert!(s.get_deleted(&A, "k", 4000 + 90 * 86_400).is_err());
    }

    #[test]
    fn operations_are_refused_as_the_service_refuses_them() {
        let mut s = KeyStore::in_memory();
        let mut sp = spec(Kty::Rsa, None);
        sp.key_ops = vec!["sign".into(), "verify".into(), "encrypt".into()];
        sp.nbf = Some(50);
        sp.exp = Some(500);
        add(&mut s, &A, "k", sp, &rsa());
        let op = |s: &KeyStore, op: &str, now: u64| {
            s.for_operation(&A, "k", None, op, now)
                .map(|_| ())
                .map_err(|e| (e.code, e.message))
        };
        assert!(op(&s, "sign", 100).is_ok());
        let (code, msg) = op(&s, "decrypt", 100).unwrap_err();
        assert_eq!(
            (code, msg.as_str()),
            (
                "Forbidden/KeyOperationForbidden",
                "Operation decrypt is not permitted on this key."
            )
        );
        assert_eq!(op(&s, "sign", 10).unwrap_err().0, "Forbidden/KeyNotYetValid");
        assert_eq!(op(&s, "sign", 500).unwrap_err().0, "Forbidden/KeyExpired");
        assert!(op(&s, "verify", 500).is_ok(), "public-key operations stay allowed");
        let disable = Update {
            key_ops: None,
            enabled: Some(false),
            nbf: None,
            exp: None,
            tags: None,
        };
        let updated = s.update(&A, "k", None, disable, 200, true).unwrap();
        assert_eq!(
            (
                updated["attributes"]["enabled"].as_bool(),
                updated["attributes"]["updated"].as_u64()
            ),
            (Some(false), Some(200))
        );
        let (code, msg) = op(&s, "sign", 100).unwrap_err();
        assert_eq!(
            (code, msg.as_str()),
            (
                "Forbidden/KeyDisabled",
                "Operation sign is not allowed on a disabled key."
            )
        );
        assert!(op(&s, "encrypt", 100).is_ok());
        let ops = Update {
            key_ops: Some(vec!["verify".into()]),
            enabled: Some(true),
            nbf: None,
            exp: None,
            tags: None,
        };
        s.update(&A, "k", None, ops, 300, true).unwrap();
        assert_eq!(op(&s, "sign", 100).unwrap_err().0, "Forbidden/KeyOperationForbidden");
        let bad = Update {
            key_ops: None,
            enabled: None,
            nbf: Some(600),
            exp: None,
            tags: None,
        };
        assert!(s.update(&A, "k", None, bad, 300, true).is_err(), "nbf after exp");
    }

    #[test]
    fn export_and_import_carry_everything() {
        let mut s = KeyStore::in_memory();
        add(&mut s, &A, "a", spec(Kty::Rsa, None), &rsa());
        add(&mut s, &A, "b", spec(Kty::Rsa, None), &rsa());
        s.delete(&A, "b", 10, true).unwrap();
        let exported = s.export();
        let mut t = KeyStore::in_memory();
        t.import(&exported, true).unwrap();
        assert!(t.get(&A, "a", None).is_ok() && t.get_deleted(&A, "b", 20).is_ok());
        let mut broken: serde_json::Value = serde_json::from_slice(&exported).unwrap();
        broken["keys"]["c"] = serde_json::json!([]);
        assert!(t.import(broken.to_string().as_bytes(), true).is_err());
        assert!(t.get(&A, "c", None).is_err(), "nothing adopted");
        let mut u = KeyStore::in_memory();
        u.import_key(&exported, "a", true).unwrap();
        assert!(u.get(&A, "a", None).is_ok() && u.get_deleted(&A, "b", 20).is_err());
        assert_eq!(
            u.import_key(&exported, "b", true).unwrap_err().status,
            hyper::StatusCode::NOT_FOUND
        );
    }
}
