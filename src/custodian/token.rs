//! Custodian keys on PKCS#11 tokens: RFC 7512 `pkcs11:` URIs, opening the
//! module and token, logging in, RSA-OAEP share unwrapping and PKCS#1 v1.5
//! signing done on the token, and key pairs generated on it. The module is
//! loaded at run time (dlopen), so nothing here is linked in.
//!
//! A token that refuses OAEP with SHA-256 (SoftHSM 2.6 does SHA-1 only) is
//! refused, unless its URI says `x-oaep=host`: the token then does the raw
//! RSA operation (CKM_RSA_X_509) and the padding is removed here
//! ([`crate::crypto::oaep`]); the private key still never leaves the token.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rsa::traits::PublicKeyParts;
use thiserror::Error;

use super::cert::Certificate;
use super::signer::Signer;
use crate::crypto::jwe::{Alg, KeyUnwrapper};
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::{Passphrase, SecretBytes};
use crate::crypto::CryptoError;
use crate::format::limits::MIN_RSA_BITS;

/// Why a token key could not be used. Each names the token or object.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("'{uri}' is not a usable PKCS#11 URI: {why}")]
    Uri { uri: String, why: String },
    #[error("the PKCS#11 module {} cannot be loaded: {why}", path.display())]
    Module { path: PathBuf, why: String },
    #[error("no token labelled '{token}' is present in {}{}", module.display(), list_present(.present))]
    TokenNotFound {
        token: String,
        module: PathBuf,
        present: Vec<String>,
    },
    #[error("the PIN for token '{token}' is wrong")]
    WrongPin { token: String },
    #[error("the PIN of token '{token}' is locked after too many wrong tries")]
    PinLocked { token: String },
    #[error("no RSA private key {object} is on token '{token}'")]
    KeyNotFound { token: String, object: String },
    #[error("{count} private keys match {object} on token '{token}'")]
    Ambiguous {
        token: String,
        object: String,
        count: usize,
    },
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

fn list_present(labels: &[String]) -> String {
    if labels.is_empty() {
        " (it shows no token at all)".into()
    } else {
        format!(
            " (present: {})",
            labels.iter().map(|l| format!("'{l}'")).collect::<Vec<_>>().join(", ")
        )
    }
}

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
        text.len() >= 7 && text[..7].eq_ignore_ascii_case("pkcs11:")
    }

    /// Parses `text` (RFC 7512 §2.3). Errors: a missing `token`, `module-path`
    /// or key selector (`object` or `id`), an unknown or repeated attribute, a
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
                        "the {} attribute '{name}' is not understood (known: token, object, id, serial, type; \
                         ?module-path, pin-source, x-oaep)",
                        if in_path { "path" } else { "query" }
                    )))
                }
            }
        }
        uri.token = token.ok_or_else(|| bad("it names no token: add token=LABEL".into()))?;
        uri.module_path = module.ok_or_else(|| {
            bad("it names no module: add ?module-path=/path/to/module.so (e.g. /usr/lib/softhsm/libsofthsm2.so)".into())
        })?;
        if uri.object.is_none() && uri.id.is_none() {
            return Err(bad("it names no key: add object=LABEL or id=%xx…".into()));
        }
        Ok(uri)
    }

    /// The key as named in messages: `object 'x' (id 0a0b)`.
    pub fn object_description(&self) -> String {
        describe(self.object.as_deref(), self.id.as_deref())
    }
}

fn describe(label: Option<&str>, id: Option<&[u8]>) -> String {
    match (label, id) {
        (Some(l), Some(i)) => format!("'{l}' (id {})", hex::encode(i)),
        (Some(l), None) => format!("'{l}'"),
        (None, Some(i)) => format!("with id {}", hex::encode(i)),
        (None, None) => "(any)".into(),
    }
}

impl std::fmt::Display for TokenUri {
    /// The canonical form: path attributes token, object, id, then
    /// `?module-path`. The pin-source is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pkcs11:token={}", percent_encode(self.token.as_bytes()))?;
        if let Some(s) = &self.serial {
            write!(f, ";serial={}", percent_encode(s.as_bytes()))?;
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
fn percent_decode(value: &str) -> Result<Vec<u8>, String> {
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
fn percent_encode(bytes: &[u8]) -> String {
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

/// One loaded, initialised context per module, kept for the process: a
/// second C_Initialize of the same module would fail, and finalising while
/// another key of the same module is open would close its session.
fn module(path: &Path) -> Result<Pkcs11, TokenError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = MODULES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let fail = |why: String| TokenError::Module {
        path: path.to_path_buf(),
        why,
    };
    if !path.is_file() {
        return Err(fail("there is no such file".into()));
    }
    let ctx = Pkcs11::new(path).map_err(|e| fail(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    map.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The slot holding the token labelled `label` (and with `serial`, if given).
fn find_slot(ctx: &Pkcs11, module_path: &Path, label: &str, serial: Option<&str>) -> Result<Slot, TokenError> {
    let slots = ctx.get_slots_with_initialized_token().map_err(|e| TokenError::Module {
        path: module_path.to_path_buf(),
        why: format!("it cannot list its slots: {e}"),
    })?;
    let mut present = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else { continue };
        let l = info.label().trim_end().to_string();
        if l == label && serial.is_none_or(|s| info.serial_number().trim_end() == s) {
            return Ok(slot);
        }
        present.push(l);
    }
    Err(TokenError::TokenNotFound {
        token: label.to_string(),
        module: module_path.to_path_buf(),
        present,
    })
}

/// What a token says of CKM_RSA_PKCS_OAEP: absent, or its flags and key
/// sizes (bits). Kept apart from the token so the check is testable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OaepSupport {
    pub listed: bool,
    pub decrypt: bool,
    pub min_bits: usize,
    pub max_bits: usize,
}

/// Whether OAEP decryption with a `bits`-bit key is offered. The list does
/// not say which hashes: a token that refuses SHA-256 is caught by the
/// self-test of [`TokenKey::open`].
pub fn check_oaep(token: &str, support: OaepSupport, bits: usize) -> Result<(), TokenError> {
    let no = |why: String| TokenError::NoOaep {
        token: token.to_string(),
        why,
    };
    if !support.listed {
        return Err(no("the mechanism is not in its list".into()));
    }
    if !support.decrypt {
        return Err(no("the mechanism is listed, but not for decryption".into()));
    }
    if support.max_bits != 0 && !(support.min_bits..=support.max_bits).contains(&bits) {
        return Err(no(format!(
            "it is offered for keys of {} to {} bits; this key has {bits}",
            support.min_bits, support.max_bits
        )));
    }
    Ok(())
}

fn oaep_support(ctx: &Pkcs11, slot: Slot) -> Result<OaepSupport, CkError> {
    let listed = ctx.get_mechanism_list(slot)?.contains(&MechanismType::RSA_PKCS_OAEP);
    if !listed {
        return Ok(OaepSupport {
            listed,
            decrypt: false,
            min_bits: 0,
            max_bits: 0,
        });
    }
    let info = ctx.get_mechanism_info(slot, MechanismType::RSA_PKCS_OAEP)?;
    Ok(OaepSupport {
        listed,
        decrypt: info.decrypt(),
        min_bits: info.min_key_size(),
        max_bits: info.max_key_size(),
    })
}

fn login(session: &Session, token: &str, pin: &Passphrase) -> Result<(), TokenError> {
    let auth = AuthPin::from(pin.expose());
    match session.login(UserType::User, Some(&auth)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => Err(TokenError::WrongPin {
            token: token.to_string(),
        }),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(TokenError::PinLocked {
            token: token.to_string(),
        }),
        Err(e) => Err(refused(token, "the login", e)),
    }
}

fn refused(token: &str, what: &str, e: CkError) -> TokenError {
    TokenError::Refused {
        token: token.to_string(),
        what: what.to_string(),
        why: e.to_string(),
    }
}

/// A custodian's RSA private key on a token, logged in and ready to unwrap
/// shares and sign. The key never leaves the token.
pub struct TokenKey {
    uri: TokenUri,
    /// Whether the token applies OAEP itself, or only raw RSA (`x-oaep=host`).
    oaep_on_token: bool,
    session: Session,
    key: ObjectHandle,
    id: Vec<u8>,
    label: Option<String>,
    public_key: rsa::PublicKey,
}

impl TokenKey {
    /// Opens the key `uri` names, logging in with `pin`. Errors: the module
    /// does not load, the token is absent, the PIN is wrong or locked, no
    /// (or more than one) RSA private key matches, the key may not decrypt,
    /// or the token offers no RSA-OAEP decryption for it.
    pub fn open(uri: &TokenUri, pin: &Passphrase) -> Result<TokenKey, TokenError> {
        let ctx = module(&uri.module_path)?;
        let slot = find_slot(&ctx, &uri.module_path, &uri.token, uri.serial.as_deref())?;
        let session = ctx
            .open_ro_session(slot)
            .map_err(|e| refused(&uri.token, "a session", e))?;
        login(&session, &uri.token, pin)?;
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(o) = &uri.object {
            template.push(Attribute::Label(o.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = session
            .find_objects(&template)
            .map_err(|e| refused(&uri.token, "the key search", e))?;
        let key = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(TokenError::KeyNotFound {
                    token: uri.token.clone(),
                    object: uri.object_description(),
                })
            }
            many => {
                return Err(TokenError::Ambiguous {
                    token: uri.token.clone(),
                    object: uri.object_description(),
                    count: many.len(),
                })
            }
        };
        let mut me = TokenKey::from_handle(uri.clone(), session, key)?;
        if !me.bool_attr(AttributeType::Decrypt)? {
            return Err(TokenError::NoDecrypt {
                token: uri.token.clone(),
                object: me.describe(),
            });
        }
        // Such a key needs a context-specific login between C_DecryptInit and
        // C_Decrypt, which cryptoki's one-call decrypt leaves no room for: say
        // so, rather than fail later with CKR_USER_NOT_LOGGED_IN.
        if me.bool_attr(AttributeType::AlwaysAuthenticate)? {
            return Err(TokenError::PinPerUse {
                token: uri.token.clone(),
                object: me.describe(),
            });
        }
        if !uri.oaep_on_host {
            let support = oaep_support(&ctx, slot).map_err(|e| refused(&uri.token, "its mechanism list", e))?;
            check_oaep(&uri.token, support, me.bits())?;
        }
        me.self_test(&ctx, slot)?;
        me.uri.id.get_or_insert_with(|| me.id.clone());
        Ok(me)
    }

    /// Unwraps a value encrypted here with RSA-OAEP-256 to the key's public
    /// key: proves the token does OAEP-SHA-256 (or, with `x-oaep=host`, raw
    /// RSA) and that the key is whole, before any share is touched.
    fn self_test(&self, ctx: &Pkcs11, slot: Slot) -> Result<(), TokenError> {
        let mut rng = crate::crypto::rng::os_rng();
        let mut probe = [0u8; 32];
        rand_core::Rng::fill_bytes(&mut rng, &mut probe);
        let ct = self
            .public_key
            .oaep_encrypt_with_rng::<sha2::Sha256, _>(&mut rng, &probe)
            .map_err(|e| self.self_test_failed(e.to_string()))?;
        match self.decrypt(Alg::RsaOaep256, &ct) {
            Ok(got) if got.expose() == probe => Ok(()),
            Ok(_) => Err(self.self_test_failed("the token's decryption did not give back the test value".into())),
            Err(CkError::Pkcs11(
                rv @ (RvError::MechanismParamInvalid | RvError::ArgumentsBad | RvError::MechanismInvalid),
                _,
            )) if self.oaep_on_token => {
                let raw_offered = ctx
                    .get_mechanism_info(slot, MechanismType::RSA_X_509)
                    .map(|i| i.decrypt())
                    .unwrap_or(false);
                Err(TokenError::NoOaepSha256 {
                    token: self.uri.token.clone(),
                    rv: format!("{rv:?}"),
                    raw_offered,
                })
            }
            Err(e) => Err(self.self_test_failed(format!("the token refused the test decryption: {e}"))),
        }
    }

    fn self_test_failed(&self, why: String) -> TokenError {
        TokenError::SelfTest {
            token: self.uri.token.clone(),
            object: self.describe(),
            why,
        }
    }

    /// The content key inside `encrypted_key`: OAEP on the token, or raw RSA
    /// on the token and OAEP-SHA-256 decoding here (`x-oaep=host`).
    fn decrypt(&self, alg: Alg, encrypted_key: &[u8]) -> Result<SecretBytes, CkError> {
        if self.oaep_on_token {
            let (hash, mgf) = match alg {
                Alg::RsaOaep => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
                _ => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            };
            let mech = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()));
            return self
                .session
                .decrypt(&mech, self.key, encrypted_key)
                .map(SecretBytes::new);
        }
        let k = self.public_key.size();
        if alg != Alg::RsaOaep256 || encrypted_key.len() != k {
            return Err(CkError::Pkcs11(
                RvError::EncryptedDataLenRange,
                cryptoki::context::Function::Decrypt,
            ));
        }
        let em = zeroize::Zeroizing::new(self.session.decrypt(&Mechanism::RsaX509, self.key, encrypted_key)?);
        crate::crypto::oaep::decode_sha256(&em, k)
            .map_err(|_| CkError::Pkcs11(RvError::EncryptedDataInvalid, cryptoki::context::Function::Decrypt))
    }

    fn from_handle(uri: TokenUri, session: Session, key: ObjectHandle) -> Result<TokenKey, TokenError> {
        let token = uri.token.clone();
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                ],
            )
            .map_err(|e| refused(&token, "reading the key's attributes", e))?;
        let (mut n, mut e, mut id, mut label, mut kind) = (None, None, Vec::new(), None, None);
        for a in attrs {
            match a {
                Attribute::KeyType(k) => kind = Some(k),
                Attribute::Id(i) => id = i,
                Attribute::Label(l) => label = String::from_utf8(l).ok(),
                Attribute::Modulus(m) => n = Some(m),
                Attribute::PublicExponent(x) => e = Some(x),
                _ => {}
            }
        }
        let object = describe(label.as_deref().or(uri.object.as_deref()), Some(&id));
        if kind != Some(KeyType::RSA) {
            return Err(TokenError::NotRsa {
                token,
                object,
                got: kind.map(|k| k.to_string()).unwrap_or_else(|| "of unknown type".into()),
            });
        }
        let (Some(n), Some(e)) = (n, e) else {
            return Err(TokenError::Refused {
                token,
                what: format!("reading the public modulus and exponent of {object}"),
                why: "the token did not give them".into(),
            });
        };
        let public_key = rsa::PublicKey::new(
            rsa::BoxedUint::from_be_slice_vartime(&n),
            rsa::BoxedUint::from_be_slice_vartime(&e),
        )
        .map_err(|why| TokenError::Refused {
            token: token.clone(),
            what: format!("the public key of {object}"),
            why: why.to_string(),
        })?;
        if public_key.size() * 8 < MIN_RSA_BITS {
            return Err(TokenError::Refused {
                token,
                what: format!("the key {object}"),
                why: format!(
                    "it has {} bits; at least {MIN_RSA_BITS} are required",
                    public_key.size() * 8
                ),
            });
        }
        Ok(TokenKey {
            oaep_on_token: !uri.oaep_on_host,
            uri,
            session,
            key,
            id,
            label,
            public_key,
        })
    }

    fn bool_attr(&self, which: AttributeType) -> Result<bool, TokenError> {
        let attrs = self
            .session
            .get_attributes(self.key, &[which])
            .map_err(|e| refused(&self.uri.token, "reading the key's attributes", e))?;
        Ok(attrs.iter().any(|a| {
            matches!(
                a,
                Attribute::Decrypt(true) | Attribute::Sign(true) | Attribute::AlwaysAuthenticate(true)
            )
        }))
    }

    fn describe(&self) -> String {
        describe(self.label.as_deref().or(self.uri.object.as_deref()), Some(&self.id))
    }

    /// The key's modulus size in bits.
    pub fn bits(&self) -> usize {
        self.public_key.size() * 8
    }

    /// The URI naming this key (with its id), without any PIN source.
    pub fn uri(&self) -> &TokenUri {
        &self.uri
    }

    /// The certificate stored beside the key: CKO_CERTIFICATE with the key's
    /// CKA_ID (else its label) whose public key is the key's. `None` when
    /// the token holds none.
    pub fn certificate(&self) -> Option<Certificate> {
        let mut templates = Vec::new();
        if !self.id.is_empty() {
            templates.push(Attribute::Id(self.id.clone()));
        }
        if let Some(l) = &self.label {
            templates.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        for t in templates {
            let Ok(found) = self
                .session
                .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE), t])
            else {
                continue;
            };
            for h in found {
                let Ok(attrs) = self.session.get_attributes(h, &[AttributeType::Value]) else {
                    continue;
                };
                for a in attrs {
                    if let Attribute::Value(der) = a {
                        if let Ok(c) = Certificate::from_bytes(&der) {
                            if c.matches(&self.public_key) {
                                return Some(c);
                            }
                        }
                    }
                }
            }
        }
        None
    }

    /// Stores `cert` on the token as CKO_CERTIFICATE with the key's label
    /// and id (needs a read-write session, as [`generate_with_rng`] opens).
    fn store_certificate(&self, cert: &Certificate) -> Result<(), TokenError> {
        let subject = x509_parser::parse_x509_certificate(cert.der())
            .map(|(_, c)| c.tbs_certificate.subject.as_raw().to_vec())
            .map_err(|e| TokenError::Refused {
                token: self.uri.token.clone(),
                what: "the certificate".into(),
                why: e.to_string(),
            })?;
        let mut t = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(self.id.clone()),
            Attribute::Subject(subject),
            Attribute::Value(cert.der().to_vec()),
        ];
        if let Some(l) = &self.label {
            t.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        self.session
            .create_object(&t)
            .map(|_| ())
            .map_err(|e| refused(&self.uri.token, "storing the certificate", e))
    }
}

impl KeyUnwrapper for TokenKey {
    /// RSA-OAEP on the token: SHA-256 and MGF1-SHA-256 for RSA-OAEP-256
    /// (spec §4), SHA-1 for RSA-OAEP; empty label.
    fn unwrap_cek(&self, alg: Alg, encrypted_key: &[u8]) -> Result<SecretBytes, CryptoError> {
        if alg == Alg::Dir {
            return Err(CryptoError::WrongAlg {
                want: "RSA-OAEP-256",
                got: "dir".into(),
            });
        }
        match self.decrypt(alg, encrypted_key) {
            Ok(cek) => Ok(cek),
            Err(CkError::Pkcs11(
                RvError::MechanismParamInvalid | RvError::MechanismInvalid | RvError::ArgumentsBad,
                _,
            )) => Err(CryptoError::Token(format!(
                "token '{}' does not support {} (CKM_RSA_PKCS_OAEP with {}); add x-oaep=host to its URI \
                     to decode OAEP here, or keep this custodian's key in a file",
                self.uri.token,
                alg.name(),
                if alg == Alg::RsaOaep256 { "SHA-256" } else { "SHA-1" }
            ))),
            Err(CkError::Pkcs11(
                RvError::UserNotLoggedIn | RvError::DeviceRemoved | RvError::TokenNotPresent | RvError::SessionClosed,
                _,
            )) => Err(CryptoError::Token(format!(
                "token '{}' went away or logged out during the unwrap",
                self.uri.token
            ))),
            Err(_) => Err(CryptoError::Unwrap),
        }
    }
}

impl Signer for TokenKey {
    /// CKM_SHA256_RSA_PKCS on the token.
    fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        if !self.bool_attr(AttributeType::Sign).map_err(|e| e.to_string())? {
            return Err(TokenError::NoSign {
                token: self.uri.token.clone(),
                object: self.describe(),
            }
            .to_string());
        }
        self.session
            .sign(&Mechanism::Sha256RsaPkcs, self.key, message)
            .map_err(|e| {
                format!(
                    "token '{}' could not sign with {}: {e}",
                    self.uri.token,
                    self.describe()
                )
            })
    }
    fn public_key(&self) -> rsa::PublicKey {
        self.public_key.clone()
    }
}

/// What [`generate_with_rng`] makes, and where.
#[derive(Clone, Copy, Debug)]
pub struct NewKey<'a> {
    pub module_path: &'a Path,
    /// The token's label.
    pub token: &'a str,
    /// The custodian's name: the certificate's CN and the key's CKA_LABEL.
    pub name: &'a str,
    pub bits: usize,
    /// The certificate's validity.
    pub days: u32,
    /// Let the token do raw RSA only (`x-oaep=host`).
    pub oaep_on_host: bool,
}

/// A key pair made on a token by [`generate_with_rng`].
pub struct Generated {
    pub key: TokenKey,
    pub cert: Certificate,
}

/// Generates an RSA key pair of `new.bits` on token `new.token` of module
/// `new.module_path` (sensitive, not extractable, may decrypt and sign; label
/// `new.name`, a random 16-byte CKA_ID from `rng`), makes its self-signed
/// certificate signed by the token, and stores the certificate on the token
/// with the same label and id. With `new.oaep_on_host` the token need only do
/// raw RSA (see the module doc). Errors: as [`TokenKey::open`] (a key that
/// fails the self-test is destroyed again), and a private key labelled
/// `name` already on the token.
pub fn generate_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    new: &NewKey<'_>,
    pin: &Passphrase,
    now: time::OffsetDateTime,
) -> Result<Generated, TokenError> {
    let NewKey {
        module_path,
        token: token_label,
        name,
        bits,
        days,
        oaep_on_host,
    } = *new;
    let ctx = module(module_path)?;
    let slot = find_slot(&ctx, module_path, token_label, None)?;
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| refused(token_label, "a read-write session", e))?;
    login(&session, token_label, pin)?;
    if !oaep_on_host {
        check_oaep(
            token_label,
            oaep_support(&ctx, slot).map_err(|e| refused(token_label, "its mechanism list", e))?,
            bits,
        )?;
    }
    let taken = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(name.as_bytes().to_vec()),
        ])
        .map_err(|e| refused(token_label, "the key search", e))?;
    if !taken.is_empty() {
        return Err(TokenError::LabelTaken {
            token: token_label.to_string(),
            label: name.to_string(),
        });
    }
    let mut id = vec![0u8; 16];
    rng.fill_bytes(&mut id);
    let label = name.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::ModulusBits((bits as u64).into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Encrypt(true),
        Attribute::Verify(true),
        Attribute::Label(label.clone()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::Sign(true),
        Attribute::Label(label),
        Attribute::Id(id.clone()),
    ];
    let (public_key, key) = session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .map_err(|e| refused(token_label, &format!("to generate a {bits}-bit RSA key pair"), e))?;
    let uri = TokenUri {
        token: token_label.to_string(),
        object: Some(name.to_string()),
        id: Some(id),
        serial: None,
        module_path: module_path.to_path_buf(),
        pin_source: None,
        oaep_on_host,
    };
    let key = TokenKey::from_handle(uri, session, key)?;
    // A key the token cannot unwrap shares with is of no use: it is removed again.
    if let Err(e) = key.self_test(&ctx, slot) {
        let _ = key.session.destroy_object(key.key);
        let _ = key.session.destroy_object(public_key);
        return Err(e);
    }
    let cert = super::keygen::self_signed_certificate_by_with_rng(rng, &key, name, days, now).map_err(|e| {
        TokenError::Refused {
            token: token_label.to_string(),
            what: "the self-signed certificate".into(),
            why: e.to_string(),
        }
    })?;
    key.store_certificate(&cert)?;
    Ok(Generated { key, cert })
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
    fn uris_that_cannot_be_honoured_are_refused() {
        for (uri, says) in [
            ("pkcs11:object=b?module-path=/m.so", "no token"),
            ("pkcs11:token=a;object=b", "no module"),
            ("pkcs11:token=a?module-path=/m.so", "no key"),
            ("pkcs11:token=a;object=b?module-path=/m.so&pin-value=1234", "pin-value"),
            (
                "pkcs11:token=a;object=b?module-path=/m.so&pin-source=|/bin/echo 1",
                "not an absolute file",
            ),
            ("pkcs11:token=a;object=b;token=c?module-path=/m.so", "twice"),
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

    #[test]
    fn oaep_support_is_checked_from_the_mechanism_list() {
        let good = OaepSupport {
            listed: true,
            decrypt: true,
            min_bits: 1024,
            max_bits: 4096,
        };
        assert!(check_oaep("t", good, 3072).is_ok());
        assert!(check_oaep("t", OaepSupport { max_bits: 0, ..good }, 3072).is_ok());
        for (support, says) in [
            (OaepSupport { listed: false, ..good }, "not in its list"),
            (OaepSupport { decrypt: false, ..good }, "not for decryption"),
            (OaepSupport { max_bits: 2048, ..good }, "1024 to 2048 bits"),
        ] {
            let e = check_oaep("alice", support, 3072).unwrap_err().to_string();
            assert!(
                e.contains("token 'alice' does not support RSA-OAEP with SHA-256"),
                "{e}"
            );
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_missing_module_is_named() {
        let e = module(Path::new("/nonexistent/libpkcs11.so"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/nonexistent/libpkcs11.so") && e.contains("no such file"),
            "{e}"
        );
    }
}
