//! RFC 7512 `pkcs11:` URIs naming a custodian's private key.

use std::fmt::Write as _;
use std::path::PathBuf;

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

impl TokenUri {
    /// Whether `text` is meant as a PKCS#11 URI rather than a file path.
    pub fn is_uri(text: &str) -> bool {
        text.get(..7).is_some_and(|head| head.eq_ignore_ascii_case("pkcs11:"))
    }

    /// Parses `text` (RFC 7512 §2.3). With neither `object` nor `id` the URI
    /// names the token's only RSA decryption key. Errors: a missing `token`
    /// or `module-path`, an unknown or repeated attribute, a
    /// PIN in the URI (`pin-value`), a `pin-source` that is not a file, bad
    /// percent-encoding.
    pub fn parse(text: &str) -> Result<TokenUri, TokenError> {
        let bad = |why: String| TokenError::Uri {
            uri: text.to_string(),
            why,
        };
        if !Self::is_uri(text) {
            return Err(bad("it does not start with 'pkcs11:'".into()));
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
        let attrs = path.split(';').filter(|a| !a.is_empty()).map(|a| (a, true)).chain(
            query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter(|a| !a.is_empty())
                .map(|a| (a, false)),
        );
        for (attr, in_path) in attrs {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("'{attr}' is not name=value")))?;
            let name = name.to_ascii_lowercase();
            if seen.contains(&name) {
                return Err(bad(format!("'{name}' is given twice")));
            }
            seen.push(name.clone());
            let bytes = percent_decode(value).map_err(|why| bad(format!("the value of '{name}' {why}")))?;
            let text_value = || String::from_utf8(bytes.clone()).map_err(|_| bad(format!("'{name}' is not UTF-8")));
            match (name.as_str(), in_path) {
                ("token", true) => token = Some(text_value()?),
                ("object", true) => uri.object = Some(text_value()?),
                ("id", true) => uri.id = Some(bytes),
                ("serial", true) => uri.serial = Some(text_value()?),
                ("model", true) => uri.model = Some(text_value()?),
                ("manufacturer", true) => uri.manufacturer = Some(text_value()?),
                ("type", true) => {
                    if text_value()? != "private" {
                        return Err(bad(
                            "only type=private (the custodian's private key) is meaningful here".into(),
                        ));
                    }
                }
                ("module-path", false) => module = Some(PathBuf::from(text_value()?)),
                ("pin-source", false) => {
                    let v = text_value()?;
                    let file = v.strip_prefix("file:").unwrap_or(&v);
                    if !file.starts_with('/') {
                        return Err(bad(format!(
                            "pin-source '{v}' is not an absolute file path; only a file is read for the PIN"
                        )));
                    }
                    uri.pin_source = Some(PathBuf::from(file));
                }
                ("x-oaep", false) => match text_value()?.as_str() {
                    "host" => uri.oaep_on_host = true,
                    "token" => uri.oaep_on_host = false,
                    other => return Err(bad(format!("x-oaep is 'token' (the default) or 'host', not '{other}'"))),
                },
                ("pin-value", false) => {
                    return Err(bad(
                        "a PIN written in the URI (pin-value) is refused: give it at the prompt or with --pin-file"
                            .into(),
                    ))
                }
                _ => {
                    return Err(bad(format!(
                        "the {} attribute '{name}' is not understood (known: token, manufacturer, model, \
                         serial, object, id, type; ?module-path, pin-source, x-oaep)",
                        if in_path { "path" } else { "query" }
                    )))
                }
            }
        }
        uri.token = token.ok_or_else(|| bad("it names no token: add token=LABEL".into()))?;
        // An empty label would pick whichever token has none.
        if uri.token.is_empty() {
            return Err(bad("the token label is empty: give token=LABEL".into()));
        }
        uri.module_path = module.ok_or_else(|| {
            bad("it names no module: add ?module-path=/path/to/module.so (e.g. /usr/lib/softhsm/libsofthsm2.so)".into())
        })?;
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
pub(super) fn percent_decode(value: &str) -> Result<Vec<u8>, String> {
    let raw = value.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or("ends inside a %-escape")?;
            let s = std::str::from_utf8(hex).map_err(|_| "has a bad %-escape")?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| format!("has a bad %-escape '%{s}'"))?);
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

    #[test]
    fn uris_that_cannot_be_honoured_are_refused() {
        for (uri, says) in [
            ("pkcs11:object=b?module-path=/m.so", "no token"),
            ("pkcs11:token=a;object=b", "no module"),
            ("pkcs11:token=a;object=b?module-path=/m.so&pin-value=1234", "pin-value"),
            (
                "pkcs11:token=a;object=b?module-path=/m.so&pin-source=|/bin/echo 1",
                "not an absolute file",
            ),
            ("pkcs11:token=a;object=b;token=c?module-path=/m.so", "twice"),
            ("pkcs11:token=a;model=x;model=y?module-path=/m.so", "twice"),
            ("pkcs11:token=;object=b?module-path=/m.so", "token label is empty"),
            ("pkcs11:token=a;manufacturer=%ff?module-path=/m.so", "not UTF-8"),
            (
                "pkcs11:token=a?model=x&module-path=/m.so",
                "query attribute 'model' is not understood",
            ),
            ("pkcs11:token=a;object=b%2?module-path=/m.so", "%-escape"),
            ("pkcs11:token=a;object=b%zz?module-path=/m.so", "%-escape"),
            (
                "pkcs11:token=a;object=b;slot-id=3?module-path=/m.so",
                "'slot-id' is not understood",
            ),
            ("pkcs11:token=a;object=b;type=cert?module-path=/m.so", "type=private"),
            ("pkcs11:token=a;object=%ff?module-path=/m.so", "not UTF-8"),
            ("pkcs11:token=a;object?module-path=/m.so", "name=value"),
            (
                "pkcs11:token=a;object=b?module-path=/m.so&x-oaep=sha1",
                "'token' (the default) or 'host'",
            ),
        ] {
            let e = TokenUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(says), "{uri}: {e}");
        }
    }
}
