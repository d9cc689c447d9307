//! EME-OAEP decoding (RFC 8017 §7.1.2 step 3) with SHA-256, MGF1-SHA-256 and
//! an empty label: the padding of RSA-OAEP-256 (security-domain(5), SHARES), removed here for a
//! token that can only do the raw RSA operation (CKM_RSA_X_509).

use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::secret::SecretBytes;
use super::CryptoError;

const H_LEN: usize = 32;

fn mgf1_xor(out: &mut [u8], seed: &[u8]) {
    for (counter, chunk) in out.chunks_mut(H_LEN).enumerate() {
        let mask = Sha256::new()
            .chain_update(seed)
            .chain_update((counter as u32).to_be_bytes())
            .finalize();
        chunk.iter_mut().zip(mask.iter()).for_each(|(b, m)| *b ^= m);
    }
}

/// The message inside `em`, the raw RSA decryption of a ciphertext, for a
/// `k`-byte modulus (`em` may come without its leading zero bytes). Every
/// malformed block gives the same [`CryptoError::Unwrap`], and the checks run
/// in constant time so timing tells nothing of why.
pub fn decode_sha256(em: &[u8], k: usize) -> Result<SecretBytes, CryptoError> {
    if k < 2 * H_LEN + 2 || em.len() > k {
        return Err(CryptoError::Unwrap);
    }
    // The raw result is an integer: put back the leading zeros it may have lost.
    let mut block = zeroize::Zeroizing::new(vec![0u8; k]);
    block[k - em.len()..].copy_from_slice(em);
    let (y, rest) = block.split_at_mut(1);
    let (seed, db) = rest.split_at_mut(H_LEN);
    mgf1_xor(seed, db);
    mgf1_xor(db, seed);
    let l_hash = Sha256::digest(b"");
    let mut valid = y[0].ct_eq(&0) & db[..H_LEN].ct_eq(&l_hash[..]);
    // PS (zero or more 0x00), then 0x01, then the message.
    let mut looking = Choice::from(1);
    let mut index = 0u32;
    for (i, b) in db.iter().enumerate().skip(H_LEN) {
        let one = b.ct_eq(&1);
        let zero = b.ct_eq(&0);
        index.conditional_assign(&(i as u32), looking & one);
        valid &= !(looking & !zero & !one);
        looking &= !one;
    }
    valid &= !looking;
    if bool::from(valid) {
        Ok(SecretBytes::new(db[index as usize + 1..].to_vec()))
    } else {
        Err(CryptoError::Unwrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{rsa_2048, test_rng};
    use rsa::traits::PublicKeyParts;

    /// EM as the token's CKM_RSA_X_509 gives it: the raw RSA decryption.
    fn raw_decrypt(ct: &[u8]) -> Vec<u8> {
        let key = rsa_2048();
        let c = rsa::BoxedUint::from_be_slice(ct, key.n().bits_precision()).unwrap();
        let m = rsa::hazmat::rsa_decrypt::<rand_core::UnwrapErr<getrandom::SysRng>>(None, key, &c).unwrap();
        m.to_be_bytes().to_vec()
    }

    #[test]
    fn decodes_what_rsa_oaep_256_encrypts() {
        let key = rsa_2048();
        let public = key.to_public_key();
        for len in [0usize, 1, 64, 256 - 2 * 32 - 2] {
            let msg = vec![0x5a; len];
            let ct = public
                .oaep_encrypt_with_rng::<Sha256, _>(&mut test_rng(40), &msg)
                .unwrap();
            let em = raw_decrypt(&ct);
            assert_eq!(decode_sha256(&em, 256).unwrap().expose(), &msg[..], "length {len}");
            // Without the leading zero byte, as some tokens return it.
            let trimmed: Vec<u8> = em.iter().copied().skip_while(|&b| b == 0).collect();
            assert_eq!(decode_sha256(&trimmed, 256).unwrap().expose(), &msg[..]);
        }
    }

    #[test]
    fn refuses_sha1_padding_and_damaged_blocks() {
        let key = rsa_2048();
        let public = key.to_public_key();
        let msg = [7u8; 64];
        let sha1 = public
            .oaep_encrypt_with_rng::<sha1::Sha1, _>(&mut test_rng(41), &msg)
            .unwrap();
        assert_eq!(decode_sha256(&raw_decrypt(&sha1), 256).err(), Some(CryptoError::Unwrap));
        let ct = public
            .oaep_encrypt_with_rng::<Sha256, _>(&mut test_rng(42), &msg)
            .unwrap();
        let em = raw_decrypt(&ct);
        for i in [0usize, 1, 40, 100, 255] {
            let mut bad = em.clone();
            bad[i] ^= 0x01;
            assert_eq!(decode_sha256(&bad, 256).err(), Some(CryptoError::Unwrap), "byte {i}");
        }
        assert!(decode_sha256(&[0u8; 257], 256).is_err());
        assert!(decode_sha256(&em, 60).is_err());
    }
}
