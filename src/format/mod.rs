//! The files of the wire format: the security-domain file (security-domain(5), SECURITY-DOMAIN FILE), the
//! restore blob (§6) and the transfer key (§7). Serde models plus the checks
//! the spec demands of a reader; no cryptography beyond parsing JWEs.

pub mod json;
pub mod limits;
pub mod restore_blob;
pub mod sdfile;
pub mod transfer_key;

use thiserror::Error;

use crate::crypto::CryptoError;

/// Why a file is not a valid instance of the format.
#[derive(Debug, Error)]
pub enum FormatError {
    #[error("it is not valid JSON for this file: {0}")]
    Json(String),
    #[error("{field} is {got}, it must be {want}")]
    Field { field: String, got: String, want: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{location}: {source}")]
    Jwe { location: String, source: CryptoError },
}

/// Parses one strict JSON document into `T` (see [`json::from_slice`]).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    json::from_slice(bytes).map_err(FormatError::Json)
}

impl FormatError {
    pub(crate) fn field(field: impl Into<String>, got: impl ToString, want: impl Into<String>) -> Self {
        FormatError::Field {
            field: field.into(),
            got: got.to_string(),
            want: want.into(),
        }
    }
}
