//! Who may do what: bearer tokens issued to named principals, each holding
//! local roles. Tokens are stored only as SHA-256 hashes (`tokens.json`,
//! 0600, in the state directory); the decision for a request is made here.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::b64::b64u;
use crate::crypto::rng::os_rng;
use crate::crypto::secret::SecretBytes;
use crate::error::{Error, Result};
use crate::files::{self, Mode};

pub const TOKENS_FILE: &str = "tokens.json";
const TOKEN_PREFIX: &str = "hsmemu_";
const MAX_TOKENS_BYTES: u64 = 4 * 1024 * 1024;

/// A Managed HSM local role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Security-domain download, transfer key, upload.
    #[serde(rename = "Administrator")]
    Administrator,
    /// Key management.
    #[serde(rename = "Crypto Officer")]
    CryptoOfficer,
    /// Key use (and, here, create/get/backup/restore like the real role).
    #[serde(rename = "Crypto User")]
    CryptoUser,
}

impl Role {
    /// The role's display name, as the service names it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Administrator => "Administrator",
            Role::CryptoOfficer => "Crypto Officer",
            Role::CryptoUser => "Crypto User",
        }
    }

    /// Parses the CLI spelling (`administrator`, `crypto-officer`,
    /// `crypto-user`) or the display name.
    pub fn parse(text: &str) -> Option<Role> {
        match text.to_ascii_lowercase().replace(' ', "-").as_str() {
            "administrator" => Some(Role::Administrator),
            "crypto-officer" => Some(Role::CryptoOfficer),
            "crypto-user" => Some(Role::CryptoUser),
            _ => None,
        }
    }

    /// Every role the emulator knows, in the order refusals name them.
    pub const ALL: [Role; 3] = [Role::Administrator, Role::CryptoOfficer, Role::CryptoUser];

    /// The data actions this role grants. Administrator and Crypto User are
    /// as the service's table has them (see [`DataAction`]); Crypto Officer
    /// also holds the four key actions, as its earlier definition did and as
    /// this emulator has always granted them (the 2023 table gives it only
    /// deleted-key, export and role-management actions).
    pub fn data_actions(self) -> &'static [DataAction] {
        use DataAction::*;
        match self {
            Role::Administrator => &[
                SecurityDomainDownload,
                SecurityDomainDownloadStatus,
                SecurityDomainTransferKey,
                SecurityDomainUpload,
                SecurityDomainUploadStatus,
                BackupStart,
                BackupStatus,
                RestoreStart,
                RestoreStatus,
            ],
            Role::CryptoOfficer | Role::CryptoUser => &[KeyCreate, KeyRead, KeyBackup, KeyRestore],
        }
    }

    pub fn grants(self, action: DataAction) -> bool {
        self.data_actions().contains(&action)
    }
}

/// A Managed HSM local-RBAC data action: what an operation needs (see
/// `request::Route::action`) and what a role grants ([`Role::data_actions`]).
///
/// The strings are the service's: the "Permitted operations" table of
/// "Local RBAC built-in roles for Managed HSM"
/// (learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles, 2023),
/// and for `securitydomain/download/read`, which that table leaves out, the
/// Managed HSM Administrator role definition the service returns from
/// `GET /providers/Microsoft.Authorization/roleDefinitions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataAction {
    /// `POST /securitydomain/download`.
    SecurityDomainDownload,
    /// `GET /securitydomain/download/pending`.
    SecurityDomainDownloadStatus,
    /// `GET /securitydomain/upload` (the exchange key).
    SecurityDomainTransferKey,
    /// `POST /securitydomain/upload`.
    SecurityDomainUpload,
    /// `GET /securitydomain/upload/pending`.
    SecurityDomainUploadStatus,
    /// `POST /keys/{name}/create`.
    KeyCreate,
    /// `GET /keys/{name}[/{version}]`.
    KeyRead,
    /// `POST /keys/{name}/backup`.
    KeyBackup,
    /// `POST /keys/restore`.
    KeyRestore,
    /// `POST /backup`, `POST /prebackup`.
    BackupStart,
    /// `GET /backup/{jobId}/pending`.
    BackupStatus,
    /// `PUT /restore`, `PUT /prerestore`, `PUT /keys/{name}/restore`.
    RestoreStart,
    /// `GET /restore/{jobId}/pending`.
    RestoreStatus,
}

impl DataAction {
    pub const ALL: [DataAction; 13] = [
        DataAction::SecurityDomainDownload,
        DataAction::SecurityDomainDownloadStatus,
        DataAction::SecurityDomainTransferKey,
        DataAction::SecurityDomainUpload,
        DataAction::SecurityDomainUploadStatus,
        DataAction::KeyCreate,
        DataAction::KeyRead,
        DataAction::KeyBackup,
        DataAction::KeyRestore,
        DataAction::BackupStart,
        DataAction::BackupStatus,
        DataAction::RestoreStart,
        DataAction::RestoreStatus,
    ];

    /// The full data-action name, as role definitions spell it.
    pub fn name(self) -> &'static str {
        match self {
            DataAction::SecurityDomainDownload => "Microsoft.KeyVault/managedHsm/securitydomain/download/action",
            DataAction::SecurityDomainDownloadStatus => "Microsoft.KeyVault/managedHsm/securitydomain/download/read",
            DataAction::SecurityDomainTransferKey => "Microsoft.KeyVault/managedHsm/securitydomain/transferkey/read",
            DataAction::SecurityDomainUpload => "Microsoft.KeyVault/managedHsm/securitydomain/upload/action",
            DataAction::SecurityDomainUploadStatus => "Microsoft.KeyVault/managedHsm/securitydomain/upload/read",
            DataAction::KeyCreate => "Microsoft.KeyVault/managedHsm/keys/create",
            DataAction::KeyRead => "Microsoft.KeyVault/managedHsm/keys/read/action",
            DataAction::KeyBackup => "Microsoft.KeyVault/managedHsm/keys/backup/action",
            DataAction::KeyRestore => "Microsoft.KeyVault/managedHsm/keys/restore/action",
            DataAction::BackupStart => "Microsoft.KeyVault/managedHsm/backup/start/action",
            DataAction::BackupStatus => "Microsoft.KeyVault/managedHsm/backup/status/action",
            DataAction::RestoreStart => "Microsoft.KeyVault/managedHsm/restore/start/action",
            DataAction::RestoreStatus => "Microsoft.KeyVault/managedHsm/restore/status/action",
        }
    }

    /// The roles a principal could be given to perform this action, as a
    /// refusal names them: "the Administrator local role", "a Crypto
    /// Officer or Crypto User local role".
    pub fn roles_phrase(self) -> String {
        let names: Vec<&str> = Role::ALL.iter().filter(|r| r.grants(self)).map(|r| r.name()).collect();
        match names.as_slice() {
            [] => "a local role that grants it".to_string(),
            [one] => format!("the {one} local role"),
            [init @ .., last] => format!("a {} or {last} local role", init.join(", ")),
        }
    }
}

/// An `Authorization` header as presented: it carries a bearer token, so
/// it is held as a secret (no `Debug`, wiped on drop) from the moment the
/// request is taken apart.
pub(crate) struct Credentials(SecretBytes);

impl Credentials {
    pub fn from_header(value: &[u8]) -> Credentials {
        Credentials(SecretBytes::new(value.to_vec()))
    }
}

/// A bearer token as issued: secret until it is handed to its holder.
pub(crate) struct BearerToken(Zeroizing<String>);

impl BearerToken {
    /// Gives the token to the caller, who hands it to the principal once.
    pub fn reveal(mut self) -> String {
        std::mem::take(&mut *self.0)
    }
}

/// The outcome of checking a request's `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No credentials at all: answer with the challenge.
    Challenge,
    /// Credentials that are malformed or not ours.
    Unauthorized(&'static str),
    /// A known principal without the role.
    Forbidden {
        principal: String,
    },
    Allowed {
        principal: String,
    },
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    principal: String,
    roles: Vec<Role>,
    /// Hex SHA-256 of the token; tokens carry 256 random bits, so a plain hash suffices.
    sha256: String,
    issued: u64,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    format: u32,
    tokens: Vec<TokenRecord>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn read_file(path: &Path) -> Result<TokenFile> {
    if !path.exists() {
        return Ok(TokenFile {
            format: 1,
            tokens: Vec::new(),
        });
    }
    let bytes = files::read_limited(path, MAX_TOKENS_BYTES, "token file")?;
    let file: TokenFile = crate::format::json::from_slice(&bytes)
        .map_err(|e| Error::Usage(format!("{} is not a token file of this emulator: {e}", path.display())))?;
    if file.format != 1 {
        return Err(Error::Usage(format!(
            "{} has format {}, only 1 is understood",
            path.display(),
            file.format
        )));
    }
    Ok(file)
}

fn check_principal(principal: &str) -> Result<()> {
    let ok = !principal.is_empty()
        && principal.len() <= 64
        && principal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "'{principal}' is not a principal name: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )))
    }
}

/// Issues a new token for `principal` with `roles` (possibly none, to
/// rehearse a refusal) and records its hash in `state_dir`. Works while an
/// emulator serves the directory: the server rereads the file when it changes.
///
/// Errors: a bad principal name, or the state directory cannot be written.
pub fn issue_token(state_dir: &Path, principal: &str, roles: &[Role]) -> Result<String> {
    check_principal(principal)?;
    super::state::ensure_dir(state_dir)?;
    // Serialises concurrent issuers so no record is lost.
    let lock_path = state_dir.join(".tokens.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| Error::Write {
            path: lock_path.clone(),
            source,
        })?;
    lock.lock().map_err(|source| Error::Write {
        path: lock_path.clone(),
        source,
    })?;
    let path = state_dir.join(TOKENS_FILE);
    let mut file = read_file(&path)?;
    let (token, record) = new_token(principal, roles);
    file.format = 1;
    file.tokens.push(record);
    let text = serde_json::to_vec_pretty(&file).expect("plain data serialises");
    // Never write what the server would refuse to read.
    if text.len() as u64 > MAX_TOKENS_BYTES {
        return Err(Error::Usage(format!(
            "{} would grow past {MAX_TOKENS_BYTES} bytes, more than the emulator reads; nothing was issued \
             (serve a fresh state folder)",
            path.display()
        )));
    }
    files::replace(&path, &text, Mode::Private)?;
    Ok(token.reveal())
}

/// A fresh token and the record (its hash) that admits it.
fn new_token(principal: &str, roles: &[Role]) -> (BearerToken, TokenRecord) {
    let mut secret = Zeroizing::new([0u8; 32]);
    rand_core::Rng::fill_bytes(&mut os_rng(), &mut secret[..]);
    let mut token = Zeroizing::new(String::with_capacity(TOKEN_PREFIX.len() + 43));
    token.push_str(TOKEN_PREFIX);
    token.push_str(&Zeroizing::new(b64u(&secret[..])));
    let mut roles_sorted = roles.to_vec();
    roles_sorted.dedup();
    let record = TokenRecord {
        principal: principal.to_string(),
        roles: roles_sorted,
        sha256: hash(&token),
        issued: super::now_unix(),
    };
    (BearerToken(token), record)
}

/// Pure decision on one header against the known records.
fn decide_with(records: &[TokenRecord], credentials: Option<&Credentials>, action: DataAction) -> Decision {
    let Some(credentials) = credentials else {
        return Decision::Challenge;
    };
    let Ok(text) = std::str::from_utf8(credentials.0.expose()) else {
        return Decision::Unauthorized("the Authorization header is not text");
    };
    let Some((scheme, token)) = text.trim().split_once(' ') else {
        return Decision::Unauthorized("the Authorization header is not 'Bearer <token>'");
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Decision::Unauthorized("the Authorization header is not 'Bearer <token>'");
    }
    let presented = hash(token.trim());
    let found = records
        .iter()
        .find(|r| bool::from(r.sha256.as_bytes().ct_eq(presented.as_bytes())));
    match found {
        None => Decision::Unauthorized("the token was not issued by this instance"),
        Some(r) if r.roles.iter().any(|role| role.grants(action)) => Decision::Allowed {
            principal: r.principal.clone(),
        },
        Some(r) => Decision::Forbidden {
            principal: r.principal.clone(),
        },
    }
}

/// The file's identity, so a rewrite (a rename) is noticed.
#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

/// The server's view of `tokens.json`, reloaded when the file changes; or,
/// with no file, the tokens issued in memory by [`Authenticator::issue`].
pub(crate) struct Authenticator {
    path: Option<PathBuf>,
    cache: Mutex<(Option<Stamp>, Vec<TokenRecord>)>,
}

impl Authenticator {
    pub fn open(state_dir: &Path) -> Result<Authenticator> {
        let path = state_dir.join(TOKENS_FILE);
        let records = read_file(&path)?.tokens;
        Ok(Authenticator {
            cache: Mutex::new((stamp(&path), records)),
            path: Some(path),
        })
    }

    /// Knows no token until [`Authenticator::issue`] makes one.
    pub fn in_memory() -> Authenticator {
        Authenticator {
            path: None,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// Issues a token known only to this process (an in-memory instance's).
    ///
    /// Errors: a bad principal name.
    pub fn issue(&self, principal: &str, roles: &[Role]) -> Result<String> {
        check_principal(principal)?;
        let (token, record) = new_token(principal, roles);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).1.push(record);
        Ok(token.reveal())
    }

    /// Each principal and the roles its tokens hold (for a full backup).
    pub fn principal_roles(&self) -> Vec<(String, Vec<Role>)> {
        self.refreshed()
            .1
            .iter()
            .map(|r| (r.principal.clone(), r.roles.clone()))
            .collect()
    }

    fn refreshed(&self) -> std::sync::MutexGuard<'_, (Option<Stamp>, Vec<TokenRecord>)> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            let now = stamp(path);
            if now != cache.0 {
                // A file being replaced may be unreadable for an instant; keep the old view then.
                if let Ok(file) = read_file(path) {
                    *cache = (now, file.tokens);
                }
            }
        }
        cache
    }

    pub fn decide(&self, credentials: Option<&Credentials>, action: DataAction) -> Decision {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path {
            let now = stamp(path);
            if now != cache.0 {
                // A file being replaced may be unreadable for an instant; keep the old view then.
                if let Ok(file) = read_file(path) {
                    *cache = (now, file.tokens);
                }
            }
        }
        decide_with(&cache.1, credentials, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let dir = tempfile::tempdir().unwrap();
        let admin = issue_token(dir.path(), "alice", &[Role::Administrator]).unwrap();
        let user = issue_token(dir.path(), "bob", &[Role::CryptoUser]).unwrap();
        let owner = issue_token(dir.path(), "owner", &[]).unwrap();
        let auth = Authenticator::open(dir.path()).unwrap();
        let h = |t: &str| Credentials::from_header(format!("Bearer {t}").as_bytes());
        let raw = |t: &[u8]| Credentials::from_header(t);
        let (admin_op, key_op) = (DataAction::SecurityDomainDownload, DataAction::KeyCreate);
        assert_eq!(auth.decide(None, admin_op), Decision::Challenge);
        assert_eq!(
            auth.decide(Some(&h(&admin)), admin_op),
            Decision::Allowed {
                principal: "alice".into()
            }
        );
        assert_eq!(
            auth.decide(Some(&h(&admin)), key_op),
            Decision::Forbidden {
                principal: "alice".into()
            }
        );
        assert_eq!(
            auth.decide(Some(&h(&user)), key_op),
            Decision::Allowed {
                principal: "bob".into()
            }
        );
        assert_eq!(
            auth.decide(Some(&h(&user)), admin_op),
            Decision::Forbidden {
                principal: "bob".into()
            }
        );
        assert_eq!(
            auth.decide(Some(&h(&owner)), key_op),
            Decision::Forbidden {
                principal: "owner".into()
            }
        );
        assert!(matches!(
            auth.decide(Some(&h("hsmemu_nope")), key_op),
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            auth.decide(Some(&raw(admin.as_bytes())), admin_op),
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            auth.decide(Some(&raw(format!("Basic {admin}").as_bytes())), admin_op),
            Decision::Unauthorized(_)
        ));
        // A token issued while the server runs is seen; the file holds no token in the clear.
        let late = issue_token(dir.path(), "carol", &[Role::CryptoOfficer]).unwrap();
        assert!(matches!(auth.decide(Some(&h(&late)), key_op), Decision::Allowed { .. }));
        let stored = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&late) && !stored.contains(&admin));
        assert!(issue_token(dir.path(), "bad name", &[]).is_err());
    }

    #[test]
    fn roles_grant_what_they_always_did() {
        for action in DataAction::ALL {
            // Backup and restore are the Administrator's, as in the service's table.
            let security_domain = action.name().contains("/securitydomain/")
                || action.name().contains("/managedHsm/backup/")
                || action.name().contains("/managedHsm/restore/");
            assert!(action.name().starts_with("Microsoft.KeyVault/managedHsm/"));
            assert_eq!(Role::Administrator.grants(action), security_domain, "{action:?}");
            assert_eq!(Role::CryptoOfficer.grants(action), !security_domain, "{action:?}");
            assert_eq!(Role::CryptoUser.grants(action), !security_domain, "{action:?}");
            let phrase = action.roles_phrase();
            if security_domain {
                assert_eq!(phrase, "the Administrator local role");
            } else {
                assert_eq!(phrase, "a Crypto Officer or Crypto User local role");
            }
        }
        let mut names: Vec<&str> = DataAction::ALL.iter().map(|a| a.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DataAction::ALL.len(), "one string per action");
    }

    #[test]
    fn an_issued_token_is_admitted_only_by_its_own_record() {
        let (token, record) = new_token("dave", &[Role::CryptoUser]);
        let token = token.reveal();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 43);
        let records = [record];
        let h = |t: &str| Credentials::from_header(format!("Bearer {t}").as_bytes());
        assert!(matches!(
            decide_with(&records, Some(&h(&token)), DataAction::KeyRead),
            Decision::Allowed { .. }
        ));
        let altered = format!("{}x", &token[..token.len() - 1]);
        assert!(matches!(
            decide_with(&records, Some(&h(&altered)), DataAction::KeyRead),
            Decision::Unauthorized(_)
        ));
    }

    #[test]
    fn role_spellings() {
        assert_eq!(Role::parse("crypto-officer"), Some(Role::CryptoOfficer));
        assert_eq!(Role::parse("Crypto User"), Some(Role::CryptoUser));
        assert_eq!(Role::parse("Administrator"), Some(Role::Administrator));
        assert_eq!(Role::parse("owner"), None);
    }
}
