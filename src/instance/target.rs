//! The instance a drill works with, over [`InstanceClient`]: a fresh
//! emulated instance in this process, or an instance at a URL. This is the
//! network side of [`crate::ceremony::drill::Target`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::client::{InstanceClient, NewKey};
use crate::ceremony::drill::{BackupLocation, CanaryKey, InventoryEntry, Target};
use crate::crypto::secret::BearerToken;
use crate::custodian::cert::Certificate;
use crate::emulator::{self, Role};
use crate::error::Result;
use crate::format::restore_blob::RestoreBlob;

/// The label a local drill's report names its instance by.
pub const LOCAL_LABEL: &str = "local emulated instance, in process, in memory only";

/// An instance and how the report names it.
pub struct DrillInstance {
    pub client: InstanceClient,
    pub label: String,
}

impl DrillInstance {
    pub fn new(client: InstanceClient, label: impl Into<String>) -> DrillInstance {
        DrillInstance {
            client,
            label: label.into(),
        }
    }

    /// A fresh provisioned instance in this process. What the drill uploads
    /// is the production security domain's contents: the instance holding
    /// them has no state folder, token file or key store on disk, and opens
    /// no socket (an in-memory connection carries requests).
    pub fn local() -> Result<DrillInstance> {
        let emu = emulator::InProcess::in_memory()?;
        let token = emu.issue_token("drill", &[Role::Administrator, Role::CryptoUser])?;
        Ok(DrillInstance::new(
            InstanceClient::in_process(Arc::new(emu), token),
            LOCAL_LABEL,
        ))
    }

    /// The instance at `url` with `token`, trusting `ca` if given.
    pub fn remote(url: &str, token: BearerToken, ca: Option<&Path>) -> Result<DrillInstance> {
        Ok(DrillInstance::new(InstanceClient::new(url, token, ca)?, url))
    }
}

/// The canary keys' types, as `drill prepare` makes them.
fn new_key(kty: &str, tags: &BTreeMap<String, String>) -> NewKey {
    let ops = |o: &[&str]| o.iter().map(|s| s.to_string()).collect();
    let (key_size, crv, key_ops) = match kty {
        "RSA-HSM" => (Some(2048), None, ops(&["wrapKey", "unwrapKey"])),
        "EC-HSM" => (None, Some("P-256".to_string()), ops(&["sign", "verify"])),
        _ => (Some(256), None, ops(&["wrapKey", "unwrapKey"])),
    };
    NewKey {
        kty: kty.into(),
        key_size,
        crv,
        key_ops,
        tags: tags.clone(),
    }
}

impl Target for DrillInstance {
    fn is_emulated(&self) -> bool {
        self.client.is_emulator()
    }

    fn transfer_key(&self) -> Result<Certificate> {
        self.client.transfer_key()
    }

    fn upload(&self, blob: &RestoreBlob) -> Result<()> {
        self.client.upload(blob)
    }

    fn create_key(&self, name: &str, kty: &str, tags: &BTreeMap<String, String>) -> Result<CanaryKey> {
        let k = self.client.create_key(name, &new_key(kty, tags))?;
        Ok(CanaryKey {
            name: k.name,
            version: k.version,
            kid: k.kid,
            kty: kty.into(),
        })
    }

    fn wrap_key(&self, key: &CanaryKey, alg: &str, dek: &[u8]) -> Result<Vec<u8>> {
        self.client.wrap_key(&key.name, &key.version, alg, dek)
    }

    fn unwrap_key(&self, key: &CanaryKey, alg: &str, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.client.unwrap_key(&key.name, &key.version, alg, wrapped)
    }

    fn sign(&self, key: &CanaryKey, alg: &str, digest: &[u8]) -> Result<Vec<u8>> {
        self.client.sign(&key.name, &key.version, alg, digest)
    }

    fn verify(&self, key: &CanaryKey, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool> {
        self.client.verify(&key.name, &key.version, alg, digest, signature)
    }

    fn inventory(&self) -> Result<Vec<InventoryEntry>> {
        Ok(self
            .client
            .list_key_versions()?
            .into_iter()
            .map(|v| InventoryEntry {
                name: v.name,
                version: v.version,
                enabled: v.enabled,
                tags: v.tags,
            })
            .collect())
    }

    fn full_backup(&self, storage: &str, sas: Option<&str>) -> Result<BackupLocation> {
        let done = self.client.full_backup(storage, sas)?;
        Ok(BackupLocation {
            storage: storage.trim_end_matches('/').into(),
            folder: done.folder,
            folder_url: done.folder_url,
        })
    }

    fn full_restore(&self, backup: &BackupLocation, sas: Option<&str>) -> Result<()> {
        self.client.full_restore(&backup.storage, sas, &backup.folder)
    }

    fn key_backup(&self, name: &str) -> Result<String> {
        self.client.backup_key(name)
    }
}
