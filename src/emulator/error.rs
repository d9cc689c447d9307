//! The emulator's answer when a request cannot be served: an HTTP status and
//! Key Vault's JSON error body `{"error": {"code", "message"}}`.

use hyper::StatusCode;

/// Why a request was refused, already in the service's terms.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The error code; `"Forbidden/KeyDisabled"` carries an inner error
    /// code after the slash (`{"error": {"code": "Forbidden", "innererror": {"code": "KeyDisabled"}}}`),
    /// kept in one field so every literal of this struct stays as it is.
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "BadParameter",
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            code: "Conflict",
            message: message.into(),
        }
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "Forbidden",
            message: message.into(),
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "Unauthorized",
            message: message.into(),
        }
    }
    /// A failure of the emulator itself (disk full, ...): the caller did nothing wrong.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError",
            message: err.to_string(),
        }
    }

    /// 403 with the service's inner code (`KeyDisabled`, `KeyOperationForbidden`...).
    pub fn forbidden_because(code_and_inner: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: code_and_inner,
            message: message.into(),
        }
    }

    pub fn body(&self) -> String {
        match self.code.split_once('/') {
            Some((code, inner)) => serde_json::json!({
                "error": {"code": code, "message": self.message, "innererror": {"code": inner}}
            })
            .to_string(),
            None => serde_json::json!({"error": {"code": self.code, "message": self.message}}).to_string(),
        }
    }
}
