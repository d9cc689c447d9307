//! Request bodies of the key routes, parsed and checked before the store is
//! touched: create, import, update, the cryptographic operations, random
//! bytes and the rotation policy. A field of the real API that the emulator
//! does not implement is refused by name (never accepted and dropped);
//! anything else unknown is refused by serde, which names it too.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::super::error::ApiError;
use super::crypto::{Curve, Extra, Kty, Material};
use crate::crypto::b64::b64u_decode;

pub const KNOWN_KEY_OPS: [&str; 8] = [
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
    "import",
    "export",
];

/// The service's default `key_ops` per key type.
pub fn default_key_ops(kty: Kty) -> Vec<String> {
    let ops: &[&str] = match kty {
        Kty::Rsa => &["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
        Kty::Ec => &["sign", "verify"],
        Kty::Oct => &["encrypt", "decrypt", "wrapKey", "unwrapKey"],
    };
    ops.iter().map(|s| s.to_string()).collect()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn unsupported(field: &str, why: &str) -> ApiError {
    bad(format!(
        "{field} is not implemented by this emulator ({why}); remove it from the request"
    ))
}

/// Decodes a base64url field, naming it when it is not base64url.
pub fn b64(field: &'static str, text: &str) -> Result<Vec<u8>, ApiError> {
    b64u_decode(text, field).map_err(|_| bad(format!("{field} is not base64url (RFC 4648 §5, no padding)")))
}

/// `attributes` of create, import and update requests.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Attributes {
    pub enabled: Option<bool>,
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
    exportable: Option<bool>,
    #[serde(rename = "hsmPlatform")]
    hsm_platform: Option<Value>,
    attestation: Option<Value>,
}

impl Attributes {
    fn check(&self) -> Result<(), ApiError> {
        if self.exportable == Some(true) {
            return Err(unsupported(
                "attributes.exportable",
                "keys never leave this emulator; key release is not served",
            ));
        }
        if self.hsm_platform.is_some() {
            return Err(unsupported(
                "attributes.hsmPlatform",
                "it is read-only and names real HSM hardware",
            ));
        }
        if self.attestation.is_some() {
            return Err(unsupported(
                "attributes.attestation",
                "there is no HSM hardware to attest",
            ));
        }
        if let (Some(nbf), Some(exp)) = (self.nbf, self.exp) {
            if exp <= nbf {
                return Err(bad(format!(
                    "attributes.exp ({exp}) must be later than attributes.nbf ({nbf})"
                )));
            }
        }
        Ok(())
    }
}

fn check_ops(ops: &[String]) -> Result<(), ApiError> {
    if let Some(bad_op) = ops.iter().find(|o| !KNOWN_KEY_OPS.contains(&o.as_str())) {
        return Err(bad(format!(
            "'{bad_op}' is not a key operation; use {}",
            KNOWN_KEY_OPS.join(", ")
        )));
    }
    Ok(())
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    // The service's limit of 15 tags; their size is bounded by the store's quota.
    if tags.len() > 15 {
        return Err(bad(format!("{} tags are more than the 15 a key may carry", tags.len())));
    }
    Ok(())
}

/// What a new key version is to be, checked before anything is drawn.
pub struct KeySpec {
    pub kty: Kty,
    /// RSA modulus or AES key bits (0 for EC).
    pub bits: usize,
    pub crv: Option<Curve>,
    pub key_ops: Vec<String>,
    pub enabled: bool,
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
    pub tags: BTreeMap<String, String>,
}

/// `POST /keys/{name}/create`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    kty: String,
    key_size: Option<u32>,
    public_exponent: Option<u64>,
    crv: Option<String>,
    key_ops: Option<Vec<String>>,
    attributes: Option<Attributes>,
    tags: Option<BTreeMap<String, String>>,
    release_policy: Option<Value>,
}

impl CreateKeyRequest {
    pub fn check(self) -> Result<KeySpec, ApiError> {
        if self.release_policy.is_some() {
            return Err(unsupported("release_policy", "secure key release is not served"));
        }
        let kty = Kty::parse(&self.kty)?;
        let (bits, crv) = match kty {
            Kty::Rsa => {
                if self.crv.is_some() {
                    return Err(bad("crv applies to EC-HSM keys only"));
                }
                let bits = self.key_size.unwrap_or(2048) as usize;
                if ![2048, 3072, 4096].contains(&bits) {
                    return Err(bad(format!(
                        "key_size {bits} is not supported for RSA-HSM; use 2048, 3072 or 4096"
                    )));
                }
                if self.public_exponent.is_some_and(|e| e != 65537) {
                    return Err(bad("public_exponent: only 65537 is supported"));
                }
                (bits, None)
            }
            Kty::Ec => {
                if self.key_size.is_some() || self.public_exponent.is_some() {
                    return Err(bad("an EC-HSM key takes crv, not key_size or public_exponent"));
                }
                let crv = Curve::parse(self.crv.as_deref().unwrap_or("P-256"))?;
                (0, Some(crv))
            }
            Kty::Oct => {
                if self.crv.is_some() || self.public_exponent.is_some() {
                    return Err(bad("an oct-HSM key takes key_size only"));
                }
                let bits = self.key_size.unwrap_or(256) as usize;
                if ![128, 192, 256].contains(&bits) {
                    return Err(bad(format!(
                        "key_size {bits} is not supported for oct-HSM; use 128, 192 or 256"
                    )));
                }
                (bits, None)
            }
        };
        let key_ops = match self.key_ops {
            Some(ops) => {
                check_ops(&ops)?;
                ops
            }
            None => default_key_ops(kty),
        };
        let attributes = self.attributes.unwrap_or_default();
        attributes.check()?;
        let tags = self.tags.unwrap_or_default();
        check_tags(&tags)?;
        Ok(KeySpec {
            kty,
            bits,
            crv,
            key_ops,
            enabled: attributes.enabled.unwrap_or(true),
            nbf: attributes.nbf,
            exp: attributes.exp,
            tags,
        })
    }
}

/// A JSON Web Key as an import carries it, private parts included.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwkIn {
    kid: Option<String>,
    kty: String,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
    p: Option<String>,
    q: Option<String>,
    k: Option<String>,
    key_hsm: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// `PUT /keys/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportKeyRequest {
    key: JwkIn,
    #[serde(rename = "Hsm")]
    hsm: Option<bool>,
    attributes: Option<Attributes>,
    tags: Option<BTreeMap<String, String>>,
    release_policy: Option<Value>,
}

fn need<'a>(field: &'static str, v: &'a Option<String>, kty: &str) -> Result<&'a str, ApiError> {
    v.as_deref().ok_or_else(|| {
        bad(format!(
            "key.{field} is required to import an {kty} key with its private part"
        ))
    })
}

fn uint(field: &'static str, text: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let bytes = Zeroizing::new(b64(field, text)?);
    if bytes.is_empty() {
        return Err(bad(format!("key.{field} is empty")));
    }
    Ok(bytes)
}

fn boxed(bytes: &[u8]) -> rsa::BoxedUint {
    // Public width only: the value's length, rounded up by crypto-bigint to whole limbs.
    rsa::BoxedUint::from_be_slice(bytes, (bytes.len() * 8) as u32).expect("precision covers the bytes")
}

fn trimmed(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn import_rsa(jwk: &JwkIn) -> Result<Material, ApiError> {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let kty = "RSA";
    let n = uint("n", need("n", &jwk.n, kty)?)?;
    let e = uint("e", need("e", &jwk.e, kty)?)?;
    let d = uint("d", need("d", &jwk.d, kty)?)?;
    let p = uint("p", need("p", &jwk.p, kty)?)?;
    let q = uint("q", need("q", &jwk.q, kty)?)?;
    let bits = trimmed(&n).len() * 8;
    if ![2048, 3072, 4096].contains(&bits) {
        return Err(bad(format!(
            "key.n is a {bits}-bit modulus; an RSA-HSM key is 2048, 3072 or 4096 bits"
        )));
    }
    let key = rsa::PrivateKey::from_components(
        boxed(trimmed(&n)),
        boxed(trimmed(&e)),
        boxed(trimmed(&d)),
        vec![boxed(trimmed(&p)), boxed(trimmed(&q))],
    )
    .map_err(|err| bad(format!("key: n, e, d, p and q are not one RSA key ({err})")))?;
    // The CRT values are recomputed; given ones must agree, not be dropped unseen.
    for (field, given, ours) in [("dp", &jwk.dp, key.dp()), ("dq", &jwk.dq, key.dq())] {
        if let (Some(given), Some(ours)) = (given, ours) {
            let given = uint(field, given)?;
            let ours = Zeroizing::new(ours.to_be_bytes().to_vec());
            if trimmed(&given) != trimmed(&ours) {
                return Err(bad(format!("key.{field} does not belong to the key's p, q and d")));
            }
        }
    }
    if let Some(qi) = &jwk.qi {
        uint("qi", qi)?;
    }
    if key.n_bytes().len() * 8 != bits {
        return Err(ApiError::internal("the imported modulus changed length"));
    }
    Ok(Material::Rsa(Box::new(key)))
}

impl ImportKeyRequest {
    pub fn check(self) -> Result<(Material, KeySpec), ApiError> {
        if self.release_policy.is_some() {
            return Err(unsupported("release_policy", "secure key release is not served"));
        }
        if self.hsm == Some(false) {
            return Err(bad(
                "Hsm: false asks for a software key, which a Managed HSM does not hold; send true or leave it out",
            ));
        }
        let jwk = &self.key;
        if jwk.key_hsm.is_some() {
            return Err(unsupported(
                "key.key_hsm",
                "BYOK transfer blobs are not opened here; import the plain JWK",
            ));
        }
        let kty = Kty::parse(&jwk.kty)?;
        let wrong = |fields: &[(&str, &Option<String>)]| -> Result<(), ApiError> {
            match fields.iter().find(|(_, v)| v.is_some()) {
                Some((f, _)) => Err(bad(format!("key.{f} does not belong in an {} JWK", kty.name()))),
                None => Ok(()),
            }
        };
        let material = match kty {
            Kty::Rsa => {
                wrong(&[("k", &jwk.k), ("crv", &jwk.crv), ("x", &jwk.x), ("y", &jwk.y)])?;
                import_rsa(jwk)?
            }
            Kty::Ec => {
                wrong(&[
                    ("n", &jwk.n),
                    ("e", &jwk.e),
                    ("p", &jwk.p),
                    ("q", &jwk.q),
                    ("dp", &jwk.dp),
                    ("dq", &jwk.dq),
                    ("qi", &jwk.qi),
                    ("k", &jwk.k),
                ])?;
                let crv = Curve::parse(need("crv", &jwk.crv, "EC")?)?;
                let d = Zeroizing::new(b64("d", need("d", &jwk.d, "EC")?)?);
                let x = b64("x", need("x", &jwk.x, "EC")?)?;
                let y = b64("y", need("y", &jwk.y, "EC")?)?;
                Material::import_ec(crv, &d, &x, &y)?
            }
            Kty::Oct => {
                wrong(&[
                    ("n", &jwk.n),
                    ("e", &jwk.e),
                    ("d", &jwk.d),
                    ("p", &jwk.p),
                    ("q", &jwk.q),
                    ("crv", &jwk.crv),
                    ("x", &jwk.x),
                    ("y", &jwk.y),
                ])?;
                let k = Zeroizing::new(b64("k", need("k", &jwk.k, "oct")?)?);
                Material::import_oct(&k)?
            }
        };
        let _ = &jwk.kid; // The key id is the instance's to assign; a given one is not an error.
        let key_ops = match &jwk.key_ops {
            Some(ops) => {
                check_ops(ops)?;
                ops.clone()
            }
            None => default_key_ops(kty),
        };
        let attributes = self.attributes.unwrap_or_default();
        attributes.check()?;
        let tags = self.tags.unwrap_or_default();
        check_tags(&tags)?;
        let spec = KeySpec {
            kty,
            bits: material.bits().unwrap_or(0),
            crv: material.curve(),
            key_ops,
            enabled: attributes.enabled.unwrap_or(true),
            nbf: attributes.nbf,
            exp: attributes.exp,
            tags,
        };
        Ok((material, spec))
    }
}

/// `PATCH /keys/{name}/{version}`: only what is present changes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    key_ops: Option<Vec<String>>,
    attributes: Option<Attributes>,
    tags: Option<BTreeMap<String, String>>,
    release_policy: Option<Value>,
}

/// A checked update.
pub struct Update {
    pub key_ops: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub nbf: Option<u64>,
    pub exp: Option<u64>,
    pub tags: Option<BTreeMap<String, String>>,
}

impl UpdateKeyRequest {
    pub fn check(self) -> Result<Update, ApiError> {
        if self.release_policy.is_some() {
            return Err(unsupported("release_policy", "secure key release is not served"));
        }
        if let Some(ops) = &self.key_ops {
            check_ops(ops)?;
        }
        if let Some(tags) = &self.tags {
            check_tags(tags)?;
        }
        let a = self.attributes.unwrap_or_default();
        a.check()?;
        Ok(Update {
            key_ops: self.key_ops,
            enabled: a.enabled,
            nbf: a.nbf,
            exp: a.exp,
            tags: self.tags,
        })
    }
}

/// `POST /keys/{name}/{version}/{encrypt,decrypt,wrapkey,unwrapkey}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOperationRequest {
    alg: String,
    value: String,
    iv: Option<String>,
    aad: Option<String>,
    tag: Option<String>,
}

pub struct KeyOperation {
    pub alg: String,
    pub value: Zeroizing<Vec<u8>>,
    pub extra: Extra,
}

impl KeyOperationRequest {
    pub fn check(self) -> Result<KeyOperation, ApiError> {
        Ok(KeyOperation {
            value: Zeroizing::new(b64("value", &self.value)?),
            extra: Extra {
                iv: self.iv.as_deref().map(|v| b64("iv", v)).transpose()?,
                aad: self.aad.as_deref().map(|v| b64("aad", v)).transpose()?,
                tag: self.tag.as_deref().map(|v| b64("tag", v)).transpose()?,
            },
            alg: self.alg,
        })
    }
}

/// `POST /keys/{name}/{version}/sign`: `value` is the digest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    pub alg: String,
    pub value: String,
}

/// `POST /keys/{name}/{version}/verify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub alg: String,
    pub digest: String,
    pub value: String,
}

/// `POST /rng`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngRequest {
    count: u64,
}

impl RngRequest {
    pub fn check(self) -> Result<usize, ApiError> {
        match self.count {
            1..=128 => Ok(self.count as usize),
            n => Err(bad(format!("count {n} is out of range: request 1 to 128 random bytes"))),
        }
    }
}

/// An ISO 8601 duration of the rotation policy (`P90D`, `P1Y6M`, `P2W`), in
/// seconds; the service takes days, months and years (time parts are refused).
pub fn duration_secs(field: &str, text: &str) -> Result<u64, ApiError> {
    let refuse = || {
        bad(format!(
            "{field} '{text}' is not an ISO 8601 duration in days, weeks, months or years (e.g. P90D)"
        ))
    };
    let body = text.strip_prefix('P').ok_or_else(refuse)?;
    if body.is_empty() || body.len() > 16 {
        return Err(refuse());
    }
    let (mut total, mut digits) = (0u64, String::new());
    for c in body.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| refuse())?;
        digits.clear();
        let unit = match c {
            'Y' => 365,
            'M' => 30,
            'W' => 7,
            'D' => 1,
            _ => return Err(refuse()),
        };
        total = total
            .checked_add(n.checked_mul(unit * 86_400).ok_or_else(refuse)?)
            .ok_or_else(refuse)?;
    }
    if !digits.is_empty() {
        return Err(refuse());
    }
    Ok(total)
}

/// `PUT /keys/{name}/rotationpolicy`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationPolicyRequest {
    id: Option<String>,
    #[serde(rename = "lifetimeActions")]
    lifetime_actions: Option<Vec<LifetimeActionIn>>,
    attributes: Option<PolicyAttributesIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifetimeActionIn {
    trigger: TriggerIn,
    action: ActionIn,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerIn {
    #[serde(rename = "timeAfterCreate")]
    time_after_create: Option<String>,
    #[serde(rename = "timeBeforeExpiry")]
    time_before_expiry: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionIn {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyAttributesIn {
    #[serde(rename = "expiryTime")]
    expiry_time: Option<String>,
    created: Option<u64>,
    updated: Option<u64>,
}

/// A checked rotation policy: lifetime actions as `(trigger name, duration, action)`.
pub struct PolicySpec {
    pub actions: Vec<(String, String, String)>,
    pub expiry_time: Option<String>,
}

impl RotationPolicyRequest {
    pub fn check(self) -> Result<PolicySpec, ApiError> {
        let _ = (&self.id, self.attributes.as_ref().map(|a| (a.created, a.updated))); // read-only, as the service treats them
        let expiry_time = self.attributes.and_then(|a| a.expiry_time);
        if let Some(e) = &expiry_time {
            if duration_secs("attributes.expiryTime", e)? < 28 * 86_400 {
                return Err(bad(format!(
                    "attributes.expiryTime '{e}' is shorter than the 28 days the service requires"
                )));
            }
        }
        let mut actions = Vec::new();
        for (i, a) in self.lifetime_actions.unwrap_or_default().into_iter().enumerate() {
            let kind = match a.action.kind.to_ascii_lowercase().as_str() {
                "rotate" => "Rotate",
                "notify" => "Notify",
                _ => {
                    return Err(bad(format!(
                        "lifetimeActions[{i}].action.type '{}' is not Rotate or Notify",
                        a.action.kind
                    )))
                }
            };
            let (trigger, value) = match (a.trigger.time_after_create, a.trigger.time_before_expiry) {
                (Some(t), None) => ("timeAfterCreate", t),
                (None, Some(t)) => ("timeBeforeExpiry", t),
                _ => {
                    return Err(bad(format!(
                        "lifetimeActions[{i}].trigger takes exactly one of timeAfterCreate and timeBeforeExpiry"
                    )))
                }
            };
            duration_secs(&format!("lifetimeActions[{i}].trigger.{trigger}"), &value)?;
            if trigger == "timeBeforeExpiry" && expiry_time.is_none() {
                return Err(bad(format!(
                    "lifetimeActions[{i}] triggers before expiry, but the policy sets no attributes.expiryTime"
                )));
            }
            actions.push((trigger.to_string(), value, kind.to_string()));
        }
        if actions.len() > 2 {
            return Err(bad(
                "a rotation policy has at most two lifetime actions (one Rotate, one Notify)",
            ));
        }
        Ok(PolicySpec { actions, expiry_time })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(body: &str) -> Result<KeySpec, ApiError> {
        serde_json::from_str::<CreateKeyRequest>(body)
            .map_err(|e| bad(e.to_string()))?
            .check()
    }

    #[test]
    fn create_parameters_per_key_type() {
        let s = create(r#"{"kty":"EC-HSM","crv":"P-384"}"#).unwrap();
        assert_eq!((s.kty, s.crv), (Kty::Ec, Some(Curve::P384)));
        assert_eq!(s.key_ops, ["sign", "verify"]);
        assert_eq!(create(r#"{"kty":"oct-HSM","key_size":128}"#).unwrap().bits, 128);
        assert_eq!(create(r#"{"kty":"RSA"}"#).unwrap().kty, Kty::Rsa);
        for (body, why) in [
            (r#"{"kty":"RSA-HSM","key_size":1024}"#, "key_size 1024"),
            (r#"{"kty":"EC-HSM","crv":"P-192"}"#, "crv 'P-192'"),
            (r#"{"kty":"oct-HSM","key_size":512}"#, "key_size 512"),
            (r#"{"kty":"EC-HSM","key_size":256}"#, "takes crv"),
            (
                r#"{"kty":"RSA-HSM","release_policy":{}}"#,
                "release_policy is not implemented",
            ),
            (
                r#"{"kty":"RSA-HSM","attributes":{"exportable":true}}"#,
                "attributes.exportable",
            ),
            (r#"{"kty":"RSA-HSM","attributes":{"nbf":5,"exp":5}}"#, "later than"),
            (r#"{"kty":"RSA-HSM","key_ops":["fly"]}"#, "'fly' is not a key operation"),
            (r#"{"kty":"DSA"}"#, "kty 'DSA'"),
        ] {
            let err = create(body).err().unwrap_or_else(|| panic!("{body} accepted"));
            assert!(err.message.contains(why), "{body}: {}", err.message);
        }
    }

    #[test]
    fn rng_counts_and_durations() {
        let rng = |n: u64| RngRequest { count: n }.check();
        assert!(rng(0).is_err() && rng(129).is_err());
        assert_eq!(rng(128).unwrap(), 128);
        assert_eq!(duration_secs("t", "P90D").unwrap(), 90 * 86_400);
        assert_eq!(duration_secs("t", "P1Y2M").unwrap(), 425 * 86_400);
        for bad in ["90D", "P", "PT1H", "P1", "P-1D", "P99999999999999999D"] {
            assert!(duration_secs("t", bad).is_err(), "{bad}");
        }
    }
}
