//! The HSM side of key use: the private (or secret) key material of one key
//! version, and the operations the service performs with it. All primitives
//! are RustCrypto's (rsa, p256, p384, p521, k256, aes-gcm, cbc, aes-kw);
//! this module only chooses them by algorithm name and checks lengths.

use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use aes_gcm::aead::AeadInOut;
use aes_gcm::KeyInit;
use serde::{Deserialize, Serialize};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use super::super::error::ApiError;
use crate::crypto::rng::CryptoRng;

/// Key types as Managed HSM names them: every key is HSM-protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kty {
    #[serde(rename = "RSA-HSM")]
    Rsa,
    #[serde(rename = "EC-HSM")]
    Ec,
    #[serde(rename = "oct-HSM")]
    Oct,
}

impl Kty {
    pub fn name(self) -> &'static str {
        match self {
            Kty::Rsa => "RSA-HSM",
            Kty::Ec => "EC-HSM",
            Kty::Oct => "oct-HSM",
        }
    }

    /// The service's spellings; the software types name the same HSM key
    /// on a Managed HSM, which has no software keys.
    pub fn parse(text: &str) -> Result<Kty, ApiError> {
        match text {
            "RSA-HSM" | "RSA" => Ok(Kty::Rsa),
            "EC-HSM" | "EC" => Ok(Kty::Ec),
            "oct-HSM" | "oct" => Ok(Kty::Oct),
            other => Err(ApiError::bad_request(format!(
                "kty '{other}' is not a key type of a Managed HSM; use RSA-HSM, EC-HSM or oct-HSM"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    #[serde(rename = "P-256")]
    P256,
    #[serde(rename = "P-384")]
    P384,
    #[serde(rename = "P-521")]
    P521,
    #[serde(rename = "P-256K")]
    P256K,
}

impl Curve {
    pub fn parse(text: &str) -> Result<Curve, ApiError> {
        match text {
            "P-256" => Ok(Curve::P256),
            "P-384" => Ok(Curve::P384),
            "P-521" => Ok(Curve::P521),
            "P-256K" | "SECP256K1" => Ok(Curve::P256K),
            other => Err(ApiError::bad_request(format!(
                "crv '{other}' is not supported; use P-256, P-384, P-521 or P-256K"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::P256K => "P-256K",
        }
    }
    /// Length of a coordinate and of the private scalar.
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
    /// The one signature algorithm of the curve (RFC 7518 §3.4, and ES256K).
    fn alg(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
            Curve::P521 => "ES512",
            Curve::P256K => "ES256K",
        }
    }
}

/// One key version's secret, decoded for use.
pub enum Material {
    Rsa(Box<rsa::PrivateKey>),
    Ec(Curve, Box<EcKey>),
    Oct(Zeroizing<Vec<u8>>),
}

pub enum EcKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    K256(k256::ecdsa::SigningKey),
}

/// What a public JWK carries for a key (`n`/`e` or `crv`/`x`/`y`; nothing for oct).
pub enum Public {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { crv: Curve, x: Vec<u8>, y: Vec<u8> },
    Oct,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

// Per-curve code without repeating the generic bounds of ecdsa's types.
macro_rules! per_curve {
    ($key:expr, $k:ident => $body:expr) => {
        match $key {
            EcKey::P256($k) => $body,
            EcKey::P384($k) => $body,
            EcKey::P521($k) => $body,
            EcKey::K256($k) => $body,
        }
    };
}

impl EcKey {
    fn from_scalar(crv: Curve, d: &[u8]) -> Result<EcKey, ApiError> {
        let invalid = |_| bad(format!("d is not a valid {} private key", crv.name()));
        if d.len() != crv.field_len() {
            return Err(bad(format!(
                "d is {} bytes; a {} private key is {} bytes",
                d.len(),
                crv.name(),
                crv.field_len()
            )));
        }
        Ok(match crv {
            Curve::P256 => EcKey::P256(p256::ecdsa::SigningKey::from_slice(d).map_err(invalid)?),
            Curve::P384 => EcKey::P384(p384::ecdsa::SigningKey::from_slice(d).map_err(invalid)?),
            Curve::P521 => EcKey::P521(p521::ecdsa::SigningKey::from_slice(d).map_err(invalid)?),
            Curve::P256K => EcKey::K256(k256::ecdsa::SigningKey::from_slice(d).map_err(invalid)?),
        })
    }

    fn random<R: CryptoRng + ?Sized>(crv: Curve, rng: &mut R) -> EcKey {
        use ecdsa::elliptic_curve::Generate;
        match crv {
            Curve::P256 => EcKey::P256(p256::ecdsa::SigningKey::generate_from_rng(rng)),
            Curve::P384 => EcKey::P384(p384::ecdsa::SigningKey::generate_from_rng(rng)),
            Curve::P521 => EcKey::P521(p521::ecdsa::SigningKey::generate_from_rng(rng)),
            Curve::P256K => EcKey::K256(k256::ecdsa::SigningKey::generate_from_rng(rng)),
        }
    }

    fn scalar(&self) -> Zeroizing<Vec<u8>> {
        per_curve!(self, k => Zeroizing::new(k.to_bytes().to_vec()))
    }

    /// `(x, y)` from the uncompressed SEC1 point.
    fn xy(&self, crv: Curve) -> (Vec<u8>, Vec<u8>) {
        let sec1 = per_curve!(self, k => k.verifying_key().to_sec1_point(false).as_bytes().to_vec());
        let l = crv.field_len();
        (sec1[1..1 + l].to_vec(), sec1[1 + l..1 + 2 * l].to_vec())
    }

    fn sign(&self, digest: &[u8]) -> Result<Vec<u8>, ApiError> {
        use ecdsa::signature::hazmat::PrehashSigner;
        per_curve!(self, k => {
            let sig: ecdsa::Signature<_> = k.sign_prehash(digest).map_err(ApiError::internal)?;
            Ok(sig.to_bytes().to_vec())
        })
    }

    fn verify(&self, digest: &[u8], sig: &[u8]) -> bool {
        use ecdsa::signature::hazmat::PrehashVerifier;
        per_curve!(self, k => match ecdsa::Signature::from_slice(sig) {
            Ok(s) => k.verifying_key().verify_prehash(digest, &s).is_ok(),
            Err(_) => false,
        })
    }
}

/// The digest length an RSA or EC signature algorithm signs.
fn digest_len(alg: &str) -> Option<usize> {
    match alg {
        "RS256" | "PS256" | "ES256" | "ES256K" => Some(32),
        "RS384" | "PS384" | "ES384" => Some(48),
        "RS512" | "PS512" | "ES512" => Some(64),
        _ => None,
    }
}

/// AES-CBC, with or without PKCS#7 padding, for a 128/192/256-bit key.
fn cbc_encrypt(key: &[u8], iv: &[u8], data: &[u8], pad: bool) -> Result<Vec<u8>, ApiError> {
    macro_rules! go {
        ($aes:ty) => {{
            let enc = cbc::Encryptor::<$aes>::new_from_slices(key, iv).map_err(ApiError::internal)?;
            if pad {
                enc.encrypt_padded_vec::<Pkcs7>(data)
            } else {
                enc.encrypt_padded_vec::<NoPadding>(data)
            }
        }};
    }
    Ok(match key.len() {
        16 => go!(aes::Aes128),
        24 => go!(aes::Aes192),
        _ => go!(aes::Aes256),
    })
}

fn cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8], pad: bool) -> Result<Vec<u8>, ApiError> {
    macro_rules! go {
        ($aes:ty) => {{
            let dec = cbc::Decryptor::<$aes>::new_from_slices(key, iv).map_err(ApiError::internal)?;
            if pad {
                dec.decrypt_padded_vec::<Pkcs7>(data)
            } else {
                dec.decrypt_padded_vec::<NoPadding>(data)
            }
        }};
    }
    let out = match key.len() {
        16 => go!(aes::Aes128),
        24 => go!(aes::Aes192),
        _ => go!(aes::Aes256),
    };
    out.map_err(|_| bad("the ciphertext's padding is not valid PKCS#7 for this key and IV"))
}

enum Kw {
    Wrap,
    Unwrap,
}

/// RFC 3394 key wrap or unwrap of `input` into `out` under `kek` (128, 192
/// or 256 bits, checked by the caller): the length written; a refusal of
/// the primitive is what `failed` makes of it.
fn aes_kw(
    kw: Kw,
    kek: &[u8],
    input: &[u8],
    out: &mut [u8],
    failed: impl FnOnce(aes_kw::Error) -> ApiError,
) -> Result<usize, ApiError> {
    macro_rules! go {
        ($kw:ty) => {{
            let c = <$kw>::new_from_slice(kek).map_err(ApiError::internal)?;
            match kw {
                Kw::Wrap => c.wrap_key(input, out),
                Kw::Unwrap => c.unwrap_key(input, out),
            }
            .map(|o| o.len())
        }};
    }
    match kek.len() {
        16 => go!(aes_kw::KwAes128),
        24 => go!(aes_kw::KwAes192),
        _ => go!(aes_kw::KwAes256),
    }
    .map_err(failed)
}

type Aes192Gcm = aes_gcm::AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

fn gcm_seal(key: &[u8], iv: &[u8], aad: &[u8], data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    let mut buf = data.to_vec();
    macro_rules! go {
        ($c:ty) => {{
            let c = <$c>::new_from_slice(key).map_err(ApiError::internal)?;
            c.encrypt_inout_detached(
                iv.try_into().map_err(ApiError::internal)?,
                aad,
                buf.as_mut_slice().into(),
            )
            .map_err(ApiError::internal)?
            .to_vec()
        }};
    }
    let tag = match key.len() {
        16 => go!(aes_gcm::Aes128Gcm),
        24 => go!(Aes192Gcm),
        _ => go!(aes_gcm::Aes256Gcm),
    };
    Ok((buf, tag))
}

fn gcm_open(key: &[u8], iv: &[u8], aad: &[u8], data: &[u8], tag: &[u8]) -> Result<Vec<u8>, ApiError> {
    if iv.len() != 12 {
        return Err(bad(format!("iv is {} bytes; AES-GCM takes a 12-byte iv", iv.len())));
    }
    if tag.len() != 16 {
        return Err(bad(format!("tag is {} bytes; AES-GCM takes a 16-byte tag", tag.len())));
    }
    let mut buf = Zeroizing::new(data.to_vec());
    let failed =
        |_| bad("AES-GCM decryption failed: the ciphertext, iv, aad or tag is not the one sealed under this key");
    macro_rules! go {
        ($c:ty) => {{
            let c = <$c>::new_from_slice(key).map_err(ApiError::internal)?;
            c.decrypt_inout_detached(
                iv.try_into().map_err(ApiError::internal)?,
                aad,
                buf.as_mut_slice().into(),
                tag.try_into().map_err(ApiError::internal)?,
            )
            .map_err(failed)?
        }};
    }
    match key.len() {
        16 => go!(aes_gcm::Aes128Gcm),
        24 => go!(Aes192Gcm),
        _ => go!(aes_gcm::Aes256Gcm),
    }
    Ok(buf.to_vec())
}

/// An encryption's inputs beyond the data (`iv`, `aad`, `tag`), as the request carries them.
#[derive(Default)]
pub struct Extra {
    pub iv: Option<Vec<u8>>,
    pub aad: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
}

/// What an encryption returns beside the ciphertext.
#[derive(Default)]
pub struct Sealed {
    pub value: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
    pub aad: Option<Vec<u8>>,
}

/// The bit length an AES algorithm name requires (`A256GCM` → 256).
fn aes_bits(alg: &str) -> Option<usize> {
    let rest = alg.strip_prefix('A')?;
    let bits: usize = rest.get(..3)?.parse().ok()?;
    [128, 192, 256].contains(&bits).then_some(bits)
}

impl Material {
    /// A new key. `bits` is the RSA modulus or AES key size.
    pub fn generate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        kty: Kty,
        bits: usize,
        crv: Option<Curve>,
    ) -> Result<Material, ApiError> {
        Ok(match kty {
            Kty::Rsa => Material::Rsa(Box::new(rsa::PrivateKey::new(rng, bits).map_err(ApiError::internal)?)),
            Kty::Ec => {
                let crv = crv.unwrap_or(Curve::P256);
                Material::Ec(crv, Box::new(EcKey::random(crv, rng)))
            }
            Kty::Oct => {
                let mut k = Zeroizing::new(vec![0u8; bits / 8]);
                rng.fill_bytes(&mut k);
                Material::Oct(k)
            }
        })
    }

    pub fn kty(&self) -> Kty {
        match self {
            Material::Rsa(_) => Kty::Rsa,
            Material::Ec(..) => Kty::Ec,
            Material::Oct(_) => Kty::Oct,
        }
    }

    pub fn curve(&self) -> Option<Curve> {
        match self {
            Material::Ec(c, _) => Some(*c),
            _ => None,
        }
    }

    /// The stored form: PKCS#8 DER (RSA), the private scalar (EC) or the key (oct).
    pub fn to_stored(&self) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        use pkcs8::EncodePrivateKey;
        Ok(match self {
            Material::Rsa(k) => Zeroizing::new(k.to_pkcs8_der().map_err(ApiError::internal)?.as_bytes().to_vec()),
            Material::Ec(_, k) => k.scalar(),
            Material::Oct(k) => k.clone(),
        })
    }

    pub fn from_stored(kty: Kty, crv: Option<Curve>, bytes: &[u8]) -> Result<Material, ApiError> {
        use pkcs8::DecodePrivateKey;
        Ok(match kty {
            Kty::Rsa => Material::Rsa(Box::new(
                rsa::PrivateKey::from_pkcs8_der(bytes).map_err(ApiError::internal)?,
            )),
            Kty::Ec => {
                let crv = crv.ok_or_else(|| ApiError::internal("a stored EC key has no curve"))?;
                Material::Ec(
                    crv,
                    Box::new(EcKey::from_scalar(crv, bytes).map_err(|e| ApiError::internal(e.message))?),
                )
            }
            Kty::Oct => Material::Oct(Zeroizing::new(bytes.to_vec())),
        })
    }

    /// An imported EC key: `d` checked against the `x`/`y` the JWK names.
    pub fn import_ec(crv: Curve, d: &[u8], x: &[u8], y: &[u8]) -> Result<Material, ApiError> {
        let key = EcKey::from_scalar(crv, d)?;
        let (px, py) = key.xy(crv);
        if px != x || py != y {
            return Err(bad(format!(
                "the JWK's x and y are not the public key of its d on {}",
                crv.name()
            )));
        }
        Ok(Material::Ec(crv, Box::new(key)))
    }

    pub fn import_oct(k: &[u8]) -> Result<Material, ApiError> {
        if ![16, 24, 32].contains(&k.len()) {
            return Err(bad(format!(
                "k is {} bits; an oct-HSM key is 128, 192 or 256 bits",
                k.len() * 8
            )));
        }
        Ok(Material::Oct(Zeroizing::new(k.to_vec())))
    }

    /// RSA modulus bits or AES key bits; EC keys have none.
    pub fn bits(&self) -> Option<usize> {
        use rsa::traits::PublicKeyParts;
        match self {
            Material::Rsa(k) => Some(k.n_bytes().len() * 8),
            Material::Ec(..) => None,
            Material::Oct(k) => Some(k.len() * 8),
        }
    }

    pub fn public(&self) -> Public {
        use rsa::traits::PublicKeyParts;
        match self {
            Material::Rsa(k) => Public::Rsa {
                n: k.n_bytes().to_vec(),
                e: k.e_bytes().to_vec(),
            },
            Material::Ec(crv, k) => {
                let (x, y) = k.xy(*crv);
                Public::Ec { crv: *crv, x, y }
            }
            Material::Oct(_) => Public::Oct,
        }
    }

    fn wrong_kty(&self, alg: &str) -> ApiError {
        bad(format!(
            "the algorithm '{alg}' cannot be used with an {} key",
            self.kty().name()
        ))
    }

    fn check_aes(&self, alg: &str) -> Result<&[u8], ApiError> {
        let Material::Oct(k) = self else {
            return Err(self.wrong_kty(alg));
        };
        match aes_bits(alg) {
            Some(bits) if bits == k.len() * 8 => Ok(k),
            Some(bits) => Err(bad(format!(
                "the algorithm '{alg}' needs a {bits}-bit key; this key is {} bits",
                k.len() * 8
            ))),
            None => Err(self.wrong_kty(alg)),
        }
    }

    /// `encrypt` (and, for RSA, `wrapKey`: the same operation on a key).
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        alg: &str,
        data: &[u8],
        extra: &Extra,
    ) -> Result<Sealed, ApiError> {
        if let Material::Rsa(k) = self {
            let public = k.to_public_key();
            let out = match alg {
                "RSA-OAEP" => public.oaep_encrypt_with_rng::<sha1::Sha1, _>(rng, data),
                "RSA-OAEP-256" => public.oaep_encrypt_with_rng::<Sha256, _>(rng, data),
                "RSA1_5" => public.pkcs1v15_encrypt_with_rng(rng, data),
                _ => return Err(unknown_alg(alg, "RSA-OAEP, RSA-OAEP-256 or RSA1_5")),
            };
            let value = out.map_err(|e| bad(format!("{alg} cannot encrypt this value with this key: {e}")))?;
            return Ok(Sealed {
                value,
                ..Sealed::default()
            });
        }
        if let Material::Ec(..) = self {
            return Err(bad(
                "an EC-HSM key signs and verifies only; encrypt and wrap need an RSA-HSM or oct-HSM key",
            ));
        }
        let key = self.check_aes(alg)?;
        if alg.ends_with("GCM") && alg.len() == 7 {
            if extra.iv.is_some() {
                return Err(bad(
                    "iv is chosen by the HSM for AES-GCM encryption; send none (it is returned with the ciphertext)",
                ));
            }
            let mut iv = vec![0u8; 12];
            rng.fill_bytes(&mut iv);
            let aad = extra.aad.clone().unwrap_or_default();
            let (value, tag) = gcm_seal(key, &iv, &aad, data)?;
            return Ok(Sealed {
                value,
                iv: Some(iv),
                tag: Some(tag),
                aad: extra.aad.clone(),
            });
        }
        let pad = match &alg[4..] {
            "CBC" => false,
            "CBCPAD" => true,
            _ => return Err(unknown_alg(alg, "AxxxGCM, AxxxCBC or AxxxCBCPAD")),
        };
        no_gcm_fields(alg, extra)?;
        let iv = match &extra.iv {
            Some(iv) if iv.len() == 16 => iv.clone(),
            Some(iv) => return Err(bad(format!("iv is {} bytes; AES-CBC takes a 16-byte iv", iv.len()))),
            None => {
                let mut iv = vec![0u8; 16];
                rng.fill_bytes(&mut iv);
                iv
            }
        };
        if !pad && !data.len().is_multiple_of(16) {
            return Err(bad(format!(
                "{alg} has no padding: the plaintext must be a multiple of 16 bytes (it is {}); use {}PAD",
                data.len(),
                alg
            )));
        }
        Ok(Sealed {
            value: cbc_encrypt(key, &iv, data, pad)?,
            iv: Some(iv),
            ..Sealed::default()
        })
    }

    /// `decrypt` (and, for RSA, `unwrapKey`).
    pub fn decrypt<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        alg: &str,
        data: &[u8],
        extra: &Extra,
    ) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        if let Material::Rsa(k) = self {
            let out = match alg {
                "RSA-OAEP" => k.oaep_decrypt_with_rng::<sha1::Sha1, _>(rng, data),
                "RSA-OAEP-256" => k.oaep_decrypt_with_rng::<Sha256, _>(rng, data),
                "RSA1_5" => k.pkcs1v15_decrypt_with_rng(rng, data),
                _ => return Err(unknown_alg(alg, "RSA-OAEP, RSA-OAEP-256 or RSA1_5")),
            };
            return out.map(Zeroizing::new).map_err(|_| {
                bad(format!(
                    "{alg} decryption failed: the value was not encrypted to this key with {alg}"
                ))
            });
        }
        if let Material::Ec(..) = self {
            return Err(bad(
                "an EC-HSM key signs and verifies only; decrypt and unwrap need an RSA-HSM or oct-HSM key",
            ));
        }
        let key = self.check_aes(alg)?;
        let iv = extra
            .iv
            .as_deref()
            .ok_or_else(|| bad(format!("iv is required to decrypt with {alg}")))?;
        if alg.ends_with("GCM") && alg.len() == 7 {
            let tag = extra
                .tag
                .as_deref()
                .ok_or_else(|| bad(format!("tag is required to decrypt with {alg}")))?;
            let aad = extra.aad.clone().unwrap_or_default();
            return gcm_open(key, iv, &aad, data, tag).map(Zeroizing::new);
        }
        let pad = match &alg[4..] {
            "CBC" => false,
            "CBCPAD" => true,
            _ => return Err(unknown_alg(alg, "AxxxGCM, AxxxCBC or AxxxCBCPAD")),
        };
        no_gcm_fields(alg, extra)?;
        if iv.len() != 16 {
            return Err(bad(format!("iv is {} bytes; AES-CBC takes a 16-byte iv", iv.len())));
        }
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return Err(bad(format!(
                "an AES-CBC ciphertext is a non-zero multiple of 16 bytes; this one is {}",
                data.len()
            )));
        }
        cbc_decrypt(key, iv, data, pad).map(Zeroizing::new)
    }

    pub fn wrap<R: CryptoRng + ?Sized>(&self, rng: &mut R, alg: &str, key: &[u8]) -> Result<Vec<u8>, ApiError> {
        match self {
            Material::Rsa(_) => Ok(self.encrypt(rng, alg, key, &Extra::default())?.value),
            Material::Oct(_) => {
                let kek = self.check_aes_kw(alg)?;
                if key.len() < 16 || !key.len().is_multiple_of(8) {
                    return Err(bad(format!(
                        "{alg} wraps a key of 16 bytes or more in multiples of 8 (RFC 3394); this one is {}",
                        key.len()
                    )));
                }
                let mut out = vec![0u8; key.len() + 8];
                let n = aes_kw(Kw::Wrap, kek, key, &mut out, ApiError::internal)?;
                out.truncate(n);
                Ok(out)
            }
            Material::Ec(..) => Err(bad(
                "an EC-HSM key signs and verifies only; wrap needs an RSA-HSM or oct-HSM key",
            )),
        }
    }

    pub fn unwrap<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        alg: &str,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        match self {
            Material::Rsa(_) => self.decrypt(rng, alg, wrapped, &Extra::default()),
            Material::Oct(_) => {
                let kek = self.check_aes_kw(alg)?;
                if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
                    return Err(bad(format!(
                        "an {alg} wrapped key is 24 bytes or more in multiples of 8; this one is {}",
                        wrapped.len()
                    )));
                }
                let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
                let failed = |_| bad(format!("{alg} unwrap failed: the value was not wrapped under this key"));
                let n = aes_kw(Kw::Unwrap, kek, wrapped, &mut out, failed)?;
                out.truncate(n);
                Ok(out)
            }
            Material::Ec(..) => Err(bad(
                "an EC-HSM key signs and verifies only; unwrap needs an RSA-HSM or oct-HSM key",
            )),
        }
    }

    fn check_aes_kw(&self, alg: &str) -> Result<&[u8], ApiError> {
        if !matches!(alg, "A128KW" | "A192KW" | "A256KW") {
            return Err(unknown_alg(alg, "A128KW, A192KW or A256KW"));
        }
        self.check_aes(alg)
    }

    fn check_digest(&self, alg: &str, digest: &[u8]) -> Result<(), ApiError> {
        let want = digest_len(alg).ok_or_else(|| match self {
            Material::Rsa(_) => unknown_alg(alg, "RS256, RS384, RS512, PS256, PS384 or PS512"),
            Material::Ec(crv, _) => unknown_alg(alg, crv.alg()),
            Material::Oct(_) => bad("an oct-HSM key does not sign; use an RSA-HSM or EC-HSM key"),
        })?;
        match self {
            Material::Rsa(_) if !alg.starts_with('R') && !alg.starts_with('P') => return Err(self.wrong_kty(alg)),
            Material::Ec(crv, _) if crv.alg() != alg => {
                return Err(bad(format!(
                    "a {} key signs with {} only, not '{alg}'",
                    crv.name(),
                    crv.alg()
                )))
            }
            Material::Oct(_) => return Err(bad("an oct-HSM key does not sign; use an RSA-HSM or EC-HSM key")),
            _ => {}
        }
        if digest.len() != want {
            return Err(bad(format!(
                "{alg} signs a {want}-byte digest; the value is {} bytes (send the hash, not the message)",
                digest.len()
            )));
        }
        Ok(())
    }

    /// Signs a digest: PKCS#1 v1.5 / PSS (salt = hash length) or ECDSA (r‖s, fixed length).
    ///
    /// PKCS#1 v1.5 signs without blinding (the scheme is given no RNG): about
    /// three times faster than `rsa`'s blinded path, and the same signature
    /// byte for byte, the scheme being deterministic. Blinding hides a secret-
    /// dependent input from timing; a signature's input is the encoded digest,
    /// which the caller sent and knows. The exponentiation stays
    /// crypto-bigint's constant-time Montgomery arithmetic (with CRT), and the
    /// fault check (the signature raised to e gives back the input) still runs
    /// before a signature leaves. The keys are rehearsal keys on loopback.
    /// PSS has no unblinded path in `rsa` 0.10 and stays blinded; decrypt and
    /// unwrap stay blinded too: their input is a ciphertext an attacker may
    /// choose, the Marvin case (RUSTSEC-2023-0071).
    pub fn sign<R: CryptoRng + ?Sized>(&self, rng: &mut R, alg: &str, digest: &[u8]) -> Result<Vec<u8>, ApiError> {
        use rsa::traits::SignatureScheme as _;
        self.check_digest(alg, digest)?;
        let fail = |e: rsa::Error| ApiError::internal(format!("{alg} signing failed: {e}"));
        match self {
            Material::Rsa(k) => {
                let pkcs1 = |scheme: rsa::Pkcs1v15Sign| scheme.sign(None::<&mut R>, k, digest).map_err(fail);
                match alg {
                    "RS256" => pkcs1(rsa::Pkcs1v15Sign::new::<Sha256>()),
                    "RS384" => pkcs1(rsa::Pkcs1v15Sign::new::<Sha384>()),
                    "RS512" => pkcs1(rsa::Pkcs1v15Sign::new::<Sha512>()),
                    "PS256" => k.pss_sign_prehash_with_rng::<Sha256, _>(rng, digest).map_err(fail),
                    "PS384" => k.pss_sign_prehash_with_rng::<Sha384, _>(rng, digest).map_err(fail),
                    _ => k.pss_sign_prehash_with_rng::<Sha512, _>(rng, digest).map_err(fail),
                }
            }
            Material::Ec(_, k) => k.sign(digest),
            Material::Oct(_) => Err(self.wrong_kty(alg)),
        }
    }

    /// Whether `sig` is a signature of `digest` under this key with `alg`.
    pub fn verify(&self, alg: &str, digest: &[u8], sig: &[u8]) -> Result<bool, ApiError> {
        self.check_digest(alg, digest)?;
        Ok(match self {
            Material::Rsa(k) => {
                let p = k.to_public_key();
                match alg {
                    "RS256" => p.pkcs1v15_verify_prehash::<Sha256>(digest, sig).is_ok(),
                    "RS384" => p.pkcs1v15_verify_prehash::<Sha384>(digest, sig).is_ok(),
                    "RS512" => p.pkcs1v15_verify_prehash::<Sha512>(digest, sig).is_ok(),
                    "PS256" => p.pss_verify_prehash::<Sha256>(digest, sig).is_ok(),
                    "PS384" => p.pss_verify_prehash::<Sha384>(digest, sig).is_ok(),
                    _ => p.pss_verify_prehash::<Sha512>(digest, sig).is_ok(),
                }
            }
            Material::Ec(_, k) => k.verify(digest, sig),
            Material::Oct(_) => false,
        })
    }
}

fn unknown_alg(alg: &str, allowed: &str) -> ApiError {
    bad(format!(
        "the algorithm '{alg}' is not valid for this key; use {allowed}"
    ))
}

fn no_gcm_fields(alg: &str, extra: &Extra) -> Result<(), ApiError> {
    if extra.tag.is_some() || extra.aad.is_some() {
        return Err(bad(format!("{alg} takes no tag or aad (they belong to AES-GCM)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{rsa_2048, test_rng};

    fn rsa() -> Material {
        Material::Rsa(Box::new(rsa_2048().clone()))
    }

    fn oct(bits: usize) -> Material {
        Material::generate(&mut test_rng(3), Kty::Oct, bits, None).unwrap()
    }

    #[test]
    fn rsa_encrypt_and_wrap_round_trip_for_every_algorithm() {
        let k = rsa();
        for alg in ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"] {
            let c = k
                .encrypt(&mut test_rng(1), alg, b"dek bytes", &Extra::default())
                .unwrap();
            assert_eq!(c.value.len(), 256);
            assert_eq!(
                &k.decrypt(&mut test_rng(2), alg, &c.value, &Extra::default()).unwrap()[..],
                b"dek bytes"
            );
            let w = k.wrap(&mut test_rng(1), alg, &[9; 32]).unwrap();
            assert_eq!(&k.unwrap(&mut test_rng(2), alg, &w).unwrap()[..], &[9; 32]);
        }
        // Decrypting with the wrong padding fails rather than returning garbage.
        let c = k
            .encrypt(&mut test_rng(1), "RSA-OAEP-256", b"x", &Extra::default())
            .unwrap();
        assert!(k
            .decrypt(&mut test_rng(2), "RSA-OAEP", &c.value, &Extra::default())
            .is_err());
        assert!(k.encrypt(&mut test_rng(1), "A256GCM", b"x", &Extra::default()).is_err());
    }

    #[test]
    fn rsa_signatures_verify_and_detect_tampering() {
        use sha2::Digest;
        let k = rsa();
        for (alg, digest) in [
            ("RS256", Sha256::digest(b"m").to_vec()),
            ("RS384", Sha384::digest(b"m").to_vec()),
            ("RS512", Sha512::digest(b"m").to_vec()),
            ("PS256", Sha256::digest(b"m").to_vec()),
            ("PS384", Sha384::digest(b"m").to_vec()),
            ("PS512", Sha512::digest(b"m").to_vec()),
        ] {
            let sig = k.sign(&mut test_rng(1), alg, &digest).unwrap();
            assert!(k.verify(alg, &digest, &sig).unwrap(), "{alg}");
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(!k.verify(alg, &digest, &bad).unwrap(), "{alg}");
        }
        let err = k.sign(&mut test_rng(1), "RS256", b"not a digest").unwrap_err();
        assert!(err.message.contains("32-byte digest"), "{}", err.message);
        assert!(k.sign(&mut test_rng(1), "ES256", &[0; 32]).is_err());
    }

    #[test]
    fn unblinded_pkcs1_signatures_equal_the_blinded_ones() {
        use sha2::Digest;
        let k3072 = Material::generate(&mut test_rng(5), Kty::Rsa, 3072, None).unwrap();
        for (bits, k) in [(2048, rsa()), (3072, k3072)] {
            let Material::Rsa(key) = &k else { unreachable!() };
            let public = key.to_public_key();
            for message in [&b"m"[..], b"another message"] {
                let (d256, d384, d512) = (
                    Sha256::digest(message),
                    Sha384::digest(message),
                    Sha512::digest(message),
                );
                for (alg, digest, blinded) in [
                    (
                        "RS256",
                        &d256[..],
                        key.pkcs1v15_sign_prehash_with_rng::<Sha256, _>(&mut test_rng(9), &d256),
                    ),
                    (
                        "RS384",
                        &d384[..],
                        key.pkcs1v15_sign_prehash_with_rng::<Sha384, _>(&mut test_rng(9), &d384),
                    ),
                    (
                        "RS512",
                        &d512[..],
                        key.pkcs1v15_sign_prehash_with_rng::<Sha512, _>(&mut test_rng(9), &d512),
                    ),
                ] {
                    let sig = k.sign(&mut test_rng(1), alg, digest).unwrap();
                    assert_eq!(sig.len(), bits / 8, "{alg} {bits}");
                    assert_eq!(sig, blinded.unwrap(), "{alg} {bits}: unblinded and blinded differ");
                    let ok = match alg {
                        "RS256" => public.pkcs1v15_verify_prehash::<Sha256>(digest, &sig),
                        "RS384" => public.pkcs1v15_verify_prehash::<Sha384>(digest, &sig),
                        _ => public.pkcs1v15_verify_prehash::<Sha512>(digest, &sig),
                    };
                    assert!(ok.is_ok(), "{alg} {bits}: the public key rejects it");
                }
            }
        }
    }

    #[test]
    fn ec_signatures_for_every_curve() {
        use sha2::Digest;
        for (crv, alg, digest) in [
            (Curve::P256, "ES256", Sha256::digest(b"m").to_vec()),
            (Curve::P256K, "ES256K", Sha256::digest(b"m").to_vec()),
            (Curve::P384, "ES384", Sha384::digest(b"m").to_vec()),
            (Curve::P521, "ES512", Sha512::digest(b"m").to_vec()),
        ] {
            let k = Material::generate(&mut test_rng(4), Kty::Ec, 0, Some(crv)).unwrap();
            let sig = k.sign(&mut test_rng(1), alg, &digest).unwrap();
            assert_eq!(sig.len(), 2 * crv.field_len(), "{alg}: r||s");
            assert!(k.verify(alg, &digest, &sig).unwrap());
            let mut other = digest.clone();
            other[0] ^= 1;
            assert!(!k.verify(alg, &other, &sig).unwrap());
            // Stored and reloaded, and re-imported from its JWK parts.
            let again = Material::from_stored(Kty::Ec, Some(crv), &k.to_stored().unwrap()).unwrap();
            assert!(again.verify(alg, &digest, &sig).unwrap());
            let Public::Ec { x, y, .. } = k.public() else { panic!() };
            assert!(Material::import_ec(crv, &k.to_stored().unwrap(), &x, &y).is_ok());
            let mut y2 = y.clone();
            y2[0] ^= 1;
            assert!(Material::import_ec(crv, &k.to_stored().unwrap(), &x, &y2).is_err());
            assert!(k.sign(&mut test_rng(1), "RS256", &[0; 32]).is_err());
            assert!(k
                .encrypt(&mut test_rng(1), "RSA-OAEP", b"x", &Extra::default())
                .is_err());
        }
    }

    #[test]
    fn p256_known_signature_verifies() {
        // RFC 6979 A.2.5: P-256, SHA-256, message "sample".
        use sha2::Digest;
        let d = hex::decode("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721").unwrap();
        let x = hex::decode("60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6").unwrap();
        let y = hex::decode("7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299").unwrap();
        let k = Material::import_ec(Curve::P256, &d, &x, &y).unwrap();
        let sig = hex::decode(concat!(
            "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716",
            "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
        ))
        .unwrap();
        let digest = Sha256::digest(b"sample");
        assert!(k.verify("ES256", &digest, &sig).unwrap());
        // RFC 6979 signing is deterministic: the HSM produces the same one.
        assert_eq!(k.sign(&mut test_rng(1), "ES256", &digest).unwrap(), sig);
    }

    #[test]
    fn aes_kw_matches_rfc_3394() {
        // RFC 3394 §4.1, 4.3 and 4.6: 128-bit data under 128-, 192- and 256-bit KEKs.
        let data = hex::decode("00112233445566778899AABBCCDDEEFF").unwrap();
        for (kek, alg, want) in [
            (
                "000102030405060708090A0B0C0D0E0F",
                "A128KW",
                "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "A192KW",
                "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "A256KW",
                "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7",
            ),
        ] {
            let k = Material::import_oct(&hex::decode(kek).unwrap()).unwrap();
            let wrapped = k.wrap(&mut test_rng(1), alg, &data).unwrap();
            assert_eq!(hex::encode_upper(&wrapped), want, "{alg}");
            assert_eq!(&k.unwrap(&mut test_rng(1), alg, &wrapped).unwrap()[..], &data[..]);
            let mut bad = wrapped.clone();
            bad[3] ^= 1;
            assert!(k.unwrap(&mut test_rng(1), alg, &bad).is_err());
        }
        let err = oct(128).wrap(&mut test_rng(1), "A256KW", &data).unwrap_err();
        assert!(err.message.contains("256-bit key"), "{}", err.message);
    }

    #[test]
    fn aes_gcm_matches_the_nist_vector_and_round_trips() {
        // GCM spec (McGrew & Viega) test case 4: AES-128, 60-byte plaintext, 20-byte AAD.
        let key = hex::decode("feffe9928665731c6d6a8f9467308308").unwrap();
        let iv = hex::decode("cafebabefacedbaddecaf888").unwrap();
        let pt = hex::decode("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39").unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let (ct, tag) = gcm_seal(&key, &iv, &aad, &pt).unwrap();
        assert_eq!(hex::encode(&ct), "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091");
        assert_eq!(hex::encode(&tag), "5bc94fbc3221a5db94fae95ae7121a47");
        let k = Material::import_oct(&key).unwrap();
        let extra = Extra {
            iv: Some(iv),
            aad: Some(aad),
            tag: Some(tag),
        };
        assert_eq!(
            &k.decrypt(&mut test_rng(1), "A128GCM", &ct, &extra).unwrap()[..],
            &pt[..]
        );

        for bits in [128, 192, 256] {
            let k = oct(bits);
            let alg = format!("A{bits}GCM");
            let aad = Extra {
                aad: Some(b"ctx".to_vec()),
                ..Extra::default()
            };
            let s = k.encrypt(&mut test_rng(1), &alg, b"hello", &aad).unwrap();
            let mut extra = Extra {
                iv: s.iv.clone(),
                aad: Some(b"ctx".to_vec()),
                tag: s.tag.clone(),
            };
            assert_eq!(
                &k.decrypt(&mut test_rng(1), &alg, &s.value, &extra).unwrap()[..],
                b"hello"
            );
            extra.aad = Some(b"other".to_vec());
            assert!(
                k.decrypt(&mut test_rng(1), &alg, &s.value, &extra).is_err(),
                "aad is authenticated"
            );
        }
        let with_iv = Extra {
            iv: Some(vec![0; 12]),
            ..Extra::default()
        };
        assert!(oct(256).encrypt(&mut test_rng(1), "A256GCM", b"x", &with_iv).is_err());
    }

    #[test]
    fn aes_cbc_matches_sp800_38a_and_pads_only_when_asked() {
        // NIST SP 800-38A F.2.1 CBC-AES128.Encrypt, first block.
        let k = Material::import_oct(&hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap()).unwrap();
        let iv = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
        let pt = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        let extra = Extra {
            iv: Some(iv.clone()),
            ..Extra::default()
        };
        let s = k.encrypt(&mut test_rng(1), "A128CBC", &pt, &extra).unwrap();
        assert_eq!(hex::encode(&s.value), "7649abac8119b246cee98e9b12e9197d");
        assert_eq!(
            &k.decrypt(&mut test_rng(1), "A128CBC", &s.value, &extra).unwrap()[..],
            &pt[..]
        );
        assert!(k.encrypt(&mut test_rng(1), "A128CBC", b"short", &extra).is_err());
        let p = k.encrypt(&mut test_rng(1), "A128CBCPAD", b"short", &extra).unwrap();
        assert_eq!(p.value.len(), 16);
        assert_eq!(
            &k.decrypt(&mut test_rng(1), "A128CBCPAD", &p.value, &extra).unwrap()[..],
            b"short"
        );
        // Without an iv the HSM draws one and returns it.
        let drawn = oct(256)
            .encrypt(&mut test_rng(1), "A256CBCPAD", b"x", &Extra::default())
            .unwrap();
        assert_eq!(drawn.iv.unwrap().len(), 16);
        assert!(
            k.decrypt(&mut test_rng(1), "A128CBC", &s.value, &Extra::default())
                .is_err(),
            "iv required"
        );
    }
}
