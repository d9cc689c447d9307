//! A custodian's private key on a token: share unwrapping and signing done
//! on the token.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use rsa::traits::PublicKeyParts;

use super::session::{check_oaep, find_slot, login, module, oaep_support, refused, Module, WantedToken};
use super::uri::describe;
use super::{TokenError, TokenUri};
use crate::crypto::jwe::{Alg, KeyUnwrapper};
use crate::crypto::secret::{Passphrase, SecretBytes};
use crate::crypto::CryptoError;
use crate::custodian::cert::Certificate;
use crate::custodian::signer::{SignError, Signer};
use crate::format::limits::MIN_RSA_BITS;

/// A custodian's RSA private key on a token, logged in and ready to unwrap
/// shares and sign. The key never leaves the token.
pub struct TokenKey {
    uri: TokenUri,
    /// Whether the token applies OAEP itself, or only raw RSA (`x-oaep=host`).
    oaep_on_token: bool,
    /// Whether the token offers CKM_SHA256_RSA_PKCS; without it (opencryptoki's
    /// soft token) the DigestInfo is built here and signed with CKM_RSA_PKCS.
    sha256_rsa_on_token: bool,
    pub(super) session: Session,
    pub(super) key: ObjectHandle,
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
        let m = module(&uri.module_path)?;
        let slot = find_slot(&m, &uri.module_path, wanted(uri))?;
        let session = m
            .ctx
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
        let key = if uri.names_token_only() {
            only_decryption_key(&session, &uri.token, &found)?
        } else {
            match found.as_slice() {
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
                        candidates: many.iter().map(|h| key_facts(&session, *h).name()).collect(),
                    })
                }
            }
        };
        let mut me = TokenKey::from_handle(uri.clone(), &m, slot, session, key)?;
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
            let support = oaep_support(&m.ctx, slot).map_err(|e| refused(&uri.token, "its mechanism list", e))?;
            check_oaep(&uri.token, support, me.bits())?;
        }
        me.self_test(&m.ctx, slot)?;
        // The URI printed from now on names the key, whichever way it was found.
        me.uri.id.get_or_insert_with(|| me.id.clone());
        if me.uri.object.is_none() {
            me.uri.object.clone_from(&me.label);
        }
        Ok(me)
    }

    /// Unwraps a value encrypted here with RSA-OAEP-256 to the key's public
    /// key: proves the token does OAEP-SHA-256 (or, with `x-oaep=host`, raw
    /// RSA) and that the key is whole, before any share is touched.
    pub(super) fn self_test(&self, ctx: &Pkcs11, slot: Slot) -> Result<(), TokenError> {
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

    pub(super) fn from_handle(
        uri: TokenUri,
        m: &Module,
        slot: Slot,
        session: Session,
        key: ObjectHandle,
    ) -> Result<TokenKey, TokenError> {
        let token = uri.token.clone();
        let mechanisms = m
            .ctx
            .get_mechanism_list(slot)
            .map_err(|e| refused(&token, "its mechanism list", e))?;
        let sha256_rsa_on_token = mechanisms.contains(&MechanismType::SHA256_RSA_PKCS);
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
            sha256_rsa_on_token,
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
    pub(super) fn store_certificate(&self, cert: &Certificate) -> Result<ObjectHandle, TokenError> {
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
            .map_err(|e| refused(&self.uri.token, "storing the certificate", e))
    }
}

/// The token attributes of `uri`, as [`find_slot`] matches them.
pub(super) fn wanted(uri: &TokenUri) -> WantedToken<'_> {
    WantedToken {
        label: &uri.token,
        serial: uri.serial.as_deref(),
        model: uri.model.as_deref(),
        manufacturer: uri.manufacturer.as_deref(),
    }
}

/// What a private key object says of itself, for choosing and naming it.
struct KeyFacts {
    label: Option<String>,
    id: Vec<u8>,
    rsa: bool,
    decrypt: bool,
}

impl KeyFacts {
    fn name(&self) -> String {
        describe(self.label.as_deref(), Some(&self.id))
    }
}

fn key_facts(session: &Session, key: ObjectHandle) -> KeyFacts {
    let mut facts = KeyFacts {
        label: None,
        id: Vec::new(),
        rsa: false,
        decrypt: false,
    };
    // Attributes one at a time: a token answers CKR_ATTRIBUTE_TYPE_INVALID
    // for the whole request when it lacks one of them.
    for which in [
        AttributeType::Label,
        AttributeType::Id,
        AttributeType::KeyType,
        AttributeType::Decrypt,
    ] {
        for a in session.get_attributes(key, &[which]).unwrap_or_default() {
            match a {
                Attribute::Label(l) => facts.label = String::from_utf8(l).ok(),
                Attribute::Id(i) => facts.id = i,
                Attribute::KeyType(k) => facts.rsa = k == KeyType::RSA,
                Attribute::Decrypt(d) => facts.decrypt = d,
                _ => {}
            }
        }
    }
    facts
}

/// For a URI naming only the token: its one RSA private key that may
/// decrypt. Several are listed, so the custodian can name one.
fn only_decryption_key(session: &Session, token: &str, found: &[ObjectHandle]) -> Result<ObjectHandle, TokenError> {
    let usable: Vec<(ObjectHandle, KeyFacts)> = found
        .iter()
        .map(|h| (*h, key_facts(session, *h)))
        .filter(|(_, f)| f.rsa && f.decrypt)
        .collect();
    match usable.as_slice() {
        [(one, _)] => Ok(*one),
        [] => Err(TokenError::KeyNotFound {
            token: token.to_string(),
            object: "that may decrypt".into(),
        }),
        many => Err(TokenError::SeveralKeys {
            token: token.to_string(),
            candidates: many.iter().map(|(_, f)| f.name()).collect(),
        }),
    }
}

/// The DER DigestInfo of SHA-256 (RFC 8017 §9.2 note 1) prefixed to the
/// message's hash: what CKM_RSA_PKCS signs for a PKCS#1 v1.5 SHA-256 signature.
pub(crate) fn sha256_digest_info(message: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    const PREFIX: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
        0x20,
    ];
    let mut out = PREFIX.to_vec();
    out.extend_from_slice(&sha2::Sha256::digest(message));
    out
}

impl KeyUnwrapper for TokenKey {
    /// RSA-OAEP on the token: SHA-256 and MGF1-SHA-256 for RSA-OAEP-256
    /// (security-domain(5), SHARES), SHA-1 for RSA-OAEP; empty label.
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
    /// CKM_SHA256_RSA_PKCS on the token, or CKM_RSA_PKCS over the SHA-256
    /// DigestInfo where the token lacks the former (as GnuTLS does).
    fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        if !self.bool_attr(AttributeType::Sign)? {
            return Err(TokenError::NoSign {
                token: self.uri.token.clone(),
                object: self.describe(),
            }
            .into());
        }
        let signed = if self.sha256_rsa_on_token {
            self.session.sign(&Mechanism::Sha256RsaPkcs, self.key, message)
        } else {
            self.session
                .sign(&Mechanism::RsaPkcs, self.key, &sha256_digest_info(message))
        };
        signed.map_err(|source| {
            TokenError::SignFailed {
                token: self.uri.token.clone(),
                object: self.describe(),
                source,
            }
            .into()
        })
    }
    fn public_key(&self) -> rsa::PublicKey {
        self.public_key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::rsa_2048;
    use rsa::pkcs1v15::Pkcs1v15Sign;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn the_digest_info_signed_raw_is_a_pkcs1v15_sha256_signature() {
        let key = rsa_2048();
        let message = b"tbsCertificate";
        let info = sha256_digest_info(message);
        // What CKM_RSA_PKCS does to it: type-1 padding and the private-key operation.
        let raw = key.sign(Pkcs1v15Sign::new_unprefixed(), &info).unwrap();
        key.to_public_key()
            .verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message), &raw)
            .unwrap();
        assert_eq!(
            raw,
            key.sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message))
                .unwrap()
        );
        // Another message's DigestInfo does not verify: the hash is in it.
        let other = key
            .sign(Pkcs1v15Sign::new_unprefixed(), &sha256_digest_info(b"x"))
            .unwrap();
        assert!(key
            .to_public_key()
            .verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message), &other)
            .is_err());
    }
}
