//! The built-in Managed HSM local roles, with the names, ids and data
//! actions of Microsoft's "Local RBAC built-in roles for Managed HSM"
//! (learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles; its
//! source, MicrosoftDocs/azure-security-docs
//! `articles/key-vault/managed-hsm/built-in-roles.md`, of 2024-01-25).
//!
//! Where that table is silent the emulator decides, and says so in
//! `hsm-ceremony-emulator(7)`: `securitydomain/download/read` (the download
//! status, in the spec's enumeration) goes with the download to the
//! Administrator; `keys/export/action` to the Crypto Officer, whose
//! description names exporting keys; `rng/action` to the Crypto User, whose
//! description names all other key operations; the two settings actions to
//! the Administrator.

use serde::{Deserialize, Serialize};

use super::actions::DataAction;

/// A built-in local role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Security domain, full backup and restore, role management; no key operations.
    #[serde(rename = "Administrator")]
    Administrator,
    /// Role management, deleted keys (read, recover, purge), export; no other key operations.
    #[serde(rename = "Crypto Officer")]
    CryptoOfficer,
    /// Every key operation except deleted keys and export.
    #[serde(rename = "Crypto User")]
    CryptoUser,
    /// Role assignments and definitions.
    #[serde(rename = "Policy Administrator")]
    PolicyAdministrator,
    /// Reads key attributes, without using keys.
    #[serde(rename = "Crypto Auditor")]
    CryptoAuditor,
    /// Reads, wraps and unwraps with a key (customer-managed keys of Azure services).
    #[serde(rename = "Crypto Service Encryption User")]
    CryptoServiceEncryptionUser,
    /// Releases a key to a trusted execution environment.
    #[serde(rename = "Crypto Service Release User")]
    CryptoServiceReleaseUser,
    /// Single-key and full backup.
    #[serde(rename = "Backup")]
    Backup,
    /// Single-key and full restore.
    #[serde(rename = "Restore")]
    Restore,
}

impl Role {
    /// Every built-in role, in the order of Microsoft's table of roles.
    pub const ALL: [Role; 9] = [
        Role::Administrator,
        Role::CryptoOfficer,
        Role::CryptoUser,
        Role::PolicyAdministrator,
        Role::CryptoAuditor,
        Role::CryptoServiceEncryptionUser,
        Role::CryptoServiceReleaseUser,
        Role::Backup,
        Role::Restore,
    ];

    /// The role's name without the "Managed HSM " every built-in carries.
    pub fn short_name(self) -> &'static str {
        match self {
            Role::Administrator => "Administrator",
            Role::CryptoOfficer => "Crypto Officer",
            Role::CryptoUser => "Crypto User",
            Role::PolicyAdministrator => "Policy Administrator",
            Role::CryptoAuditor => "Crypto Auditor",
            Role::CryptoServiceEncryptionUser => "Crypto Service Encryption User",
            Role::CryptoServiceReleaseUser => "Crypto Service Release User",
            Role::Backup => "Backup",
            Role::Restore => "Restore",
        }
    }

    /// The role's name as the service lists it (`roleName`).
    pub fn name(self) -> String {
        format!("Managed HSM {}", self.short_name())
    }

    /// The role definition's id (its `name`), as Microsoft publishes it.
    pub fn id(self) -> &'static str {
        match self {
            Role::Administrator => "a290e904-7015-4bba-90c8-60543313cdb4",
            Role::CryptoOfficer => "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
            Role::CryptoUser => "21dbd100-6940-42c2-9190-5d6cb909625b",
            Role::PolicyAdministrator => "4bd23610-cdcf-4971-bdee-bdc562cc28e4",
            Role::CryptoAuditor => "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3",
            Role::CryptoServiceEncryptionUser => "33413926-3206-4cdd-b39a-83574fe37a17",
            Role::CryptoServiceReleaseUser => "21dbd100-6940-42c2-9190-5d6cb909625c",
            Role::Backup => "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8",
            Role::Restore => "6efe6056-5259-49d2-8b3d-d3d73544b20b",
        }
    }

    /// The table's description of the role.
    pub fn description(self) -> &'static str {
        match self {
            Role::Administrator => {
                "Grants permissions to perform all operations related to the security domain, full backup and \
                 restore, and role management. Not permitted to perform any key management operations."
            }
            Role::CryptoOfficer => {
                "Grants permissions to perform all role management, purge or recover deleted keys, and export \
                 keys. Not permitted to perform any other key management operations."
            }
            Role::CryptoUser => {
                "Grants permissions to perform all key management operations except purge or recover deleted \
                 keys and export keys."
            }
            Role::PolicyAdministrator => "Grants permissions to create and delete role assignments.",
            Role::CryptoAuditor => "Grants read permissions to read (but not use) key attributes.",
            Role::CryptoServiceEncryptionUser => "Grants permissions to use a key for service encryption.",
            Role::CryptoServiceReleaseUser => "Grants permissions to release a key to a trusted execution environment.",
            Role::Backup => "Grants permissions to perform single-key or whole-HSM backup.",
            Role::Restore => "Grants permissions to perform single-key or whole-HSM restore.",
        }
    }

    /// The role's `dataActions`: the table's X marks (plus the emulator's
    /// decisions named in the module comment). No built-in role has
    /// `notDataActions`.
    pub fn data_actions(self) -> &'static [DataAction] {
        use DataAction::*;
        match self {
            Role::Administrator => &[
                SecurityDomainDownload,
                SecurityDomainDownloadStatus,
                SecurityDomainUpload,
                SecurityDomainUploadStatus,
                SecurityDomainTransferKey,
                RoleAssignmentRead,
                RoleAssignmentWrite,
                RoleAssignmentDelete,
                RoleDefinitionRead,
                RoleDefinitionWrite,
                RoleDefinitionDelete,
                BackupStart,
                BackupStatus,
                RestoreStart,
                RestoreStatus,
                SettingsRead,
                SettingsWrite,
            ],
            Role::CryptoOfficer => &[
                DeletedKeyRead,
                DeletedKeyRecover,
                DeletedKeyPurge,
                KeyExport,
                RoleAssignmentRead,
                RoleAssignmentWrite,
                RoleAssignmentDelete,
                RoleDefinitionRead,
                RoleDefinitionWrite,
                RoleDefinitionDelete,
            ],
            Role::CryptoUser => &[
                KeyRead,
                KeyWrite,
                KeyRotate,
                KeyCreate,
                KeyDelete,
                KeyBackup,
                KeyRestore,
                KeyRelease,
                KeyImport,
                KeyEncrypt,
                KeyDecrypt,
                KeyWrap,
                KeyUnwrap,
                KeySign,
                KeyVerify,
                Rng,
                RoleAssignmentRead,
                RoleDefinitionRead,
            ],
            Role::PolicyAdministrator => &[
                RoleAssignmentRead,
                RoleAssignmentWrite,
                RoleAssignmentDelete,
                RoleDefinitionRead,
                RoleDefinitionWrite,
                RoleDefinitionDelete,
            ],
            // The table marks purge for the auditor too, against its description; kept as published.
            Role::CryptoAuditor => &[KeyRead, DeletedKeyPurge, RoleAssignmentRead, RoleDefinitionRead],
            Role::CryptoServiceEncryptionUser => &[KeyRead, KeyWrap, KeyUnwrap],
            Role::CryptoServiceReleaseUser => &[KeyRelease],
            Role::Backup => &[KeyBackup, BackupStart, BackupStatus],
            Role::Restore => &[KeyRestore, RestoreStart, RestoreStatus],
        }
    }

    pub fn grants(self, action: DataAction) -> bool {
        self.data_actions().contains(&action)
    }

    /// The built-in role whose definition id is `id` (a bare GUID).
    pub fn by_id(id: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.id().eq_ignore_ascii_case(id))
    }

    /// Parses a role as a person names it: the service's name ("Managed
    /// HSM Crypto User"), the name without the prefix ("Crypto User"), the
    /// command-line form ("crypto-user"), case-insensitively, or the id.
    pub fn parse(text: &str) -> Option<Role> {
        if let Some(r) = Role::by_id(text.trim()) {
            return Some(r);
        }
        let words: Vec<String> = text
            .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let words = match words.as_slice() {
            [m, h, rest @ ..] if m == "managed" && h == "hsm" => rest.to_vec(),
            _ => words,
        };
        let wanted = words.join(" ");
        Role::ALL
            .into_iter()
            .find(|r| r.short_name().to_ascii_lowercase() == wanted)
    }

    /// The command-line forms, for help and refusals.
    pub fn cli_name(self) -> String {
        self.short_name().to_ascii_lowercase().replace(' ', "-")
    }
}

/// The built-in roles that grant `action`, as a refusal names them.
pub fn roles_granting(action: DataAction) -> Vec<Role> {
    Role::ALL.into_iter().filter(|r| r.grants(action)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for role in Role::ALL {
            assert_eq!(Role::parse(&role.name()), Some(role));
            assert_eq!(Role::parse(role.short_name()), Some(role));
            assert_eq!(Role::parse(&role.cli_name()), Some(role));
            assert_eq!(Role::parse(&role.name().to_uppercase()), Some(role));
            assert_eq!(Role::parse(role.id()), Some(role));
        }
        assert_eq!(Role::parse("managed-hsm-crypto-user"), Some(Role::CryptoUser));
        assert_eq!(Role::parse("  Crypto   Officer "), Some(Role::CryptoOfficer));
        assert_eq!(Role::parse("owner"), None);
        assert_eq!(Role::parse("Managed HSM"), None);
        assert_eq!(Role::parse("crypto"), None);
        assert_eq!(Role::parse(""), None);
    }

    #[test]
    fn ids_and_names_are_distinct() {
        let mut ids: Vec<&str> = Role::ALL.iter().map(|r| r.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Role::ALL.len());
    }
}
