//! Opening custodians' shares and gathering a quorum of them into the master key and the data items.

use super::items::{decrypt_items, PlainItem};
use crate::crypto::jwe::KeyUnwrapper;
use crate::crypto::secret::{MasterKey, SecretBytes};
use crate::crypto::shamir::{self, Share};
use crate::crypto::CryptoError;
use crate::custodian::cert::Certificate;
use crate::error::{Error, RecoveryError, Result};
use crate::format::sdfile::SecurityDomain;

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
            let index = sd.share_index(&x5t).ok_or_else(|| RecoveryError::CertNotInSd {
                cert: cert_label.clone(),
                x5t_256: x5t.clone(),
            })?;
            let jwe = sd
                .share_jwe(index)
                .map_err(|source| RecoveryError::ShareMalformed { source })?;
            let bytes = jwe.decrypt_with(ck.unwrapper.as_ref()).map_err(|source| match source {
                source @ CryptoError::Token(_) => RecoveryError::TokenUnwrap { who: ck.who(), source },
                source => RecoveryError::ShareIntegrity { who: ck.who(), source },
            })?;
            finish_share(sd, index, ck, &bytes)
        }
        None => {
            for index in 0..sd.share_count() {
                let jwe = sd
                    .share_jwe(index)
                    .map_err(|source| RecoveryError::ShareMalformed { source })?;
                let cek = match ck.unwrapper.unwrap_cek(jwe.alg, &jwe.encrypted_key) {
                    Ok(cek) => cek,
                    // A token that cannot do the unwrap at all would fail every share alike.
                    Err(source @ CryptoError::Token(_)) => {
                        return Err(RecoveryError::TokenUnwrap { who: ck.who(), source }.into())
                    }
                    // OAEP fails for every share that is not this key's.
                    Err(_) => continue,
                };
                let bytes = jwe
                    .decrypt_with_key(cek.expose())
                    .map_err(|source| RecoveryError::ShareIntegrity { who: ck.who(), source })?;
                return finish_share(sd, index, ck, &bytes);
            }
            Err(RecoveryError::KeyOpensNoShare {
                key: ck.label.clone(),
                shares: sd.share_count(),
            }
            .into())
        }
    }
}

fn finish_share(sd: &SecurityDomain, index: usize, ck: &CustodianKey, bytes: &SecretBytes) -> Result<OpenedShare> {
    let share =
        Share::from_bytes(bytes.expose()).map_err(|source| RecoveryError::ShareIntegrity { who: ck.who(), source })?;
    if share.len() != MasterKey::LEN {
        return Err(RecoveryError::ShareIntegrity {
            who: ck.who(),
            source: CryptoError::ShareMalformed(format!(
                "it covers {} bytes, a master key has {}",
                share.len(),
                MasterKey::LEN
            )),
        }
        .into());
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
        // A custodian is an RSA modulus: whoever factors it holds every key
        // built on it, whatever the exponent or certificate. A foreign file
        // with two shares for one modulus must not let one person count twice.
        if let Some(first) = self
            .opened
            .iter()
            .find(|o| o.index == opened.index || same_modulus(&o.opened_by, &opened.opened_by))
        {
            return Err(RecoveryError::DuplicateCustodian {
                who: ck.who(),
                first: first.who.clone(),
            }
            .into());
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
            return Err(RecoveryError::NotEnoughShares {
                opened: self.opened.iter().map(|o| o.who.clone()).collect(),
                needed: self.needed(),
                failures: self.failures,
            }
            .into());
        }
        let chosen: Vec<&Share> = self.opened.iter().take(self.needed()).map(|o| &o.share).collect();
        let secret =
            shamir::combine(&chosen).map_err(|e| RecoveryError::SharesInconsistent { reason: e.to_string() })?;
        let master_key = MasterKey::from_slice(&secret).expect("shares were checked to cover 32 bytes");
        let items = decrypt_items(&self.sd.enc_data, &master_key).map_err(|e| match e {
            // A wrong master key from well-formed shares means a share was replaced.
            Error::Recovery(RecoveryError::ItemIntegrity { tag, .. }) => RecoveryError::SharesInconsistent {
                reason: format!(
                    "the rebuilt master key does not open data item '{tag}'; one of the shares opened is not from this security domain"
                ),
            }
            .into(),
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

/// Why a key did not open, as the opener tells [`gather_quorum`]: `Skip`
/// (this custodian cannot contribute; the next is tried) or `Stop` (the
/// operator must fix something first, so "bring more custodians" would
/// mislead). The caller says which of its own errors stop (a command line
/// that cannot work); library errors classify themselves through `From`.
#[derive(Debug)]
pub enum OpenFailure {
    Skip(Error),
    Stop(Error),
}

impl From<Error> for OpenFailure {
    fn from(err: Error) -> OpenFailure {
        if aborts_gathering(&err) {
            OpenFailure::Stop(err)
        } else {
            OpenFailure::Skip(err)
        }
    }
}

/// Whether a key's failure is the operator's to fix rather than a custodian
/// to skip: files set up wrongly (an exposed key, a key and .cer that differ,
/// a certificate given where its key belongs).
pub fn aborts_gathering(err: &Error) -> bool {
    matches!(
        err,
        Error::KeyFileExposed { .. }
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
/// it failed with [`OpenFailure::Stop`].
pub fn gather_quorum(
    sd: &SecurityDomain,
    keys: usize,
    mut open: impl FnMut(usize) -> std::result::Result<CustodianKey, OpenFailure>,
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
        let opened = open(index).and_then(|ck| {
            quorum
                .add(&ck)
                .map(|o| (o.x(), o.who.clone()))
                .map_err(OpenFailure::from)
        });
        match opened {
            Ok((x, who)) => progress(GatherEvent::Opened {
                x,
                who,
                opened: quorum.opened().len(),
                needed: quorum.needed(),
            }),
            Err(OpenFailure::Stop(e)) => return Err(e),
            Err(OpenFailure::Skip(e)) => {
                progress(GatherEvent::Skipped { index, error: &e });
                quorum.record_failure(&e);
            }
        }
    }
    quorum.finish()
}

fn same_modulus(a: &rsa::PublicKey, b: &rsa::PublicKey) -> bool {
    use rsa::traits::PublicKeyParts;
    a.n() == b.n()
}
