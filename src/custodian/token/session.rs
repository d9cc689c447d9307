//! Loading a PKCS#11 module, finding the token, logging in, and what the
//! token offers for RSA-OAEP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::{CKF_TOKEN_INITIALIZED, CKR_OK, CK_FUNCTION_LIST, CK_RV, CK_SLOT_ID, CK_TOKEN_INFO};

use super::TokenError;
use crate::crypto::secret::Passphrase;

type GetTokenInfo = unsafe extern "C" fn(CK_SLOT_ID, *mut CK_TOKEN_INFO) -> CK_RV;

/// A loaded, initialised module: cryptoki's context, and the module's own
/// C_GetTokenInfo, called directly because cryptoki refuses the whole token
/// information when the token's clock is not in the 16-character form
/// (opencryptoki 3.8 reports `hh:mm:ss`).
#[derive(Clone)]
pub(super) struct Module {
    pub(super) ctx: Pkcs11,
    token_info: GetTokenInfo,
    /// Keeps the library mapped while `token_info` may be called.
    _library: Arc<libloading::Library>,
}

/// One loaded, initialised module per path, kept for the process: a
/// second C_Initialize of the same module would fail, and finalising while
/// another key of the same module is open would close its session.
pub(super) fn module(path: &Path) -> Result<Module, TokenError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    let mut map = MODULES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    if let Some(refused) = unloadable(path, cfg!(target_env = "musl")) {
        return Err(refused);
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
    // SAFETY: the same file cryptoki has just loaded and initialised as a
    // PKCS#11 module, so loading it again only takes another reference.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| fail(e.to_string()))?;
    // SAFETY: C_GetFunctionList has this signature in every PKCS#11 module
    // (PKCS#11 2.40 §5.2); the list it gives stays valid while the library is loaded.
    let token_info = unsafe {
        let get_list = library
            .get::<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV>(b"C_GetFunctionList\0")
            .map_err(|e| fail(e.to_string()))?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        if get_list(&mut list) != CKR_OK || list.is_null() {
            return Err(fail("C_GetFunctionList gave no function list".into()));
        }
        (*list)
            .C_GetTokenInfo
            .ok_or_else(|| fail("it has no C_GetTokenInfo".into()))?
    };
    let m = Module {
        ctx,
        token_info,
        _library: Arc::new(library),
    };
    map.insert(path.to_path_buf(), m.clone());
    Ok(m)
}

/// What identifies a token (RFC 7512 `token`, `manufacturer`, `model`,
/// `serial`), read from CK_TOKEN_INFO without its clock, which is only
/// informational and not always well formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub initialized: bool,
}

impl TokenFacts {
    pub fn from_raw(info: &CK_TOKEN_INFO) -> TokenFacts {
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end_matches([' ', '\0']).to_string();
        TokenFacts {
            label: text(&info.label),
            manufacturer: text(&info.manufacturerID),
            model: text(&info.model),
            serial: text(&info.serialNumber),
            initialized: info.flags & CKF_TOKEN_INITIALIZED != 0,
        }
    }
}

impl Module {
    pub(super) fn token_facts(&self, slot: Slot) -> Result<TokenFacts, CkError> {
        let mut info = CK_TOKEN_INFO::default();
        // SAFETY: the module's own C_GetTokenInfo (see [`module`]), given a
        // CK_TOKEN_INFO it fills in; the module is initialised.
        let rv = unsafe { (self.token_info)(slot.into(), &mut info) };
        cryptoki::error::Rv::from(rv).into_result(cryptoki::context::Function::GetTokenInfo)?;
        Ok(TokenFacts::from_raw(&info))
    }
}

/// Which token a URI asks for: its label, and the other RFC 7512 token
/// attributes when given.
#[derive(Clone, Copy, Debug)]
pub(super) struct WantedToken<'a> {
    pub label: &'a str,
    pub serial: Option<&'a str>,
    pub model: Option<&'a str>,
    pub manufacturer: Option<&'a str>,
}

impl WantedToken<'_> {
    fn matches(&self, t: &TokenFacts) -> bool {
        t.label == self.label
            && self.serial.is_none_or(|s| t.serial == s)
            && self.model.is_none_or(|m| t.model == m)
            && self.manufacturer.is_none_or(|m| t.manufacturer == m)
    }
}

/// The glibc version this binary carries when it is linked statically, since
/// that glibc's `dlopen` loads a module only where the system's glibc is the
/// same version: the one fact a failed load on the ceremony laptop hinges on.
#[cfg(all(target_env = "gnu", target_feature = "crt-static"))]
pub fn static_glibc() -> Option<String> {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    Some(version.to_string_lossy().into_owned())
}

/// A dynamically linked binary uses the system's own loader: no such limit.
#[cfg(not(all(target_env = "gnu", target_feature = "crt-static")))]
pub fn static_glibc() -> Option<String> {
    None
}

/// Why no module can load in this build, if none can: told plainly, since
/// the loader's own error would send the custodian checking the module's
/// architecture instead.
fn unloadable(path: &Path, musl: bool) -> Option<TokenError> {
    musl.then(|| TokenError::NoModuleLoading {
        path: path.to_path_buf(),
    })
}

/// The slot holding the initialised token `wanted` names.
pub(super) fn find_slot(m: &Module, module_path: &Path, wanted: WantedToken<'_>) -> Result<Slot, TokenError> {
    let slots = m.ctx.get_slots_with_token().map_err(|e| TokenError::Module {
        path: module_path.to_path_buf(),
        why: format!("it cannot list its slots: {e}"),
    })?;
    let mut present = Vec::new();
    for slot in slots {
        let Ok(info) = m.token_facts(slot) else { continue };
        if !info.initialized {
            continue;
        }
        if wanted.matches(&info) {
            return Ok(slot);
        }
        present.push(if info.label == wanted.label {
            format!(
                "'{}' (manufacturer '{}', model '{}', serial '{}')",
                info.label, info.manufacturer, info.model, info.serial
            )
        } else {
            format!("'{}'", info.label)
        });
    }
    let also: Vec<String> = [
        ("manufacturer", wanted.manufacturer),
        ("model", wanted.model),
        ("serial", wanted.serial),
    ]
    .into_iter()
    .filter_map(|(what, v)| v.map(|v| format!("{what} '{v}'")))
    .collect();
    Err(TokenError::TokenNotFound {
        token: wanted.label.to_string(),
        also: if also.is_empty() {
            String::new()
        } else {
            format!(" with {}", also.join(", "))
        },
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
/// self-test of [`super::TokenKey::open`].
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

pub(super) fn oaep_support(ctx: &Pkcs11, slot: Slot) -> Result<OaepSupport, CkError> {
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

pub(super) fn login(session: &Session, token: &str, pin: &Passphrase) -> Result<(), TokenError> {
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

pub(super) fn refused(token: &str, what: &str, e: CkError) -> TokenError {
    TokenError::Refused {
        token: token.to_string(),
        what: what.to_string(),
        why: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A musl build says it cannot load modules at all, naming the module,
    /// instead of the loader's error; a glibc build goes on to load it.
    #[test]
    fn a_build_without_a_loader_says_so_plainly() {
        let path = Path::new("/usr/lib/softhsm/libsofthsm2.so");
        let said = unloadable(path, true).expect("refused").to_string();
        assert!(
            said.contains("cannot load PKCS#11 modules at all") && said.contains("musl"),
            "{said}"
        );
        assert!(
            said.contains("libsofthsm2.so") && !said.contains("architecture"),
            "{said}"
        );
        assert!(unloadable(path, false).is_none());
        // What this build does: the tests run on glibc here.
        assert_eq!(
            unloadable(path, cfg!(target_env = "musl")).is_some(),
            cfg!(target_env = "musl")
        );
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

    /// A CK_TOKEN_INFO as opencryptoki 3.8's soft token gives it: a clock
    /// of `hh:mm:ss` where PKCS#11 says `YYYYMMDDhhmmss00`.
    fn opencryptoki_token_info() -> CK_TOKEN_INFO {
        fn padded<const N: usize>(text: &str) -> [u8; N] {
            let mut out = [b' '; N];
            out[..text.len()].copy_from_slice(text.as_bytes());
            out
        }
        CK_TOKEN_INFO {
            label: padded("alice"),
            manufacturerID: padded("IBM Corp."),
            model: padded("IBM SoftTok"),
            serialNumber: padded("123"),
            flags: CKF_TOKEN_INITIALIZED | cryptoki_sys::CKF_CLOCK_ON_TOKEN,
            utcTime: *b"00:01:41\0\0\0\0\0\0\0\0",
            ..CK_TOKEN_INFO::default()
        }
    }

    #[test]
    fn a_token_with_a_malformed_clock_is_still_identified() {
        let raw = opencryptoki_token_info();
        // cryptoki refuses the whole token information for the clock alone.
        assert!(cryptoki::slot::TokenInfo::try_from(raw).is_err());
        let facts = TokenFacts::from_raw(&raw);
        assert_eq!(
            facts,
            TokenFacts {
                label: "alice".into(),
                manufacturer: "IBM Corp.".into(),
                model: "IBM SoftTok".into(),
                serial: "123".into(),
                initialized: true,
            }
        );
        let wanted = WantedToken {
            label: "alice",
            serial: Some("123"),
            model: Some("IBM SoftTok"),
            manufacturer: Some("IBM Corp."),
        };
        assert!(wanted.matches(&facts));
        for other in [
            WantedToken { label: "bob", ..wanted },
            WantedToken {
                serial: Some("124"),
                ..wanted
            },
            WantedToken {
                model: Some("SoftHSM v2"),
                ..wanted
            },
            WantedToken {
                manufacturer: Some("SoftHSM project"),
                ..wanted
            },
        ] {
            assert!(!other.matches(&facts), "{other:?}");
        }
        let blank = TokenFacts::from_raw(&CK_TOKEN_INFO { flags: 0, ..raw });
        assert!(!blank.initialized);
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
