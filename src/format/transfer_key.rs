//! The exchange (transfer) key a recovering instance publishes (security-domain(5), TRANSFER KEY):
//! `{"key_format": "jwk", "transfer_key": "<JWK as a JSON string>"}`.

use serde::{Deserialize, Serialize};

use super::FormatError;
use crate::crypto::b64::{b64_std, b64_std_decode, b64u};

/// An RSA JWK with its certificate chain, as the service sends it and as
/// download requests carry custodian certificates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    pub n: String,
    pub e: String,
    pub x5c: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize)]
pub struct TransferKeyResponse {
    pub key_format: String,
    pub transfer_key: String,
}

impl Jwk {
    /// The JWK for a certificate: `n`/`e` from its key, `x5c` its DER.
    pub fn for_certificate(der: &[u8], n: &[u8], e: &[u8], x5t: &[u8], x5t_s256: &[u8]) -> Jwk {
        Jwk {
            kty: "RSA".into(),
            kid: None,
            n: b64u(n),
            e: b64u(e),
            x5c: vec![b64_std(der)],
            x5t: Some(b64u(x5t)),
            x5t_s256: Some(b64u(x5t_s256)),
            alg: Some("RSA-OAEP-256".into()),
            key_ops: Some(vec!["wrapKey".into(), "encrypt".into()]),
        }
    }

    /// The DER of the first certificate in `x5c`.
    pub fn certificate_der(&self) -> Result<Vec<u8>, FormatError> {
        if self.kty != "RSA" && self.kty != "RSA-HSM" {
            return Err(FormatError::field("kty", format!("'{}'", self.kty), "'RSA'"));
        }
        let first = self
            .x5c
            .first()
            .ok_or_else(|| FormatError::Invalid("the key carries no certificate (x5c is empty)".into()))?;
        b64_std_decode(first, "x5c[0]").map_err(|source| FormatError::Jwe {
            location: "x5c[0]".into(),
            source,
        })
    }
}

impl TransferKeyResponse {
    /// Parses the response and the JWK string inside it.
    pub fn parse(bytes: &[u8]) -> Result<Jwk, FormatError> {
        let resp: TransferKeyResponse = super::from_json(bytes)?;
        if resp.key_format != "jwk" {
            return Err(FormatError::field(
                "key_format",
                format!("'{}'", resp.key_format),
                "'jwk'",
            ));
        }
        crate::format::json::from_str(&resp.transfer_key).map_err(|e| FormatError::Json(format!("transfer_key: {e}")))
    }

    pub fn for_jwk(jwk: &Jwk) -> TransferKeyResponse {
        TransferKeyResponse {
            key_format: "jwk".into(),
            transfer_key: serde_json::to_string(jwk).expect("plain data serialises"),
        }
    }
}
