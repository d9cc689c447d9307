//! Custodian keys on PKCS#11 tokens: RFC 7512 `pkcs11:` URIs, opening the
//! module and token, logging in, RSA-OAEP share unwrapping and PKCS#1 v1.5
//! signing done on the token, and key pairs generated on it. The module is
//! loaded at run time (dlopen), so nothing here is linked in.
//!
//! A token that refuses OAEP with SHA-256 (SoftHSM 2.6 does SHA-1 only) is
//! refused, unless its URI says `x-oaep=host`: the token then does the raw
//! RSA operation (CKM_RSA_X_509) and the padding is removed here
//! ([`crate::crypto::oaep`]); the private key still never leaves the token.

mod generate;
mod key;
mod session;
mod uri;

use std::path::PathBuf;

use thiserror::Error;

pub use generate::{generate_with_rng, Generated, NewKey};
pub use key::TokenKey;
pub use session::{check_oaep, static_glibc, OaepSupport, TokenFacts};
pub use uri::{redacted, EscapeProblem, TokenUri, UriPart, UriProblem, PATH_ATTRIBUTES, QUERY_ATTRIBUTES};

/// Why a token key could not be used. Each names the token or object.
#[derive(Debug, Error)]
pub enum TokenError {
    /// `uri` is as given, any PIN in it hidden ([`uri::redacted`]).
    #[error("'{uri}' is not a usable PKCS#11 URI: {problem}")]
    Uri { uri: String, problem: UriProblem },
    #[error("the PKCS#11 module {} cannot be loaded: {why}", path.display())]
    Module { path: PathBuf, why: String },
    /// A static musl binary has no dynamic loader: no module can ever load.
    #[error(
        "this hsm-ceremony binary cannot load PKCS#11 modules at all (a static musl build has no dynamic loader), \
         so {} was not tried", path.display()
    )]
    NoModuleLoading { path: PathBuf },
    #[error("no token labelled '{token}'{also} is present in {}{}", module.display(), list_present(.present))]
    TokenNotFound {
        token: String,
        /// The URI's other token attributes: ` with serial '…'`, or empty.
        also: String,
        module: PathBuf,
        present: Vec<String>,
    },
    #[error("the PIN for token '{token}' is wrong")]
    WrongPin { token: String },
    #[error("the PIN of token '{token}' is locked after too many wrong tries")]
    PinLocked { token: String },
    #[error("no RSA private key {object} is on token '{token}'")]
    KeyNotFound { token: String, object: String },
    #[error("{} private keys match {object} on token '{token}': {}", .candidates.len(), .candidates.join(", "))]
    Ambiguous {
        token: String,
        object: String,
        /// Each as `'label' (id 0a0b)`.
        candidates: Vec<String>,
    },
    #[error(
        "the URI names only token '{token}', which holds {} RSA private keys that may decrypt: {}; \
         add object= or id= to name one", .candidates.len(), .candidates.join(", ")
    )]
    SeveralKeys { token: String, candidates: Vec<String> },
    #[error("the key {object} on token '{token}' is {got}, not RSA")]
    NotRsa { token: String, object: String, got: String },
    #[error("the key {object} on token '{token}' may not decrypt (its CKA_DECRYPT attribute is false)")]
    NoDecrypt { token: String, object: String },
    #[error(
        "the key {object} on token '{token}' asks for its PIN again before every use (CKA_ALWAYS_AUTHENTICATE), \
         which hsm-ceremony does not support"
    )]
    PinPerUse { token: String, object: String },
    #[error("the key {object} on token '{token}' may not sign (its CKA_SIGN attribute is false)")]
    NoSign { token: String, object: String },
    #[error("token '{token}' could not sign with {object}: {source}")]
    SignFailed {
        token: String,
        object: String,
        source: cryptoki::error::Error,
    },
    #[error("token '{token}' does not support RSA-OAEP with SHA-256 (CKM_RSA_PKCS_OAEP): {why}")]
    NoOaep { token: String, why: String },
    #[error("token '{token}' refused RSA-OAEP with SHA-256 and MGF1-SHA-256 ({rv}){}", if *.raw_offered {
        "; it does offer raw RSA decryption (CKM_RSA_X_509)"
    } else {
        ", and offers no raw RSA decryption (CKM_RSA_X_509) either"
    })]
    NoOaepSha256 {
        token: String,
        rv: String,
        raw_offered: bool,
    },
    #[error("the key {object} on token '{token}' failed its self-test: {why}")]
    SelfTest { token: String, object: String, why: String },
    #[error("token '{token}' already holds a private key labelled '{label}'")]
    LabelTaken { token: String, label: String },
    #[error("token '{token}' refused {what}: {why}")]
    Refused { token: String, what: String, why: String },
}

fn list_present(tokens: &[String]) -> String {
    if tokens.is_empty() {
        " (it shows no token at all)".into()
    } else {
        format!(" (present: {})", tokens.join(", "))
    }
}
