//! A256CBC-HS512 content encryption (RFC 7518 §5.2.2; security-domain(5), DATA ITEMS).

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;
use subtle::ConstantTimeEq;

use super::secret::SecretBytes;
use super::CryptoError;

pub const KEY_LEN: usize = 64;
pub const IV_LEN: usize = 16;
pub const TAG_LEN: usize = 32;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// `T = first 32 bytes of HMAC-SHA-512(MAC_KEY, AAD || IV || C || [8*len(AAD)]64)`.
fn tag(mac_key: &[u8], aad: &[u8], iv: &[u8], ciphertext: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(mac_key).expect("HMAC takes any key length");
    mac.update(aad);
    mac.update(iv);
    mac.update(ciphertext);
    mac.update(&((aad.len() as u64) * 8).to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&full[..TAG_LEN]);
    out
}

/// Encrypts `plaintext`; returns `(ciphertext, tag)`.
pub fn encrypt(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN], aad: &[u8], plaintext: &[u8]) -> (Vec<u8>, [u8; TAG_LEN]) {
    let (mac_key, enc_key) = key.split_at(32);
    let ciphertext = Aes256CbcEnc::new_from_slices(enc_key, iv)
        .expect("key and IV lengths are fixed")
        .encrypt_padded_vec::<Pkcs7>(plaintext);
    let t = tag(mac_key, aad, iv, &ciphertext);
    (ciphertext, t)
}

/// Checks the tag in constant time, then decrypts. A tag of any length other
/// than 32 bytes is an integrity failure (security-domain(5), DATA ITEMS).
pub fn decrypt(
    key: &[u8; KEY_LEN],
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag_in: &[u8],
) -> Result<SecretBytes, CryptoError> {
    if tag_in.len() != TAG_LEN {
        return Err(CryptoError::JwePartLength {
            part: "authentication tag",
            got: tag_in.len(),
            want: TAG_LEN,
        });
    }
    if iv.len() != IV_LEN {
        return Err(CryptoError::JwePartLength {
            part: "IV",
            got: iv.len(),
            want: IV_LEN,
        });
    }
    let (mac_key, enc_key) = key.split_at(32);
    let expected = tag(mac_key, aad, iv, ciphertext);
    if !bool::from(expected.ct_eq(tag_in)) {
        return Err(CryptoError::Integrity);
    }
    // The tag is good, so a padding error here means the key is right but the
    // sender was broken; still an integrity failure for the reader.
    Aes256CbcDec::new_from_slices(enc_key, iv)
        .expect("key and IV lengths are fixed")
        .decrypt_padded_vec::<Pkcs7>(ciphertext)
        .map(SecretBytes::new)
        .map_err(|_| CryptoError::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7518 Appendix B.3 (AES_256_CBC_HMAC_SHA_512).
    #[test]
    fn rfc7518_b3_vector() {
        let key: [u8; 64] = hex::decode(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
             202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
        )
        .unwrap()
        .try_into()
        .unwrap();
        let pt = hex::decode(
            "41206369706865722073797374656d206d757374206e6f742062652072657175\
             6972656420746f206265207365637265742c20616e64206974206d7573742062\
             652061626c6520746f2066616c6c20696e746f207468652068616e6473206f66\
             2074686520656e656d7920776974686f757420696e636f6e76656e69656e6365",
        )
        .unwrap();
        let iv: [u8; 16] = hex::decode("1af38c2dc2b96ffdd86694092341bc04")
            .unwrap()
            .try_into()
            .unwrap();
        let aad = hex::decode(
            "546865207365636f6e64207072696e6369706c65206f66204175677573746520\
             4b6572636b686f666673",
        )
        .unwrap();
        let (ct, t) = encrypt(&key, &iv, &aad, &pt);
        assert_eq!(
            hex::encode(&ct),
            "4affaaadb78c31c5da4b1b590d10ffbd3dd8d5d302423526912da037ecbcc7bd\
             822c301dd67c373bccb584ad3e9279c2e6d12a1374b77f077553df829410446b\
             36ebd97066296ae6427ea75c2e0846a11a09ccf5370dc80bfecbad28c73f09b3\
             a3b75e662a2594410ae496b2e2e6609e31e6e02cc837f053d21f37ff4f51950b\
             be2638d09dd7a4930930806d0703b1f6"
        );
        assert_eq!(
            hex::encode(t),
            "4dd3b4c088a7f45c216839645b2012bf2e6269a8c56a816dbc1b267761955bc5"
        );
        assert_eq!(decrypt(&key, &iv, &aad, &ct, &t).unwrap().expose(), &pt[..]);
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let key = [7u8; 64];
        let iv = [9u8; 16];
        let (ct, t) = encrypt(&key, &iv, b"aad", b"some secret share");
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert_eq!(decrypt(&key, &iv, b"aad", &bad, &t).err(), Some(CryptoError::Integrity));
        }
        for i in 0..16 {
            let mut bad_iv = iv;
            bad_iv[i] ^= 0x80;
            assert!(decrypt(&key, &bad_iv, b"aad", &ct, &t).is_err());
        }
        assert!(decrypt(&key, &iv, b"aae", &ct, &t).is_err());
        assert!(decrypt(&key, &iv, b"aad", &ct, &t[..31]).is_err(), "short tag refused");
        let mut long = t.to_vec();
        long.push(0);
        assert!(decrypt(&key, &iv, b"aad", &ct, &long).is_err(), "long tag refused");
    }
}
