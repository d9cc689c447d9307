//! Bearer tokens issued to named principals. Tokens are stored only as
//! SHA-256 hashes (`tokens.json`, 0600, in the state directory); a token
//! names its principal, whose role assignments (`rbac.json`) decide.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::b64::b64u;
use crate::crypto::rng::os_rng;
use crate::crypto::secret::{BearerToken, SecretBytes};
use crate::error::{EmulatorError, Result};
use crate::files::{self, Mode};

use super::persist::{stamp, Stamp};
use super::roles::Role;

pub const TOKENS_FILE: &str = "tokens.json";
const TOKEN_PREFIX: &str = "hsmemu_";
const MAX_TOKENS_BYTES: u64 = 4 * 1024 * 1024;

/// An `Authorization` header as presented: it carries a bearer token, so
/// it is held as a secret (no `Debug`, wiped on drop) from the moment the
/// request is taken apart.
pub(crate) struct Credentials(SecretBytes);

impl Credentials {
    pub fn from_header(value: &[u8]) -> Credentials {
        Credentials(SecretBytes::new(value.to_vec()))
    }
}

/// Who presented a request's `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    /// No credentials at all: answer with the challenge.
    Challenge,
    /// Credentials that are malformed or not ours.
    Unauthorized(&'static str),
    Principal(String),
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    principal: String,
    roles: Vec<Role>,
    /// Hex SHA-256 of the token; tokens carry 256 random bits, so a plain hash suffices.
    sha256: String,
    issued: u64,
    /// When a token with a lifetime (the authority's) stops admitting, in
    /// Unix seconds; `emulator token`'s tokens have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

impl TokenRecord {
    fn expired(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    format: u32,
    tokens: Vec<TokenRecord>,
}

impl Default for TokenFile {
    fn default() -> Self {
        TokenFile {
            format: 1,
            tokens: Vec::new(),
        }
    }
}

impl super::persist::Document for TokenFile {
    const WHAT: &'static str = "token file";
    const MAX_BYTES: u64 = MAX_TOKENS_BYTES;
    fn format(&self) -> u32 {
        self.format
    }
}

/// Hex SHA-256 of a secret that carries 256 random bits (a token, a client
/// secret): what the state folder keeps instead of the secret.
pub(crate) fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn read_file(path: &Path) -> Result<TokenFile> {
    super::persist::read(path)
}

pub(crate) fn check_principal(principal: &str) -> Result<()> {
    let ok = !principal.is_empty()
        && principal.len() <= 64
        && principal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(EmulatorError::Principal(principal.to_string()).into())
    }
}

/// Records a new token for `principal` in `state_dir` (the caller has
/// recorded its role assignments first), admitted for `lifetime` seconds
/// when given, else until the state folder is reset. Expired records are
/// dropped in the same write, so a rehearsal signing in again and again
/// (every `az` call after the hour) does not grow the file to its limit.
/// Works while an emulator serves the directory: the server rereads the
/// file when it changes.
///
/// Errors: a bad principal name, or the state directory cannot be written.
pub(super) fn record_token(
    state_dir: &Path,
    principal: &str,
    roles: &[Role],
    lifetime: Option<u64>,
) -> Result<BearerToken> {
    check_principal(principal)?;
    // Serialises concurrent issuers so no record is lost.
    let lock_path = state_dir.join(".tokens.lock");
    let _lock = super::persist::lock_file(&lock_path)?;
    let path = state_dir.join(TOKENS_FILE);
    let mut file = read_file(&path)?;
    let now = super::super::now_unix();
    let (token, mut record) = new_token(principal, roles);
    record.expires = lifetime.map(|l| now.saturating_add(l));
    file.format = 1;
    file.tokens.retain(|r| !r.expired(now));
    file.tokens.push(record);
    let text = serde_json::to_vec_pretty(&file).expect("plain data serialises");
    // Never write what the server would refuse to read.
    if text.len() as u64 > MAX_TOKENS_BYTES {
        return Err(EmulatorError::WouldGrow {
            what: path.display().to_string(),
            size: text.len() as u64,
            limit: MAX_TOKENS_BYTES,
        }
        .into());
    }
    files::replace(&path, &text, Mode::Private)?;
    Ok(token)
}

/// A fresh token and the record (its hash) that admits it. The roles are
/// kept as a note of what was granted at issue; the assignments decide.
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
        sha256: sha256_hex(&token),
        issued: super::super::now_unix(),
        expires: None,
    };
    (BearerToken::new(token), record)
}

/// Pure identification of one header against the known records at `now`.
fn identify_with(records: &[TokenRecord], credentials: Option<&Credentials>, now: u64) -> Identity {
    let Some(credentials) = credentials else {
        return Identity::Challenge;
    };
    let Ok(text) = std::str::from_utf8(credentials.0.expose()) else {
        return Identity::Unauthorized("the Authorization header is not text");
    };
    let Some((scheme, token)) = text.trim().split_once(' ') else {
        return Identity::Unauthorized("the Authorization header is not 'Bearer <token>'");
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Identity::Unauthorized("the Authorization header is not 'Bearer <token>'");
    }
    let presented = sha256_hex(token.trim());
    let found = records
        .iter()
        .find(|r| bool::from(r.sha256.as_bytes().ct_eq(presented.as_bytes())));
    match found {
        None => Identity::Unauthorized("the token was not issued by this instance"),
        Some(r) if r.expired(now) => Identity::Unauthorized("the token has expired; sign in again for a new one"),
        Some(r) => Identity::Principal(r.principal.clone()),
    }
}

/// The server's view of `tokens.json`, reloaded when the file changes; or,
/// with no file, the tokens issued in memory by [`TokenStore::issue`].
pub(crate) struct TokenStore {
    path: Option<PathBuf>,
    cache: Mutex<(Option<Stamp>, Vec<TokenRecord>)>,
}

impl TokenStore {
    pub fn open(state_dir: &Path) -> Result<TokenStore> {
        let path = state_dir.join(TOKENS_FILE);
        let records = read_file(&path)?.tokens;
        Ok(TokenStore {
            cache: Mutex::new((stamp(&path), records)),
            path: Some(path),
        })
    }

    /// Knows no token until [`TokenStore::issue`] makes one.
    pub fn in_memory() -> TokenStore {
        TokenStore {
            path: None,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// The principals and roles recorded with their tokens (what an older
    /// state folder, from before role assignments, granted).
    pub fn recorded_roles(&self) -> Vec<(String, Vec<Role>)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.1.iter().map(|r| (r.principal.clone(), r.roles.clone())).collect()
    }

    /// Issues a token known only to this process (an in-memory instance's).
    ///
    /// Errors: a bad principal name.
    pub fn issue(&self, principal: &str, roles: &[Role]) -> Result<BearerToken> {
        check_principal(principal)?;
        let (token, record) = new_token(principal, roles);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).1.push(record);
        Ok(token)
    }

    pub fn identify(&self, credentials: Option<&Credentials>) -> Identity {
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
        identify_with(&cache.1, credentials, super::super::now_unix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn an_issued_token_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = record_token(dir.path(), "alice", &[Role::Administrator], None).unwrap();
        let in_memory = TokenStore::in_memory().issue("bob", &[Role::CryptoUser]).unwrap();
        for token in [on_disk, in_memory] {
            let secret = &token.expose()[TOKEN_PREFIX.len()..];
            assert!(secret.len() >= 43, "{} characters", secret.len());
            // Also inside a `Result`, as `unwrap` and `expect` print one.
            let shown = format!("{token:?} {:?}", Ok::<_, ()>(&token));
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(TOKEN_PREFIX), "{shown}");
        }
    }

    #[test]
    fn identification() {
        let dir = tempfile::tempdir().unwrap();
        let admin = record_token(dir.path(), "alice", &[Role::Administrator], None)
            .unwrap()
            .reveal();
        let store = TokenStore::open(dir.path()).unwrap();
        let h = |t: &str| Credentials::from_header(format!("Bearer {t}").as_bytes());
        let raw = |t: &[u8]| Credentials::from_header(t);
        assert_eq!(store.identify(None), Identity::Challenge);
        assert_eq!(store.identify(Some(&h(&admin))), Identity::Principal("alice".into()));
        assert!(matches!(
            store.identify(Some(&h("hsmemu_nope"))),
            Identity::Unauthorized(_)
        ));
        assert!(matches!(
            store.identify(Some(&raw(admin.as_bytes()))),
            Identity::Unauthorized(_)
        ));
        assert!(matches!(
            store.identify(Some(&raw(format!("Basic {admin}").as_bytes()))),
            Identity::Unauthorized(_)
        ));
        // A token issued while the server runs is seen; the file holds no token in the clear.
        let late = record_token(dir.path(), "carol", &[Role::CryptoOfficer], None)
            .unwrap()
            .reveal();
        assert_eq!(store.identify(Some(&h(&late))), Identity::Principal("carol".into()));
        let stored = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&late) && !stored.contains(&admin));
        assert!(record_token(dir.path(), "bad name", &[], None).is_err());
    }

    #[test]
    fn expired_tokens_are_refused_and_pruned_when_the_next_is_issued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENS_FILE);
        let kept = record_token(dir.path(), "ops", &[Role::Administrator], None)
            .unwrap()
            .reveal();
        let live = record_token(dir.path(), "app", &[Role::CryptoUser], Some(3600))
            .unwrap()
            .reveal();
        // Sign-ins of an earlier hour: their tokens have expired.
        let mut file = read_file(&path).unwrap();
        let stale: Vec<TokenRecord> = (0..50)
            .map(|_| {
                let (_, mut r) = new_token("app", &[Role::CryptoUser]);
                r.expires = Some(1);
                r
            })
            .collect();
        file.tokens.extend(stale.iter().cloned());
        files::replace(&path, &serde_json::to_vec(&file).unwrap(), Mode::Private).unwrap();
        let h = |t: &str| Credentials::from_header(format!("Bearer {t}").as_bytes());
        let (expired, _) = new_token("app", &[]);
        let expired = expired.reveal();
        let mut record = stale[0].clone();
        record.sha256 = sha256_hex(&expired);
        assert_eq!(
            identify_with(&[record], Some(&h(&expired)), 1),
            Identity::Unauthorized("the token has expired; sign in again for a new one")
        );
        let next = record_token(dir.path(), "app", &[Role::CryptoUser], Some(3600))
            .unwrap()
            .reveal();
        let left = read_file(&path).unwrap().tokens;
        assert_eq!(left.len(), 3, "only the expired records are dropped");
        let store = TokenStore::open(dir.path()).unwrap();
        for t in [&kept, &live, &next] {
            assert!(matches!(store.identify(Some(&h(t))), Identity::Principal(_)));
        }
    }

    #[test]
    fn an_issued_token_is_admitted_only_by_its_own_record() {
        let (token, record) = new_token("dave", &[Role::CryptoUser]);
        let token = token.reveal();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 43);
        let records = [record];
        let h = |t: &str| Credentials::from_header(format!("Bearer {t}").as_bytes());
        assert_eq!(
            identify_with(&records, Some(&h(&token)), 0),
            Identity::Principal("dave".into())
        );
        let altered = format!("{}x", &token[..token.len() - 1]);
        assert!(matches!(
            identify_with(&records, Some(&h(&altered)), 0),
            Identity::Unauthorized(_)
        ));
    }
}
