//! Managed HSM local RBAC: who presents a request (bearer tokens,
//! `tokens`), what a role permits ([`roles`], [`actions`]), who holds
//! which role where ([`assignments`]), the endpoints that manage them and
//! the settings (`api`). The decision for every request is `Authenticator::decide`.

pub mod actions;
pub(crate) mod api;
pub mod assignments;
pub(crate) mod persist;
pub mod roles;
mod settings;
pub(crate) mod tokens;

use std::path::Path;

use crate::error::Result;
use assignments::{RbacFile, RBAC_FILE};
use persist::Persisted;
use settings::{SettingsFile, SETTINGS_FILE};
use tokens::{Identity, TokenStore};

pub use crate::crypto::secret::BearerToken;
pub use actions::DataAction;
pub use roles::Role;
pub(crate) use tokens::Credentials;

/// The outcome of checking a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No credentials at all: answer with the challenge.
    Challenge,
    /// Credentials that are malformed or not ours.
    Unauthorized(&'static str),
    /// A known principal whose assignments do not grant the action there.
    Forbidden {
        principal: String,
    },
    Allowed {
        principal: String,
    },
}

/// Tokens, role assignments and settings of one instance.
pub(crate) struct Authenticator {
    tokens: TokenStore,
    pub rbac: Persisted<RbacFile>,
    pub settings: Persisted<SettingsFile>,
}

/// A state folder from before role assignments existed granted the roles
/// recorded with its tokens: they become assignments at `/`, once.
fn seed(rbac: &Persisted<RbacFile>, tokens: &TokenStore) -> Result<()> {
    if rbac.exists() {
        return Ok(());
    }
    let recorded = tokens.recorded_roles();
    if recorded.iter().all(|(_, roles)| roles.is_empty()) {
        return Ok(());
    }
    let Ok(()) = rbac.update(|f| {
        for (principal, roles) in &recorded {
            f.grant_at_root(principal, roles);
        }
        Ok::<(), std::convert::Infallible>(())
    })?;
    Ok(())
}

impl Authenticator {
    pub fn open(state_dir: &Path) -> Result<Authenticator> {
        let tokens = TokenStore::open(state_dir)?;
        let rbac = Persisted::open(state_dir, RBAC_FILE)?;
        seed(&rbac, &tokens)?;
        Ok(Authenticator {
            tokens,
            rbac,
            settings: Persisted::open(state_dir, SETTINGS_FILE)?,
        })
    }

    /// Knows no token until [`Authenticator::issue`] makes one.
    pub fn in_memory() -> Authenticator {
        Authenticator {
            tokens: TokenStore::in_memory(),
            rbac: Persisted::in_memory(RbacFile::default()),
            settings: Persisted::in_memory(SettingsFile::default()),
        }
    }

    /// Issues a token known only to this process (an in-memory instance's),
    /// and assigns `roles` to `principal` at `/`.
    ///
    /// Errors: a bad principal name.
    pub fn issue(&self, principal: &str, roles: &[Role]) -> Result<BearerToken> {
        tokens::check_principal(principal)?;
        grant(&self.rbac, principal, roles)?;
        self.tokens.issue(principal, roles)
    }

    /// Whether the request may perform `action` on `scope` (`/`, `/keys`, `/keys/{name}`).
    pub fn decide(&self, credentials: Option<&Credentials>, action: DataAction, scope: &str) -> Decision {
        match self.tokens.identify(credentials) {
            Identity::Challenge => Decision::Challenge,
            Identity::Unauthorized(why) => Decision::Unauthorized(why),
            Identity::Principal(principal) => {
                if self.rbac.read(|f| f.allows(&principal, action, scope)) {
                    Decision::Allowed { principal }
                } else {
                    Decision::Forbidden { principal }
                }
            }
        }
    }
}

fn grant(rbac: &Persisted<RbacFile>, principal: &str, roles: &[Role]) -> Result<()> {
    let Ok(()) = rbac.update(|f| {
        f.grant_at_root(principal, roles);
        Ok::<(), std::convert::Infallible>(())
    })?;
    Ok(())
}

/// Issues a new token for `principal` and assigns it `roles` at scope `/`
/// (none, to rehearse a refusal), recorded in `state_dir`. Works while an
/// emulator serves the directory: the server rereads both files when they change.
///
/// Errors: a bad principal name, or the state directory cannot be written.
pub fn issue_token(state_dir: &Path, principal: &str, roles: &[Role]) -> Result<BearerToken> {
    issue_token_for(state_dir, principal, roles, None)
}

/// [`issue_token`], the token admitted for `lifetime` seconds when given
/// (the authority's, which says how long its tokens last).
pub(crate) fn issue_token_for(
    state_dir: &Path,
    principal: &str,
    roles: &[Role],
    lifetime: Option<u64>,
) -> Result<BearerToken> {
    tokens::check_principal(principal)?;
    super::state::ensure_dir(state_dir)?;
    let rbac = Persisted::<RbacFile>::open(state_dir, RBAC_FILE)?;
    seed(&rbac, &TokenStore::open(state_dir)?)?;
    // The assignment first: a token that exists always has its roles.
    grant(&rbac, principal, roles)?;
    tokens::record_token(state_dir, principal, roles, lifetime)
}

/// The decision the server makes for the holder of `token` asking for
/// `action` on `scope` in the instance at `state_dir` (read afresh), so a
/// test or a rehearsal script can ask about any action, served or not.
///
/// Errors: the state folder's token or role file cannot be read.
pub fn decide_in(state_dir: &Path, token: &str, action: DataAction, scope: &str) -> Result<Decision> {
    let auth = Authenticator::open(state_dir)?;
    let credentials = Credentials::from_header(format!("Bearer {token}").as_bytes());
    Ok(auth.decide(Some(&credentials), action, scope))
}

/// The 403 for a principal whose assignments do not grant `action` on
/// `scope`. The first sentence is the service's ("Not authorized to
/// access {action} on {scope}", code `AccessDenied`); the rest says what would.
pub(crate) fn refusal(principal: &str, action: DataAction, scope: &str) -> super::error::ApiError {
    let granting: Vec<String> = roles::roles_granting(action).iter().map(|r| r.name()).collect();
    let hint = if granting.is_empty() {
        "no built-in role grants it; a custom role can".to_string()
    } else {
        format!("built-in roles that grant it: {}", granting.join(", "))
    };
    super::error::ApiError {
        status: hyper::StatusCode::FORBIDDEN,
        code: "AccessDenied",
        message: format!(
            "Not authorized to access {} on {scope}: the principal '{principal}' holds no role assignment at \
             {scope} or above that grants it ({hint})",
            action.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(t: &str) -> Credentials {
        Credentials::from_header(format!("Bearer {t}").as_bytes())
    }

    #[test]
    fn decisions_follow_the_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let admin = issue_token(dir.path(), "alice", &[Role::Administrator])
            .unwrap()
            .reveal();
        let user = issue_token(dir.path(), "bob", &[Role::CryptoUser]).unwrap().reveal();
        let officer = issue_token(dir.path(), "olga", &[Role::CryptoOfficer])
            .unwrap()
            .reveal();
        let owner = issue_token(dir.path(), "owner", &[]).unwrap().reveal();
        let auth = Authenticator::open(dir.path()).unwrap();
        let (sd, create) = (DataAction::SecurityDomainDownload, DataAction::KeyCreate);
        let allowed = |t: &str, a, s| matches!(auth.decide(Some(&h(t)), a, s), Decision::Allowed { .. });
        assert_eq!(auth.decide(None, sd, "/"), Decision::Challenge);
        assert!(allowed(&admin, sd, "/"));
        assert!(!allowed(&admin, create, "/keys/k"));
        assert!(allowed(&user, create, "/keys/k"));
        assert!(!allowed(&user, sd, "/"));
        // The real Crypto Officer neither creates nor uses keys.
        assert!(!allowed(&officer, create, "/keys/k"));
        assert!(!allowed(&officer, DataAction::KeySign, "/keys/k"));
        assert!(allowed(&officer, DataAction::DeletedKeyPurge, "/keys/k"));
        assert_eq!(
            auth.decide(Some(&h(&owner)), create, "/keys/k"),
            Decision::Forbidden {
                principal: "owner".into()
            }
        );
        // A token issued while the server runs brings its assignments along.
        let late = issue_token(dir.path(), "carol", &[Role::CryptoUser]).unwrap().reveal();
        assert!(allowed(&late, create, "/keys/k"));
    }

    #[test]
    fn an_older_state_folder_keeps_the_roles_its_tokens_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let user = issue_token(dir.path(), "bob", &[Role::CryptoUser]).unwrap().reveal();
        std::fs::remove_file(dir.path().join(RBAC_FILE)).unwrap();
        let auth = Authenticator::open(dir.path()).unwrap();
        assert!(matches!(
            auth.decide(Some(&h(&user)), DataAction::KeyCreate, "/keys/x"),
            Decision::Allowed { .. }
        ));
        let stored = std::fs::read_to_string(dir.path().join(RBAC_FILE)).unwrap();
        assert_eq!(stored.matches(Role::CryptoUser.id()).count(), 1, "{stored}");
    }

    #[test]
    fn a_refusal_names_the_action_the_scope_and_the_roles_that_grant_it() {
        let e = refusal("olga", DataAction::KeyCreate, "/keys/k");
        assert_eq!((e.status.as_u16(), e.code), (403, "AccessDenied"));
        assert!(e
            .message
            .starts_with("Not authorized to access Microsoft.KeyVault/managedHsm/keys/create on /keys/k"));
        assert!(e.message.contains("'olga'"));
        assert!(
            e.message
                .contains("built-in roles that grant it: Managed HSM Crypto User)"),
            "{}",
            e.message
        );
        let e = refusal("x", DataAction::RoleAssignmentRead, "/");
        assert!(e.message.contains(
            "Managed HSM Administrator, Managed HSM Crypto Officer, Managed HSM Crypto User, \
             Managed HSM Policy Administrator, Managed HSM Crypto Auditor"
        ));
    }
}
