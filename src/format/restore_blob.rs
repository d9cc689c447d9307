//! The restore blob (security-domain(5), RESTORE BLOB): the data items re-encrypted under a fresh
//! master key, and that key wrapped to the target instance's exchange key.

use serde::{Deserialize, Serialize};

use super::sdfile::{item_jwe, EncData, KDF};
use super::{json, FormatError};
use crate::crypto::b64::b64u_decode;
use crate::crypto::jwe::{Alg, CompactJwe};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WrappedKey {
    pub enc_key: String,
    pub x5t_256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoreBlob {
    #[serde(rename = "EncData")]
    pub enc_data: EncData,
    #[serde(rename = "WrappedKey")]
    pub wrapped_key: WrappedKey,
}

/// The body of `POST /securitydomain/upload`.
#[derive(Serialize, Deserialize)]
pub struct UploadBody {
    pub value: String,
}

impl RestoreBlob {
    pub fn from_json(bytes: &[u8]) -> Result<RestoreBlob, FormatError> {
        let blob: RestoreBlob = super::from_json(bytes)?;
        blob.validate()?;
        Ok(blob)
    }

    /// As the Azure CLI writes it: Python's default separators, spec key order.
    pub fn to_json(&self) -> String {
        json::to_python_style(self)
    }

    /// `{"value": "<blob JSON>"}` for the upload request.
    pub fn upload_body(&self) -> String {
        serde_json::to_string(&UploadBody { value: self.to_json() }).expect("plain data serialises")
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        if self.enc_data.kdf != KDF {
            return Err(FormatError::field(
                "EncData.kdf",
                format!("'{}'", self.enc_data.kdf),
                "'sp108_kdf'",
            ));
        }
        if self.enc_data.data.is_empty() {
            return Err(FormatError::Invalid("EncData.data holds no items".into()));
        }
        for (i, item) in self.enc_data.data.iter().enumerate() {
            if self.enc_data.data[..i].iter().any(|d| d.tag == item.tag) {
                return Err(FormatError::Invalid(format!(
                    "two data items carry the tag '{}'",
                    item.tag
                )));
            }
            item_jwe(item)?;
        }
        let thumb =
            b64u_decode(&self.wrapped_key.x5t_256, "WrappedKey.x5t_256").map_err(|source| FormatError::Jwe {
                location: "WrappedKey".into(),
                source,
            })?;
        if thumb.len() != 32 {
            return Err(FormatError::field(
                "WrappedKey.x5t_256",
                format!("{} bytes", thumb.len()),
                "32 bytes",
            ));
        }
        self.wrapped_key_jwe()?;
        Ok(())
    }

    pub fn wrapped_key_jwe(&self) -> Result<CompactJwe, FormatError> {
        let jwe = CompactJwe::parse(&self.wrapped_key.enc_key).map_err(|source| FormatError::Jwe {
            location: "WrappedKey.enc_key".into(),
            source,
        })?;
        jwe.expect_alg(Alg::RsaOaep256).map_err(|source| FormatError::Jwe {
            location: "WrappedKey.enc_key".into(),
            source,
        })?;
        Ok(jwe)
    }
}
