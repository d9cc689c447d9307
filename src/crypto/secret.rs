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

impl SecretBytes {
    /// A second copy, made on purpose: not `Clone`, so no copy of a secret
    /// is made by a derive or a stray `.clone()`.
    pub fn duplicate(&self) -> Self {
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

impl Passphrase {
    /// A second copy, made on purpose (see [`SecretBytes::duplicate`]).
    pub fn duplicate(&self) -> Self {
        Passphrase::new(self.0.to_string())
    }
}

/// A bearer token: issued by the emulator, read from a token file or the
/// environment, sent by the instance client. It opens an HSM as surely as a
/// key does, so it is wiped on drop, not `Clone`, and its `Debug` (which the
/// structs holding it need) shows no part of it.
pub struct BearerToken(Zeroizing<String>);

impl BearerToken {
    pub fn new(text: impl Into<Zeroizing<String>>) -> Self {
        BearerToken(text.into())
    }

    /// The token's text, for the places that send it or hand it to its holder.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Gives the token to the caller as a plain `String`, who then answers for it.
    pub fn reveal(mut self) -> String {
        std::mem::take(&mut *self.0)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(redacted)")
    }
}

/// Compile-time proof that the secret wrappers are neither `Clone` nor
/// `Debug`: naming `Probe::<_>::ITEM` is ambiguous for a type that has the
/// trait, so adding a derive breaks the build here. (The emulator pins its
/// own secrets with the same probes.)
#[allow(dead_code)]
pub(crate) mod not_clone_nor_debug {
    use super::{BearerToken, MasterKey, Passphrase, SecretBytes};

    pub(crate) trait IfClone<A> {
        const ITEM: () = ();
    }
    impl<T: ?Sized> IfClone<()> for T {}
    impl<T: Clone> IfClone<u8> for T {}

    pub(crate) trait IfDebug<A> {
        const ITEM: () = ();
    }
    impl<T: ?Sized> IfDebug<()> for T {}
    impl<T: ?Sized + std::fmt::Debug> IfDebug<u8> for T {}

    const _: () = <SecretBytes as IfClone<_>>::ITEM;
    const _: () = <Passphrase as IfClone<_>>::ITEM;
    const _: () = <MasterKey as IfClone<_>>::ITEM;
    const _: () = <BearerToken as IfClone<_>>::ITEM;
    const _: () = <SecretBytes as IfDebug<_>>::ITEM;
    const _: () = <Passphrase as IfDebug<_>>::ITEM;
    const _: () = <MasterKey as IfDebug<_>>::ITEM;
}

#[cfg(test)]
mod tests {
    use super::BearerToken;

    #[test]
    fn a_bearer_token_is_never_shown_by_debug() {
        let token = BearerToken::new("hsmemu_s3cret".to_string());
        let shown = format!("{token:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(token.expose(), "hsmemu_s3cret");
        assert!(BearerToken::new(String::new()).is_empty());
    }
}
