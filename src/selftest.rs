//! Known-answer tests of the primitives a ceremony depends on, for
//! `hsm-ceremony self-test` on the ceremony laptop: a miscompiled binary, a
//! broken CPU feature or a dead RNG shows here, before a share is touched.
//!
//! Each test runs the project's own code path (not a second implementation)
//! against answers from outside it: the RFC's vector, OpenSSL's ciphertext
//! and encrypted key (fixtures/selftest/), hand-computed Shamir shares.

use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha256};

use crate::crypto::jwe::{Alg, KeyUnwrapper};
use crate::crypto::secret::Passphrase;
use crate::crypto::{cbc_hs512, kdf, shamir};
use crate::custodian::key::KeyFile;

/// One known-answer test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kat {
    Sp800108Kdf,
    A256CbcHs512,
    RsaOaep256,
    ShamirGf257,
    Pkcs8Pbes2,
    OsRng,
}

impl Kat {
    pub const ALL: [Kat; 6] = [
        Kat::Sp800108Kdf,
        Kat::A256CbcHs512,
        Kat::RsaOaep256,
        Kat::ShamirGf257,
        Kat::Pkcs8Pbes2,
        Kat::OsRng,
    ];

    /// A short stable name (what `self-test` prints first on each line).
    pub fn id(self) -> &'static str {
        match self {
            Kat::Sp800108Kdf => "sp800-108-kdf",
            Kat::A256CbcHs512 => "a256cbc-hs512",
            Kat::RsaOaep256 => "rsa-oaep-256",
            Kat::ShamirGf257 => "shamir-gf257",
            Kat::Pkcs8Pbes2 => "pkcs8-pbes2",
            Kat::OsRng => "os-rng",
        }
    }

    /// What is tested, against which answer.
    pub fn describe(self) -> &'static str {
        match self {
            Kat::Sp800108Kdf => "SP 800-108 counter-mode KDF with HMAC-SHA-512, security-domain(5) vector",
            Kat::A256CbcHs512 => "A256CBC-HS512 encrypt and decrypt, RFC 7518 appendix B.3",
            Kat::RsaOaep256 => "RSA-OAEP-256 decrypt of an OpenSSL ciphertext (fixed 2048-bit test key)",
            Kat::ShamirGf257 => "Shamir GF(257) split of a fixed polynomial and combine of two quorums",
            Kat::Pkcs8Pbes2 => "PKCS#8 PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) decrypt of an OpenSSL key",
            Kat::OsRng => "the operating system's random number generator delivers",
        }
    }

    /// The known answer, as hex (or text for the RNG, which has none).
    fn answer(self) -> &'static str {
        match self {
            Kat::Sp800108Kdf => KDF_ANSWER,
            Kat::A256CbcHs512 => CBC_ANSWER,
            Kat::RsaOaep256 => OAEP_ANSWER,
            Kat::ShamirGf257 => SHAMIR_ANSWER,
            Kat::Pkcs8Pbes2 => PBES2_ANSWER,
            Kat::OsRng => "",
        }
    }
}

/// Why a known-answer test failed. The values compared are public test
/// vectors: nothing secret is in a failure.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KatFailure {
    #[error("the result differs from the known answer")]
    Mismatch,
    #[error("{0}")]
    Failed(String),
}

pub struct KatResult {
    pub kat: Kat,
    pub outcome: Result<(), KatFailure>,
}

/// Runs every known-answer test, in [`Kat::ALL`]'s order; none stops the others.
pub fn run_all() -> Vec<KatResult> {
    Kat::ALL
        .iter()
        .map(|&kat| {
            let outcome = if kat == Kat::OsRng {
                check_rng(|buf| {
                    getrandom::fill(buf).map_err(|e| e.to_string())?;
                    if corrupted(kat) {
                        buf.fill(0);
                    }
                    Ok(())
                })
            } else if corrupted(kat) {
                check(kat, &flipped(kat.answer()))
            } else {
                check(kat, kat.answer())
            };
            KatResult { kat, outcome }
        })
        .collect()
}

/// Test hook: `HSM_CEREMONY_SELFTEST_CORRUPT=<id>` changes that test's
/// known answer (the RNG's: its output is zeroed), so the integration tests
/// can see a failing self-test exit non-zero. Only with `test-hooks`: a
/// release build has neither the hook nor the variable's name.
#[cfg(feature = "test-hooks")]
fn corrupted(kat: Kat) -> bool {
    std::env::var_os("HSM_CEREMONY_SELFTEST_CORRUPT").is_some_and(|v| v == kat.id())
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
fn corrupted(_kat: Kat) -> bool {
    false
}

/// `answer` with its first hex digit changed.
fn flipped(answer: &str) -> String {
    let mut chars: Vec<char> = answer.chars().collect();
    chars[0] = if chars[0] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

fn check(kat: Kat, answer: &str) -> Result<(), KatFailure> {
    let got = match kat {
        Kat::Sp800108Kdf => hex::encode(&*kdf::sp108_kdf(&[0x41; 32], b"label", b"context", 256)),
        Kat::A256CbcHs512 => cbc_hs512_result()?,
        Kat::RsaOaep256 => oaep_result()?,
        Kat::ShamirGf257 => shamir_result()?,
        Kat::Pkcs8Pbes2 => pbes2_result()?,
        Kat::OsRng => return Err(KatFailure::Failed("the RNG has no known answer".into())),
    };
    if got == answer {
        Ok(())
    } else {
        Err(KatFailure::Mismatch)
    }
}

/// security-domain(5), KDF: K = 0x41 × 32, Label "label", Context "context", L = 256.
const KDF_ANSWER: &str = "f0ca51f6308791404bf68b56024ee7c64d6c737716f81d47e1e68b5c4e399575";

/// RFC 7518 B.3: the ciphertext, then the tag.
const CBC_ANSWER: &str = "4affaaadb78c31c5da4b1b590d10ffbd3dd8d5d302423526912da037ecbcc7bd\
                          822c301dd67c373bccb584ad3e9279c2e6d12a1374b77f077553df829410446b\
                          36ebd97066296ae6427ea75c2e0846a11a09ccf5370dc80bfecbad28c73f09b3\
                          a3b75e662a2594410ae496b2e2e6609e31e6e02cc837f053d21f37ff4f51950b\
                          be2638d09dd7a4930930806d0703b1f6\
                          4dd3b4c088a7f45c216839645b2012bf2e6269a8c56a816dbc1b267761955bc5";

fn cbc_hs512_result() -> Result<String, KatFailure> {
    let key: [u8; 64] = std::array::from_fn(|i| i as u8);
    let iv: [u8; 16] = hex16("1af38c2dc2b96ffdd86694092341bc04");
    let pt = b"A cipher system must not be required to be secret, and it must be able to fall \
               into the hands of the enemy without inconvenience";
    let aad = b"The second principle of Auguste Kerckhoffs";
    let (ct, tag) = cbc_hs512::encrypt(&key, &iv, aad, pt);
    let back = cbc_hs512::decrypt(&key, &iv, aad, &ct, &tag).map_err(|e| KatFailure::Failed(e.to_string()))?;
    if back.expose() != &pt[..] {
        return Err(KatFailure::Failed("decryption did not give back the plaintext".into()));
    }
    Ok(format!("{}{}", hex::encode(&ct), hex::encode(tag)))
}

fn hex16(text: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    hex::decode_to_slice(text, &mut out).expect("a 32-digit constant");
    out
}

/// A 2048-bit RSA key made for this test and published with it: it protects nothing.
const KAT_KEY: &str = include_str!("../fixtures/selftest/kat-key.pem");
/// `openssl pkeyutl -encrypt` of [`OAEP_ANSWER`] to [`KAT_KEY`], OAEP with SHA-256 and MGF1-SHA-256.
const KAT_OAEP_CIPHERTEXT: &[u8] = include_bytes!("../fixtures/selftest/kat-oaep256.bin");
/// "hsm-ceremony self-test: 32 bytes".
const OAEP_ANSWER: &str = "68736d2d636572656d6f6e792073656c662d746573743a203332206279746573";

fn oaep_result() -> Result<String, KatFailure> {
    let key = KeyFile::parse(KAT_KEY.as_bytes())
        .and_then(|k| k.into_key(None))
        .map_err(|e| KatFailure::Failed(format!("the test key does not load: {e}")))?;
    let plain = key
        .unwrap_cek(Alg::RsaOaep256, KAT_OAEP_CIPHERTEXT)
        .map_err(|e| KatFailure::Failed(e.to_string()))?;
    Ok(hex::encode(plain.expose()))
}

/// [`KAT_KEY`] as `openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -iter 10000` wrote it.
const KAT_KEY_PBES2: &str = include_str!("../fixtures/selftest/kat-key-pbes2.pem");
const KAT_PASSPHRASE: &str = "self-test passphrase";
/// SHA-256 of the key's PKCS#1 DER (`openssl rsa -in kat-key.pem -traditional -outform DER | sha256sum`).
const PBES2_ANSWER: &str = "361a1f0b5929f16459c06cd62399a09df67ecc456eec7a08e7279251def7ba29";

fn pbes2_result() -> Result<String, KatFailure> {
    use pkcs1::EncodeRsaPrivateKey;
    let pass = Passphrase::new(KAT_PASSPHRASE.into());
    let key = KeyFile::parse(KAT_KEY_PBES2.as_bytes())
        .and_then(|k| k.into_key(Some(&pass)))
        .map_err(|e| KatFailure::Failed(e.to_string()))?;
    let der = key.to_pkcs1_der().map_err(|e| KatFailure::Failed(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(der.as_bytes())))
}

/// The secret 00 5a ff 80 split 3-of-5 with, per byte, the polynomials
/// s + x + 2x², s + 256x + 256x², s + x², s + 17x (mod 257). The stream
/// carries one out-of-field draw (511), which must be skipped, and share
/// x=1 holds the value 256, which only GF(257) has. The answer, computed
/// by hand: each share's wire form, comma-separated.
const SHAMIR_SECRET: [u8; 4] = [0x00, 0x5a, 0xff, 0x80];
const SHAMIR_DRAWS: [u32; 9] = [1, 2, 511, 256, 256, 0, 1, 17, 0];
const SHAMIR_ANSWER: &str = "0302580200039102,0a0454040204a204,15064e060706b306,240846080e08c408,370a3c0a170ad50a";

fn shamir_result() -> Result<String, KatFailure> {
    let mut rng = FixedDraws(SHAMIR_DRAWS.iter());
    let shares =
        shamir::split_with_rng(&mut rng, &SHAMIR_SECRET, 5, 3).map_err(|e| KatFailure::Failed(e.to_string()))?;
    if rng.0.next().is_some() {
        return Err(KatFailure::Failed(
            "the split drew fewer coefficients than the polynomial has".into(),
        ));
    }
    for quorum in [[0, 2, 4], [3, 1, 0]] {
        let picked: Vec<&shamir::Share> = quorum.iter().map(|&i| &shares[i]).collect();
        let secret = shamir::combine(&picked).map_err(|e| KatFailure::Failed(e.to_string()))?;
        if secret[..] != SHAMIR_SECRET {
            return Err(KatFailure::Failed(
                "combining a quorum did not give back the secret".into(),
            ));
        }
    }
    Ok(shares
        .iter()
        .map(|s| hex::encode(&*s.to_bytes()))
        .collect::<Vec<_>>()
        .join(","))
}

/// Hands out the fixed coefficients, so the split's polynomial is known.
/// It claims to be a crypto RNG only because `split_with_rng` asks for one;
/// it never leaves this module.
struct FixedDraws<'a>(std::slice::Iter<'a, u32>);

impl TryRng for FixedDraws<'_> {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        // Past the end, 0: a split that draws more coefficients than the
        // polynomial has then gives another answer.
        Ok(self.0.next().copied().unwrap_or(0))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(u64::from(self.try_next_u32()?))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for b in dst {
            *b = self.try_next_u32()? as u8;
        }
        Ok(())
    }
}

impl TryCryptoRng for FixedDraws<'_> {}

/// Two 32-byte draws: both succeed, neither is one repeated byte, and they differ.
fn check_rng(mut draw: impl FnMut(&mut [u8]) -> Result<(), String>) -> Result<(), KatFailure> {
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    draw(&mut a).map_err(KatFailure::Failed)?;
    draw(&mut b).map_err(KatFailure::Failed)?;
    let constant = |d: &[u8; 32]| d.iter().all(|&x| x == d[0]);
    if constant(&a) || constant(&b) || a == b {
        return Err(KatFailure::Failed(
            "the operating system's RNG returned constant or repeated output".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_answer_test_passes() {
        for r in run_all() {
            assert_eq!(r.outcome, Ok(()), "{}", r.kat.id());
        }
    }

    /// A test that cannot fail proves nothing: each one refuses its answer
    /// with any single hex digit changed.
    #[test]
    fn each_known_answer_test_fails_on_a_changed_answer() {
        for kat in Kat::ALL.into_iter().filter(|&k| k != Kat::OsRng) {
            let answer = kat.answer();
            for i in [0, answer.len() / 2, answer.len() - 1] {
                let mut bad: Vec<char> = answer.chars().collect();
                bad[i] = if bad[i] == 'a' { 'b' } else { 'a' };
                let bad: String = bad.into_iter().collect();
                assert_eq!(check(kat, &bad), Err(KatFailure::Mismatch), "{} at digit {i}", kat.id());
            }
            assert_eq!(check(kat, &flipped(answer)), Err(KatFailure::Mismatch), "{}", kat.id());
        }
    }

    #[test]
    fn a_stuck_or_failing_rng_fails() {
        assert!(check_rng(|b| {
            b.fill(7);
            Ok(())
        })
        .is_err());
        let mut n = 0u8;
        // Each draw varies, but both draws are the same.
        assert!(check_rng(|b| {
            b.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
            n += 1;
            Ok(())
        })
        .is_err());
        assert_eq!(n, 2);
        assert_eq!(
            check_rng(|_| Err("no entropy".into())),
            Err(KatFailure::Failed("no entropy".into()))
        );
        assert_eq!(check_rng(|b| getrandom::fill(b).map_err(|e| e.to_string())), Ok(()));
    }

    /// The ids are what an operator types to a test hook and reads in the
    /// output: distinct.
    #[test]
    fn ids_are_distinct() {
        for (i, a) in Kat::ALL.iter().enumerate() {
            assert!(Kat::ALL[..i].iter().all(|b| b.id() != a.id()));
        }
    }
}
