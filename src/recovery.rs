//! The recovery engine: open custodians' shares, rebuild the master key,
//! open the data items, and re-encrypt them — for a target instance (the
//! restore blob, spec §6) or for a new custodian set (split, rotate).
//!
//! The master key lives only in a [`MasterKey`] (wiped on drop); shares only
//! in [`Share`]s. Nothing here writes files.

use sha2::Sha256;

use crate::crypto::jwe::{self, CompactJwe, KeyUnwrapper};
use crate::crypto::kdf::sp108_kdf;
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::{MasterKey, SecretBytes};
use crate::crypto::shamir::{self, Share};
use crate::crypto::CryptoError;
use crate::custodian::cert::Certificate;
use crate::error::{CertCause, CertProblem, Error, Result};
use crate::format::limits::{self, Profile};
use crate::format::restore_blob::{RestoreBlob, WrappedKey};
use crate::format::sdfile::{self, DataItem, EncData, EncShare, SecurityDomain, SharedKeys};

/// One data item in the clear: its tag and opaque contents.
pub struct PlainItem {
    pub tag: String,
    pub plaintext: SecretBytes,
}

/// A custodian's private key with what names it, and optionally the
/// certificate that pairs it with its share.
pub struct CustodianKey {
    /// The key file path or token URI, for messages.
    pub label: String,
    pub unwrapper: Box<dyn KeyUnwrapper>,
    pub public_key: rsa::PublicKey,
    pub cert: Option<(String, Certificate)>,
}

impl CustodianKey {
    pub fn from_rsa(label: impl Into<String>, key: rsa::PrivateKey, cert: Option<(String, Certificate)>) -> Self {
        let public_key = key.to_public_key();
        CustodianKey {
            label: label.into(),
            unwrapper: Box::new(key),
            public_key,
            cert,
        }
    }

    /// The name used in messages: the certificate when there is one.
    pub fn who(&self) -> String {
        match &self.cert {
            Some((label, _)) => format!("{} (certificate {label})", self.label),
            None => self.label.clone(),
        }
    }
}

/// A share that opened, with the custodian it belongs to.
pub struct OpenedShare {
    /// 0-based position in `enc_shares`.
    pub index: usize,
    pub x5t_256: String,
    pub who: String,
    share: Share,
    /// The key that opened it: one key counts once, whatever its certificates.
    opened_by: rsa::PublicKey,
}

impl OpenedShare {
    pub fn x(&self) -> u8 {
        self.share.x()
    }
}

/// Opens one custodian's share: the one named by their certificate, or, with
/// no certificate, the one their key unwraps.
pub fn open_share(sd: &SecurityDomain, ck: &CustodianKey) -> Result<OpenedShare> {
    match &ck.cert {
        Some((cert_label, cert)) => {
            if !cert.matches(&ck.public_key) {
                return Err(Error::KeyCertMismatch {
                    key: ck.label.clone(),
                    cert: cert_label.clone(),
                });
            }
            let x5t = cert.x5t_256();
            let index = sd.share_index(&x5t).ok_or_else(|| Error::CertNotInSd {
                cert: cert_label.clone(),
                x5t_256: x5t.clone(),
            })?;
            let jwe = sd.share_jwe(index).map_err(|e| Error::Crypto(e.to_string()))?;
            let bytes = jwe.decrypt_with(ck.unwrapper.as_ref()).map_err(|source| match source {
                CryptoError::Token(why) => Error::Crypto(why),
                source => Error::ShareIntegrity { who: ck.who(), source },
            })?;
            finish_share(sd, index, ck, &bytes)
        }
        None => {
            for index in 0..sd.share_count() {
                let jwe = sd.share_jwe(index).map_err(|e| Error::Crypto(e.to_string()))?;
                let cek = match ck.unwrapper.unwrap_cek(jwe.alg, &jwe.encrypted_key) {
                    Ok(cek) => cek,
                    // A token that cannot do the unwrap at all would fail every share alike.
                    Err(CryptoError::Token(why)) => return Err(Error::Crypto(why)),
                    // OAEP fails for every share that is not this key's.
                    Err(_) => continue,
                };
                let bytes = jwe
                    .decrypt_with_key(cek.expose())
                    .map_err(|source| Error::ShareIntegrity { who: ck.who(), source })?;
                return finish_share(sd, index, ck, &bytes);
            }
            Err(Error::KeyOpensNoShare {
                key: ck.label.clone(),
                shares: sd.share_count(),
            })
        }
    }
}

fn finish_share(sd: &SecurityDomain, index: usize, ck: &CustodianKey, bytes: &SecretBytes) -> Result<OpenedShare> {
    let share = Share::from_bytes(bytes.expose()).map_err(|source| Error::ShareIntegrity { who: ck.who(), source })?;
    if share.len() != MasterKey::LEN {
        return Err(Error::ShareIntegrity {
            who: ck.who(),
            source: CryptoError::ShareMalformed(format!(
                "it covers {} bytes, a master key has {}",
                share.len(),
                MasterKey::LEN
            )),
        });
    }
    let x5t_256 = sd.shared_keys.enc_shares[index].x5t_256.clone();
    Ok(OpenedShare {
        index,
        x5t_256,
        who: ck.who(),
        share,
        opened_by: ck.public_key.clone(),
    })
}

/// Collects opened shares until the quorum is met, remembering why other
/// custodians could not contribute.
pub struct Quorum<'a> {
    sd: &'a SecurityDomain,
    opened: Vec<OpenedShare>,
    failures: Vec<String>,
}

/// What a quorum recovers: the master key and the data items it opens.
pub struct Recovered {
    pub master_key: MasterKey,
    pub items: Vec<PlainItem>,
    /// Who took part, by certificate thumbprint and label.
    pub custodians: Vec<(String, String)>,
}

impl<'a> Quorum<'a> {
    pub fn new(sd: &'a SecurityDomain) -> Self {
        Quorum {
            sd,
            opened: Vec::new(),
            failures: Vec::new(),
        }
    }

    pub fn needed(&self) -> usize {
        self.sd.required()
    }

    pub fn is_met(&self) -> bool {
        self.opened.len() >= self.needed()
    }

    pub fn opened(&self) -> &[OpenedShare] {
        &self.opened
    }

    /// Opens `ck`'s share and counts it. On error, the caller decides whether
    /// to record it with [`Quorum::record_failure`] and go on.
    pub fn add(&mut self, ck: &CustodianKey) -> Result<&OpenedShare> {
        let opened = open_share(self.sd, ck)?;
        if self
            .opened
            .iter()
            .any(|o| o.index == opened.index || o.opened_by == opened.opened_by)
        {
            return Err(Error::DuplicateCustodian { who: ck.who() });
        }
        self.opened.push(opened);
        Ok(self.opened.last().expect("just pushed"))
    }

    pub fn record_failure(&mut self, err: &Error) {
        self.failures.push(err.to_string());
    }

    /// Rebuilds the master key from exactly the quorum and proves it by
    /// opening every data item.
    pub fn finish(self) -> Result<Recovered> {
        if !self.is_met() {
            return Err(Error::NotEnoughShares {
                opened: self.opened.iter().map(|o| o.who.clone()).collect(),
                needed: self.needed(),
                failures: self.failures,
            });
        }
        let chosen: Vec<&Share> = self.opened.iter().take(self.needed()).map(|o| &o.share).collect();
        let secret = shamir::combine(&chosen).map_err(|e| Error::SharesInconsistent { reason: e.to_string() })?;
        let master_key = MasterKey::from_slice(&secret).expect("shares were checked to cover 32 bytes");
        let items = decrypt_items(&self.sd.enc_data, &master_key).map_err(|e| match e {
            // A wrong master key from well-formed shares means a share was replaced.
            Error::ItemIntegrity { tag, .. } => Error::SharesInconsistent {
                reason: format!(
                    "the rebuilt master key does not open data item '{tag}'; one of the shares opened is not from this security domain"
                ),
            },
            other => other,
        })?;
        let custodians = self
            .opened
            .iter()
            .take(self.needed())
            .map(|o| (o.x5t_256.clone(), o.who.clone()))
            .collect();
        Ok(Recovered {
            master_key,
            items,
            custodians,
        })
    }
}

/// Refuses, before any secret is asked, a certificate that has no share in
/// `sd`: a custodian brought for the wrong security domain.
pub fn check_certs_have_shares(sd: &SecurityDomain, certs: &[(String, Certificate)]) -> Result<()> {
    match certs.iter().find(|(_, c)| sd.share_index(&c.x5t_256()).is_none()) {
        Some((label, c)) => Err(Error::CertNotInSd {
            cert: label.clone(),
            x5t_256: c.x5t_256(),
        }),
        None => Ok(()),
    }
}

/// What happened while a quorum was gathered, for the caller to report.
#[derive(Debug)]
pub enum GatherEvent<'e> {
    /// Key `index` opened the share `x` of custodian `who`; `opened` of
    /// `needed` shares are now open.
    Opened {
        x: u8,
        who: String,
        opened: usize,
        needed: usize,
    },
    /// Key `index` could not contribute; the next key is tried.
    Skipped { index: usize, error: &'e Error },
    /// The quorum is met before `remaining` keys were tried; they are not opened.
    Met { remaining: usize },
}

/// Whether a key's failure is the operator's to fix rather than a custodian
/// to skip: files set up wrongly (an exposed key, a key and .cer that differ,
/// a certificate given where its key belongs) would make "bring more
/// custodians" mislead.
pub fn aborts_gathering(err: &Error) -> bool {
    matches!(
        err,
        Error::Usage(_)
            | Error::KeyFileExposed { .. }
            | Error::SecretFileExposed { .. }
            | Error::KeyCertMismatch { .. }
            | Error::Key {
                source: crate::custodian::CustodianError::CertificateNotKey,
                ..
            }
    )
}

/// Opens keys `0..keys` in order through `open` (which does any asking)
/// until `sd`'s quorum is met, then rebuilds the master key. A key that
/// cannot contribute is reported through `progress` and skipped, unless
/// [`aborts_gathering`] says the operator must fix it first.
pub fn gather_quorum(
    sd: &SecurityDomain,
    keys: usize,
    mut open: impl FnMut(usize) -> Result<CustodianKey>,
    mut progress: impl FnMut(GatherEvent<'_>),
) -> Result<Recovered> {
    let mut quorum = Quorum::new(sd);
    for index in 0..keys {
        if quorum.is_met() {
            progress(GatherEvent::Met {
                remaining: keys - index,
            });
            break;
        }
        match open(index).and_then(|ck| quorum.add(&ck).map(|o| (o.x(), o.who.clone()))) {
            Ok((x, who)) => progress(GatherEvent::Opened {
                x,
                who,
                opened: quorum.opened().len(),
                needed: quorum.needed(),
            }),
            Err(e) if aborts_gathering(&e) => return Err(e),
            Err(e) => {
                progress(GatherEvent::Skipped { index, error: &e });
                quorum.record_failure(&e);
            }
        }
    }
    quorum.finish()
}

/// The 64-byte content key of an item: `KDF(master, label = tag, "", 512)`.
fn item_key(master: &MasterKey, tag: &str) -> zeroize::Zeroizing<[u8; 64]> {
    let k = sp108_kdf(master.expose(), tag.as_bytes(), b"", 512);
    let mut out = zeroize::Zeroizing::new([0u8; 64]);
    out.copy_from_slice(&k);
    out
}

/// Opens every data item under `master`.
pub fn decrypt_items(enc_data: &EncData, master: &MasterKey) -> Result<Vec<PlainItem>> {
    enc_data
        .data
        .iter()
        .map(|item| {
            let jwe = sdfile::item_jwe(item).map_err(|e| Error::Crypto(e.to_string()))?;
            let plaintext = jwe
                .decrypt_with_key(&item_key(master, &item.tag)[..])
                .map_err(|source| Error::ItemIntegrity {
                    tag: item.tag.clone(),
                    source,
                })?;
            Ok(PlainItem {
                tag: item.tag.clone(),
                plaintext,
            })
        })
        .collect()
}

/// Encrypts items under `master`, same tags and order, fresh IVs.
pub fn encrypt_items_with_rng<R: CryptoRng + ?Sized>(rng: &mut R, items: &[PlainItem], master: &MasterKey) -> EncData {
    EncData {
        data: items
            .iter()
            .map(|item| DataItem {
                compact_jwe: jwe::encrypt_dir_with_rng(
                    rng,
                    &item_key(master, &item.tag),
                    &item.tag,
                    item.plaintext.expose(),
                ),
                tag: item.tag.clone(),
            })
            .collect(),
        kdf: sdfile::KDF.into(),
    }
}

/// Random contents with the real tags and realistic sizes (for local
/// instances and rehearsals): ciphertexts of 8192, 880 and 2960 bytes.
pub fn random_items_with_rng<R: CryptoRng + ?Sized>(rng: &mut R) -> Vec<PlainItem> {
    sdfile::REAL_ITEMS
        .iter()
        .map(|(tag, ct_len)| {
            // PKCS#7 always adds 1..=16 bytes; a full block of padding keeps the size exact.
            let mut bytes = vec![0u8; ct_len - 16];
            rng.fill_bytes(&mut bytes);
            PlainItem {
                tag: tag.to_string(),
                plaintext: SecretBytes::new(bytes),
            }
        })
        .collect()
}

/// Why `certs` are not one custodian each, one line per pair: the same
/// certificate twice, or two certificates of one RSA modulus (whatever their
/// exponents), either of which gives one person two shares. The one
/// identity check behind split, rotate, download, check-certs and manifests.
pub fn custodian_identity_problems(certs: &[(String, Certificate)]) -> Vec<String> {
    custodian_identity_causes(certs).into_iter().map(|p| p.text).collect()
}

/// As [`custodian_identity_problems`], each with its cause, so each gets
/// its own advice.
pub fn custodian_identity_causes(certs: &[(String, Certificate)]) -> Vec<CertProblem> {
    let mut problems = Vec::new();
    for (i, (label, cert)) in certs.iter().enumerate() {
        if let Some((other, _)) = certs[..i].iter().find(|(_, c)| c.der() == cert.der()) {
            problems.push(CertProblem {
                cause: CertCause::Duplicate,
                text: format!("{label} is the same certificate as {other}; each custodian needs their own"),
            });
        } else if let Some((other, _)) = certs[..i].iter().find(|(_, c)| c.same_custodian_as(cert)) {
            problems.push(CertProblem {
                cause: CertCause::SameKey,
                text: format!(
                    "{label} has the same key as {other} (the same RSA modulus): one person would hold two shares; \
                     each custodian needs their own key"
                ),
            });
        }
    }
    problems
}

/// Refuses `certs` unless each is a distinct custodian (see
/// [`custodian_identity_problems`]).
pub fn check_distinct_custodians(certs: &[(String, Certificate)]) -> Result<()> {
    match custodian_identity_causes(certs).into_iter().next() {
        Some(problem) => Err(Error::CertsNotReady(vec![problem])),
        None => Ok(()),
    }
}

/// The checks a new custodian set must pass before a split: N and M within
/// `profile`'s limits, one distinct RSA key of at least 2048 bits each.
/// Rotation runs them before any custodian is asked for a passphrase.
pub fn check_custodian_set(certs: &[(String, Certificate)], quorum: usize, profile: Profile) -> Result<()> {
    let refused = |cause, text| Error::CertsNotReady(vec![crate::error::CertProblem { cause, text }]);
    limits::check_quorum(certs.len(), quorum, profile).map_err(|why| refused(CertCause::Quorum, why))?;
    check_distinct_custodians(certs)?;
    for (label, cert) in certs {
        cert.rsa_public_key().map_err(|source| Error::Certificate {
            label: label.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Splits `master` M-of-N to `certs` (in order) and encrypts `items` under it.
pub fn split_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    master: &MasterKey,
    items: &[PlainItem],
    certs: &[(String, Certificate)],
    quorum: usize,
    profile: Profile,
) -> Result<SecurityDomain> {
    check_custodian_set(certs, quorum, profile)?;
    check_items(items)?;
    let shares = shamir::split_with_rng(rng, master.expose(), certs.len() as u8, quorum as u8)
        .map_err(|e| Error::WeakParameters(e.to_string()))?;
    let mut enc_shares = Vec::with_capacity(certs.len());
    for ((label, cert), share) in certs.iter().zip(&shares) {
        let public = cert.rsa_public_key().map_err(|source| Error::Certificate {
            label: label.clone(),
            source,
        })?;
        let enc_key = jwe::encrypt_rsa_oaep256_with_rng(rng, &public, &share.to_bytes())
            .map_err(|e| Error::Crypto(e.to_string()))?;
        enc_shares.push(EncShare {
            enc_key,
            x5t_256: cert.x5t_256(),
        });
    }
    let sd = SecurityDomain {
        enc_data: encrypt_items_with_rng(rng, items, master),
        shared_keys: SharedKeys {
            enc_shares,
            key_algorithm: sdfile::KEY_ALGORITHM.into(),
            required: quorum as u64,
        },
        version: sdfile::VERSION,
    };
    sd.validate()
        .map_err(|e| Error::Crypto(format!("internal check of the new security domain failed: {e}")))?;
    Ok(sd)
}

/// Rotation: the recovered master key split afresh (new random polynomials)
/// to a new custodian set, the data items carried over unchanged, so the new
/// file restores to exactly the same contents.
pub fn rotate_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    old: &SecurityDomain,
    recovered: &Recovered,
    certs: &[(String, Certificate)],
    quorum: usize,
    profile: Profile,
) -> Result<SecurityDomain> {
    let mut sd = split_with_rng(rng, &recovered.master_key, &recovered.items, certs, quorum, profile)?;
    sd.enc_data = old.enc_data.clone();
    // The carried-over items must open under the key just split.
    decrypt_items(&sd.enc_data, &recovered.master_key)?;
    Ok(sd)
}

fn check_items(items: &[PlainItem]) -> Result<()> {
    if items.is_empty() {
        return Err(Error::Usage("a security domain needs at least one data item".into()));
    }
    for (i, item) in items.iter().enumerate() {
        if item.tag.is_empty() || items[..i].iter().any(|o| o.tag == item.tag) {
            return Err(Error::Usage(format!(
                "data item tags must be non-empty and distinct ('{}')",
                item.tag
            )));
        }
    }
    Ok(())
}

/// The restore blob for `exchange`: a fresh master key, the items under it,
/// and that key wrapped with RSA-OAEP-256 to the exchange certificate.
pub fn build_restore_blob_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    items: &[PlainItem],
    exchange: &Certificate,
) -> Result<RestoreBlob> {
    check_items(items)?;
    let public = exchange.rsa_public_key().map_err(|source| Error::Certificate {
        label: "the exchange key".into(),
        source,
    })?;
    let fresh = MasterKey::generate_with_rng(rng);
    let enc_data = encrypt_items_with_rng(rng, items, &fresh);
    let enc_key =
        jwe::encrypt_rsa_oaep256_with_rng(rng, &public, fresh.expose()).map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(RestoreBlob {
        enc_data,
        wrapped_key: WrappedKey {
            enc_key,
            x5t_256: exchange.x5t_256(),
        },
    })
}

/// What an instance does with an uploaded blob: check it is for its exchange
/// key, unwrap the master key, open every item.
pub fn open_restore_blob(
    blob: &RestoreBlob,
    exchange_key: &dyn KeyUnwrapper,
    exchange_cert: &Certificate,
) -> Result<Vec<PlainItem>> {
    let ours = exchange_cert.x5t_256();
    if blob.wrapped_key.x5t_256 != ours {
        return Err(Error::WrongExchangeKey {
            blob: blob.wrapped_key.x5t_256.clone(),
            ours,
        });
    }
    let jwe: CompactJwe = blob.wrapped_key_jwe().map_err(|e| Error::Crypto(e.to_string()))?;
    let key = jwe.decrypt_with(exchange_key).map_err(|source| Error::ShareIntegrity {
        who: "the wrapped master key".into(),
        source,
    })?;
    let master = MasterKey::from_slice(key.expose()).ok_or_else(|| Error::ShareIntegrity {
        who: "the wrapped master key".into(),
        source: CryptoError::ShareMalformed(format!("it is {} bytes, not 32", key.len())),
    })?;
    decrypt_items(&blob.enc_data, &master)
}

/// SHA-256 of items' tags and contents: equal fingerprints mean equal contents,
/// without showing them.
pub fn contents_fingerprint(items: &[PlainItem]) -> String {
    use sha2::Digest;
    let mut h = Sha256::new();
    for item in items {
        h.update((item.tag.len() as u64).to_be_bytes());
        h.update(item.tag.as_bytes());
        h.update((item.plaintext.len() as u64).to_be_bytes());
        h.update(item.plaintext.expose());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{custodians, test_rng};

    fn setup(n: usize, m: usize) -> (SecurityDomain, MasterKey, Vec<PlainItem>) {
        let mut rng = test_rng(20);
        let master = MasterKey::generate_with_rng(&mut rng);
        let items = random_items_with_rng(&mut rng);
        let certs: Vec<(String, Certificate)> = custodians()[..n]
            .iter()
            .map(|c| (c.name.clone(), c.cert.clone()))
            .collect();
        let sd = split_with_rng(&mut rng, &master, &items, &certs, m, Profile::Azure).unwrap();
        (sd, master, items)
    }

    fn key(i: usize, with_cert: bool) -> CustodianKey {
        let c = &custodians()[i];
        CustodianKey::from_rsa(
            c.name.clone(),
            c.key.clone(),
            with_cert.then(|| (format!("{}.cer", c.name), c.cert.clone())),
        )
    }

    #[test]
    fn quorum_recovers_and_blob_opens_to_the_same_contents() {
        let (sd, master, items) = setup(3, 2);
        let sd = SecurityDomain::from_json(sd.to_json().as_bytes()).unwrap();
        let mut q = Quorum::new(&sd);
        q.add(&key(2, true)).unwrap();
        assert!(!q.is_met());
        q.add(&key(0, false)).unwrap();
        assert!(q.is_met());
        let rec = q.finish().unwrap();
        assert_eq!(rec.master_key.expose(), master.expose());
        assert_eq!(contents_fingerprint(&rec.items), contents_fingerprint(&items));

        let exchange = &custodians()[4];
        let blob = build_restore_blob_with_rng(&mut test_rng(21), &rec.items, &exchange.cert).unwrap();
        let blob = RestoreBlob::from_json(blob.to_json().as_bytes()).unwrap();
        let opened = open_restore_blob(&blob, &exchange.key, &exchange.cert).unwrap();
        assert_eq!(contents_fingerprint(&opened), contents_fingerprint(&items));
        let text = blob.to_json();
        assert!(!text.contains(&hex::encode(master.expose())));
        // Another instance's exchange key is refused by thumbprint.
        let other = &custodians()[3];
        assert!(matches!(
            open_restore_blob(&blob, &other.key, &other.cert),
            Err(Error::WrongExchangeKey { .. })
        ));
    }

    /// A custodian whose key opens no share is skipped and the next one
    /// tried; a key set up wrongly stops the gathering before anyone else is
    /// asked; keys after the quorum is met are never opened.
    #[test]
    fn gathering_skips_a_custodian_but_stops_on_a_setup_error() {
        let (sd, master, _) = setup(3, 2);
        let mut asked = Vec::new();
        let mut events = Vec::new();
        let rec = gather_quorum(
            &sd,
            4,
            |i| {
                asked.push(i);
                Ok(key([3, 0, 1, 2][i], false))
            },
            |e| events.push(format!("{e:?}")),
        )
        .unwrap();
        assert_eq!(rec.master_key.expose(), master.expose());
        assert_eq!(asked, [0, 1, 2]);
        assert!(events[0].starts_with("Skipped { index: 0"), "{events:?}");
        assert!(events[1].starts_with("Opened { x: 1"), "{events:?}");
        assert_eq!(events[3], "Met { remaining: 1 }");

        let mut asked = Vec::new();
        let err = gather_quorum(
            &sd,
            3,
            |i| {
                asked.push(i);
                if i == 1 {
                    Err(Error::KeyCertMismatch {
                        key: "c1.key".into(),
                        cert: "c1.cer".into(),
                    })
                } else {
                    Ok(key(i, false))
                }
            },
            |_| {},
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::KeyCertMismatch { .. }));
        assert_eq!(asked, [0, 1]);
    }

    #[test]
    fn too_few_custodians_name_who_opened() {
        let (sd, _, _) = setup(3, 3);
        let mut q = Quorum::new(&sd);
        q.add(&key(0, true)).unwrap();
        let err = q.add(&key(3, false)).err().unwrap();
        assert!(matches!(err, Error::KeyOpensNoShare { .. }));
        q.record_failure(&err);
        let err = q.finish().err().unwrap();
        let msg = err.to_string();
        assert!(matches!(err, Error::NotEnoughShares { needed: 3, .. }));
        assert!(
            msg.contains("1 share(s) opened") && msg.contains(&custodians()[0].name) && msg.contains("3 needed"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_pairings_are_named() {
        let (sd, _, _) = setup(3, 2);
        let c = &custodians();
        let mismatched = CustodianKey::from_rsa("k0", c[0].key.clone(), Some(("c1.cer".into(), c[1].cert.clone())));
        assert!(matches!(
            open_share(&sd, &mismatched),
            Err(Error::KeyCertMismatch { .. })
        ));
        let outsider = CustodianKey::from_rsa("k3", c[3].key.clone(), Some(("c3.cer".into(), c[3].cert.clone())));
        assert!(matches!(open_share(&sd, &outsider), Err(Error::CertNotInSd { .. })));
        let mut q = Quorum::new(&sd);
        q.add(&key(1, true)).unwrap();
        assert!(matches!(q.add(&key(1, false)), Err(Error::DuplicateCustodian { .. })));
    }

    #[test]
    fn a_replaced_share_is_caught_by_the_items() {
        // Anyone holding the public certificate can encrypt a bogus share to it.
        let (mut sd, _, _) = setup(3, 2);
        let bogus = shamir::split_with_rng(&mut test_rng(22), &[9u8; 32], 3, 2).unwrap();
        let public = custodians()[1].cert.rsa_public_key().unwrap();
        sd.shared_keys.enc_shares[1].enc_key =
            jwe::encrypt_rsa_oaep256_with_rng(&mut test_rng(23), &public, &bogus[1].to_bytes()).unwrap();
        let mut q = Quorum::new(&sd);
        q.add(&key(0, true)).unwrap();
        q.add(&key(1, true)).unwrap();
        let err = q.finish().err().unwrap();
        assert!(matches!(err, Error::SharesInconsistent { .. }), "{err}");
    }

    #[test]
    fn tampered_share_is_named() {
        let (mut sd, _, _) = setup(3, 2);
        let parts: Vec<String> = sd.shared_keys.enc_shares[0]
            .enc_key
            .split('.')
            .map(String::from)
            .collect();
        let mut ct = crate::crypto::b64::b64u_decode(&parts[3], "c").unwrap();
        ct[5] ^= 1;
        let tampered = [
            parts[0].clone(),
            parts[1].clone(),
            parts[2].clone(),
            crate::crypto::b64::b64u(&ct),
            parts[4].clone(),
        ]
        .join(".");
        sd.shared_keys.enc_shares[0].enc_key = tampered;
        let err = open_share(&sd, &key(0, true)).err().unwrap();
        assert!(matches!(err, Error::ShareIntegrity { .. }));
        assert!(err.to_string().contains(&custodians()[0].name));
    }

    #[test]
    fn rotation_keeps_contents_and_locks_out_the_old_set() {
        let (old, master, items) = setup(3, 2);
        let mut q = Quorum::new(&old);
        q.add(&key(0, true)).unwrap();
        q.add(&key(1, true)).unwrap();
        let rec = q.finish().unwrap();
        let c = custodians();
        let new_certs: Vec<(String, Certificate)> = c[2..5].iter().map(|c| (c.name.clone(), c.cert.clone())).collect();
        let new = rotate_with_rng(&mut test_rng(25), &old, &rec, &new_certs, 3, Profile::Azure).unwrap();
        assert!(
            new.to_json().contains(&old.enc_data.data[0].compact_jwe),
            "items carried over unchanged"
        );
        assert_ne!(
            new.shared_keys.enc_shares[0].enc_key,
            old.shared_keys.enc_shares[2].enc_key
        );
        let mut q = Quorum::new(&new);
        for i in 2..5 {
            q.add(&key(i, true)).unwrap();
        }
        let again = q.finish().unwrap();
        assert_eq!(again.master_key.expose(), master.expose());
        assert_eq!(contents_fingerprint(&again.items), contents_fingerprint(&items));
        assert!(matches!(
            open_share(&new, &key(0, true)),
            Err(Error::CertNotInSd { .. })
        ));
        assert!(matches!(
            open_share(&new, &key(1, false)),
            Err(Error::KeyOpensNoShare { .. })
        ));
    }

    #[test]
    fn split_refuses_weak_or_duplicate_sets() {
        let c = custodians();
        let mut rng = test_rng(24);
        let master = MasterKey::generate_with_rng(&mut rng);
        let items = random_items_with_rng(&mut rng);
        let two: Vec<(String, Certificate)> = c[..2].iter().map(|c| (c.name.clone(), c.cert.clone())).collect();
        assert!(split_with_rng(&mut rng, &master, &items, &two, 2, Profile::Azure).is_err());
        assert!(split_with_rng(&mut rng, &master, &items, &two, 2, Profile::Local).is_ok());
        let dup = vec![two[0].clone(), two[1].clone(), two[0].clone()];
        assert!(split_with_rng(&mut rng, &master, &items, &dup, 2, Profile::Azure).is_err());
    }

    /// Regression: a second certificate of custodian 0's modulus under e=3
    /// passed every check, so custodian 0 alone held 2 of the 3 shares.
    #[test]
    fn one_modulus_under_two_exponents_is_one_custodian() {
        use rsa::traits::PublicKeyParts;
        let c = custodians();
        let twin = crate::test_support::twin_certificate(&c[0].key);
        let twin_key = twin.rsa_public_key().unwrap();
        assert_eq!(twin_key.n(), c[0].key.n());
        assert_ne!(twin_key.e(), c[0].key.e());
        let set = vec![
            ("a.cer".to_string(), c[0].cert.clone()),
            ("b.cer".to_string(), c[1].cert.clone()),
            ("twin.cer".to_string(), twin),
        ];
        let problems = custodian_identity_problems(&set);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("twin.cer has the same key as a.cer"),
            "{}",
            problems[0]
        );
        let mut rng = test_rng(25);
        let master = MasterKey::generate_with_rng(&mut rng);
        let items = random_items_with_rng(&mut rng);
        let err = split_with_rng(&mut rng, &master, &items, &set, 2, Profile::Azure)
            .err()
            .unwrap();
        assert!(err.to_string().contains("twin.cer has the same key as a.cer"), "{err}");
        assert!(custodian_identity_problems(&set[..2]).is_empty());
    }
}
