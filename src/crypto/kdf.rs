//! SP 800-108 KDF in counter mode with HMAC-SHA-512 (`sp108_kdf`, security-domain(5), KDF).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;
use zeroize::Zeroizing;

/// `K(i) = HMAC-SHA-512(KI, [i]32 || Label || 0x00 || Context || [L]32)`,
/// concatenated for i = 1.. and cut to `out_bits` (a multiple of 8).
pub fn sp108_kdf(ki: &[u8], label: &[u8], context: &[u8], out_bits: u32) -> Zeroizing<Vec<u8>> {
    assert!(out_bits.is_multiple_of(8), "sp108_kdf output must be whole bytes");
    let out_len = (out_bits / 8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + 64));
    let mut counter: u32 = 1;
    while out.len() < out_len {
        let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(ki).expect("HMAC takes any key length");
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context);
        mac.update(&out_bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(out_len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_test_vector() {
        let out = sp108_kdf(&[0x41; 32], b"label", b"context", 256);
        assert_eq!(
            hex::encode(&*out),
            "f0ca51f6308791404bf68b56024ee7c64d6c737716f81d47e1e68b5c4e399575"
        );
    }

    #[test]
    fn longer_outputs_extend_with_the_counter() {
        let short = sp108_kdf(b"k", b"hsm_backup", b"", 512);
        let long = sp108_kdf(b"k", b"hsm_backup", b"", 1024);
        assert_eq!(short.len(), 64);
        assert_eq!(long.len(), 128);
        // L is part of the input, so a longer output is a different key stream.
        assert_ne!(&short[..], &long[..64]);
        assert_ne!(&long[..64], &long[64..]);
    }
}
