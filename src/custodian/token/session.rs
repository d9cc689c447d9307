//! Loading a PKCS#11 module, finding the token, logging in, and what the
//! token offers for RSA-OAEP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::TokenError;
use crate::crypto::secret::Passphrase;

/// One loaded, initialised context per module, kept for the process: a
/// second C_Initialize of the same module would fail, and finalising while
/// another key of the same module is open would close its session.
pub(super) fn module(path: &Path) -> Result<Pkcs11, TokenError> {
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
pub(super) fn find_slot(
    ctx: &Pkcs11,
    module_path: &Path,
    label: &str,
    serial: Option<&str>,
) -> Result<Slot, TokenError> {
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
