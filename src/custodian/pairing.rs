//! Which certificate goes with which key: the one holding the key's public half, never the one whose file name looks right.

use super::cert::Certificate;

/// Certificates given to pair keys with (`--cert`), each with its label.
#[derive(Clone, Debug, Default)]
pub struct CertPool {
    certs: Vec<(String, Certificate)>,
}

impl CertPool {
    pub fn new(certs: Vec<(String, Certificate)>) -> Self {
        CertPool { certs }
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub fn certificates(&self) -> &[(String, Certificate)] {
        &self.certs
    }

    /// The first certificate whose key is `public`.
    pub fn find(&self, public: &rsa::PublicKey) -> Option<(String, Certificate)> {
        self.certs.iter().find(|(_, c)| c.matches(public)).cloned()
    }
}

/// A certificate kept with a key: the `.cer` beside a key file (which must
/// then be the key's own) or the one stored on a token with the key.
pub struct Beside {
    pub label: String,
    pub cert: Certificate,
    /// A `.cer` beside a key file names the key it belongs to; a token's is
    /// found by the key's id or label and taken as it is.
    pub must_match: bool,
}

/// The outcome of pairing one key.
#[derive(Debug)]
pub enum Paired {
    /// The key's certificate, by its label.
    Known(String, Certificate),
    /// No certificate is known: the share is found by trial.
    Unknown,
    /// The `.cer` kept beside the key is another key's.
    BesideDiffers { cert: String },
}

/// Pairs the key `public`: the first of `pool` whose key it is, else what
/// `beside` finds (asked only then, since reading it can fail).
pub fn pair<E>(
    pool: &CertPool,
    public: &rsa::PublicKey,
    beside: impl FnOnce() -> Result<Option<Beside>, E>,
) -> Result<Paired, E> {
    if let Some((label, cert)) = pool.find(public) {
        return Ok(Paired::Known(label, cert));
    }
    Ok(match beside()? {
        Some(b) if b.must_match && !b.cert.matches(public) => Paired::BesideDiffers { cert: b.label },
        Some(b) => Paired::Known(b.label, b.cert),
        None => Paired::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::custodians;

    fn public(i: usize) -> rsa::PublicKey {
        custodians()[i].key.to_public_key()
    }

    fn beside(i: usize, must_match: bool) -> Result<Option<Beside>, ()> {
        Ok(Some(Beside {
            label: format!("c{i}.cer"),
            cert: custodians()[i].cert.clone(),
            must_match,
        }))
    }

    #[test]
    fn a_key_pairs_by_its_public_key_not_by_order_or_name() {
        let c = custodians();
        let pool = CertPool::new(vec![
            ("a.cer".into(), c[1].cert.clone()),
            ("b.cer".into(), c[0].cert.clone()),
        ]);
        // The pool wins and the .cer beside is never read.
        let p = pair(&pool, &public(0), || -> Result<Option<Beside>, ()> { panic!("read") }).unwrap();
        assert!(matches!(p, Paired::Known(ref l, _) if l == "b.cer"), "{p:?}");
        // Not in the pool: the .cer beside, which must be the key's own.
        assert!(
            matches!(pair(&pool, &public(2), || beside(2, true)).unwrap(), Paired::Known(ref l, _) if l == "c2.cer")
        );
        assert!(
            matches!(pair(&pool, &public(2), || beside(3, true)).unwrap(), Paired::BesideDiffers { ref cert } if cert == "c3.cer")
        );
        // A token's stored certificate is taken as found; none at all is Unknown.
        assert!(matches!(
            pair(&pool, &public(2), || beside(3, false)).unwrap(),
            Paired::Known(..)
        ));
        assert!(matches!(
            pair(&pool, &public(2), || Ok::<_, ()>(None)).unwrap(),
            Paired::Unknown
        ));
    }
}
