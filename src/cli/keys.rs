//! Opening custodians' keys for a command: passphrase, retries, and pairing
//! each key with its certificate by what it is, not by its file name. A
//! `pkcs11:` URI given where a key file is expected opens a token key
//! instead, so every command taking keys takes token keys through here.

use std::path::{Path, PathBuf};

use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::custodian::pairing::{self, Beside, CertPool, Paired};
use hsm_ceremony::custodian::signer::Signer;
use hsm_ceremony::custodian::token::{TokenKey, TokenUri};
use hsm_ceremony::custodian::CustodianError;
use hsm_ceremony::error::{Error, RecoveryError, Result};
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::inputs;
use hsm_ceremony::recovery::{self, CustodianKey};

use super::passphrase::{PassphraseArgs, Passphrases};

/// The custodians' keys of a command that needs a quorum (restore-blob,
/// drill, rotate).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct QuorumKeys {
    /// Custodians' private key files or `pkcs11:` token URIs, tried in order
    /// until the quorum is met; only as many custodians as needed are asked
    /// for their passphrase or PIN.
    #[arg(long, required = true, num_args = 1..)]
    pub sd_wrapping_keys: Vec<PathBuf>,
    /// Certificates to pair keys with. Default: the certificate beside each
    /// key (.cer) or on its token, else the share the key opens.
    #[arg(long = "cert", num_args = 1..)]
    pub certs: Vec<PathBuf>,
}

/// One custodian's key, for the commands a custodian runs alone (verify,
/// manifest sign, log sign).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OneKey {
    /// The custodian's private key file, or the `pkcs11:` URI of their key on a token.
    #[arg(long)]
    pub key: PathBuf,
    /// The custodian's certificate (default: the .cer beside the key, or the
    /// certificate on the token).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[command(flatten)]
    pub passphrases: PassphraseArgs,
}

impl OneKey {
    /// The certificate known without opening the key: --cert, else the .cer
    /// beside a key file (a token's is only read after the PIN).
    pub fn known_certificate(&self) -> Result<Option<Certificate>> {
        let path = match (&self.cert, token_uri(&self.key)) {
            (Some(p), _) => p.clone(),
            (None, None) => match inputs::sibling_certificate(&self.key) {
                Some(p) => p,
                None => return Ok(None),
            },
            (None, Some(_)) => return Ok(None),
        };
        inputs::certificate(&path).map(Some)
    }

    /// Opens the key for signing, with its certificate (which a signature
    /// needs, to say whose it is).
    pub fn signer(&self) -> Result<(OpenedSigner, Certificate)> {
        let pool = cert_pool(self.cert.as_slice())?;
        let mut pass = Passphrases::new(&self.passphrases, None, 1)?;
        let mut opened = open_signer(&self.key, 0, &pool, &mut pass)?;
        let (_, cert) = opened.cert.take().ok_or_else(|| {
            Error::Usage("give the custodian's certificate with --cert (or put the .cer beside the key)".into())
        })?;
        Ok((opened, cert))
    }
}

/// A custodian's key in memory, for signing as well as unwrapping.
pub struct OpenedKey {
    pub label: String,
    pub key: rsa::PrivateKey,
    pub cert: Option<(String, Certificate)>,
}

/// A custodian's key for signing (manifest, log): a key file in memory or
/// a token key.
pub struct OpenedSigner {
    pub label: String,
    pub signer: Box<dyn Signer>,
    pub cert: Option<(String, Certificate)>,
}

/// The token URI `path` spells, if it is one.
fn token_uri(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| TokenUri::is_uri(s))
}

/// Opens the key at `path` (a file, or a `pkcs11:` URI) for share
/// unwrapping; see [`open_rsa`] and [`open_token`].
pub fn open(path: &Path, index: usize, pool: &CertPool, pass: &mut Passphrases) -> Result<CustodianKey> {
    if let Some(uri) = token_uri(path) {
        let t = open_token(uri, index, pool, pass)?;
        let public_key = t.key.public_key();
        return Ok(CustodianKey {
            label: t.label,
            unwrapper: Box::new(t.key),
            public_key,
            cert: t.cert,
        });
    }
    let k = open_rsa(path, index, pool, pass)?;
    Ok(CustodianKey::from_rsa(k.label, k.key, k.cert))
}

/// Opens the key at `path` (a file, or a `pkcs11:` URI) for signing.
pub fn open_signer(path: &Path, index: usize, pool: &CertPool, pass: &mut Passphrases) -> Result<OpenedSigner> {
    if let Some(uri) = token_uri(path) {
        let t = open_token(uri, index, pool, pass)?;
        return Ok(OpenedSigner {
            label: t.label,
            signer: Box::new(t.key),
            cert: t.cert,
        });
    }
    let k = open_rsa(path, index, pool, pass)?;
    Ok(OpenedSigner {
        label: k.label,
        signer: Box::new(k.key),
        cert: k.cert,
    })
}

/// A key on a token, logged in, with the URI naming it and its certificate.
pub struct OpenedToken {
    pub label: String,
    pub key: TokenKey,
    pub cert: Option<(String, Certificate)>,
}

/// Opens the token key `uri` names (key `index` of the command's keys),
/// logging in with its PIN. The certificate is the first of `pool` whose key
/// matches, else the one stored on the token with the key's id or label,
/// else none (the share is then found by trial).
pub fn open_token(uri: &str, index: usize, pool: &CertPool, pass: &mut Passphrases) -> Result<OpenedToken> {
    let parsed = TokenUri::parse(uri)?;
    let label = parsed.to_string();
    let pin = pass.pin_for(index, &format!("token '{}'", parsed.token), parsed.pin_source.as_ref())?;
    let key = TokenKey::open(&parsed, &pin)?;
    let public = key.public_key();
    let beside = || {
        Ok::<_, Error>(key.certificate().map(|cert| Beside {
            label: format!("on token '{}'", parsed.token),
            cert,
            must_match: false,
        }))
    };
    let cert = match pairing::pair(pool, &public, beside)? {
        Paired::Known(label, c) => Some((label, c)),
        // A token's own certificate is never refused for not matching.
        Paired::Unknown | Paired::BesideDiffers { .. } => None,
    };
    Ok(OpenedToken { label, key, cert })
}

/// Opens the key file at `path` (key `index` of the command's keys). The
/// certificate is the first of `pool` whose key matches, else the `.cer`
/// beside the key (which must then match), else none.
pub fn open_rsa(path: &Path, index: usize, pool: &CertPool, pass: &mut Passphrases) -> Result<OpenedKey> {
    if token_uri(path).is_some() {
        return Err(Error::Usage(format!(
            "{} is a token key; this step needs a key file",
            path.display()
        )));
    }
    let label = inputs::label(path);
    let file = inputs::key_file(path)?;
    let weaknesses = file.warnings();
    let key = if file.is_encrypted() {
        let mut attempt = 0;
        loop {
            let given = pass.for_key(index, &label, attempt)?;
            let typed = given.as_ref().map(|g| g.typed).unwrap_or(false);
            let file = inputs::key_file(path)?;
            match file.into_key(given.as_ref().map(|g| &g.passphrase)) {
                Ok(key) => break key,
                Err(CustodianError::WrongPassphrase) if typed && attempt < 2 => {
                    crate::note!("That passphrase does not open {label}.");
                    attempt += 1;
                }
                Err(source) => return Err(Error::Key { label, source }),
            }
        }
    } else {
        file.into_key(None).map_err(|source| Error::Key {
            label: label.clone(),
            source,
        })?
    };
    // Said once the key opened, so a wrong passphrase is not mistaken for the cause.
    for why in weaknesses {
        super::output::warn(&format!("{label}: {why}. {}", reencrypt_advice(&label)));
    }
    let public = key.to_public_key();
    let beside = || -> Result<Option<Beside>> {
        inputs::sibling_certificate(path)
            .map(|cer| {
                Ok(Beside {
                    label: inputs::label(&cer),
                    cert: inputs::certificate(&cer)?,
                    must_match: true,
                })
            })
            .transpose()
    };
    let cert = match pairing::pair(pool, &public, beside)? {
        Paired::Known(label, c) => Some((label, c)),
        Paired::Unknown => None,
        Paired::BesideDiffers { cert } => return Err(Error::KeyCertMismatch { key: label, cert }),
    };
    Ok(OpenedKey { label, key, cert })
}

/// The checks a quorum's keys pass before anyone is asked a passphrase or
/// PIN: no key given twice (same path, same file content, same token key;
/// the same key in two different files is caught when opened), at least M keys, and every
/// certificate known now (a --cert, or the .cer beside a key) has a share.
pub fn check_quorum_keys(sd: &SecurityDomain, keys: &QuorumKeys) -> Result<()> {
    let paths = &keys.sd_wrapping_keys;
    recovery::check_distinct_keys(paths)?;
    if paths.len() < sd.required() {
        return Err(RecoveryError::NotEnoughShares {
            opened: Vec::new(),
            needed: sd.required(),
            failures: vec![format!(
                "only {} key(s) were given with --sd-wrapping-keys; nothing was asked",
                paths.len()
            )],
        }
        .into());
    }
    check_certs_have_shares(sd, paths, &cert_pool(&keys.certs)?)
}

/// Refuses, before any secret is asked, a certificate that has no share in
/// `sd`: each --cert, and (with none) the .cer beside each key file.
pub fn check_certs_have_shares(sd: &SecurityDomain, key_paths: &[PathBuf], pool: &CertPool) -> Result<()> {
    let mut known = pool.certificates().to_vec();
    if pool.is_empty() {
        for p in key_paths.iter().filter(|p| token_uri(p).is_none()) {
            if let Some(cer) = inputs::sibling_certificate(p) {
                known.push((inputs::label(&cer), inputs::certificate(&cer)?));
            }
        }
    }
    recovery::check_certs_have_shares(sd, &known)
}

/// Loads `--cert` files for pairing.
pub fn cert_pool(paths: &[PathBuf]) -> Result<CertPool> {
    let certs = paths.iter().map(|p| Ok((inputs::label(p), inputs::certificate(p)?)));
    Ok(CertPool::new(certs.collect::<Result<_>>()?))
}
/// How to re-encrypt a weakly or oddly encrypted key file with current parameters.
pub fn reencrypt_advice(label: &str) -> String {
    format!(
        "Re-encrypt it with current parameters: openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -iter 600000 -in {label} -out NEW.key \
         (then check that NEW.key opens and replace {label} with it)"
    )
}
