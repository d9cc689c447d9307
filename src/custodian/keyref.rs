//! How a custodian's private key is named: a key file, or a key on a token
//! by its `pkcs11:` URI. Read once, where it is given, so every workflow
//! after that knows which of the two it holds.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::token::{redacted, TokenError, TokenUri, UriProblem};

/// A custodian's private key as named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// A key file (encrypted PKCS#8, PKCS#8 or PKCS#1).
    File(PathBuf),
    /// A key on a PKCS#11 token (boxed: a URI is ten times a path's size,
    /// and command-line structs hold these by value).
    Token(Box<TokenUri>),
}

impl KeyRef {
    /// Reads `text`: a `pkcs11:` URI (in any case) is parsed, and a malformed
    /// one refused ([`TokenError::Uri`]); anything else is a file path,
    /// left to be opened.
    pub fn parse(text: &OsStr) -> Result<KeyRef, TokenError> {
        let head = text.as_encoded_bytes().get(..7);
        if !head.is_some_and(|h| h.eq_ignore_ascii_case(b"pkcs11:")) {
            return Ok(KeyRef::File(PathBuf::from(text)));
        }
        match text.to_str() {
            Some(uri) => TokenUri::parse(uri).map(|u| KeyRef::Token(Box::new(u))),
            None => Err(TokenError::Uri {
                uri: redacted(&text.to_string_lossy()),
                problem: UriProblem::NotText,
            }),
        }
    }

    /// The key file, if this names one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            KeyRef::File(p) => Some(p),
            KeyRef::Token(_) => None,
        }
    }
}

impl std::fmt::Display for KeyRef {
    /// The path as given, or the URI's canonical form (which never holds a
    /// PIN: a URI with one is refused, and its pin-source is left out).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRef::File(p) => write!(f, "{}", p.display()),
            KeyRef::Token(uri) => write!(f, "{uri}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KeyRef, TokenError> {
        KeyRef::parse(OsStr::new(text))
    }

    #[test]
    fn a_uri_is_a_token_key_and_anything_else_a_file() {
        assert_eq!(parse("alice.key").unwrap(), KeyRef::File("alice.key".into()));
        // A file whose name merely contains the scheme is still a file.
        assert_eq!(
            parse("./pkcs11:token=a").unwrap(),
            KeyRef::File("./pkcs11:token=a".into())
        );
        let token = parse("PKCS11:token=alice;object=a?module-path=/m.so&pin-source=/run/pin").unwrap();
        let KeyRef::Token(uri) = &token else {
            panic!("{token:?}")
        };
        assert_eq!((uri.token.as_str(), uri.object.as_deref()), ("alice", Some("a")));
        assert_eq!(token.file(), None);
        assert_eq!(parse("alice.key").unwrap().file(), Some(Path::new("alice.key")));
    }

    #[test]
    fn display_is_the_path_or_the_canonical_uri_without_its_pin_source() {
        assert_eq!(parse("keys/alice.key").unwrap().to_string(), "keys/alice.key");
        let token = parse("pkcs11:object=a;token=alice%20card?module-path=/m.so&pin-source=file:/run/pin").unwrap();
        assert_eq!(
            token.to_string(),
            "pkcs11:token=alice%20card;object=a?module-path=/m.so"
        );
    }

    #[test]
    fn a_malformed_uri_is_refused_and_never_quotes_a_pin() {
        let err = parse("pkcs11:token=a?module-path=/m.so&pin-value=4711").unwrap_err();
        assert!(
            matches!(
                err,
                TokenError::Uri {
                    problem: UriProblem::PinValue,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("4711"), "{err}");
        assert!(err.to_string().contains("pin-value=***"), "{err}");
        // A PIN where a path attribute goes is an unknown attribute, and still hidden.
        let err = parse("pkcs11:token=a;PIN%2Dvalue=4711?module-path=/m.so").unwrap_err();
        assert!(
            matches!(
                err,
                TokenError::Uri {
                    problem: UriProblem::Unknown { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("4711"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_uri_that_is_not_text_is_refused_not_taken_for_a_file() {
        use std::os::unix::ffi::OsStrExt;
        let err = KeyRef::parse(OsStr::from_bytes(b"pkcs11:token=\xff?module-path=/m.so")).unwrap_err();
        assert!(
            matches!(
                err,
                TokenError::Uri {
                    problem: UriProblem::NotText,
                    ..
                }
            ),
            "{err:?}"
        );
        let file = KeyRef::parse(OsStr::from_bytes(b"alice\xff.key")).unwrap();
        assert!(matches!(file, KeyRef::File(_)));
    }
}
