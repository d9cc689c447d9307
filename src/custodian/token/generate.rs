//! Custodian key pairs generated on a token, with their certificate.

use std::path::Path;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};

use super::session::{check_oaep, find_slot, login, module, oaep_support, refused, WantedToken};
use super::{TokenError, TokenKey, TokenUri};
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::Passphrase;
use crate::custodian::cert::Certificate;

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
    public: ObjectHandle,
    stored_cert: ObjectHandle,
}

impl Generated {
    /// Removes the key pair and its certificate from the token again, for a
    /// keygen step after [`generate_with_rng`] that failed: a key left behind
    /// would block a retry under the same name. Errors are the token's.
    pub fn discard(self) -> Result<(), TokenError> {
        destroy(&self.key, &[self.stored_cert, self.public])
    }
}

/// Destroys `others` and the key's private half: all are tried, the first
/// failure is returned.
fn destroy(key: &TokenKey, others: &[ObjectHandle]) -> Result<(), TokenError> {
    let mut first = Ok(());
    for h in others.iter().copied().chain([key.key]) {
        if let Err(e) = key.session.destroy_object(h) {
            if first.is_ok() {
                first = Err(refused(&key.uri().token, "removing the new key pair again", e));
            }
        }
    }
    first
}

/// Generates an RSA key pair of `new.bits` on token `new.token` of module
/// `new.module_path` (sensitive, not extractable, may decrypt and sign; label
/// `new.name`, a random 16-byte CKA_ID from `rng`), makes its self-signed
/// certificate signed by the token, and stores the certificate on the token
/// with the same label and id. With `new.oaep_on_host` the token need only do
/// raw RSA (see the module doc). Errors: as [`TokenKey::open`], and a
/// private key labelled `name` already on the token. Once the key pair is
/// made, any failure destroys it again.
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
    let m = module(module_path)?;
    let wanted = WantedToken {
        label: token_label,
        serial: None,
        model: None,
        manufacturer: None,
    };
    let slot = find_slot(&m, module_path, wanted)?;
    let session = m
        .ctx
        .open_rw_session(slot)
        .map_err(|e| refused(token_label, "a read-write session", e))?;
    login(&session, token_label, pin)?;
    if !oaep_on_host {
        check_oaep(
            token_label,
            oaep_support(&m.ctx, slot).map_err(|e| refused(token_label, "its mechanism list", e))?,
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
        module_path: module_path.to_path_buf(),
        oaep_on_host,
        ..TokenUri::default()
    };
    let key = match TokenKey::from_handle(uri, &m, slot, session, key) {
        Ok(k) => k,
        Err(e) => {
            // No TokenKey to clean up with: the handles go through a session of their own.
            if let Ok(s) = m.ctx.open_rw_session(slot) {
                let _ = s.destroy_object(key);
                let _ = s.destroy_object(public_key);
            }
            return Err(e);
        }
    };
    // From here on a failure leaves nothing on the token: a key it cannot
    // unwrap shares with is of no use, and a key without its certificate
    // would block a retry under the same name.
    let made =
        key.self_test(&m.ctx, slot).and_then(|()| {
            let cert = crate::custodian::keygen::self_signed_certificate_by_with_rng(rng, &key, name, days, now)
                .map_err(|e| TokenError::Refused {
                    token: token_label.to_string(),
                    what: "the self-signed certificate".into(),
                    why: e.to_string(),
                })?;
            crate::ceremony::kill::fail_point("keygen:certificate-signed").map_err(|why| TokenError::Refused {
                token: token_label.to_string(),
                what: "the self-signed certificate".into(),
                why,
            })?;
            let stored = key.store_certificate(&cert)?;
            Ok((cert, stored))
        });
    match made {
        Ok((cert, stored_cert)) => Ok(Generated {
            key,
            cert,
            public: public_key,
            stored_cert,
        }),
        Err(e) => {
            // The first failure is the one to report; the token's session is still open to clean up.
            let _ = destroy(&key, &[public_key]);
            Err(e)
        }
    }
}
