//! Shamir secret sharing over GF(257) and the Azure share encoding (security-domain(5), MASTER KEY AND SHAMIR SHARES).
//!
//! Ours, not the `sharks` crate's: `sharks` works in GF(256), and Azure's
//! shares live in GF(257) with a 16-bit word per secret byte:
//! `word = (x << 9) | v`, little-endian, x in 1..=126, v in 0..=256.

use subtle::{Choice, ConstantTimeEq, ConstantTimeGreater};
use zeroize::{Zeroize, Zeroizing};

use super::rng::CryptoRng;
use super::CryptoError;

pub const PRIME: u32 = 257;
/// x lives in the top 7 bits of a word; the spec allows 1..=126.
pub const MAX_X: u8 = 126;

/// One custodian's share: the same x for every byte position, one field
/// element per secret byte. No `Debug`; wiped on drop.
pub struct Share {
    x: u8,
    values: Zeroizing<Vec<u16>>,
}

impl Share {
    pub fn x(&self) -> u8 {
        self.x
    }

    /// How many secret bytes this share covers.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The wire form: one little-endian word `(x << 9) | v` per byte.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.values.len() * 2));
        for &v in self.values.iter() {
            let word = ((self.x as u16) << 9) | v;
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Parses the wire form strictly: even length, one x throughout,
    /// x in 1..=126, every value at most 256.
    pub fn from_bytes(bytes: &[u8]) -> Result<Share, CryptoError> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
            return Err(CryptoError::ShareMalformed(format!(
                "a share is a whole number of 16-bit words, this one is {} bytes",
                bytes.len()
            )));
        }
        let mut values = Zeroizing::new(Vec::with_capacity(bytes.len() / 2));
        let mut x = None;
        let mut out_of_field = Choice::from(0);
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let mut word = u16::from_le_bytes([pair[0], pair[1]]);
            let wx = (word >> 9) as u8;
            let v = word & 0x1ff;
            word.zeroize();
            match x {
                None => x = Some(wx),
                Some(first) if first != wx => {
                    return Err(CryptoError::ShareMalformed(format!(
                        "word {i} carries x={wx} but the share began with x={first}"
                    )))
                }
                _ => {}
            }
            // Values are secret: checked in constant time, reported after the loop.
            out_of_field |= v.ct_gt(&256);
            values.push(v);
        }
        if bool::from(out_of_field) {
            return Err(CryptoError::ShareMalformed(
                "a word holds a value above the field's 256".into(),
            ));
        }
        let x = x.expect("share is not empty");
        if x == 0 || x > MAX_X {
            return Err(CryptoError::ShareMalformed(format!("x={x} is outside 1..={MAX_X}")));
        }
        Ok(Share { x, values })
    }
}

fn mul(a: u32, b: u32) -> u32 {
    (a * b) % PRIME
}

/// a^(p-2): the inverse of a non-zero element by Fermat.
fn inv(a: u32) -> u32 {
    let (mut base, mut exp, mut acc) = (a % PRIME, PRIME - 2, 1);
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    acc
}

/// A field element drawn uniformly from [0, 256] by rejection sampling.
/// (Biased coefficients were RUSTSEC-2024-0398 in `sharks`.)
pub(crate) fn random_element<R: CryptoRng + ?Sized>(rng: &mut R) -> u32 {
    loop {
        let candidate = rng.next_u32() & 0x1ff;
        if candidate < PRIME {
            return candidate;
        }
    }
}

/// Splits `secret` into `n` shares, any `m` of which rebuild it. Shares get
/// x = 1..=n in order.
pub fn split_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    secret: &[u8],
    n: u8,
    m: u8,
) -> Result<Vec<Share>, CryptoError> {
    if m < 2 || m > n || n > MAX_X {
        return Err(CryptoError::ShamirParams(format!(
            "{m}-of-{n} is not a valid quorum (need 2 <= M <= N <= {MAX_X})"
        )));
    }
    if secret.is_empty() {
        return Err(CryptoError::ShamirParams("the secret is empty".into()));
    }
    let mut shares: Vec<Share> = (1..=n)
        .map(|x| Share {
            x,
            values: Zeroizing::new(Vec::with_capacity(secret.len())),
        })
        .collect();
    let mut coefficients = Zeroizing::new(vec![0u32; m as usize]);
    for &byte in secret {
        coefficients[0] = byte as u32;
        for c in coefficients.iter_mut().skip(1) {
            *c = random_element(rng);
        }
        for share in shares.iter_mut() {
            // Horner's rule at x.
            let x = share.x as u32;
            let v = coefficients.iter().rev().fold(0, |acc, &c| (mul(acc, x) + c) % PRIME);
            share.values.push(v as u16);
        }
    }
    Ok(shares)
}

/// Lagrange interpolation at 0 over all given shares. The caller passes the
/// quorum; extra consistent shares do no harm.
pub fn combine(shares: &[&Share]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let first = shares
        .first()
        .ok_or_else(|| CryptoError::SharesInconsistent("no shares were given".into()))?;
    for (i, a) in shares.iter().enumerate() {
        if a.len() != first.len() {
            return Err(CryptoError::SharesInconsistent(format!(
                "share x={} covers {} bytes but share x={} covers {}",
                a.x,
                a.len(),
                first.x,
                first.len()
            )));
        }
        if shares[..i].iter().any(|b| b.x == a.x) {
            return Err(CryptoError::SharesInconsistent(format!(
                "two shares carry the same x={}",
                a.x
            )));
        }
    }
    // Lagrange basis at 0: l_j = prod_{k != j} x_k / (x_k - x_j). Public values only.
    let basis: Vec<u32> = shares
        .iter()
        .map(|sj| {
            let xj = sj.x as u32;
            shares.iter().filter(|sk| sk.x != sj.x).fold(1, |acc, sk| {
                let xk = sk.x as u32;
                mul(acc, mul(xk, inv((xk + PRIME - xj) % PRIME)))
            })
        })
        .collect();
    let mut secret = Zeroizing::new(Vec::with_capacity(first.len()));
    // The interpolated bytes are the secret: no branch on them until the end.
    let mut not_a_byte = Choice::from(0);
    for pos in 0..first.len() {
        let mut acc = 0u32;
        for (share, &l) in shares.iter().zip(&basis) {
            acc = (acc + mul(share.values[pos] as u32, l)) % PRIME;
        }
        not_a_byte |= acc.ct_eq(&256);
        secret.push(acc as u8);
        acc.zeroize();
    }
    if bool::from(not_a_byte) {
        return Err(CryptoError::SharesInconsistent(
            "a byte interpolates to 256, which no byte can be".into(),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test_rng;
    use proptest::prelude::*;

    fn refs(shares: &[Share]) -> Vec<&Share> {
        shares.iter().collect()
    }

    #[test]
    fn inverse_is_an_inverse() {
        for a in 1..PRIME {
            assert_eq!(mul(a, inv(a)), 1, "a={a}");
        }
    }

    #[test]
    fn wire_encoding_is_little_endian_with_x_on_top() {
        let share = Share {
            x: 3,
            values: Zeroizing::new(vec![0, 256, 0xab]),
        };
        // (3 << 9) | v, little-endian.
        assert_eq!(&share.to_bytes()[..], &[0x00, 0x06, 0x00, 0x07, 0xab, 0x06]);
        let back = Share::from_bytes(&share.to_bytes()).unwrap();
        assert_eq!(back.x(), 3);
        assert_eq!(&back.values[..], &[0, 256, 0xab]);
    }

    #[test]
    fn malformed_shares_are_refused() {
        let word = |x: u16, v: u16| ((x << 9) | v).to_le_bytes();
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![1, 2, 3],
            [word(1, 5), word(2, 5)].concat(),   // two x values
            [word(1, 257), word(1, 0)].concat(), // value above 256
            [word(0, 5), word(0, 6)].concat(),   // x = 0
            [word(127, 5)].concat(),             // x = 127
        ];
        for bytes in cases {
            assert!(Share::from_bytes(&bytes).is_err(), "{bytes:?} accepted");
        }
    }

    #[test]
    fn combine_refuses_inconsistent_sets() {
        let mut rng = test_rng(4);
        let a = split_with_rng(&mut rng, &[1; 32], 3, 2).unwrap();
        let b = split_with_rng(&mut rng, &[1; 16], 3, 2).unwrap();
        assert!(combine(&[&a[0], &b[1]]).is_err(), "different lengths");
        assert!(combine(&[&a[0], &a[0]]).is_err(), "duplicate x");
        assert!(combine(&[]).is_err());
        // Two shares that interpolate to 256 at 0: f(1) = 0, f(2) = 1 gives f(0) = -1 = 256.
        let s1 = Share {
            x: 1,
            values: Zeroizing::new(vec![0]),
        };
        let s2 = Share {
            x: 2,
            values: Zeroizing::new(vec![1]),
        };
        assert!(matches!(combine(&[&s1, &s2]), Err(CryptoError::SharesInconsistent(m)) if m.contains("256")));
    }

    #[test]
    fn weak_parameters_are_refused() {
        let mut rng = test_rng(5);
        assert!(split_with_rng(&mut rng, &[1; 32], 3, 1).is_err());
        assert!(split_with_rng(&mut rng, &[1; 32], 3, 4).is_err());
        assert!(split_with_rng(&mut rng, &[1; 32], 127, 2).is_err());
    }

    /// Every share value f(x) must be uniform over all 257 field elements;
    /// a sampler that never yields 256 or favours small values fails this
    /// chi-square test (256 degrees of freedom, p = 0.001 critical value 330.5).
    #[test]
    fn share_values_are_uniform_over_the_whole_field() {
        let mut rng = test_rng(6);
        let mut counts = [0u32; PRIME as usize];
        let rounds = 257 * 200;
        for _ in 0..rounds / 32 + 1 {
            let shares = split_with_rng(&mut rng, &[0u8; 32], 2, 2).unwrap();
            for &v in shares[0].values.iter() {
                counts[v as usize] += 1;
            }
        }
        let total: u32 = counts.iter().sum();
        let expected = total as f64 / PRIME as f64;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        assert!(counts[256] > 0, "256 never drawn");
        assert!(chi2 < 330.5, "chi-square {chi2} says the coefficients are biased");
    }

    #[test]
    fn random_element_covers_the_field_uniformly() {
        let mut rng = test_rng(7);
        let mut counts = [0u32; PRIME as usize];
        for _ in 0..257 * 400 {
            counts[random_element(&mut rng) as usize] += 1;
        }
        let expected = 400.0;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        assert!(chi2 < 330.5, "chi-square {chi2}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// For N up to 10 and every M <= N: any M shares rebuild the secret;
        /// M - 1 shares do not.
        #[test]
        fn any_quorum_rebuilds_and_fewer_do_not(
            secret in proptest::collection::vec(any::<u8>(), 32),
            n in 2u8..=10,
            m_seed in any::<u8>(),
            pick_seed in any::<u64>(),
        ) {
            let m = 2 + m_seed % (n - 1);
            let mut rng = test_rng(pick_seed);
            let shares = split_with_rng(&mut rng, &secret, n, m).unwrap();
            // A pseudo-random subset of size m from the seed.
            let mut order: Vec<usize> = (0..n as usize).collect();
            let mut s = pick_seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let all = refs(&shares);
            let chosen: Vec<&Share> = order[..m as usize].iter().map(|&i| all[i]).collect();
            prop_assert_eq!(&combine(&chosen).unwrap()[..], &secret[..]);
            let too_few = &chosen[..m as usize - 1];
            if !too_few.is_empty() {
                if let Ok(guess) = combine(too_few) {
                    prop_assert_ne!(&guess[..], &secret[..]);
                }
            }
        }
    }

    #[test]
    fn every_quorum_of_every_size_up_to_ten() {
        let mut rng = test_rng(8);
        let secret: Vec<u8> = (0..32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 2u8..=10 {
            for m in 2..=n {
                let shares = split_with_rng(&mut rng, &secret, n, m).unwrap();
                let all = refs(&shares);
                // Every window of m consecutive shares (cyclic) is a quorum.
                for start in 0..n as usize {
                    let chosen: Vec<&Share> = (0..m as usize).map(|k| all[(start + k) % n as usize]).collect();
                    assert_eq!(&combine(&chosen).unwrap()[..], &secret[..], "{m}-of-{n} from {start}");
                }
            }
        }
    }
}
