//! The Managed HSM local-RBAC data actions: what an operation needs (see
//! `request::Route::action`) and what a role definition lists.
//!
//! The strings are the service's, from the `DataAction` enumeration of the
//! data-plane `rbac.json` (azure-rest-api-specs, Microsoft.KeyVault 7.5)
//! and, for `keys/rotate/action`, which that enumeration lacks, the
//! "Permitted operations" table of "Local RBAC built-in roles for Managed
//! HSM" (learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles).
//! The two settings actions are the emulator's own names: neither source
//! publishes one for `/settings` (see `hsm-ceremony-emulator(7)`).

/// Declares [`DataAction`], its [`ALL`](DataAction::ALL) list and
/// [`name`](DataAction::name) from one table, so a new action cannot be
/// missing from one of them.
macro_rules! data_actions {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// One data action; the variant names are shared with the other emulator modules.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DataAction {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DataAction {
            pub const ALL: [DataAction; [$(DataAction::$variant),*].len()] = [$(DataAction::$variant),*];

            /// The full data-action name, as role definitions spell it.
            pub fn name(self) -> &'static str {
                match self {
                    $(DataAction::$variant => $name,)*
                }
            }
        }
    };
}

data_actions! {
    /// `POST /securitydomain/download`.
    SecurityDomainDownload => "Microsoft.KeyVault/managedHsm/securitydomain/download/action",
    /// `GET /securitydomain/download/pending`.
    SecurityDomainDownloadStatus => "Microsoft.KeyVault/managedHsm/securitydomain/download/read",
    /// `GET /securitydomain/upload` (the exchange key).
    SecurityDomainTransferKey => "Microsoft.KeyVault/managedHsm/securitydomain/transferkey/read",
    /// `POST /securitydomain/upload`.
    SecurityDomainUpload => "Microsoft.KeyVault/managedHsm/securitydomain/upload/action",
    /// `GET /securitydomain/upload/pending`.
    SecurityDomainUploadStatus => "Microsoft.KeyVault/managedHsm/securitydomain/upload/read",
    KeyCreate => "Microsoft.KeyVault/managedHsm/keys/create",
    KeyRead => "Microsoft.KeyVault/managedHsm/keys/read/action",
    KeyBackup => "Microsoft.KeyVault/managedHsm/keys/backup/action",
    KeyRestore => "Microsoft.KeyVault/managedHsm/keys/restore/action",
    KeyWrite => "Microsoft.KeyVault/managedHsm/keys/write/action",
    KeyDelete => "Microsoft.KeyVault/managedHsm/keys/delete",
    KeyImport => "Microsoft.KeyVault/managedHsm/keys/import/action",
    KeyEncrypt => "Microsoft.KeyVault/managedHsm/keys/encrypt/action",
    KeyDecrypt => "Microsoft.KeyVault/managedHsm/keys/decrypt/action",
    KeyWrap => "Microsoft.KeyVault/managedHsm/keys/wrap/action",
    KeyUnwrap => "Microsoft.KeyVault/managedHsm/keys/unwrap/action",
    KeySign => "Microsoft.KeyVault/managedHsm/keys/sign/action",
    KeyVerify => "Microsoft.KeyVault/managedHsm/keys/verify/action",
    KeyRelease => "Microsoft.KeyVault/managedHsm/keys/release/action",
    KeyExport => "Microsoft.KeyVault/managedHsm/keys/export/action",
    KeyRotate => "Microsoft.KeyVault/managedHsm/keys/rotate/action",
    DeletedKeyRead => "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action",
    DeletedKeyRecover => "Microsoft.KeyVault/managedHsm/keys/deletedKeys/recover/action",
    DeletedKeyPurge => "Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete",
    Rng => "Microsoft.KeyVault/managedHsm/rng/action",
    BackupStart => "Microsoft.KeyVault/managedHsm/backup/start/action",
    BackupStatus => "Microsoft.KeyVault/managedHsm/backup/status/action",
    RestoreStart => "Microsoft.KeyVault/managedHsm/restore/start/action",
    RestoreStatus => "Microsoft.KeyVault/managedHsm/restore/status/action",
    RoleAssignmentRead => "Microsoft.KeyVault/managedHsm/roleAssignments/read/action",
    RoleAssignmentWrite => "Microsoft.KeyVault/managedHsm/roleAssignments/write/action",
    RoleAssignmentDelete => "Microsoft.KeyVault/managedHsm/roleAssignments/delete/action",
    RoleDefinitionRead => "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action",
    RoleDefinitionWrite => "Microsoft.KeyVault/managedHsm/roleDefinitions/write/action",
    RoleDefinitionDelete => "Microsoft.KeyVault/managedHsm/roleDefinitions/delete/action",
    SettingsRead => "Microsoft.KeyVault/managedHsm/settings/read/action",
    SettingsWrite => "Microsoft.KeyVault/managedHsm/settings/write/action",
}

const PREFIX: &str = "Microsoft.KeyVault/managedHsm/";

impl DataAction {
    /// The action a role definition names, compared as Azure compares
    /// action names: without regard to case.
    pub fn parse(name: &str) -> Option<DataAction> {
        DataAction::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

/// Whether a role definition's entry `pattern` covers `action`: an exact
/// name, or a pattern whose `*` stands for any run of characters (as in
/// `Microsoft.KeyVault/managedHsm/keys/*`), case-insensitively as Azure does.
pub fn pattern_covers(pattern: &str, action: DataAction) -> bool {
    glob(
        pattern.to_ascii_lowercase().as_bytes(),
        action.name().to_ascii_lowercase().as_bytes(),
    )
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative wildcard match with one backtrack point: linear enough for names this short.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Checks one entry of a custom role's `dataActions` or `notDataActions`:
/// a known action, or a wildcard pattern under `Microsoft.KeyVault/managedHsm/`
/// that covers at least one action (so a typo is never accepted as a no-op).
pub fn check_pattern(entry: &str) -> Result<(), String> {
    if entry.contains('*') {
        let under = entry.len() >= PREFIX.len() && entry[..PREFIX.len()].eq_ignore_ascii_case(PREFIX);
        if under && DataAction::ALL.iter().any(|a| pattern_covers(entry, *a)) {
            return Ok(());
        }
        return Err(format!(
            "'{entry}' matches no Managed HSM data action; a wildcard must start with {PREFIX} \
             (for example {PREFIX}keys/*)"
        ));
    }
    match DataAction::parse(entry) {
        Some(_) => Ok(()),
        None => Err(format!(
            "'{entry}' is not a Managed HSM data action (for example {})",
            DataAction::KeyRead.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_prefixed_and_parse_back() {
        let mut names: Vec<&str> = DataAction::ALL.iter().map(|a| a.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DataAction::ALL.len(), "one string per action");
        for a in DataAction::ALL {
            assert!(a.name().starts_with(PREFIX), "{a:?}");
            assert_eq!(DataAction::parse(a.name()), Some(a));
            assert_eq!(DataAction::parse(&a.name().to_uppercase()), Some(a));
        }
        assert_eq!(DataAction::parse("Microsoft.KeyVault/managedHsm/keys/fly"), None);
    }

    #[test]
    fn wildcards_cover_as_azure_does() {
        use DataAction::*;
        let keys = "Microsoft.KeyVault/managedHsm/keys/*";
        assert!(pattern_covers(keys, KeyCreate));
        assert!(pattern_covers(keys, DeletedKeyPurge));
        assert!(!pattern_covers(keys, Rng));
        assert!(!pattern_covers(keys, BackupStart));
        assert!(pattern_covers("microsoft.keyvault/MANAGEDHSM/*", SecurityDomainUpload));
        assert!(pattern_covers("Microsoft.KeyVault/managedHsm/*/read/action", KeyRead));
        assert!(pattern_covers(
            "Microsoft.KeyVault/managedHsm/*/read/action",
            RoleAssignmentRead
        ));
        assert!(!pattern_covers(
            "Microsoft.KeyVault/managedHsm/*/read/action",
            KeyCreate
        ));
        assert!(pattern_covers(KeySign.name(), KeySign));
        assert!(!pattern_covers(KeySign.name(), KeyVerify));
        assert!(!pattern_covers("Microsoft.KeyVault/managedHsm/keys", KeyCreate));
    }

    #[test]
    fn custom_entries_are_checked() {
        assert!(check_pattern(DataAction::KeyWrap.name()).is_ok());
        assert!(check_pattern("Microsoft.KeyVault/managedHsm/keys/*").is_ok());
        assert!(check_pattern("*").unwrap_err().contains("must start with"));
        assert!(check_pattern("Microsoft.KeyVault/managedHsm/secrets/*")
            .unwrap_err()
            .contains("matches no"));
        assert!(check_pattern("Microsoft.KeyVault/managedHsm/keys/fly")
            .unwrap_err()
            .contains("'Microsoft.KeyVault/managedHsm/keys/fly' is not a Managed HSM data action"));
    }
}
