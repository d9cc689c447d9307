//! Base64 as the format uses it: base64url without padding for JWE parts and
//! thumbprints, standard base64 for `x5c` certificates. Decoding is strict.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

use super::CryptoError;

/// `b64u(x)` of the spec.
pub fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; padding, other alphabets and stray
/// trailing bits are refused.
pub fn b64u_decode(text: &str, what: &'static str) -> Result<Vec<u8>, CryptoError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| CryptoError::Base64 { what })
}

/// Standard base64 with padding (the `x5c` alphabet).
pub fn b64_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn b64_std_decode(text: &str, what: &'static str) -> Result<Vec<u8>, CryptoError> {
    STANDARD.decode(text).map_err(|_| CryptoError::Base64 { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        assert_eq!(b64u(b"\xfb\xff"), "-_8");
        assert_eq!(b64u_decode("-_8", "x").unwrap(), b"\xfb\xff");
        assert!(b64u_decode("+/8", "x").is_err(), "standard alphabet refused");
        assert!(b64u_decode("-_8=", "x").is_err(), "padding refused");
        assert!(b64u_decode("-_9", "x").is_err(), "non-zero trailing bits refused");
        assert_eq!(b64_std_decode(&b64_std(b"abc\xff"), "x").unwrap(), b"abc\xff");
    }
}
