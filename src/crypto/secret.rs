//! Wrappers for secret material: no `Debug`, no `Display`, wiped on drop.
//! Reach the bytes only through `expose()`, so every use is greppable.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::rng::CryptoRng;

/// Secret bytes of any length (plaintexts of data items, CEKs, share bytes).
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        SecretBytes::new(self.0.to_vec())
    }
}

/// The 32-byte security-domain master key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey(Box<[u8; MasterKey::LEN]>);

impl MasterKey {
    pub const LEN: usize = 32;

    pub fn generate_with_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = Box::new([0u8; Self::LEN]);
        rng.fill_bytes(&mut key[..]);
        MasterKey(key)
    }

    /// Returns `None` unless `bytes` is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Box::new([0u8; Self::LEN]);
        if bytes.len() != Self::LEN {
            return None;
        }
        key.copy_from_slice(bytes);
        Some(MasterKey(key))
    }

    pub fn expose(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

/// A passphrase protecting a custodian's private key.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(text: String) -> Self {
        Passphrase(Zeroizing::new(text))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Clone for Passphrase {
    fn clone(&self) -> Self {
        Passphrase::new(self.0.to_string())
    }
}
