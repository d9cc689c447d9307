//! The recovery drill, as Microsoft's disaster-recovery guide runs it:
//! `prepare` makes a canary set on the original instance (an RSA, an EC and
//! an AES key, a DEK wrapped under two of them, a signature, a full backup)
//! and a canary file of public material only; the drill then recovers a new
//! instance from a quorum, restores the full backup there, compares the
//! inventory and proves HSM-side that the restored keys are the originals.
//! The [`Report`] is the evidence: JSON for machines, Markdown for the
//! ceremony binder, thumbprints and fingerprints only, never a secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::kill::kill_point;
use crate::crypto::b64::{b64u, b64u_decode};
use crate::crypto::rng::CryptoRng;
use crate::custodian::cert::Certificate;
use crate::error::{Error, InstanceError, Result};
use crate::files::{self, Mode};
use crate::format::restore_blob::RestoreBlob;
use crate::recovery::{self, Recovered};

/// The tag every canary key carries (value: the canary file's date), so
/// the team can find and delete them on a real instance.
pub const CANARY_TAG: &str = "hsm-ceremony-canary";
/// What the canary file says it is.
pub const CANARY_FORMAT: &str = "hsm-ceremony canary set";
pub const CANARY_VERSION: u32 = 2;
/// Largest canary file read (its inventory lists every key version).
pub const MAX_CANARY_BYTES: u64 = 8 * 1024 * 1024;
pub const REPORT_JSON: &str = "drill-report.json";
pub const REPORT_MD: &str = "drill-report.md";

pub const WRAP_RSA: &str = "RSA-OAEP-256";
pub const WRAP_AES: &str = "A256KW";
pub const SIGN_EC: &str = "ES256";

/// One canary key version on the original instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CanaryKey {
    pub name: String,
    pub version: String,
    pub kid: String,
    pub kty: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CanaryKeys {
    pub rsa: CanaryKey,
    pub ec: CanaryKey,
    pub aes: CanaryKey,
}

impl CanaryKeys {
    fn get(&self, role: &str) -> Option<&CanaryKey> {
        match role {
            "rsa" => Some(&self.rsa),
            "ec" => Some(&self.ec),
            "aes" => Some(&self.aes),
            _ => None,
        }
    }
}

/// The DEK as a canary key wrapped it on the original (base64url).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WrappedDek {
    /// `rsa` or `aes`: which of [`CanaryKeys`].
    pub key: String,
    pub alg: String,
    pub value: String,
}

/// The EC canary's signature over `digest` (SHA-256 of `message`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CanarySignature {
    pub key: String,
    pub alg: String,
    pub message: String,
    pub digest: String,
    pub value: String,
}

/// Where the full backup is: the container (its URL only: a SAS is given
/// to the drill separately, never stored) and the backup's folder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupLocation {
    pub storage: String,
    pub folder: String,
    pub folder_url: String,
}

/// One key version as the inventory records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct InventoryEntry {
    pub name: String,
    pub version: String,
    pub enabled: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl std::fmt::Display for InventoryEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.version)
    }
}

/// What `drill prepare` leaves: public material only. The DEK itself is
/// never here, only its SHA-256 (a hash of 32 random bytes reveals nothing).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub format: String,
    pub version: u32,
    /// The original instance's URL.
    pub instance: String,
    pub created: String,
    pub keys: CanaryKeys,
    pub dek_sha256: String,
    pub wrapped_deks: Vec<WrappedDek>,
    pub signature: CanarySignature,
    pub backup: BackupLocation,
    /// Every key version of the original when the backup was taken.
    pub inventory: Vec<InventoryEntry>,
    /// The RSA canary's own key backup (sealed by the instance under its
    /// security domain), for `instance restore-key`.
    pub rsa_key_backup: String,
    /// With [`InventoryRecord::Digests`]: every key version's [`entry_digest`]
    /// (keyed by the DEK, which only the HSM's canary keys give back),
    /// sorted; `inventory` then lists the canary keys alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory_digests: Vec<String>,
}

/// How `drill prepare` records the original's inventory in the canary file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InventoryRecord {
    /// Every key version by name, version, tags and enabled state.
    All,
    /// The canary keys by name; every key version (canaries included) as
    /// an HMAC-SHA256 under the DEK, so the file does not name the
    /// production keys and the compare stays exact.
    Digests,
}

/// An inventory entry as the canary file's digests record it: HMAC-SHA256,
/// keyed by the DEK, of the entry's JSON (name, version, enabled, tags).
/// Key names are guessable, so a plain hash would not hide them; without
/// the DEK nobody can test a guess.
pub fn entry_digest(dek: &[u8], e: &InventoryEntry) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(dek).expect("HMAC takes any key length");
    mac.update(&serde_json::to_vec(e).expect("plain data serialises"));
    hex::encode(mac.finalize().into_bytes())
}

/// The single-key canary of earlier versions (`version` 1): what
/// `instance restore-key` restores. A canary set gives its RSA key's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyCanary {
    pub version: u32,
    pub instance: String,
    pub name: String,
    pub kid: String,
    pub key_version: String,
    pub created: String,
    /// The key backup blob as the instance gave it (opaque, sealed by the instance).
    pub backup: String,
}

/// Field names a canary file never holds: private JWK members, the DEK,
/// passwords and tokens. One of them means the file may carry a secret.
const SECRET_FIELDS: &[&str] = &[
    "d",
    "k",
    "p",
    "q",
    "dp",
    "dq",
    "qi",
    "dek",
    "plaintext",
    "secret",
    "password",
    "passphrase",
    "token",
    "sas",
    "sas_token",
    "private_key",
    "key_material",
];

/// The first field (by its path) whose name is secret-looking, or whose
/// text carries a SAS signature (`sig=`).
/// An inventory's tags are the HSM's own metadata (a production key may
/// well carry a tag named `token`): their names are not checked, their
/// values still are.
fn secret_looking(v: &Value, at: &str) -> Option<String> {
    let in_tags = at.ends_with(".tags");
    match v {
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            let here = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            if !in_tags && SECRET_FIELDS.contains(&k.to_ascii_lowercase().as_str()) {
                Some(format!("a field `{here}`"))
            } else {
                secret_looking(v, &here)
            }
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| secret_looking(v, &format!("{at}[{i}]"))),
        Value::String(s) if s.contains("sig=") => Some(format!("a SAS signature (sig=) in `{at}`")),
        _ => None,
    }
}

fn refused(path: &Path, why: impl Into<String>) -> Error {
    Error::NotA {
        path: path.to_path_buf(),
        what: "canary set from `drill prepare`",
        why: why.into(),
    }
}

fn is_hex32(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Canary {
    /// What a canary set must be beyond its shape: the three keys of the
    /// right types, both DEKs and the signature decodable, the backup's
    /// location plain, and the canary keys in the inventory.
    fn check(&self) -> std::result::Result<(), String> {
        if self.format != CANARY_FORMAT {
            return Err(format!("its format is '{}', not '{CANARY_FORMAT}'", self.format));
        }
        if self.version != CANARY_VERSION {
            return Err(format!(
                "it is version {}; this hsm-ceremony reads version {CANARY_VERSION}: make one with this version's `drill prepare`",
                self.version
            ));
        }
        for (role, key, kty) in [
            ("rsa", &self.keys.rsa, "RSA-HSM"),
            ("ec", &self.keys.ec, "EC-HSM"),
            ("aes", &self.keys.aes, "oct-HSM"),
        ] {
            if !crate::format::limits::is_key_name(&key.name) || !crate::format::limits::is_key_name(&key.version) {
                return Err(format!("keys.{role} has a name or version that is not a key name"));
            }
            if key.kty != kty {
                return Err(format!("keys.{role} is {}, not {kty}", key.kty));
            }
            if !self
                .inventory
                .iter()
                .any(|e| e.name == key.name && e.version == key.version)
            {
                return Err(format!(
                    "the canary key {}/{} is not in its own inventory: the file was edited",
                    key.name, key.version
                ));
            }
        }
        if !is_hex32(&self.dek_sha256) {
            return Err("dek_sha256 is not 64 lower-case hex digits".into());
        }
        let wanted = [("rsa", WRAP_RSA), ("aes", WRAP_AES)];
        if self.wrapped_deks.len() != wanted.len()
            || !wanted
                .iter()
                .all(|(k, a)| self.wrapped_deks.iter().any(|w| w.key == *k && w.alg == *a))
        {
            return Err(format!(
                "wrapped_deks must be the DEK wrapped once under keys.rsa ({WRAP_RSA}) and once under keys.aes ({WRAP_AES})"
            ));
        }
        for w in &self.wrapped_deks {
            b64u_decode(&w.value, "wrapped DEK").map_err(|e| format!("the DEK wrapped under {}: {e}", w.key))?;
        }
        let s = &self.signature;
        if s.key != "ec" || s.alg != SIGN_EC {
            return Err(format!("the signature must be keys.ec's, {SIGN_EC}"));
        }
        let digest = b64u_decode(&s.digest, "signature digest").map_err(|e| e.to_string())?;
        if digest[..] != Sha256::digest(s.message.as_bytes())[..] {
            return Err("signature.digest is not the SHA-256 of signature.message: the file was edited".into());
        }
        b64u_decode(&s.value, "signature").map_err(|e| e.to_string())?;
        let b = &self.backup;
        if b.storage.contains(['?', '#']) || b.folder_url.contains(['?', '#']) {
            return Err("backup.storage and backup.folder_url are plain URLs (a SAS is never stored here)".into());
        }
        if b.folder.is_empty()
            || !b
                .folder
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            return Err(format!("backup.folder '{}' is not a backup folder name", b.folder));
        }
        if self.rsa_key_backup.is_empty() {
            return Err("rsa_key_backup is empty".into());
        }
        if let Some(bad) = self.inventory_digests.iter().position(|d| !is_hex32(d)) {
            return Err(format!("inventory_digests[{bad}] is not 64 lower-case hex digits"));
        }
        if !self.inventory_digests.is_empty() && self.inventory_digests.len() < self.inventory.len() {
            return Err("inventory_digests has fewer entries than the canary keys it must include".into());
        }
        Ok(())
    }

    /// The wrapped DEK under `role`'s key, decoded (checked on load).
    fn wrapped(&self, role: &str) -> Option<(&WrappedDek, Vec<u8>)> {
        let w = self.wrapped_deks.iter().find(|w| w.key == role)?;
        b64u_decode(&w.value, "wrapped DEK").ok().map(|v| (w, v))
    }

    /// The RSA canary as `instance restore-key` restores it.
    pub fn key_canary(&self) -> KeyCanary {
        KeyCanary {
            version: self.version,
            instance: self.instance.clone(),
            name: self.keys.rsa.name.clone(),
            kid: self.keys.rsa.kid.clone(),
            key_version: self.keys.rsa.version.clone(),
            created: self.created.clone(),
            backup: self.rsa_key_backup.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }
}

/// Parses and checks the canary set `drill prepare` wrote, from the bytes
/// of `path` as read ([`crate::inputs::canary_set_hashed`]). A single-key
/// canary of an earlier version, a secret-looking field, or anything the
/// set must hold and does not is refused, naming the culprit.
pub fn parse_canary_set(path: &Path, bytes: &[u8]) -> Result<Canary> {
    let v = crate::format::json::from_slice::<Value>(bytes).map_err(|e| refused(path, e))?;
    if let Some(what) = secret_looking(&v, "") {
        return Err(refused(
            path,
            format!(
                "it holds {what}, which a canary file never does (it holds public material only): \
                 treat the file as leaked, delete it, and make a new canary set with `drill prepare`"
            ),
        ));
    }
    if v.get("version").and_then(Value::as_u64) == Some(1) && v.get("backup").is_some_and(Value::is_string) {
        return Err(refused(
            path,
            "it is a single-key canary (version 1) from an earlier `drill prepare`; the drill now restores a full \
             backup and proves the canary keys HSM-side: run `hsm-ceremony drill prepare` on the original again",
        ));
    }
    let canary: Canary = serde_path_to_error::deserialize(v).map_err(|e| refused(path, e.to_string()))?;
    canary.check().map_err(|why| refused(path, why))?;
    Ok(canary)
}

/// Parses a canary for `instance restore-key`: a single-key canary
/// (version 1) as it is, or a canary set's RSA key.
pub fn parse_key_canary(path: &Path, bytes: &[u8]) -> Result<KeyCanary> {
    let v = crate::format::json::from_slice::<Value>(bytes).map_err(|e| refused(path, e))?;
    if v.get("version").and_then(Value::as_u64) == Some(1) {
        return serde_path_to_error::deserialize(v).map_err(|e| refused(path, e.to_string()));
    }
    parse_canary_set(path, bytes).map(|c| c.key_canary())
}

/// An instance as the drill and `prepare` use it: the instance client for
/// a URL or an in-process emulator, or a fake in the tests.
pub trait Target {
    /// Whether this is an emulated instance (what the report may claim).
    fn is_emulated(&self) -> bool;
    fn transfer_key(&self) -> Result<Certificate>;
    /// Uploads the restore blob and waits for Success.
    fn upload(&self, blob: &RestoreBlob) -> Result<()>;
    fn create_key(&self, name: &str, kty: &str, tags: &BTreeMap<String, String>) -> Result<CanaryKey>;
    fn wrap_key(&self, key: &CanaryKey, alg: &str, dek: &[u8]) -> Result<Vec<u8>>;
    fn unwrap_key(&self, key: &CanaryKey, alg: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
    fn sign(&self, key: &CanaryKey, alg: &str, digest: &[u8]) -> Result<Vec<u8>>;
    fn verify(&self, key: &CanaryKey, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool>;
    /// Every key version, sorted by name then version.
    fn inventory(&self) -> Result<Vec<InventoryEntry>>;
    /// A full backup to `storage` (`sas`: its token; none for `file:///`), waited for.
    fn full_backup(&self, storage: &str, sas: Option<&str>) -> Result<BackupLocation>;
    /// A full restore of `backup`, waited for.
    fn full_restore(&self, backup: &BackupLocation, sas: Option<&str>) -> Result<()>;
    /// One key's own backup blob.
    fn key_backup(&self, name: &str) -> Result<String>;
}

/// What `drill prepare` is told.
pub struct PrepareOptions<'a> {
    /// The original's URL, recorded in the canary file.
    pub instance: &'a str,
    /// The canary keys are `PREFIX-rsa`, `PREFIX-ec`, `PREFIX-aes`.
    pub prefix: &'a str,
    /// The container (or `file:///` folder) the full backup goes to.
    pub storage: &'a str,
    pub sas: Option<&'a str>,
    pub created: String,
    pub inventory: InventoryRecord,
}

/// The canary key names for `prefix`, checked before anything is created.
pub fn canary_names(prefix: &str) -> Result<[String; 3]> {
    let names = ["rsa", "ec", "aes"].map(|r| format!("{prefix}-{r}"));
    for n in &names {
        if !crate::format::limits::is_key_name(n) {
            return Err(InstanceError::KeyName { name: n.clone() }.into());
        }
    }
    Ok(names)
}

/// Makes the canary set on `original`: the three keys, a fresh DEK wrapped
/// under the RSA and AES keys, a signature by the EC key, the proofs run
/// once on the original (so a failed drill means the recovery, not the
/// canary), the inventory, the full backup. `progress` is told each step.
pub fn prepare_with_rng<T: Target, R: CryptoRng + ?Sized>(
    rng: &mut R,
    original: &T,
    opts: &PrepareOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Canary> {
    let [rsa_name, ec_name, aes_name] = canary_names(opts.prefix)?;
    let tags = BTreeMap::from([(CANARY_TAG.to_string(), opts.created.clone())]);
    progress("creating the canary keys");
    let keys = CanaryKeys {
        rsa: original.create_key(&rsa_name, "RSA-HSM", &tags)?,
        ec: original.create_key(&ec_name, "EC-HSM", &tags)?,
        aes: original.create_key(&aes_name, "oct-HSM", &tags)?,
    };
    let mut dek = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut dek[..]);
    progress("wrapping a DEK and signing");
    let wrapped_deks = vec![
        WrappedDek {
            key: "rsa".into(),
            alg: WRAP_RSA.into(),
            value: b64u(&original.wrap_key(&keys.rsa, WRAP_RSA, &dek[..])?),
        },
        WrappedDek {
            key: "aes".into(),
            alg: WRAP_AES.into(),
            value: b64u(&original.wrap_key(&keys.aes, WRAP_AES, &dek[..])?),
        },
    ];
    let message = format!("hsm-ceremony canary set made on {} at {}", opts.instance, opts.created);
    let digest = Sha256::digest(message.as_bytes());
    let signature = CanarySignature {
        key: "ec".into(),
        alg: SIGN_EC.into(),
        value: b64u(&original.sign(&keys.ec, SIGN_EC, &digest)?),
        digest: b64u(&digest),
        message,
    };
    let mut canary = Canary {
        format: CANARY_FORMAT.into(),
        version: CANARY_VERSION,
        instance: opts.instance.into(),
        created: opts.created.clone(),
        keys,
        dek_sha256: hex::encode(Sha256::digest(&dek[..])),
        wrapped_deks,
        signature,
        backup: BackupLocation {
            storage: String::new(),
            folder: String::new(),
            folder_url: String::new(),
        },
        inventory: Vec::new(),
        rsa_key_backup: String::new(),
        inventory_digests: Vec::new(),
    };
    let failed: Vec<String> = proofs_with_rng(rng, original, &canary)
        .into_iter()
        .filter(|p| !p.passed())
        .map(|p| format!("{}: {}", p.name, p.outcome))
        .collect();
    if !failed.is_empty() {
        return Err(InstanceError::ProofsFailed { failed }.into());
    }
    progress("taking the inventory");
    canary.inventory = original.inventory()?;
    if opts.inventory == InventoryRecord::Digests {
        let mut digests: Vec<String> = canary.inventory.iter().map(|e| entry_digest(&dek[..], e)).collect();
        digests.sort();
        canary.inventory_digests = digests;
        let k = &canary.keys;
        let own = |e: &InventoryEntry| {
            [&k.rsa, &k.ec, &k.aes]
                .iter()
                .any(|c| c.name == e.name && c.version == e.version)
        };
        canary.inventory.retain(own);
    }
    progress("making the full backup");
    canary.backup = original.full_backup(opts.storage, opts.sas)?;
    canary.rsa_key_backup = original.key_backup(&canary.keys.rsa.name)?;
    canary
        .check()
        .map_err(|why| refused(Path::new("the new canary file"), why))?;
    // Belt and braces: what is written is scanned for the DEK in every encoding.
    let text = canary.to_json();
    if [b64u(&dek[..]), hex::encode(&dek[..])]
        .iter()
        .any(|e| text.contains(e.as_str()))
        || secret_looking(&serde_json::from_str(&text).expect("own JSON"), "").is_some()
    {
        return Err(refused(
            Path::new("the new canary file"),
            "it would hold a secret; nothing was written",
        ));
    }
    Ok(canary)
}

/// Writes the canary file (must not exist; public, 0644).
pub fn write_canary(path: &Path, canary: &Canary) -> Result<()> {
    files::write_new(path, canary.to_json().as_bytes(), Mode::Public)
}

/// One HSM-side proof and its outcome (`ok`, or `failed: why`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Proof {
    pub name: String,
    pub outcome: String,
}

impl Proof {
    pub fn passed(&self) -> bool {
        self.outcome == "ok"
    }
}

fn proof(name: String, body: impl FnOnce() -> std::result::Result<(), String>) -> Proof {
    Proof {
        name,
        outcome: match body() {
            Ok(()) => "ok".into(),
            Err(why) => format!("failed: {why}"),
        },
    }
}

/// The HSM-side proofs against `hsm`, each run whatever the others gave:
/// both DEKs unwrap to the recorded SHA-256, the original's signature
/// verifies, and the EC key signs anew and verifies that.
pub fn proofs_with_rng<T: Target, R: CryptoRng + ?Sized>(rng: &mut R, hsm: &T, c: &Canary) -> Vec<Proof> {
    let mut out = Vec::new();
    for role in ["rsa", "aes"] {
        let key = c.keys.get(role).expect("rsa and aes are canary keys");
        let Some((w, wrapped)) = c.wrapped(role) else {
            out.push(Proof {
                name: format!("unwrap the DEK wrapped under {}", key.name),
                outcome: "failed: the canary file holds no DEK wrapped under it".into(),
            });
            continue;
        };
        out.push(proof(
            format!("unwrap the DEK wrapped under {} ({})", key.name, w.alg),
            || {
                let dek = hsm.unwrap_key(key, &w.alg, &wrapped).map_err(|e| e.to_string())?;
                let got = hex::encode(Sha256::digest(&dek[..]));
                if bool::from(got.as_bytes().ct_eq(c.dek_sha256.as_bytes())) {
                    Ok(())
                } else {
                    Err(format!(
                        "{}/{} unwrapped a DEK whose SHA-256 is {got}, not the recorded {}: it is not the key that wrapped it",
                        key.name, key.version, c.dek_sha256
                    ))
                }
            },
        ));
    }
    let s = &c.signature;
    let ec = &c.keys.ec;
    out.push(proof(
        format!("verify the original's signature with {} ({})", ec.name, s.alg),
        || {
            let digest = b64u_decode(&s.digest, "digest").map_err(|e| e.to_string())?;
            let sig = b64u_decode(&s.value, "signature").map_err(|e| e.to_string())?;
            match hsm.verify(ec, &s.alg, &digest, &sig).map_err(|e| e.to_string())? {
                true => Ok(()),
                false => Err(format!(
                    "{}/{} does not verify the signature made on {}: it is not the key that signed it",
                    ec.name, ec.version, c.instance
                )),
            }
        },
    ));
    out.push(proof(
        format!("sign anew with {} and verify ({})", ec.name, s.alg),
        || {
            let mut nonce = [0u8; 16];
            rng.fill_bytes(&mut nonce);
            let digest = Sha256::digest(format!("hsm-ceremony drill {}", hex::encode(nonce)).as_bytes());
            let sig = hsm.sign(ec, &s.alg, &digest).map_err(|e| e.to_string())?;
            match hsm.verify(ec, &s.alg, &digest, &sig).map_err(|e| e.to_string())? {
                true => Ok(()),
                false => Err(format!(
                    "{}/{} does not verify its own new signature",
                    ec.name, ec.version
                )),
            }
        },
    ));
    out
}

/// How the recovered inventory differs from the recorded one, if it does.
fn compare_inventory(want: &[InventoryEntry], got: &[InventoryEntry]) -> Result<()> {
    let key = |e: &InventoryEntry| (e.name.clone(), e.version.clone());
    let got_by: BTreeMap<_, _> = got.iter().map(|e| (key(e), e)).collect();
    let want_by: BTreeMap<_, _> = want.iter().map(|e| (key(e), e)).collect();
    let missing: Vec<String> = want
        .iter()
        .filter(|e| !got_by.contains_key(&key(e)))
        .map(|e| e.to_string())
        .collect();
    let unexpected: Vec<String> = got
        .iter()
        .filter(|e| !want_by.contains_key(&key(e)))
        .map(|e| e.to_string())
        .collect();
    let changed: Vec<String> = want
        .iter()
        .filter_map(|w| {
            let g = got_by.get(&key(w))?;
            let mut what = Vec::new();
            if g.enabled != w.enabled {
                what.push(format!("enabled {} (was {})", g.enabled, w.enabled));
            }
            if g.tags != w.tags {
                what.push(format!("tags {:?} (were {:?})", g.tags, w.tags));
            }
            (!what.is_empty()).then(|| format!("{w}: {}", what.join(", ")))
        })
        .collect();
    mismatch(missing, unexpected, changed)
}

/// Ok when nothing differs, else the inventory mismatch naming each entry.
fn mismatch(missing: Vec<String>, unexpected: Vec<String>, changed: Vec<String>) -> Result<()> {
    if missing.is_empty() && unexpected.is_empty() && changed.is_empty() {
        Ok(())
    } else {
        Err(InstanceError::InventoryMismatch {
            missing,
            unexpected,
            changed,
        }
        .into())
    }
}

/// `drill proofs` checks an instance recovered from the latest backup, which
/// is newer than the canary file: differences in the canary keys still fail,
/// differences in the other keys are listed for review (a key made, rotated
/// or retagged since is no sign of a bad recovery).
fn split_canary_differences(
    c: &Canary,
    missing: Vec<String>,
    unexpected: Vec<String>,
    changed: Vec<String>,
) -> (Result<()>, Vec<String>) {
    let prefixes = [&c.keys.rsa.name, &c.keys.ec.name, &c.keys.aes.name].map(|n| format!("{n}/"));
    let is_canary = |e: &String| prefixes.iter().any(|p| e.starts_with(p.as_str()));
    let mut others = Vec::new();
    let mut split = |list: Vec<String>, label: &str| -> Vec<String> {
        let (canary, rest): (Vec<String>, Vec<String>) = list.into_iter().partition(is_canary);
        others.extend(rest.into_iter().map(|e| format!("{label}: {e}")));
        canary
    };
    let missing = split(missing, "missing");
    let unexpected = split(unexpected, "not in the canary file");
    let changed = split(changed, "changed");
    (mismatch(missing, unexpected, changed), others)
}

/// The inventory compare for a canary file that records digests: the DEK
/// comes back from the HSM's RSA canary (the one proof that it is the
/// original's), then every key version found is matched by its digest.
/// A changed entry shows as a recorded digest missing and a found entry
/// unexpected; the missing ones are named only if they are canary keys.
fn compare_digests<T: Target>(target: &T, c: &Canary, got: &[InventoryEntry]) -> Result<()> {
    let (w, wrapped) = c.wrapped("rsa").ok_or_else(|| InstanceError::ProofsFailed {
        failed: vec!["the canary file holds no DEK wrapped under keys.rsa, which its inventory digests need".into()],
    })?;
    let dek = target.unwrap_key(&c.keys.rsa, &w.alg, &wrapped)?;
    let got_sha = hex::encode(Sha256::digest(&dek[..]));
    if !bool::from(got_sha.as_bytes().ct_eq(c.dek_sha256.as_bytes())) {
        return Err(InstanceError::ProofsFailed {
            failed: vec![format!(
                "{}/{} unwrapped a DEK whose SHA-256 is {got_sha}, not the recorded {}: the inventory digests cannot \
                 be compared, and it is not the key that wrapped it",
                c.keys.rsa.name, c.keys.rsa.version, c.dek_sha256
            )],
        }
        .into());
    }
    let found: Vec<(String, &InventoryEntry)> = got.iter().map(|e| (entry_digest(&dek[..], e), e)).collect();
    let unexpected: Vec<String> = found
        .iter()
        .filter(|(d, _)| c.inventory_digests.binary_search(d).is_err())
        .map(|(_, e)| e.to_string())
        .collect();
    let mut missing: Vec<String> = c
        .inventory
        .iter()
        .filter(|e| !got.contains(e))
        .map(|e| e.to_string())
        .collect();
    let unnamed = c
        .inventory_digests
        .iter()
        .filter(|d| !found.iter().any(|(f, _)| f == *d))
        .count()
        .saturating_sub(missing.len());
    if unnamed > 0 {
        missing.push(format!(
            "{unnamed} key version(s) the canary file records as digests only (drill prepare --inventory digests)"
        ));
    }
    // A changed entry is a recorded digest missing and an entry unexpected.
    mismatch(missing, unexpected, Vec::new())
}

/// The drill's steps, each timed into `report`: reach the target
/// (`connect`, which gives it and its label), fetch its exchange key, open a
/// quorum, build and upload the restore blob; then, with a canary set,
/// restore its full backup, compare the inventory and run the HSM-side
/// proofs. `quorum` readies the asking outside any step (a usage error
/// there is no failed step) and returns what opens the quorum. `sas` is the
/// backup storage's token (none for a `file:///` folder).
pub fn run_steps_with_rng<T: Target, Q: FnOnce() -> Result<Recovered>, R: CryptoRng + ?Sized>(
    rng: &mut R,
    report: &mut Report,
    connect: impl FnOnce() -> Result<(T, String)>,
    quorum: impl FnOnce() -> Result<Q>,
    canary: Option<&Canary>,
    sas: Option<&str>,
) -> Result<()> {
    let (target, label) = report.step(STEP_CONNECT, connect)?;
    report.instance = label;
    report.emulated = target.is_emulated();
    let exchange = report.step(STEP_EXCHANGE, || target.transfer_key())?;
    kill_point("drill:exchange-key");
    let open = quorum()?;
    let recovered = report.step(STEP_QUORUM, open)?;
    kill_point("drill:quorum-open");
    report.participants = recovered
        .custodians
        .iter()
        .map(|(x5t, who)| Participant {
            x5t_256: x5t.clone(),
            who: who.clone(),
        })
        .collect();
    let blob = report.step(STEP_BLOB, || {
        recovery::build_restore_blob_with_rng(rng, &recovered.items, &exchange)
    })?;
    drop(recovered);
    report.step(STEP_UPLOAD, || target.upload(&blob))?;
    kill_point("drill:uploaded");
    let Some(c) = canary else {
        report.canary = "not checked: no --canary file was given".into();
        return Ok(());
    };
    report.inventory_before = c.inventory.clone();
    let restored = report.step(STEP_RESTORE, || {
        target.full_restore(&c.backup, sas).map_err(|e| -> Error {
            InstanceError::BackupNotRestored {
                folder_url: c.backup.folder_url.clone(),
                source: Box::new(e),
            }
            .into()
        })
    });
    kill_point("drill:canary-restored");
    if let Err(e) = restored {
        report.canary = e.to_string();
        return Err(e);
    }
    prove_canary(rng, report, &target, c)
}

/// The canary proofs alone, against an instance recovered by hand (new
/// HSM, init-recovery, restore blob, upload, full restore from the latest
/// backup): reach it, compare its inventory with the canary file's and run
/// the HSM-side proofs. No quorum, no upload, no restore: `report` (made by
/// [`Report::proofs_only`]) says so.
pub fn run_proofs_with_rng<T: Target, R: CryptoRng + ?Sized>(
    rng: &mut R,
    report: &mut Report,
    connect: impl FnOnce() -> Result<(T, String)>,
    canary: &Canary,
) -> Result<()> {
    let (target, label) = report.step(STEP_CONNECT, connect)?;
    report.instance = label;
    report.emulated = target.is_emulated();
    report.inventory_before = canary.inventory.clone();
    prove_canary(rng, report, &target, canary)
}

/// The inventory compare and the HSM-side proofs, each timed into `report`,
/// whether the drill restored the backup itself or the team did.
fn prove_canary<T: Target, R: CryptoRng + ?Sized>(
    rng: &mut R,
    report: &mut Report,
    target: &T,
    c: &Canary,
) -> Result<()> {
    let proofs_only = report.proofs_only;
    let mut since = Vec::new();
    let compared = report.step(STEP_INVENTORY, || {
        let got = target.inventory()?;
        let compared = if c.inventory_digests.is_empty() {
            compare_inventory(&c.inventory, &got)
        } else {
            compare_digests(target, c, &got)
        };
        match compared {
            Err(Error::Instance(InstanceError::InventoryMismatch {
                missing,
                unexpected,
                changed,
            })) if proofs_only => {
                let (strict, others) = split_canary_differences(c, missing, unexpected, changed);
                since = others;
                strict
            }
            other => other,
        }
        .map(|()| got)
    });
    report.inventory_differences = since;
    // The inventory found is evidence even when it differs.
    report.inventory_after = match &compared {
        Ok(got) => got.clone(),
        Err(_) => target.inventory().unwrap_or_default(),
    };
    if let Err(e) = compared {
        report.canary = e.to_string();
        return Err(e);
    }
    let start = Instant::now();
    let proofs = proofs_with_rng(rng, target, c);
    let failed: Vec<String> = proofs
        .iter()
        .filter(|p| !p.passed())
        .map(|p| format!("{}: {}", p.name, p.outcome))
        .collect();
    report.proofs = proofs;
    let result = if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::from(InstanceError::ProofsFailed { failed }))
    };
    report.record(STEP_PROOFS, start, &result);
    report.canary = match &result {
        Ok(()) if report.proofs_only => format!(
            "the canary set made on {} is on this instance as recorded ({} key versions) and passed {} HSM-side proofs",
            c.instance,
            c.inventory.len().max(c.inventory_digests.len()),
            report.proofs.len()
        ),
        Ok(()) => format!(
            "the canary set made on {} restored with the full backup {} ({} key versions) and passed {} HSM-side proofs",
            c.instance,
            c.backup.folder_url,
            c.inventory.len().max(c.inventory_digests.len()),
            report.proofs.len()
        ),
        Err(e) => e.to_string(),
    };
    result
}

pub const STEP_CONNECT: &str = "start or reach the target instance";
pub const STEP_EXCHANGE: &str = "fetch the exchange key";
pub const STEP_QUORUM: &str = "open a quorum of shares";
pub const STEP_BLOB: &str = "build the restore blob";
pub const STEP_UPLOAD: &str = "upload and wait for Success";
pub const STEP_RESTORE: &str = "full restore from the canary set's backup";
pub const STEP_INVENTORY: &str = "compare the inventory with the canary file";
pub const STEP_PROOFS: &str = "HSM-side proofs with the restored keys";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    pub outcome: String,
    pub duration_ms: u128,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Participant {
    pub x5t_256: String,
    pub who: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub version: u32,
    pub date: String,
    pub instance: String,
    /// Whether the target was an emulated instance.
    pub emulated: bool,
    pub sd_file: String,
    pub sd_sha256: String,
    pub quorum: usize,
    pub custodians: usize,
    pub participants: Vec<Participant>,
    pub steps: Vec<Step>,
    /// The canary file, the original it names and its backup's folder.
    pub canary_file: Option<String>,
    pub original: Option<String>,
    pub backup: Option<String>,
    pub inventory_before: Vec<InventoryEntry>,
    pub inventory_after: Vec<InventoryEntry>,
    pub proofs: Vec<Proof>,
    /// The canary's outcome in one sentence.
    pub canary: String,
    pub proven: Vec<String>,
    pub not_proven: Vec<String>,
    pub outcome: String,
    /// A `drill proofs` run: the canary proofs alone, against an instance
    /// recovered by hand; no quorum, upload or restore was part of it.
    #[serde(default)]
    pub proofs_only: bool,
    /// Key versions the canary file records as digests only (0: all by name).
    #[serde(default)]
    pub inventory_digests: usize,
    /// `drill proofs` only: how the instance's keys other than the canaries
    /// differ from the canary file (a later backup was restored), for review.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory_differences: Vec<String>,
}

impl Report {
    pub fn new(
        date: String,
        instance: String,
        sd_file: String,
        sd_sha256: String,
        quorum: usize,
        custodians: usize,
    ) -> Self {
        Report {
            version: 2,
            date,
            instance,
            emulated: false,
            sd_file,
            sd_sha256,
            quorum,
            custodians,
            participants: Vec::new(),
            steps: Vec::new(),
            canary_file: None,
            original: None,
            backup: None,
            inventory_before: Vec::new(),
            inventory_after: Vec::new(),
            proofs: Vec::new(),
            canary: "not checked".into(),
            proven: Vec::new(),
            not_proven: Vec::new(),
            outcome: "failed".into(),
            proofs_only: false,
            inventory_digests: 0,
            inventory_differences: Vec::new(),
        }
    }

    /// The report of a `drill proofs` run against `instance`: no security
    /// domain or quorum is part of it.
    pub fn proofs_only(date: String, instance: String) -> Self {
        Report {
            proofs_only: true,
            ..Report::new(date, instance, String::new(), String::new(), 0, 0)
        }
    }

    /// Records the canary file the drill uses.
    pub fn with_canary(&mut self, path: &Path, c: &Canary) {
        self.canary_file = Some(path.display().to_string());
        self.original = Some(c.instance.clone());
        self.backup = Some(c.backup.folder_url.clone());
        self.inventory_digests = c.inventory_digests.len();
    }

    /// How many key versions the canary file records, by name or digest.
    fn recorded_versions(&self) -> usize {
        self.inventory_before.len().max(self.inventory_digests)
    }

    /// Runs one step, timing it and recording its outcome.
    pub fn step<T, E: std::fmt::Display>(&mut self, name: &str, body: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = Instant::now();
        let result = body();
        self.record(name, start, &result);
        result
    }

    /// Records a step that began at `start` and ended with `result`.
    fn record<T, E: std::fmt::Display>(&mut self, name: &str, start: Instant, result: &Result<T, E>) {
        self.steps.push(Step {
            name: name.into(),
            outcome: match result {
                Ok(_) => "ok".into(),
                Err(e) => format!("failed: {e}"),
            },
            duration_ms: start.elapsed().as_millis(),
        });
    }

    fn step_ok(&self, name: &str) -> bool {
        self.steps.iter().any(|s| s.name == name && s.outcome == "ok")
    }

    /// Sets the outcome and states exactly what the drill did and did not prove.
    pub fn conclude(&mut self, passed: bool) {
        self.outcome = if passed { "passed" } else { "failed" }.into();
        if self.proofs_only {
            return self.conclude_proofs();
        }
        let mut proven = Vec::new();
        let mut not = Vec::new();
        if self.step_ok(STEP_QUORUM) {
            let who: Vec<&str> = self.participants.iter().map(|p| p.x5t_256.as_str()).collect();
            proven.push(format!(
                "a quorum of {} of the {} custodians ({}) opened their shares of the security domain with SHA-256 {}",
                self.participants.len(),
                self.custodians,
                who.join(", "),
                self.sd_sha256
            ));
        } else {
            not.push("the quorum: the shares were not opened".to_string());
        }
        if self.step_ok(STEP_UPLOAD) {
            proven.push(
                "the restore blob built from those shares for the new instance's exchange key was accepted: \
                 the new instance holds the original's security domain"
                    .into(),
            );
        } else {
            not.push("the restore blob: no upload succeeded".into());
        }
        match (&self.backup, &self.original) {
            (Some(backup), Some(original)) => {
                if self.step_ok(STEP_RESTORE) && self.step_ok(STEP_INVENTORY) {
                    proven.push(format!(
                        "the full backup {backup} made on {original} restored on the recovered instance, and its \
                         inventory ({} key versions: names, versions, tags, enabled) matches the canary file's",
                        self.recorded_versions()
                    ));
                } else {
                    not.push(format!(
                        "the backup/restore procedure: {backup} was not restored and matched"
                    ));
                }
                if self.step_ok(STEP_PROOFS) {
                    proven.push(format!(
                        "the restored keys are the original's, HSM-side: the DEK wrapped with {WRAP_RSA} and {WRAP_AES} \
                         unwrapped to the recorded SHA-256, the original's {SIGN_EC} signature verified, and a new \
                         signature was made and verified"
                    ));
                } else {
                    not.push("that the restored keys are the original's: the HSM-side proofs did not all pass".into());
                }
                if self.recorded_versions() > 3 {
                    not.push(
                        "that every other restored key works: keys other than the three canaries were compared by \
                         name, version, tags and enabled state, not used"
                            .into(),
                    );
                }
            }
            _ => not.push(
                "the backup/restore procedure and the keys: no --canary file was given, so no backup was restored \
                 and no key was used"
                    .into(),
            ),
        }
        if self.emulated {
            not.push(
                "that Azure accepts this recovery: the target is an emulated instance, and a backup from a real \
                 Azure Managed HSM cannot restore here; this drill proves the quorum, the restore blob and the \
                 backup/restore procedure"
                    .into(),
            );
        }
        not.push(
            "the applications: repointing them to the new instance's URI and its role assignments were not exercised"
                .into(),
        );
        self.proven = proven;
        self.not_proven = not;
    }

    /// What a `drill proofs` run proved: the instance as found, never the
    /// recovery that made it.
    fn conclude_proofs(&mut self) {
        let mut proven = Vec::new();
        let mut not = vec![
            "the quorum and the restore blob: no share was opened and nothing was uploaded in this run; the \
             instance was recovered before it (init-recovery, restore blob, upload)"
                .to_string(),
            "the full restore: no backup was restored in this run; the inventory compare checks the instance as found"
                .to_string(),
        ];
        let original = self.original.clone().unwrap_or_else(|| "the original".into());
        if self.step_ok(STEP_INVENTORY) && !self.inventory_differences.is_empty() {
            proven.push(format!(
                "the instance holds the canary keys as the canary file made on {original} records them (names, \
                 versions, tags, enabled)"
            ));
            not.push(format!(
                "that the instance's other keys are the canary file's: {} difference(s) since it was made, listed \
                 under \"Inventory differences\"; expected when the backup restored is newer than the canary file, \
                 each is for the key owners to review",
                self.inventory_differences.len()
            ));
        } else if self.step_ok(STEP_INVENTORY) {
            proven.push(format!(
                "the instance's inventory ({} key versions: names, versions, tags, enabled) matches the canary \
                 file's, made on {original}",
                self.recorded_versions()
            ));
        } else {
            not.push("that the instance holds the canary file's inventory: it was not reached or it differs".into());
        }
        if self.step_ok(STEP_PROOFS) {
            proven.push(format!(
                "the instance's canary keys are the original's, HSM-side: the DEK wrapped with {WRAP_RSA} and \
                 {WRAP_AES} unwrapped to the recorded SHA-256, the original's {SIGN_EC} signature verified, and a \
                 new signature was made and verified"
            ));
        } else {
            not.push("that the instance's canary keys are the original's: the HSM-side proofs did not all pass".into());
        }
        if self.recorded_versions() > 3 {
            not.push(
                "that every other key works: keys other than the three canaries were compared by name, version, \
                 tags and enabled state, not used"
                    .into(),
            );
        }
        if self.emulated {
            not.push("that Azure holds these keys: the instance is an emulated one".into());
        }
        not.push(
            "the applications: repointing them to the new instance's URI and its role assignments were not exercised"
                .into(),
        );
        self.proven = proven;
        self.not_proven = not;
    }

    pub fn passed(&self) -> bool {
        self.outcome == "passed"
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }

    pub fn to_markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "/").replace('\n', " ");
        let (title, sd, quorum) = if self.proofs_only {
            let none = "not part of this run (proofs only)".to_string();
            ("Canary proofs", none.clone(), none)
        } else {
            (
                "Recovery drill",
                format!("`{}` |\n| SHA-256 | `{}`", cell(&self.sd_file), self.sd_sha256),
                format!("{} of {}", self.quorum, self.custodians),
            )
        };
        let mut md = format!(
            "# {title}: {}\n\n\
             | | |\n|---|---|\n\
             | date | {} |\n| instance | {}{} |\n| security domain | {sd} |\n\
             | quorum | {quorum} |\n| canary | {} |\n\n",
            self.outcome.to_uppercase(),
            self.date,
            cell(&self.instance),
            if self.emulated { " (emulated)" } else { "" },
            cell(&self.canary)
        );
        if !self.proofs_only {
            md.push_str("## Custodians who took part\n\n");
            if self.participants.is_empty() {
                md.push_str("(none: the quorum was not reached)\n");
            }
        }
        for p in &self.participants {
            md.push_str(&format!("- `{}` ({})\n", p.x5t_256, cell(&p.who)));
        }
        md.push_str("\n## Steps\n\n| step | outcome | duration |\n|---|---|---|\n");
        for s in &self.steps {
            md.push_str(&format!(
                "| {} | {} | {} ms |\n",
                s.name,
                cell(&s.outcome),
                s.duration_ms
            ));
        }
        if let Some(file) = &self.canary_file {
            md.push_str(&format!(
                "\n## Inventory\n\nCanary file `{}`, made on {}; backup `{}`.\n\n\
                 | key | version | enabled | tags | before | after |\n|---|---|---|---|---|---|\n",
                cell(file),
                cell(self.original.as_deref().unwrap_or("?")),
                cell(self.backup.as_deref().unwrap_or("?"))
            ));
            if self.inventory_digests > 0 {
                md.push_str(&format!(
                    "The canary file names the canary keys only and records all {} key versions as digests \
                     (`drill prepare --inventory digests`): \"before\" says no for the others, which were matched \
                     by digest.\n\n",
                    self.inventory_digests
                ));
            }
            let mut all: Vec<&InventoryEntry> = self.inventory_before.iter().chain(&self.inventory_after).collect();
            all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
            all.dedup_by(|a, b| a.name == b.name && a.version == b.version);
            let has = |list: &[InventoryEntry], e: &InventoryEntry| {
                if list.iter().any(|x| x == e) {
                    "yes"
                } else if list.iter().any(|x| x.name == e.name && x.version == e.version) {
                    "differs"
                } else {
                    "**no**"
                }
            };
            for e in all {
                let tags: Vec<String> = e.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    cell(&e.name),
                    cell(&e.version),
                    e.enabled,
                    cell(&tags.join(", ")),
                    has(&self.inventory_before, e),
                    has(&self.inventory_after, e)
                ));
            }
            if !self.inventory_differences.is_empty() {
                md.push_str(
                    "\n## Inventory differences\n\nKeys other than the canaries that differ from the canary file \
                     (the canary keys themselves match):\n\n",
                );
                for d in &self.inventory_differences {
                    md.push_str(&format!("- {}\n", cell(d)));
                }
            }
            md.push_str("\n## HSM-side proofs\n\n");
            if self.proofs.is_empty() {
                md.push_str("(none ran)\n");
            }
            for p in &self.proofs {
                md.push_str(&format!("- {}: {}\n", p.name, p.outcome));
            }
        }
        md.push_str("\n## What this drill proved\n\n");
        if self.proven.is_empty() {
            md.push_str("- nothing\n");
        }
        for p in &self.proven {
            md.push_str(&format!("- {p}\n"));
        }
        md.push_str("\n## What it did not prove\n\n");
        for p in &self.not_proven {
            md.push_str(&format!("- {p}\n"));
        }
        md
    }
}

/// Where a drill's report goes: `DIR/drill-report.json` and `.md`, neither
/// existing, in a folder that is created if missing.
pub struct ReportPaths {
    pub dir: PathBuf,
    pub json: PathBuf,
    pub md: PathBuf,
}

impl ReportPaths {
    /// Checks, without writing anything, that the report can be written.
    pub fn check(dir: &Path) -> Result<ReportPaths> {
        let paths = ReportPaths {
            dir: dir.to_path_buf(),
            json: dir.join(REPORT_JSON),
            md: dir.join(REPORT_MD),
        };
        files::ensure_absent(&paths.json)?;
        files::ensure_absent(&paths.md)?;
        // The folder is created if missing: its nearest existing ancestor must take it.
        let existing = dir
            .ancestors()
            .map(|a| if a.as_os_str().is_empty() { Path::new(".") } else { a })
            .find(|a| a.exists())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        files::ensure_writable_folder(&existing, &paths.json)?;
        Ok(paths)
    }

    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Write {
            path: self.dir.clone(),
            source,
        })
    }

    /// Writes both files: the evidence is kept whatever the outcome.
    pub fn write(&self, report: &Report) -> Result<()> {
        files::write_new(&self.json, report.to_json().as_bytes(), Mode::Public)?;
        files::write_new(&self.md, report.to_markdown().as_bytes(), Mode::Public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::limits::Profile;
    use crate::recovery::{CustodianKey, Quorum};
    use crate::test_support::{custodians, test_rng};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A backup the toy made: where, its keys (with their XOR bytes) and inventory.
    type ToyBackup = (BackupLocation, Vec<(CanaryKey, u8)>, Vec<InventoryEntry>);

    /// A toy HSM: "wrapping" XORs with a per-key byte, a "signature" is a
    /// hash of key and digest. Enough to tell the right key from another.
    #[derive(Default)]
    struct Toy {
        keys: Vec<(CanaryKey, u8)>,
        inventory: Vec<InventoryEntry>,
        backups: Vec<ToyBackup>,
        uploads: usize,
        /// Faults: a key that unwraps wrong, a key gone, a verify that says no, an inventory change.
        bad_unwrap: Option<String>,
        gone: Option<String>,
        verify_fails: bool,
        extra_version: bool,
    }

    #[derive(Clone, Default)]
    struct Fake(Rc<RefCell<Toy>>);

    impl Fake {
        fn key(&self, k: &CanaryKey) -> Result<u8> {
            let t = self.0.borrow();
            if t.gone.as_deref() == Some(&k.name) {
                return Err(InstanceError::Refused {
                    request: format!("POST /keys/{}/{}", k.name, k.version),
                    status: 404,
                    detail: "KeyNotFound".into(),
                }
                .into());
            }
            t.keys
                .iter()
                .find(|(c, _)| c == k)
                .map(|(_, b)| *b)
                .ok_or_else(|| InstanceError::KeyName { name: k.name.clone() }.into())
        }
    }

    fn toy_sig(b: u8, digest: &[u8]) -> Vec<u8> {
        Sha256::digest([&[b][..], digest].concat()).to_vec()
    }

    impl Target for Fake {
        fn is_emulated(&self) -> bool {
            true
        }
        fn transfer_key(&self) -> Result<Certificate> {
            Ok(custodians()[4].cert.clone())
        }
        fn upload(&self, _: &RestoreBlob) -> Result<()> {
            self.0.borrow_mut().uploads += 1;
            Ok(())
        }
        fn create_key(&self, name: &str, kty: &str, tags: &BTreeMap<String, String>) -> Result<CanaryKey> {
            let mut t = self.0.borrow_mut();
            let n = t.keys.len() as u8 + 1;
            let k = CanaryKey {
                name: name.into(),
                version: format!("v{n}"),
                kid: format!("https://a/keys/{name}/v{n}"),
                kty: kty.into(),
            };
            t.keys.push((k.clone(), n.wrapping_mul(37)));
            t.inventory.push(InventoryEntry {
                name: name.into(),
                version: k.version.clone(),
                enabled: true,
                tags: tags.clone(),
            });
            Ok(k)
        }
        fn wrap_key(&self, key: &CanaryKey, _: &str, dek: &[u8]) -> Result<Vec<u8>> {
            let b = self.key(key)?;
            Ok(dek.iter().map(|x| x ^ b).collect())
        }
        fn unwrap_key(&self, key: &CanaryKey, _: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
            let mut b = self.key(key)?;
            if self.0.borrow().bad_unwrap.as_deref() == Some(&key.name) {
                b ^= 1;
            }
            Ok(Zeroizing::new(wrapped.iter().map(|x| x ^ b).collect()))
        }
        fn sign(&self, key: &CanaryKey, _: &str, digest: &[u8]) -> Result<Vec<u8>> {
            Ok(toy_sig(self.key(key)?, digest))
        }
        fn verify(&self, key: &CanaryKey, _: &str, digest: &[u8], sig: &[u8]) -> Result<bool> {
            Ok(toy_sig(self.key(key)?, digest) == sig && !self.0.borrow().verify_fails)
        }
        fn inventory(&self) -> Result<Vec<InventoryEntry>> {
            let t = self.0.borrow();
            let mut inv: Vec<_> = t
                .inventory
                .iter()
                .filter(|e| t.gone.as_deref() != Some(&e.name))
                .cloned()
                .collect();
            if t.extra_version {
                inv.push(InventoryEntry {
                    name: "drill-canary-ec".into(),
                    version: "v99".into(),
                    enabled: true,
                    tags: BTreeMap::new(),
                });
            }
            inv.sort();
            Ok(inv)
        }
        fn full_backup(&self, storage: &str, _: Option<&str>) -> Result<BackupLocation> {
            let mut t = self.0.borrow_mut();
            let loc = BackupLocation {
                storage: storage.into(),
                folder: format!("mhsm-toy-{}", t.backups.len()),
                folder_url: format!("{storage}/mhsm-toy-{}", t.backups.len()),
            };
            let (keys, inv) = (t.keys.clone(), t.inventory.clone());
            t.backups.push((loc.clone(), keys, inv));
            Ok(loc)
        }
        fn full_restore(&self, backup: &BackupLocation, _: Option<&str>) -> Result<()> {
            // Restores from the original's storage, shared through the test.
            let src = ORIGINAL.with(|o| o.borrow().clone()).expect("an original");
            let found = src.0.borrow().backups.iter().find(|(l, _, _)| l == backup).cloned();
            let (_, keys, inv) = found.ok_or_else(|| {
                Error::from(InstanceError::OperationFailed {
                    what: "full restore",
                    details: "does not open here".into(),
                })
            })?;
            let mut t = self.0.borrow_mut();
            t.keys = keys;
            t.inventory = inv;
            Ok(())
        }
        fn key_backup(&self, name: &str) -> Result<String> {
            Ok(format!("sealed-{name}"))
        }
    }

    thread_local! {
        static ORIGINAL: RefCell<Option<Fake>> = const { RefCell::new(None) };
    }

    fn prepared(rng: &mut impl CryptoRng) -> (Fake, Canary) {
        prepared_with(rng, InventoryRecord::All, |_| {})
    }

    /// A canary prepared on an original that `setup` gave its own keys first.
    fn prepared_with(
        rng: &mut impl CryptoRng,
        inventory: InventoryRecord,
        setup: impl FnOnce(&Fake),
    ) -> (Fake, Canary) {
        let original = Fake::default();
        setup(&original);
        ORIGINAL.with(|o| *o.borrow_mut() = Some(original.clone()));
        let canary = prepare_with_rng(
            rng,
            &original,
            &PrepareOptions {
                instance: "https://a",
                prefix: "drill-canary",
                storage: "file:///backups",
                sas: None,
                created: "2026-12-02T00:00:00Z".into(),
                inventory,
            },
            &mut |_| {},
        )
        .unwrap();
        (original, canary)
    }

    /// Runs a whole drill into a fresh fake (spoiled by `fault`) and returns
    /// its outcome and report.
    fn drill(canary: &Canary, fault: impl FnOnce(&mut Toy)) -> (Result<()>, Report, Fake) {
        let mut rng = test_rng(41);
        let master = crate::crypto::secret::MasterKey::generate_with_rng(&mut rng);
        let items = recovery::random_items_with_rng(&mut rng);
        let certs: Vec<_> = custodians()[..3]
            .iter()
            .map(|c| (c.name.clone(), c.cert.clone()))
            .collect();
        let sd = recovery::split_with_rng(&mut rng, &master, &items, &certs, 2, Profile::Azure).unwrap();
        let target = Fake::default();
        fault(&mut target.0.borrow_mut());
        let mut report = Report::new("d".into(), "?".into(), "sd.json".into(), "ab".into(), 2, 3);
        report.with_canary(Path::new("canary.json"), canary);
        let quorum = || {
            Ok(|| {
                let mut q = Quorum::new(&sd);
                for c in &custodians()[..2] {
                    q.add(&CustodianKey::from_rsa(c.name.clone(), c.key.clone(), None))?;
                }
                q.finish()
            })
        };
        let t = target.clone();
        let result = run_steps_with_rng(
            &mut rng,
            &mut report,
            || Ok((t, "fake".into())),
            quorum,
            Some(canary),
            None,
        );
        report.conclude(result.is_ok());
        (result, report, target)
    }

    #[test]
    fn a_drill_from_a_prepared_canary_passes_with_every_proof() {
        let mut rng = test_rng(40);
        let (original, canary) = prepared(&mut rng);
        assert_eq!(canary.inventory.len(), 3);
        assert_eq!(original.0.borrow().backups.len(), 1);
        let (result, report, target) = drill(&canary, |_| {});
        result.unwrap();
        assert!(report.passed());
        assert_eq!(target.0.borrow().uploads, 1);
        assert_eq!(report.steps.len(), 8, "{:?}", report.steps);
        assert_eq!(report.proofs.len(), 4);
        assert!(report.proofs.iter().all(Proof::passed), "{:?}", report.proofs);
        assert_eq!(report.inventory_after, canary.inventory);
        assert_eq!(report.proven.len(), 4, "{:?}", report.proven);
        assert!(report
            .not_proven
            .iter()
            .any(|n| n.contains("a backup from a real Azure Managed HSM cannot restore here")));
        let md = report.to_markdown();
        for want in [
            "## Inventory",
            "## HSM-side proofs",
            "## What this drill proved",
            "## What it did not prove",
        ] {
            assert!(md.contains(want), "{want}\n{md}");
        }
        assert!(
            md.contains("| drill-canary-rsa | v1 | true | hsm-ceremony-canary=2026-12-02T00:00:00Z | yes | yes |"),
            "{md}"
        );
    }

    /// The canary file holds no secret: neither the DEK in any encoding nor
    /// anything the toy HSM keeps inside.
    #[test]
    fn the_canary_file_holds_public_material_only() {
        let mut rng = test_rng(40);
        let (original, canary) = prepared(&mut rng);
        let text = canary.to_json();
        // The toy HSM's DEK is recoverable from the fake (XOR): it must not be in the file.
        let (w, wrapped) = canary.wrapped("rsa").unwrap();
        let dek = original.unwrap_key(&canary.keys.rsa, &w.alg, &wrapped).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&dek[..])), canary.dek_sha256);
        for enc in [b64u(&dek), hex::encode(&dek[..]), crate::crypto::b64::b64_std(&dek)] {
            assert!(!text.contains(&enc), "{enc} in {text}");
        }
        assert_eq!(secret_looking(&serde_json::from_str(&text).unwrap(), ""), None);
        for bad in [
            r#"{"a":{"dek":"x"}}"#,
            r#"{"keys":[{"d":"x"}]}"#,
            r#"{"storage":"https://x/c?sig=abc"}"#,
        ] {
            assert!(
                secret_looking(&serde_json::from_str(bad).unwrap(), "").is_some(),
                "{bad}"
            );
        }
    }

    fn failed_with(result: &Result<()>, report: &Report, step: &str, why: &str) {
        let e = result.as_ref().expect_err("the drill fails").to_string();
        assert!(e.contains(why), "{e}");
        assert!(!report.passed());
        let s = report.steps.iter().find(|s| s.name == step).expect(step);
        assert!(s.outcome.starts_with("failed") && s.outcome.contains(why), "{s:?}");
        assert!(
            !report.proven.iter().any(|p| p.contains("HSM-side")),
            "{:?}",
            report.proven
        );
    }

    #[test]
    fn a_wrong_dek_fails_the_drill_naming_the_key() {
        let (_, canary) = prepared(&mut test_rng(40));
        let (result, report, _) = drill(&canary, |t| t.bad_unwrap = Some("drill-canary-aes".into()));
        failed_with(
            &result,
            &report,
            STEP_PROOFS,
            "drill-canary-aes/v3 unwrapped a DEK whose SHA-256 is",
        );
        assert!(
            report.proofs[0].passed() && !report.proofs[1].passed(),
            "{:?}",
            report.proofs
        );
        assert!(
            report.proofs[2].passed() && report.proofs[3].passed(),
            "the other proofs still ran"
        );
    }

    #[test]
    fn a_failed_signature_fails_the_drill() {
        let (_, canary) = prepared(&mut test_rng(40));
        let (result, report, _) = drill(&canary, |t| t.verify_fails = true);
        failed_with(
            &result,
            &report,
            STEP_PROOFS,
            "drill-canary-ec/v2 does not verify the signature made on https://a",
        );
    }

    #[test]
    fn an_inventory_mismatch_fails_the_drill_before_the_proofs() {
        let (_, canary) = prepared(&mut test_rng(40));
        let (result, report, _) = drill(&canary, |t| t.extra_version = true);
        // `extra_version` is applied to the listing after the restore.
        failed_with(
            &result,
            &report,
            STEP_INVENTORY,
            "not in the canary file: drill-canary-ec/v99",
        );
        assert!(report.proofs.is_empty());
        assert!(
            report.inventory_after.iter().any(|e| e.version == "v99"),
            "the evidence shows what was found"
        );
    }

    #[test]
    fn a_missing_key_fails_the_drill_naming_it() {
        let (_, canary) = prepared(&mut test_rng(40));
        let (result, report, _) = drill(&canary, |t| t.gone = Some("drill-canary-rsa".into()));
        failed_with(&result, &report, STEP_INVENTORY, "missing: drill-canary-rsa/v1");
    }

    #[test]
    fn a_backup_that_does_not_restore_fails_the_drill() {
        let (_, mut canary) = prepared(&mut test_rng(40));
        canary.backup.folder = "mhsm-other".into();
        canary.backup.folder_url = "file:///backups/mhsm-other".into();
        let (result, report, _) = drill(&canary, |_| {});
        failed_with(
            &result,
            &report,
            STEP_RESTORE,
            "file:///backups/mhsm-other did NOT restore",
        );
        assert!(report.not_proven.iter().any(|n| n.contains("was not restored")));
    }

    /// `drill proofs`: an instance recovered by hand (here: the original's
    /// backup restored into a fresh fake) against the canary file alone.
    fn proofs_only(canary: &Canary, fault: impl FnOnce(&mut Toy)) -> (Result<()>, Report) {
        let target = Fake::default();
        target.full_restore(&canary.backup, None).unwrap();
        fault(&mut target.0.borrow_mut());
        let mut report = Report::proofs_only("d".into(), "?".into());
        report.with_canary(Path::new("canary.json"), canary);
        let t = target.clone();
        let result = run_proofs_with_rng(&mut test_rng(42), &mut report, || Ok((t, "fake".into())), canary);
        report.conclude(result.is_ok());
        assert_eq!(target.0.borrow().uploads, 0, "no upload in proofs mode");
        (result, report)
    }

    #[test]
    fn proofs_only_passes_and_says_the_recovery_was_not_part_of_it() {
        let (_, canary) = prepared(&mut test_rng(40));
        let (result, report) = proofs_only(&canary, |_| {});
        result.unwrap();
        assert!(report.passed());
        let names: Vec<&str> = report.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [STEP_CONNECT, STEP_INVENTORY, STEP_PROOFS]);
        assert_eq!(report.proofs.len(), 4);
        assert_eq!(report.proven.len(), 2, "{:?}", report.proven);
        assert!(report.not_proven[0].contains("no share was opened and nothing was uploaded in this run"));
        assert!(report.not_proven[1].contains("no backup was restored in this run"));
        assert!(report.participants.is_empty());
        let md = report.to_markdown();
        assert!(md.starts_with("# Canary proofs: PASSED"), "{md}");
        assert!(md.contains("| quorum | not part of this run (proofs only) |"), "{md}");
        assert!(!md.contains("Custodians who took part"), "{md}");
        let back: Report = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn proofs_only_with_a_canary_key_missing_proves_nothing_of_the_keys() {
        let (_, canary) = prepared(&mut test_rng(40));
        let (result, report) = proofs_only(&canary, |t| t.gone = Some("drill-canary-ec".into()));
        let e = result.unwrap_err().to_string();
        assert!(e.contains("missing: drill-canary-ec/v2"), "{e}");
        assert!(!report.passed());
        assert!(report.proven.is_empty(), "{:?}", report.proven);
        assert!(report.proofs.is_empty());
        assert!(report
            .not_proven
            .iter()
            .any(|n| n.contains("HSM-side proofs did not all pass")));
        let (result, _) = proofs_only(&canary, |t| t.bad_unwrap = Some("drill-canary-rsa".into()));
        assert!(result
            .unwrap_err()
            .to_string()
            .contains("drill-canary-rsa/v1 unwrapped a DEK"));
    }

    /// drill proofs checks an instance restored from a backup newer than the
    /// canary file: other keys made or changed since are listed for review,
    /// while any difference in a canary key still fails.
    #[test]
    fn proofs_only_lists_other_keys_changed_since_the_canary_file() {
        let payroll = |f: &Fake| {
            f.create_key("payroll-signing", "EC-HSM", &BTreeMap::new()).unwrap();
        };
        let (_, canary) = prepared_with(&mut test_rng(40), InventoryRecord::All, payroll);
        let later = |t: &mut Toy| {
            t.inventory.retain(|e| e.name != "payroll-signing");
            t.inventory.push(InventoryEntry {
                name: "orders-wrapping".into(),
                version: "v7".into(),
                enabled: true,
                tags: BTreeMap::new(),
            });
        };
        let (result, report) = proofs_only(&canary, later);
        result.unwrap();
        assert!(report.passed());
        assert_eq!(
            report.inventory_differences,
            [
                "missing: payroll-signing/v1",
                "not in the canary file: orders-wrapping/v7"
            ]
        );
        assert!(
            report.proven[0].contains("holds the canary keys as the canary file"),
            "{:?}",
            report.proven
        );
        assert!(report
            .not_proven
            .iter()
            .any(|n| n.contains("2 difference(s) since it was made")));
        assert_eq!(report.proofs.len(), 4);
        let md = report.to_markdown();
        assert!(
            md.contains("## Inventory differences") && md.contains("- missing: payroll-signing/v1"),
            "{md}"
        );
        // The full drill restores the canary file's own backup: a key gone from it fails it.
        let (result, _, _) = drill(&canary, |t| t.gone = Some("payroll-signing".into()));
        assert!(result.unwrap_err().to_string().contains("missing: payroll-signing/v1"));
        // A canary key's new version still fails drill proofs.
        let (result, report) = proofs_only(&canary, |t| t.extra_version = true);
        assert!(result.unwrap_err().to_string().contains("drill-canary-ec/v99"));
        assert!(report.inventory_differences.is_empty());
    }

    /// `--inventory digests`: the canary file names no production key, and
    /// the compare still catches a key missing, added or changed.
    #[test]
    fn an_inventory_of_digests_hides_the_names_and_still_compares_exactly() {
        let payroll = |f: &Fake| {
            let tags = BTreeMap::from([("owner".to_string(), "payroll-team".to_string())]);
            f.create_key("payroll-signing", "EC-HSM", &tags).unwrap();
        };
        let (_, canary) = prepared_with(&mut test_rng(40), InventoryRecord::Digests, payroll);
        let text = canary.to_json();
        assert!(!text.contains("payroll"), "{text}");
        assert_eq!(canary.inventory.len(), 3, "the canary keys by name");
        assert_eq!(canary.inventory_digests.len(), 4);
        let back: Canary = serde_json::from_str(&text).unwrap();
        back.check().unwrap();
        let (result, report) = proofs_only(&canary, |_| {});
        result.unwrap();
        assert!(report.proven[0].contains("(4 key versions"), "{:?}", report.proven);
        assert!(report.to_markdown().contains("records all 4 key versions as digests"));
        let (result, _, _) = drill(&canary, |_| {});
        result.unwrap();
        // A production key gone: counted, not named (the file does not know its name).
        let (result, _, _) = drill(&canary, |t| t.gone = Some("payroll-signing".into()));
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains("1 key version(s) the canary file records as digests only"),
            "{e}"
        );
        // drill proofs lists it for review: the canary keys are as recorded.
        let (result, report) = proofs_only(&canary, |t| t.gone = Some("payroll-signing".into()));
        result.unwrap();
        assert_eq!(
            report.inventory_differences,
            ["missing: 1 key version(s) the canary file records as digests only (drill prepare --inventory digests)"]
        );
        // A canary key gone: named.
        let (result, _) = proofs_only(&canary, |t| t.gone = Some("drill-canary-aes".into()));
        assert!(result.unwrap_err().to_string().contains("drill-canary-aes/v4"));
        // A version added: named, it is on the instance.
        let (result, _) = proofs_only(&canary, |t| t.extra_version = true);
        assert!(result.unwrap_err().to_string().contains("drill-canary-ec/v99"));
        // A tag changed: the recorded digest is missing and the entry unexpected.
        let retag = |t: &mut Toy| {
            t.inventory[0].tags.insert("owner".into(), "someone-else".into());
        };
        let (result, report) = proofs_only(&canary, retag);
        result.unwrap();
        assert!(
            report.inventory_differences.iter().any(|d| d.contains("digests only")),
            "{:?}",
            report.inventory_differences
        );
        assert!(
            report
                .inventory_differences
                .contains(&"not in the canary file: payroll-signing/v1".to_string()),
            "{:?}",
            report.inventory_differences
        );
        // The wrong DEK: no digest can be compared, and it says why.
        let (result, _) = proofs_only(&canary, |t| t.bad_unwrap = Some("drill-canary-rsa".into()));
        assert!(result
            .unwrap_err()
            .to_string()
            .contains("the inventory digests cannot be compared"));
        let mut edited = canary.clone();
        edited.inventory_digests[0] = "x".into();
        assert!(edited.check().unwrap_err().contains("inventory_digests[0]"));
    }

    /// A report from before `proofs_only` existed still reads.
    #[test]
    fn an_older_report_reads_as_a_full_drill() {
        let r = Report::new("d".into(), "i".into(), "sd".into(), "ab".into(), 2, 3);
        let mut v: Value = serde_json::from_str(&r.to_json()).unwrap();
        v.as_object_mut().unwrap().remove("proofs_only");
        let back: Report = serde_json::from_value(v).unwrap();
        assert!(!back.proofs_only);
    }

    #[test]
    fn steps_are_timed_and_failures_recorded() {
        let mut r = Report::new(
            "2026-11-23T00:00:00Z".into(),
            "local".into(),
            "sd.json".into(),
            "ab".into(),
            2,
            3,
        );
        let ok: Result<u8, String> = r.step("one", || Ok(1));
        assert_eq!(ok, Ok(1));
        let bad: Result<u8, String> = r.step("two", || Err("no | way".into()));
        assert!(bad.is_err());
        r.conclude(false);
        assert_eq!(r.steps[0].outcome, "ok");
        assert_eq!(r.steps[1].outcome, "failed: no | way");
        let md = r.to_markdown();
        assert!(md.contains("# Recovery drill: FAILED"));
        assert!(md.contains("| two | failed: no / way |"), "{md}");
        assert!(md.contains("no --canary file was given"), "{md}");
        assert!(!r.passed());
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
