//! Who may do what: bearer tokens issued to named principals, each holding
//! local roles. Tokens are stored only as SHA-256 hashes (`tokens.json`,
//! 0600, in the state directory); the decision for a request is made here.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::crypto::b64::b64u;
use crate::crypto::rng::os_rng;
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
}

/// What an operation requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Administrator,
    Crypto,
}

impl Need {
    fn allows(self, roles: &[Role]) -> bool {
        match self {
            Need::Administrator => roles.contains(&Role::Administrator),
            Need::Crypto => roles
                .iter()
                .any(|r| matches!(r, Role::CryptoOfficer | Role::CryptoUser)),
        }
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
    Ok(token)
}

/// A fresh token and the record (its hash) that admits it.
fn new_token(principal: &str, roles: &[Role]) -> (String, TokenRecord) {
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    rand_core::Rng::fill_bytes(&mut os_rng(), &mut secret[..]);
    let token = format!("{TOKEN_PREFIX}{}", b64u(&secret[..]));
    let mut roles_sorted = roles.to_vec();
    roles_sorted.dedup();
    let record = TokenRecord {
        principal: principal.to_string(),
        roles: roles_sorted,
        sha256: hash(&token),
        issued: super::now_unix(),
    };
    (token, record)
}

/// Pure decision on one header against the known records.
fn decide_with(records: &[TokenRecord], header: Option<&[u8]>, need: Need) -> Decision {
    let Some(header) = header else {
        return Decision::Challenge;
    };
    let Ok(text) = std::str::from_utf8(header) else {
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
        Some(r) if need.allows(&r.roles) => Decision::Allowed {
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
        Ok(token)
    }

    pub fn decide(&self, header: Option<&[u8]>, need: Need) -> Decision {
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
        decide_with(&cache.1, header, need)
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
        let h = |t: &str| format!("Bearer {t}").into_bytes();
        assert_eq!(auth.decide(None, Need::Administrator), Decision::Challenge);
        assert_eq!(
            auth.decide(Some(&h(&admin)), Need::Administrator),
            Decision::Allowed {
                principal: "alice".into()
            }
        );
        assert_eq!(
            auth.decide(Some(&h(&admin)), Need::Crypto),
            Decision::Forbidden {
                principal: "alice".into()
            }
        );
        assert_eq!(
            auth.decide(Some(&h(&user)), Need::Crypto),
            Decision::Allowed {
                principal: "bob".into()
            }
        );
        assert_eq!(
            auth.decide(Some(&h(&user)), Need::Administrator),
            Decision::Forbidden {
                principal: "bob".into()
            }
        );
        assert_eq!(
            auth.decide(Some(&h(&owner)), Need::Crypto),
            Decision::Forbidden {
                principal: "owner".into()
            }
        );
        assert!(matches!(
            auth.decide(Some(&h("hsmemu_nope")), Need::Crypto),
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            auth.decide(Some(admin.as_bytes()), Need::Administrator),
            Decision::Unauthorized(_)
        ));
        assert!(matches!(
            auth.decide(Some(format!("Basic {admin}").as_bytes()), Need::Administrator),
            Decision::Unauthorized(_)
        ));
        // A token issued while the server runs is seen; the file holds no token in the clear.
        let late = issue_token(dir.path(), "carol", &[Role::CryptoOfficer]).unwrap();
        assert!(matches!(
            auth.decide(Some(&h(&late)), Need::Crypto),
            Decision::Allowed { .. }
        ));
        let stored = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&late) && !stored.contains(&admin));
        assert!(issue_token(dir.path(), "bad name", &[]).is_err());
    }

    #[test]
    fn role_spellings() {
        assert_eq!(Role::parse("crypto-officer"), Some(Role::CryptoOfficer));
        assert_eq!(Role::parse("Crypto User"), Some(Role::CryptoUser));
        assert_eq!(Role::parse("Administrator"), Some(Role::Administrator));
        assert_eq!(Role::parse("owner"), None);
    }
}
