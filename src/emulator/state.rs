//! One instance's life cycle and its durable state (`instance.json`, 0600):
//! provisioned → activated, or provisioned → recovering → activated.
//!
//! Every change builds the next state in full, writes it with one atomic
//! rename ([`files::replace`]) and only then adopts it in memory, so a crash
//! or kill -9 leaves either the old state or the new one, never a mix.
//!
//! What is written: contents the instance drew itself (an activation
//! download on a provisioned instance), the exchange key and the operation
//! statuses. Contents learned from an uploaded restore blob are another
//! instance's — in a drill, production's — and are never written: on disk
//! such an instance stays `recovering` with an upload status saying so
//! ([`RECOVERED_IN_MEMORY_ONLY`]), so a restart brings it back to waiting
//! for the same restore blob. An instance made by `Instance::in_memory`
//! writes nothing at all.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::ApiError;
use super::SecretText;
use crate::crypto::b64::{b64u, b64u_decode};
use crate::crypto::kdf::sp108_kdf;
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::{MasterKey, SecretBytes};
use crate::custodian::cert::Certificate;
use crate::custodian::keygen;
use crate::error::{EmulatorError, Error, Result};
use crate::files::{self, Mode};
use crate::format::limits::Profile;
use crate::format::restore_blob::RestoreBlob;
use crate::format::sdfile::SecurityDomain;
use crate::recovery::{self, PlainItem};

pub const STATE_FILE: &str = "instance.json";
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;
/// The upload status a restarted instance reports for contents it held only in memory.
pub const RECOVERED_IN_MEMORY_ONLY: &str =
    "the instance restarted: recovered contents are kept in memory only; upload the restore blob again";
/// What the service says of a finished activation, download or upload alike.
pub const RESOURCE_ACTIVE: &str = "The resource is active.";
/// Label of the key that seals key backups (see [`Instance::backup_key`]).
const BACKUP_KEY_LABEL: &[u8] = b"hsm-ceremony emulator key backup";

/// Where an instance is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Provisioned,
    Recovering,
    Activated,
}

/// The state of a long-running operation, spelled exactly as the SDK expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpStatus {
    Success,
    InProgress,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationStatus {
    pub status: OpStatus,
    pub status_details: String,
}

impl OperationStatus {
    fn new(status: OpStatus, details: impl Into<String>) -> Self {
        OperationStatus {
            status,
            status_details: details.into(),
        }
    }
}

/// The security domain an activated instance holds.
struct Domain {
    master: MasterKey,
    items: Vec<PlainItem>,
    /// Learned from an uploaded restore blob: held in memory only.
    uploaded: bool,
}

impl Clone for Domain {
    fn clone(&self) -> Self {
        Domain {
            master: MasterKey::from_slice(self.master.expose()).expect("32 bytes"),
            items: self
                .items
                .iter()
                .map(|i| PlainItem {
                    tag: i.tag.clone(),
                    plaintext: i.plaintext.duplicate(),
                })
                .collect(),
            uploaded: self.uploaded,
        }
    }
}

/// The exchange key of a recovering instance; the private half never leaves.
struct Exchange {
    key: rsa::PrivateKey,
    cert: Certificate,
}

// The `Clone`s of what holds secrets are written out, not derived: each
// change builds the next snapshot from a copy of the current one, and that
// is the only copy made.
impl Clone for Exchange {
    fn clone(&self) -> Self {
        Exchange {
            key: self.key.clone(),
            cert: self.cert.clone(),
        }
    }
}

struct Snapshot {
    status: Status,
    /// Purge protection (on unless turned off before activation): a purge of a deleted key is refused.
    purge_protection: bool,
    exchange: Option<Exchange>,
    domain: Option<Domain>,
    download: Option<OperationStatus>,
    upload: Option<OperationStatus>,
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        Snapshot {
            status: self.status,
            purge_protection: self.purge_protection,
            exchange: self.exchange.clone(),
            domain: self.domain.clone(),
            download: self.download.clone(),
            upload: self.upload.clone(),
        }
    }
}

// ---- on disk ----

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemFile {
    tag: String,
    data: SecretText,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFile {
    master_key: SecretText,
    items: Vec<ItemFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeFile {
    key_pkcs8: SecretText,
    cert_der: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    status: Status,
    #[serde(default = "purge_protection_default")]
    purge_protection: bool,
    exchange: Option<ExchangeFile>,
    domain: Option<DomainFile>,
    download: Option<OperationStatus>,
    upload: Option<OperationStatus>,
}

/// Microsoft recommends purge protection for every Managed HSM; older state files had none.
fn purge_protection_default() -> bool {
    true
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> Error {
    EmulatorError::Corrupt {
        path: path.to_path_buf(),
        what: "state file",
        why: why.to_string(),
    }
    .into()
}

impl Snapshot {
    fn provisioned() -> Snapshot {
        Snapshot {
            status: Status::Provisioned,
            purge_protection: true,
            exchange: None,
            domain: None,
            download: None,
            upload: None,
        }
    }

    fn to_file(&self) -> Result<Zeroizing<Vec<u8>>> {
        use pkcs8::EncodePrivateKey;
        let exchange = match &self.exchange {
            Some(x) => Some(ExchangeFile {
                key_pkcs8: SecretText::new(b64u(
                    x.key
                        .to_pkcs8_der()
                        .map_err(|e| {
                            Error::from(EmulatorError::Encode {
                                what: "the exchange key",
                                why: e.to_string(),
                            })
                        })?
                        .as_bytes(),
                )),
                cert_der: b64u(x.cert.der()),
            }),
            None => None,
        };
        // An uploaded domain is written as the recovering instance it came to.
        if self.domain.as_ref().is_some_and(|d| d.uploaded) {
            let on_disk = Snapshot {
                status: Status::Recovering,
                purge_protection: self.purge_protection,
                exchange: self.exchange.clone(),
                domain: None,
                download: None,
                upload: Some(OperationStatus::new(OpStatus::Failed, RECOVERED_IN_MEMORY_ONLY)),
            };
            return on_disk.to_file();
        }
        let domain = self.domain.as_ref().map(|d| DomainFile {
            master_key: SecretText::new(b64u(d.master.expose())),
            items: d
                .items
                .iter()
                .map(|i| ItemFile {
                    tag: i.tag.clone(),
                    data: SecretText::new(b64u(i.plaintext.expose())),
                })
                .collect(),
        });
        let file = StateFile {
            format: 1,
            status: self.status,
            purge_protection: self.purge_protection,
            exchange,
            domain,
            download: self.download.clone(),
            upload: self.upload.clone(),
        };
        Ok(Zeroizing::new(
            serde_json::to_vec(&file).expect("plain data serialises"),
        ))
    }

    fn from_file(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
        use pkcs8::DecodePrivateKey;
        let file: StateFile = crate::format::json::from_slice(bytes).map_err(|e| corrupt(path, e))?;
        if file.format != 1 {
            return Err(corrupt(path, format!("format {} is not understood", file.format)));
        }
        let exchange = match file.exchange {
            Some(x) => {
                let der =
                    Zeroizing::new(b64u_decode(x.key_pkcs8.expose(), "exchange key").map_err(|e| corrupt(path, e))?);
                let key = rsa::PrivateKey::from_pkcs8_der(&der).map_err(|e| corrupt(path, e))?;
                let cert_der = b64u_decode(&x.cert_der, "exchange certificate").map_err(|e| corrupt(path, e))?;
                let cert = Certificate::from_bytes(&cert_der).map_err(|e| corrupt(path, e))?;
                Some(Exchange { key, cert })
            }
            None => None,
        };
        let domain = match file.domain {
            Some(d) => {
                let mk =
                    Zeroizing::new(b64u_decode(d.master_key.expose(), "master key").map_err(|e| corrupt(path, e))?);
                let master =
                    MasterKey::from_slice(&mk).ok_or_else(|| corrupt(path, "the master key is not 32 bytes"))?;
                let mut items = Vec::new();
                for i in d.items {
                    let data = b64u_decode(i.data.expose(), "item").map_err(|e| corrupt(path, e))?;
                    items.push(PlainItem {
                        tag: i.tag,
                        plaintext: SecretBytes::new(data),
                    });
                }
                Some(Domain {
                    master,
                    items,
                    uploaded: false,
                })
            }
            None => None,
        };
        let snap = Snapshot {
            status: file.status,
            purge_protection: file.purge_protection,
            exchange,
            domain,
            download: file.download,
            upload: file.upload,
        };
        let consistent = match snap.status {
            Status::Provisioned => snap.domain.is_none() && snap.exchange.is_none(),
            Status::Recovering => snap.domain.is_none() && snap.exchange.is_some(),
            Status::Activated => snap.domain.is_some(),
        };
        if !consistent {
            return Err(corrupt(
                path,
                format!("a {:?} instance cannot hold what this one holds", snap.status),
            ));
        }
        Ok(snap)
    }
}

/// Creates the state directory (0700) if needed.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// What a state directory holds, for drills and tests (no secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSummary {
    pub status: Status,
    /// [`recovery::contents_fingerprint`] of the security domain, when activated.
    pub contents_fingerprint: Option<String>,
    pub download: Option<OperationStatus>,
    pub upload: Option<OperationStatus>,
}

/// Reads the state of `state_dir` without changing it. A directory never
/// served is `provisioned`.
///
/// Errors: the state file is unreadable or not one of ours.
pub fn inspect(state_dir: &Path) -> Result<InstanceSummary> {
    let path = state_dir.join(STATE_FILE);
    let snap = read_snapshot(&path)?;
    Ok(summary(&snap))
}

fn summary(snap: &Snapshot) -> InstanceSummary {
    InstanceSummary {
        status: snap.status,
        contents_fingerprint: snap.domain.as_ref().map(|d| recovery::contents_fingerprint(&d.items)),
        download: snap.download.clone(),
        upload: snap.upload.clone(),
    }
}

fn read_snapshot(path: &Path) -> Result<Snapshot> {
    if !path.exists() {
        return Ok(Snapshot::provisioned());
    }
    let bytes = Zeroizing::new(files::read_limited(path, MAX_STATE_BYTES, "emulator state file")?);
    Snapshot::from_file(path, &bytes)
}

/// A served instance: its state in memory, mirrored on disk unless it has
/// no state folder.
pub(crate) struct Instance {
    /// `None`: in memory only, nothing is ever written.
    path: Option<PathBuf>,
    snap: Snapshot,
    /// A download finished that no status poll has seen yet: the first poll
    /// answers `InProgress`, as the service does while it activates. In
    /// memory only: after a restart the activation is long done.
    activation_unpolled: bool,
}

impl Instance {
    /// A fresh provisioned instance that lives in memory only.
    pub fn in_memory() -> Instance {
        Instance {
            path: None,
            snap: Snapshot::provisioned(),
            activation_unpolled: false,
        }
    }

    /// Whether the key store may be written: not once the instance holds
    /// another instance's contents (keys restored under them are theirs too).
    pub fn persists_keys(&self) -> bool {
        self.path.is_some() && !self.snap.domain.as_ref().is_some_and(|d| d.uploaded)
    }

    /// Loads the instance. An upload that was in progress when the previous
    /// server died is marked failed: nothing of it was adopted.
    pub fn open(state_dir: &Path) -> Result<Instance> {
        let path = state_dir.join(STATE_FILE);
        let snap = read_snapshot(&path)?;
        let mut inst = Instance {
            path: Some(path),
            snap,
            activation_unpolled: false,
        };
        if inst
            .snap
            .upload
            .as_ref()
            .is_some_and(|u| u.status == OpStatus::InProgress)
        {
            let mut next = inst.snap.clone();
            next.upload = Some(OperationStatus::new(
                OpStatus::Failed,
                "the instance restarted while the upload was processed; nothing was applied, upload the blob again",
            ));
            inst.commit(next)?;
        }
        Ok(inst)
    }

    fn commit(&mut self, next: Snapshot) -> Result<()> {
        if let Some(path) = &self.path {
            let bytes = next.to_file()?;
            // Never write what the next start would refuse to read.
            if bytes.len() as u64 > MAX_STATE_BYTES {
                return Err(EmulatorError::WouldGrow {
                    what: "the instance state".into(),
                    size: bytes.len() as u64,
                    limit: MAX_STATE_BYTES,
                }
                .into());
            }
            files::replace(path, &bytes, Mode::Private)?;
        }
        self.snap = next;
        Ok(())
    }

    #[cfg(test)]
    pub fn status(&self) -> Status {
        self.snap.status
    }

    #[cfg(test)]
    pub fn summary(&self) -> InstanceSummary {
        summary(&self.snap)
    }

    /// `GET /securitydomain/download/pending`: `InProgress` once after each
    /// download (the service activates in the background), then the recorded outcome.
    pub fn poll_download_status(&mut self) -> Option<OperationStatus> {
        let done = self.snap.download.clone()?;
        if std::mem::take(&mut self.activation_unpolled) {
            return Some(OperationStatus::new(OpStatus::InProgress, ""));
        }
        Some(done)
    }

    pub fn upload_status(&self) -> Option<&OperationStatus> {
        self.snap.upload.as_ref()
    }

    /// `POST /securitydomain/download`. A provisioned instance draws a master
    /// key and the three items and activates. An activated one wraps its
    /// existing security domain to the new certificates (same master key and
    /// contents, fresh shares): key backups keep restoring. A recovering one
    /// refuses: it is waiting for an upload.
    pub fn download<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        certs: &[(String, Certificate)],
        quorum: usize,
    ) -> std::result::Result<SecurityDomain, ApiError> {
        let mut next = self.snap.clone();
        let domain = match (&self.snap.status, &self.snap.domain) {
            (Status::Recovering, _) => return Err(ApiError::bad_request(
                "the instance is in recovery mode (a transfer key was issued): upload a security domain to activate it",
            )),
            (_, Some(d)) => d.clone(),
            (_, None) => Domain {
                master: MasterKey::generate_with_rng(rng),
                items: recovery::random_items_with_rng(rng),
                uploaded: false,
            },
        };
        let sd = recovery::split_with_rng(rng, &domain.master, &domain.items, certs, quorum, Profile::Azure)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        next.status = Status::Activated;
        next.domain = Some(domain);
        next.download = Some(OperationStatus::new(OpStatus::Success, RESOURCE_ACTIVE));
        self.commit(next).map_err(ApiError::internal)?;
        self.activation_unpolled = true;
        Ok(sd)
    }

    /// `GET /securitydomain/upload`: the exchange certificate, made once.
    pub fn transfer_key<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> std::result::Result<Certificate, ApiError> {
        if self.snap.status == Status::Activated {
            return Err(ApiError::bad_request(
                "the instance is already activated; it takes no security-domain upload",
            ));
        }
        if let Some(x) = &self.snap.exchange {
            return Ok(x.cert.clone());
        }
        let key = keygen::generate_key_with_rng(rng, 2048).map_err(ApiError::internal)?;
        let cert = keygen::self_signed_certificate_with_rng(
            rng,
            &key,
            "hsm-ceremony emulator exchange key",
            30,
            time::OffsetDateTime::now_utc(),
        )
        .map_err(ApiError::internal)?;
        let mut next = self.snap.clone();
        next.status = Status::Recovering;
        next.exchange = Some(Exchange {
            key,
            cert: cert.clone(),
        });
        self.commit(next).map_err(ApiError::internal)?;
        Ok(cert)
    }

    /// First half of `POST /securitydomain/upload`: records that an upload is
    /// under way (so a restart reports it failed rather than forgetting it).
    pub fn begin_upload(&mut self) -> std::result::Result<(), ApiError> {
        match self.snap.status {
            Status::Activated => {
                return Err(ApiError::bad_request("the instance is already activated; it takes no security-domain upload"))
            }
            Status::Provisioned => {
                return Err(ApiError::bad_request(
                    "the instance has no transfer key yet: GET /securitydomain/upload first and build the restore blob for that key",
                ))
            }
            Status::Recovering => {}
        }
        if self
            .snap
            .upload
            .as_ref()
            .is_some_and(|u| u.status == OpStatus::InProgress)
        {
            return Err(ApiError::conflict("an upload is already in progress"));
        }
        let mut next = self.snap.clone();
        next.upload = Some(OperationStatus::new(OpStatus::InProgress, ""));
        self.commit(next).map_err(ApiError::internal)
    }

    /// Second half: opens the blob with the exchange key and, if every item
    /// opens, becomes a clone of the original instance in one write.
    pub fn finish_upload<R: CryptoRng + ?Sized>(&mut self, rng: &mut R, blob_json: &str) -> Result<()> {
        let outcome = self.open_blob(blob_json);
        let mut next = self.snap.clone();
        match outcome {
            Ok(items) => {
                next.status = Status::Activated;
                // The blob's fresh master key is not kept: contents are what make a clone.
                next.domain = Some(Domain {
                    master: MasterKey::generate_with_rng(rng),
                    items,
                    uploaded: true,
                });
                next.upload = Some(OperationStatus::new(OpStatus::Success, RESOURCE_ACTIVE));
            }
            Err(why) => next.upload = Some(OperationStatus::new(OpStatus::Failed, why)),
        }
        if let Err(e) = self.commit(next) {
            self.snap.upload = Some(OperationStatus::new(
                OpStatus::Failed,
                format!("the instance could not record the upload: {e}"),
            ));
            return Err(e);
        }
        Ok(())
    }

    fn open_blob(&self, blob_json: &str) -> std::result::Result<Vec<PlainItem>, String> {
        let exchange = self.snap.exchange.as_ref().ok_or("the instance has no exchange key")?;
        let blob =
            RestoreBlob::from_json(blob_json.as_bytes()).map_err(|e| format!("the restore blob is malformed: {e}"))?;
        recovery::open_restore_blob(&blob, &exchange.key, &exchange.cert).map_err(|e| e.to_string())
    }

    pub fn purge_protection(&self) -> bool {
        self.snap.purge_protection
    }

    /// Turns purge protection on, or off while the instance is still
    /// provisioned (no keys yet): as on the service, protection once in
    /// force cannot be lifted from a live HSM.
    pub fn set_purge_protection(&mut self, on: bool) -> Result<()> {
        if on == self.snap.purge_protection {
            return Ok(());
        }
        if !on && self.snap.status != Status::Provisioned {
            return Err(EmulatorError::PurgeProtectionStaysOn.into());
        }
        let mut next = self.snap.clone();
        next.purge_protection = on;
        self.commit(next)
    }

    /// Whether the instance holds a security domain (downloaded or
    /// uploaded): what key operations need, checked without deriving the
    /// [`backup_key`](Self::backup_key) on every request.
    pub fn is_activated(&self) -> bool {
        self.snap.domain.is_some()
    }

    /// The AES-256 key that seals key backups, derived from the security
    /// domain's contents: only an instance holding the same contents opens them.
    pub fn backup_key(&self) -> Option<SealingKey> {
        let domain = self.snap.domain.as_ref()?;
        let mut ki = Zeroizing::new(Vec::new());
        for item in &domain.items {
            ki.extend_from_slice(&(item.tag.len() as u64).to_be_bytes());
            ki.extend_from_slice(item.tag.as_bytes());
            ki.extend_from_slice(&(item.plaintext.len() as u64).to_be_bytes());
            ki.extend_from_slice(item.plaintext.expose());
        }
        let k = sp108_kdf(&ki, BACKUP_KEY_LABEL, b"", 256);
        let mut out = SealingKey(Box::new([0u8; 32]));
        out.0.copy_from_slice(&k);
        Some(out)
    }
}

/// The key that seals an instance's key backups (`Instance::backup_key`):
/// whoever has it opens every backup of every key, so like the master key it
/// derives from it is wiped on drop, not `Clone` and has no `Debug`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SealingKey(Box<[u8; 32]>);

impl SealingKey {
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Compile-time proof that the sealing key has neither `Clone` nor `Debug`
/// (see `crypto::secret`'s probe): adding a derive breaks the build here.
const _: () = <SealingKey as crate::crypto::secret::not_clone_nor_debug::IfClone<_>>::ITEM;
const _: () = <SealingKey as crate::crypto::secret::not_clone_nor_debug::IfDebug<_>>::ITEM;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{custodians, test_rng};

    fn certs(range: std::ops::Range<usize>) -> Vec<(String, Certificate)> {
        custodians()[range]
            .iter()
            .map(|c| (c.name.clone(), c.cert.clone()))
            .collect()
    }

    #[test]
    fn download_activates_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut inst = Instance::open(dir.path()).unwrap();
        assert_eq!(inst.status(), Status::Provisioned);
        assert!(
            inst.download(&mut test_rng(1), &certs(0..2), 2).is_err(),
            "2 custodians refused"
        );
        assert!(!dir.path().join(STATE_FILE).exists(), "a refusal writes nothing");
        let sd = inst.download(&mut test_rng(1), &certs(0..3), 2).unwrap();
        assert_eq!(sd.share_count(), 3);
        let before = inst.summary();
        assert_eq!(before.status, Status::Activated);
        // InProgress for the first poll only, then the service's words.
        let polled: Vec<_> = (0..3).map(|_| inst.poll_download_status().unwrap()).collect();
        assert_eq!(polled[0].status, OpStatus::InProgress);
        assert_eq!(polled[1], OperationStatus::new(OpStatus::Success, RESOURCE_ACTIVE));
        assert_eq!(polled[2], polled[1]);
        let mut again = Instance::open(dir.path()).unwrap();
        assert_eq!(again.summary(), before);
        assert_eq!(
            again.poll_download_status().unwrap().status,
            OpStatus::Success,
            "after a restart the activation is done"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(STATE_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Activated: no transfer key, no upload; a second download keeps the contents.
        let mut inst = again;
        assert!(inst.transfer_key(&mut test_rng(2)).is_err());
        assert!(inst.begin_upload().is_err());
        inst.download(&mut test_rng(3), &certs(1..4), 3).unwrap();
        assert_eq!(inst.summary().contents_fingerprint, before.contents_fingerprint);
    }

    #[test]
    fn upload_clones_contents_and_failures_leave_it_recovering() {
        let dir_a = tempfile::tempdir().unwrap();
        let mut a = Instance::open(dir_a.path()).unwrap();
        let sd = a.download(&mut test_rng(4), &certs(0..3), 2).unwrap();
        let mut q = recovery::Quorum::new(&sd);
        for c in &custodians()[..2] {
            q.add(&recovery::CustodianKey::from_rsa(c.name.clone(), c.key.clone(), None))
                .unwrap();
        }
        let items = q.finish().unwrap().items;

        let dir_b = tempfile::tempdir().unwrap();
        let mut b = Instance::open(dir_b.path()).unwrap();
        assert!(b.begin_upload().is_err(), "no transfer key yet");
        let exchange = b.transfer_key(&mut test_rng(5)).unwrap();
        assert_eq!(b.status(), Status::Recovering);
        assert_eq!(
            b.transfer_key(&mut test_rng(6)).unwrap().der(),
            exchange.der(),
            "made once"
        );

        // Wrong exchange key: failed, still recovering.
        let other = &custodians()[4].cert;
        let wrong = recovery::build_restore_blob_with_rng(&mut test_rng(7), &items, other).unwrap();
        b.begin_upload().unwrap();
        assert!(b.begin_upload().is_err(), "one upload at a time");
        b.finish_upload(&mut test_rng(8), &wrong.to_json()).unwrap();
        let s = b.summary();
        assert_eq!(s.status, Status::Recovering);
        assert_eq!(s.upload.as_ref().unwrap().status, OpStatus::Failed);
        assert!(s.upload.unwrap().status_details.contains("exchange key"));

        // An interrupted upload is reported failed after a restart.
        b.begin_upload().unwrap();
        drop(b);
        let mut b = Instance::open(dir_b.path()).unwrap();
        assert_eq!(b.upload_status().unwrap().status, OpStatus::Failed);
        assert!(b.upload_status().unwrap().status_details.contains("restarted"));

        let good = recovery::build_restore_blob_with_rng(&mut test_rng(9), &items, &exchange).unwrap();
        b.begin_upload().unwrap();
        b.finish_upload(&mut test_rng(10), &good.to_json()).unwrap();
        assert_eq!(b.status(), Status::Activated);
        assert_eq!(b.summary().contents_fingerprint, a.summary().contents_fingerprint);
        assert_eq!(
            b.backup_key().unwrap().expose(),
            a.backup_key().unwrap().expose(),
            "backups from A open on B"
        );
        assert!(!b.persists_keys(), "keys under uploaded contents stay in memory");
        assert!(a.persists_keys());

        // Uploaded contents are never written: on disk B is still recovering, and says why.
        let stored = fs::read(dir_b.path().join(STATE_FILE)).unwrap();
        for item in &items {
            let enc = b64u(item.plaintext.expose());
            assert!(
                !String::from_utf8_lossy(&stored).contains(&enc[..32]),
                "item {} written",
                item.tag
            );
        }
        let on_disk = inspect(dir_b.path()).unwrap();
        assert_eq!(on_disk.status, Status::Recovering);
        assert_eq!(on_disk.contents_fingerprint, None);
        assert_eq!(on_disk.upload.as_ref().unwrap().status, OpStatus::Failed);
        assert_eq!(on_disk.upload.unwrap().status_details, RECOVERED_IN_MEMORY_ONLY);
        // After a restart the same blob (same exchange key) activates it again.
        drop(b);
        let mut b = Instance::open(dir_b.path()).unwrap();
        assert_eq!(b.status(), Status::Recovering);
        assert_eq!(b.upload_status().unwrap().status_details, RECOVERED_IN_MEMORY_ONLY);
        b.begin_upload().unwrap();
        b.finish_upload(&mut test_rng(11), &good.to_json()).unwrap();
        assert_eq!(b.summary().contents_fingerprint, a.summary().contents_fingerprint);
    }

    #[test]
    fn an_in_memory_instance_writes_nothing() {
        let mut a = Instance::in_memory();
        assert!(!a.persists_keys());
        a.download(&mut test_rng(12), &certs(0..3), 2).unwrap();
        assert_eq!(a.status(), Status::Activated);
        let mut b = Instance::in_memory();
        b.transfer_key(&mut test_rng(13)).unwrap();
        assert_eq!(b.status(), Status::Recovering);
    }

    #[test]
    fn a_damaged_state_file_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{\"format\":1,").unwrap();
        assert!(Instance::open(dir.path()).is_err());
        fs::write(
            dir.path().join(STATE_FILE),
            br#"{"format":1,"status":"activated","exchange":null,"domain":null,"download":null,"upload":null}"#,
        )
        .unwrap();
        assert!(Instance::open(dir.path()).is_err(), "activated without a domain");
    }
}
