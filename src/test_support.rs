//! Deterministic randomness and RSA custodians shared by the unit tests
//! (RSA generation is the slow part, so it happens once per test binary).

use std::sync::OnceLock;

use rand::SeedableRng;
use time::OffsetDateTime;

use crate::custodian::cert::Certificate;
use crate::custodian::keygen;

pub fn test_rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub struct TestCustodian {
    pub name: String,
    pub key: rsa::PrivateKey,
    pub cert: Certificate,
}

/// Five 2048-bit custodians, the same on every run.
pub fn custodians() -> &'static [TestCustodian] {
    static CELL: OnceLock<Vec<TestCustodian>> = OnceLock::new();
    CELL.get_or_init(|| {
        let now = OffsetDateTime::now_utc();
        (0..5)
            .map(|i| {
                let mut rng = test_rng(1000 + i);
                let key = keygen::generate_key_with_rng(&mut rng, 2048).unwrap();
                let name = format!("custodian{i}");
                let cert = keygen::self_signed_certificate_with_rng(&mut rng, &key, &name, 365, now).unwrap();
                TestCustodian { name, key, cert }
            })
            .collect()
    })
}

pub fn rsa_2048() -> &'static rsa::PrivateKey {
    &custodians()[0].key
}

/// The same RSA modulus as `key` under another public exponent (the first
/// odd one from 3 that is coprime to φ(n)): one person's second identity.
pub fn twin_key(key: &rsa::PrivateKey) -> rsa::PrivateKey {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let p: rsa::BoxedUint = key.primes()[0].as_ref().clone();
    let q: rsa::BoxedUint = key.primes()[1].as_ref().clone();
    (3u64..)
        .step_by(2)
        .find_map(|e| rsa::PrivateKey::from_p_q(p.clone(), q.clone(), rsa::BoxedUint::from(e)).ok())
        .filter(|twin| twin.n() == key.n() && twin.e() != key.e())
        .expect("some small odd exponent is coprime to φ(n)")
}

/// A self-signed certificate of [`twin_key`]`(key)`.
pub fn twin_certificate(key: &rsa::PrivateKey) -> Certificate {
    let twin = twin_key(key);
    keygen::self_signed_certificate_with_rng(&mut test_rng(77), &twin, "twin", 365, OffsetDateTime::now_utc()).unwrap()
}
