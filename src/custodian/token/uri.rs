//! RFC 7512 `pkcs11:` URIs naming a custodian's private key.

use std::fmt::Write as _;
use std::path::PathBuf;

use thiserror::Error;

use super::TokenError;

/// A parsed RFC 7512 URI naming a private key. Only the attributes below are
/// understood; any other is refused rather than silently ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenUri {
    /// `token`: the token label.
    pub token: String,
    /// `object`: the key's CKA_LABEL.
    pub object: Option<String>,
    /// `id`: the key's CKA_ID (raw bytes).
    pub id: Option<Vec<u8>>,
    /// `serial`: the token's serial number.
    pub serial: Option<String>,
    /// `model`: the token's model (CK_TOKEN_INFO).
    pub model: Option<String>,
    /// `manufacturer`: the token's manufacturer ID (CK_TOKEN_INFO).
    pub manufacturer: Option<String>,
    /// `module-path`: the PKCS#11 module to load.
    pub module_path: PathBuf,
    /// `pin-source`: only a file path (or `file:` URI), read for the PIN.
    pub pin_source: Option<PathBuf>,
    /// `x-oaep=host` (a vendor query attribute, RFC 7512 §2.3): the token
    /// does raw RSA and the OAEP padding is removed on this computer.
    pub oaep_on_host: bool,
}

/// The attributes understood before the `?` of a URI, and after it.
pub const PATH_ATTRIBUTES: [&str; 7] = ["token", "manufacturer", "model", "serial", "object", "id", "type"];
pub const QUERY_ATTRIBUTES: [&str; 3] = ["module-path", "pin-source", "x-oaep"];

/// Where in a URI an attribute stands: its path (`;`-separated, before the
/// `?`) or its query (`&`-separated, after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriPart {
    Path,
    Query,
}

/// What is wrong with a `pkcs11:` URI. Each says what, not what to do: the
/// advice depends on where the URI came from, and is the caller's.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriProblem {
    #[error("it does not start with 'pkcs11:'")]
    NotPkcs11,
    /// The argument itself is not UTF-8 (a URI is ASCII, other bytes %-escaped).
    #[error("it is not UTF-8 text")]
    NotText,
    #[error("'{text}' is not name=value")]
    NotNameValue { text: String },
    #[error("'{attribute}' is given twice")]
    Repeated { attribute: String },
    #[error("the value of '{attribute}' {escape}")]
    BadEscape { attribute: String, escape: EscapeProblem },
    #[error("'{attribute}' is not UTF-8")]
    NotUtf8 { attribute: String },
    #[error("type={value} is not a private key: only type=private is meaningful here")]
    NotPrivate { value: String },
    #[error("pin-source '{value}' is not an absolute file path")]
    PinSourceNotFile { value: String },
    #[error("x-oaep is 'token' (the default) or 'host', not '{value}'")]
    BadOaep { value: String },
    #[error("a PIN written in the URI (pin-value) is refused")]
    PinValue,
    #[error("the {part} attribute '{attribute}' is not understood")]
    Unknown { attribute: String, part: UriPart },
    #[error("it names no token")]
    NoToken,
    #[error("the token label is empty")]
    EmptyToken,
    #[error("it names no module")]
    NoModule,
}

/// A `%` not followed by two hex digits.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EscapeProblem {
    #[error("ends inside a %-escape")]
    Cut,
    #[error("has a bad %-escape '%{0}'")]
    NotHex(String),
}

impl std::fmt::Display for UriPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UriPart::Path => "path",
            UriPart::Query => "query",
        })
    }
}

/// `text` as it may be quoted back: the value of any `pin-value` attribute
/// (its name in any case, %-escaped or not) replaced by `***`.
pub fn redacted(text: &str) -> String {
    text.split_inclusive([';', '?', '&'])
        .map(|attr| {
            let body = attr.strip_suffix([';', '?', '&']).unwrap_or(attr);
            match body.split_once('=') {
                Some((name, _)) if is_pin_value(name) => format!("{name}=***{}", &attr[body.len()..]),
                _ => attr.to_string(),
            }
        })
        .collect()
}

fn is_pin_value(name: &str) -> bool {
    let name = name
        .get(..7)
        .filter(|h| h.eq_ignore_ascii_case("pkcs11:"))
        .map_or(name, |_| &name[7..]);
    percent_decode(name).is_ok_and(|n| n.eq_ignore_ascii_case(b"pin-value"))
}

impl TokenUri {
    /// Whether `text` is meant as a PKCS#11 URI rather than a file path.
    pub fn is_uri(text: &str) -> bool {
        text.get(..7).is_some_and(|head| head.eq_ignore_ascii_case("pkcs11:"))
    }

    /// Parses `text` (RFC 7512 §2.3). With neither `object` nor `id` the URI
    /// names the token's only RSA decryption key. The error quotes `text`
    /// with any `pin-value` hidden; its [`UriProblem`] says what is wrong.
    pub fn parse(text: &str) -> Result<TokenUri, TokenError> {
        Self::read(text).map_err(|problem| TokenError::Uri {
            uri: redacted(text),
            problem,
        })
    }

    fn read(text: &str) -> Result<TokenUri, UriProblem> {
        use UriProblem as P;
        if !Self::is_uri(text) {
            return Err(P::NotPkcs11);
        }
        let rest = &text[7..];
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = TokenUri::default();
        let mut token = None;
        let mut module = None;
        let mut seen: Vec<String> = Vec::new();
        let attrs = path
            .split(';')
            .filter(|a| !a.is_empty())
            .map(|a| (a, UriPart::Path))
            .chain(
                query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .filter(|a| !a.is_empty())
                    .map(|a| (a, UriPart::Query)),
            );
        for (attr, part) in attrs {
            let Some((name, value)) = attr.split_once('=') else {
                return Err(P::NotNameValue { text: attr.into() });
            };
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                return Err(P::Repeated { attribute: name });
            }
            seen.push(name.clone());
            // Refused before its value is decoded, so no error quotes a digit of the PIN.
            if name == "pin-value" {
                return Err(P::PinValue);
            }
            let bytes = percent_decode(value).map_err(|escape| P::BadEscape {
                attribute: name.clone(),
                escape,
            })?;
            let text_value = || {
                String::from_utf8(bytes.clone()).map_err(|_| P::NotUtf8 {
                    attribute: name.clone(),
                })
            };
            match (name.as_str(), part) {
                ("token", UriPart::Path) => token = Some(text_value()?),
                ("object", UriPart::Path) => uri.object = Some(text_value()?),
                ("id", UriPart::Path) => uri.id = Some(bytes),
                ("serial", UriPart::Path) => uri.serial = Some(text_value()?),
                ("model", UriPart::Path) => uri.model = Some(text_value()?),
                ("manufacturer", UriPart::Path) => uri.manufacturer = Some(text_value()?),
                ("type", UriPart::Path) => {
                    let v = text_value()?;
                    if v != "private" {
                        return Err(P::NotPrivate { value: v });
                    }
                }
                ("module-path", UriPart::Query) => module = Some(PathBuf::from(text_value()?)),
                ("pin-source", UriPart::Query) => {
                    let v = text_value()?;
                    let file = v.strip_prefix("file:").unwrap_or(&v);
                    if !file.starts_with('/') {
                        return Err(P::PinSourceNotFile { value: v });
                    }
                    uri.pin_source = Some(PathBuf::from(file));
                }
                ("x-oaep", UriPart::Query) => match text_value()?.as_str() {
                    "host" => uri.oaep_on_host = true,
                    "token" => uri.oaep_on_host = false,
                    other => return Err(P::BadOaep { value: other.into() }),
                },
                _ => return Err(P::Unknown { attribute: name, part }),
            }
        }
        uri.token = token.ok_or(P::NoToken)?;
        // An empty label would pick whichever token has none.
        if uri.token.is_empty() {
            return Err(P::EmptyToken);
        }
        uri.module_path = module.ok_or(P::NoModule)?;
        Ok(uri)
    }

    /// The key as named in messages: `object 'x' (id 0a0b)`.
    pub fn object_description(&self) -> String {
        describe(self.object.as_deref(), self.id.as_deref())
    }

    /// Whether the URI names the token only, not a key on it.
    pub fn names_token_only(&self) -> bool {
        self.object.is_none() && self.id.is_none()
    }
}

pub(super) fn describe(label: Option<&str>, id: Option<&[u8]>) -> String {
    match (label, id) {
        (Some(l), Some(i)) => format!("'{l}' (id {})", hex::encode(i)),
        (Some(l), None) => format!("'{l}'"),
        (None, Some(i)) => format!("with id {}", hex::encode(i)),
        (None, None) => "(any)".into(),
    }
}

impl std::fmt::Display for TokenUri {
    /// The canonical form: path attributes token, manufacturer, model,
    /// serial, object, id, then `?module-path`. The pin-source is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pkcs11:token={}", percent_encode(self.token.as_bytes()))?;
        for (name, value) in [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(v) = value {
                write!(f, ";{name}={}", percent_encode(v.as_bytes()))?;
            }
        }
        if let Some(o) = &self.object {
            write!(f, ";object={}", percent_encode(o.as_bytes()))?;
        }
        if let Some(id) = &self.id {
            f.write_str(";id=")?;
            for b in id {
                write!(f, "%{b:02x}")?;
            }
        }
        write!(
            f,
            "?module-path={}",
            percent_encode(self.module_path.to_string_lossy().as_bytes())
        )?;
        if self.oaep_on_host {
            f.write_str("&x-oaep=host")?;
        }
        Ok(())
    }
}

/// RFC 3986 percent-decoding (RFC 7512 §2.3): `%XX` is a byte.
pub(super) fn percent_decode(value: &str) -> Result<Vec<u8>, EscapeProblem> {
    let raw = value.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or(EscapeProblem::Cut)?;
            // Two hex digits exactly: from_str_radix alone would take "+1".
            let digits = std::str::from_utf8(hex)
                .ok()
                .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()));
            let byte = digits.and_then(|d| u8::from_str_radix(d, 16).ok());
            out.push(byte.ok_or_else(|| EscapeProblem::NotHex(String::from_utf8_lossy(hex).into_owned()))?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes all but RFC 3986 unreserved characters and '/'.
pub(super) fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

    #[test]
    fn uri_attributes_are_read_and_percent_decoded() {
        let u = TokenUri::parse(
            "pkcs11:token=alice%20card;object=sd-wrap;id=%01%a2;serial=42?module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        assert_eq!(u.token, "alice card");
        assert_eq!(u.object.as_deref(), Some("sd-wrap"));
        assert_eq!(u.id.as_deref(), Some(&[0x01, 0xa2][..]));
        assert_eq!(u.serial.as_deref(), Some("42"));
        assert_eq!(u.module_path, PathBuf::from(MODULE));
        assert_eq!(TokenUri::parse(&u.to_string()).unwrap(), u);
        let with_pin = TokenUri::parse(&format!(
            "pkcs11:token=a;object=b?module-path={MODULE}&pin-source=file:/run/pin"
        ))
        .unwrap();
        assert_eq!(with_pin.pin_source, Some(PathBuf::from("/run/pin")));
        let host = TokenUri::parse(&format!("pkcs11:token=a;object=b?module-path={MODULE}&x-oaep=host")).unwrap();
        assert!(host.oaep_on_host);
        assert!(host.to_string().ends_with("&x-oaep=host"));
        assert_eq!(TokenUri::parse(&host.to_string()).unwrap(), host);
        assert!(!u.to_string().contains("x-oaep"));
        assert!(TokenUri::is_uri("PKCS11:token=a"));
        assert!(!TokenUri::is_uri("alice.key"));
    }

    #[test]
    fn the_uris_p11tool_prints_are_read() {
        // `p11tool --list-privkeys --login` prints these, module path added.
        let printed = "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=4b2c1e;token=alice;\
                       id=%0a%0b;object=alice;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so";
        let u = TokenUri::parse(printed).unwrap();
        assert_eq!(u.model.as_deref(), Some("SoftHSM v2"));
        assert_eq!(u.manufacturer.as_deref(), Some("SoftHSM project"));
        assert_eq!(u.serial.as_deref(), Some("4b2c1e"));
        assert!(!u.names_token_only());
        assert_eq!(TokenUri::parse(&u.to_string()).unwrap(), u);
        // A token URL (`p11tool --list-token-urls`) names the token only.
        let token = TokenUri::parse(
            "pkcs11:model=IBM%20SoftTok;manufacturer=IBM%20Corp.;serial=123;token=alice\
             ?module-path=/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so",
        )
        .unwrap();
        assert!(token.names_token_only());
        assert_eq!(
            token.to_string(),
            "pkcs11:token=alice;manufacturer=IBM%20Corp.;model=IBM%20SoftTok;serial=123\
            ?module-path=/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"
        );
        assert_eq!(TokenUri::parse(&token.to_string()).unwrap(), token);
        assert!(TokenUri::parse("pkcs11:token=alice?module-path=/m.so")
            .unwrap()
            .names_token_only());
    }

    fn problem(uri: &str) -> UriProblem {
        match TokenUri::parse(uri) {
            Err(TokenError::Uri { problem, .. }) => problem,
            other => panic!("{uri}: {other:?}"),
        }
    }

    #[test]
    fn uris_that_cannot_be_honoured_are_refused_each_by_its_problem() {
        use UriProblem as P;
        let named = |a: &str| a.to_string();
        for (uri, expected, says) in [
            ("alice.key", P::NotPkcs11, "it does not start with 'pkcs11:'"),
            ("pkcs11:object=b?module-path=/m.so", P::NoToken, "it names no token"),
            ("pkcs11:token=a;object=b", P::NoModule, "it names no module"),
            (
                "pkcs11:token=;object=b?module-path=/m.so",
                P::EmptyToken,
                "the token label is empty",
            ),
            (
                "pkcs11:token=a;object=b?module-path=/m.so&pin-value=1234",
                P::PinValue,
                "a PIN written in the URI (pin-value) is refused",
            ),
            (
                "pkcs11:token=a;object=b?module-path=/m.so&PIN-VALUE=%zz",
                P::PinValue,
                "(pin-value) is refused",
            ),
            (
                "pkcs11:token=a;object=b?module-path=/m.so&pin-source=|/bin/echo 1",
                P::PinSourceNotFile {
                    value: "|/bin/echo 1".into(),
                },
                "pin-source '|/bin/echo 1' is not an absolute file path",
            ),
            (
                "pkcs11:token=a;object=b;token=c?module-path=/m.so",
                P::Repeated {
                    attribute: named("token"),
                },
                "'token' is given twice",
            ),
            (
                "pkcs11:token=a;model=x;MODEL=y?module-path=/m.so",
                P::Repeated {
                    attribute: named("model"),
                },
                "'model' is given twice",
            ),
            (
                "pkcs11:token=a;manufacturer=%ff?module-path=/m.so",
                P::NotUtf8 {
                    attribute: named("manufacturer"),
                },
                "'manufacturer' is not UTF-8",
            ),
            (
                "pkcs11:token=a?model=x&module-path=/m.so",
                P::Unknown {
                    attribute: named("model"),
                    part: UriPart::Query,
                },
                "the query attribute 'model' is not understood",
            ),
            (
                "pkcs11:token=a;object=b;slot-id=3?module-path=/m.so",
                P::Unknown {
                    attribute: named("slot-id"),
                    part: UriPart::Path,
                },
                "the path attribute 'slot-id' is not understood",
            ),
            (
                "pkcs11:token=a;object=b%2?module-path=/m.so",
                P::BadEscape {
                    attribute: named("object"),
                    escape: EscapeProblem::Cut,
                },
                "the value of 'object' ends inside a %-escape",
            ),
            (
                "pkcs11:token=a;object=b%zz?module-path=/m.so",
                P::BadEscape {
                    attribute: named("object"),
                    escape: EscapeProblem::NotHex("zz".into()),
                },
                "the value of 'object' has a bad %-escape '%zz'",
            ),
            // from_str_radix alone would read "+1" as 1.
            (
                "pkcs11:token=a;id=%+1?module-path=/m.so",
                P::BadEscape {
                    attribute: named("id"),
                    escape: EscapeProblem::NotHex("+1".into()),
                },
                "has a bad %-escape '%+1'",
            ),
            (
                "pkcs11:token=a;object=b;type=cert?module-path=/m.so",
                P::NotPrivate { value: named("cert") },
                "only type=private",
            ),
            (
                "pkcs11:token=a;object?module-path=/m.so",
                P::NotNameValue { text: named("object") },
                "'object' is not name=value",
            ),
            (
                "pkcs11:token=a;object=b?module-path=/m.so&x-oaep=sha1",
                P::BadOaep { value: named("sha1") },
                "x-oaep is 'token' (the default) or 'host', not 'sha1'",
            ),
        ] {
            let got = problem(uri);
            assert_eq!(got, expected, "{uri}");
            assert!(got.to_string().contains(says), "{uri}: {got}");
            // What is wrong, not what to do: the advice is the caller's.
            let said = got.to_string();
            assert!(
                ["add ", "give it", "write ", "use "].iter().all(|w| !said.contains(w)),
                "{said}"
            );
        }
    }

    #[test]
    fn a_refused_uri_is_quoted_with_its_pin_hidden() {
        let err = TokenUri::parse("pkcs11:token=a;object=b?module-path=/m.so&pin-value=4711&x-oaep=host").unwrap_err();
        assert_eq!(
            err.to_string(),
            "'pkcs11:token=a;object=b?module-path=/m.so&pin-value=***&x-oaep=host' is not a usable PKCS#11 URI: \
             a PIN written in the URI (pin-value) is refused"
        );
        for (text, shown) in [
            ("pkcs11:pin-value=4711", "pkcs11:pin-value=***"),
            (
                "pkcs11:token=a;Pin%2dValue=4711;object=b",
                "pkcs11:token=a;Pin%2dValue=***;object=b",
            ),
            ("pkcs11:token=a?pin-value=", "pkcs11:token=a?pin-value=***"),
            (
                "pkcs11:token=a;pin-valued=1?module-path=/m.so",
                "pkcs11:token=a;pin-valued=1?module-path=/m.so",
            ),
        ] {
            assert_eq!(redacted(text), shown);
        }
    }
}
