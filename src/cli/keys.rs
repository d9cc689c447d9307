//! Opening custodians' keys for a command: passphrase, retries, and pairing
//! each key with its certificate by what it is, not by its file name. A
//! `pkcs11:` URI given where a key file is expected opens a token key
//! instead, so every command taking keys takes token keys through here.

use std::convert::Infallible;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::builder::TypedValueParser;
use clap::error::{ContextKind, ContextValue};

use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::custodian::pairing::{self, Beside, CertPool, Paired};
use hsm_ceremony::custodian::signer::Signer;
use hsm_ceremony::custodian::token::{redacted, TokenError, TokenKey, TokenUri};
use hsm_ceremony::custodian::{CustodianError, KeyRef};
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
    #[arg(long, required = true, num_args = 1.., value_parser = KeyRefParser, value_hint = clap::ValueHint::AnyPath)]
    pub sd_wrapping_keys: Vec<KeyRef>,
    /// Certificates to pair keys with. Default: the certificate beside each
    /// key (.cer) or on its token, else the share the key opens.
    #[arg(long = "cert", num_args = 1..)]
    pub certs: Vec<PathBuf>,
}

/// One custodian's key, for the commands a custodian runs alone (verify,
/// manifest sign, log sign).
#[derive(clap::Args, Debug, Clone)]
pub struct OneKey {
    /// The custodian's private key file, or the `pkcs11:` URI of their key on a token.
    #[arg(long, value_parser = KeyRefParser, value_hint = clap::ValueHint::AnyPath)]
    pub key: KeyRef,
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
        let path = match (&self.cert, &self.key) {
            (Some(p), _) => p.clone(),
            (None, KeyRef::File(key)) => match inputs::sibling_certificate(key) {
                Some(p) => p,
                None => return Ok(None),
            },
            (None, KeyRef::Token(_)) => return Ok(None),
        };
        inputs::certificate(&path).map(Some)
    }

    /// Opens the key for signing, with its certificate (which a signature
    /// needs, to say whose it is).
    pub fn signer(&self) -> Result<(OpenedSigner, Certificate)> {
        let (pool, _) = cert_pool(self.cert.as_slice())?;
        let mut pass = Passphrases::new(&self.passphrases, None, 1)?;
        let mut opened = open_signer(&self.key, 0, &pool, &mut pass)?;
        let (_, cert) = opened.cert.take().ok_or_else(|| {
            Error::Usage("give the custodian's certificate with --cert (or put the .cer beside the key)".into())
        })?;
        Ok((opened, cert))
    }
}

/// Reads a key argument where it is typed, so a malformed `pkcs11:` URI is
/// a usage error naming its flag, with what to do. clap quotes the value
/// back: it is given the URI with any PIN in it hidden.
#[derive(Clone)]
struct KeyRefParser;

impl TypedValueParser for KeyRefParser {
    type Value = KeyRef;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> std::result::Result<KeyRef, clap::Error> {
        let (shown, problem, tip) = match KeyRef::parse(value) {
            Ok(key) => return Ok(key),
            Err(TokenError::Uri { uri, problem }) => {
                (uri, problem.to_string(), Some(super::errors::uri_advice(&problem)))
            }
            Err(other) => (redacted(&value.to_string_lossy()), other.to_string(), None),
        };
        // clap words a refused value alike for every flag: have it refuse the value as shown.
        let refuse = clap::builder::StringValueParser::new().try_map(move |_| Err::<Infallible, _>(problem.clone()));
        let mut err = match refuse.parse_ref(cmd, arg, OsStr::new(&shown)) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        if let Some(tip) = tip {
            err.insert(ContextKind::Suggested, ContextValue::StyledStrs(vec![tip.into()]));
        }
        Err(err)
    }
}

/// A custodian's key in memory, for signing as well as unwrapping.
struct OpenedKey {
    label: String,
    key: rsa::PrivateKey,
    cert: Option<(String, Certificate)>,
}

/// A custodian's key for signing (manifest, log): a key file in memory or
/// a token key.
pub struct OpenedSigner {
    pub label: String,
    pub signer: Box<dyn Signer>,
    pub cert: Option<(String, Certificate)>,
}

/// Opens `key` (a file, or a key on a token) for share unwrapping; see
/// [`open_file`] and [`open_token`].
pub fn open(key: &KeyRef, index: usize, pool: &CertPool, pass: &mut Passphrases) -> Result<CustodianKey> {
    match key {
        KeyRef::Token(uri) => {
            let t = open_token(uri, index, pool, pass)?;
            let public_key = t.key.public_key();
            Ok(CustodianKey {
                label: t.label,
                unwrapper: Box::new(t.key),
                public_key,
                cert: t.cert,
            })
        }
        KeyRef::File(path) => {
            let k = open_file(path, index, pool, pass)?;
            Ok(CustodianKey::from_rsa(k.label, k.key, k.cert))
        }
    }
}

/// Opens `key` (a file, or a key on a token) for signing.
pub fn open_signer(key: &KeyRef, index: usize, pool: &CertPool, pass: &mut Passphrases) -> Result<OpenedSigner> {
    match key {
        KeyRef::Token(uri) => {
            let t = open_token(uri, index, pool, pass)?;
            Ok(OpenedSigner {
                label: t.label,
                signer: Box::new(t.key),
                cert: t.cert,
            })
        }
        KeyRef::File(path) => {
            let k = open_file(path, index, pool, pass)?;
            Ok(OpenedSigner {
                label: k.label,
                signer: Box::new(k.key),
                cert: k.cert,
            })
        }
    }
}

/// A key on a token, logged in, with the URI naming it and its certificate.
struct OpenedToken {
    label: String,
    key: TokenKey,
    cert: Option<(String, Certificate)>,
}

/// Opens the token key `uri` names (key `index` of the command's keys),
/// logging in with its PIN. The certificate is the first of `pool` whose key
/// matches, else the one stored on the token with the key's id or label,
/// else none (the share is then found by trial).
fn open_token(parsed: &TokenUri, index: usize, pool: &CertPool, pass: &mut Passphrases) -> Result<OpenedToken> {
    let label = parsed.to_string();
    let pin = pass.pin_for(index, &format!("token '{}'", parsed.token), parsed.pin_source.as_ref())?;
    let key = TokenKey::open(parsed, &pin)?;
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
fn open_file(path: &Path, index: usize, pool: &CertPool, pass: &mut Passphrases) -> Result<OpenedKey> {
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
pub fn check_quorum_keys(sd: &SecurityDomain, keys: &QuorumKeys) -> Result<CertPool> {
    let given = &keys.sd_wrapping_keys;
    recovery::check_distinct_keys(given)?;
    if given.len() < sd.required() {
        return Err(RecoveryError::NotEnoughShares {
            opened: Vec::new(),
            needed: sd.required(),
            failures: vec![format!(
                "only {} key(s) were given with --sd-wrapping-keys; nothing was asked",
                given.len()
            )],
        }
        .into());
    }
    // The pool checked here is the one the keys are then opened with: one read of each --cert.
    let (pool, _) = cert_pool(&keys.certs)?;
    check_certs_have_shares(sd, given, &pool)?;
    Ok(pool)
}

/// Refuses, before any secret is asked, a certificate that has no share in
/// `sd`: each --cert, and (with none) the .cer beside each key file.
pub fn check_certs_have_shares(sd: &SecurityDomain, keys: &[KeyRef], pool: &CertPool) -> Result<()> {
    let mut known = pool.certificates().to_vec();
    if pool.is_empty() {
        for p in keys.iter().filter_map(KeyRef::file) {
            if let Some(cer) = inputs::sibling_certificate(p) {
                known.push((inputs::label(&cer), inputs::certificate(&cer)?));
            }
        }
    }
    recovery::check_certs_have_shares(sd, &known)
}

/// Loads `--cert` files for pairing, with the SHA-256 of each file's bytes
/// as parsed (in `paths`' order), for a step that records them.
pub fn cert_pool(paths: &[PathBuf]) -> Result<(CertPool, Vec<String>)> {
    let mut certs = Vec::with_capacity(paths.len());
    let mut hashes = Vec::with_capacity(paths.len());
    for p in paths {
        let (cert, sha256) = inputs::certificate_hashed(p)?;
        certs.push((inputs::label(p), cert));
        hashes.push(sha256);
    }
    Ok((CertPool::new(certs), hashes))
}
/// How to re-encrypt a weakly or oddly encrypted key file with current parameters.
pub fn reencrypt_advice(label: &str) -> String {
    format!(
        "Re-encrypt it with current parameters: openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -iter 600000 -in {label} -out NEW.key \
         (then check that NEW.key opens and replace {label} with it)"
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Args {
        #[command(flatten)]
        one: OneKey,
    }

    #[derive(Parser, Debug)]
    struct Quorum {
        #[command(flatten)]
        keys: QuorumKeys,
    }

    #[test]
    fn key_arguments_are_read_once_into_files_and_token_keys() {
        let uri = "pkcs11:token=alice;object=a?module-path=/m.so";
        let args = Quorum::try_parse_from(["t", "--sd-wrapping-keys", "a.key", uri]).unwrap();
        assert_eq!(args.keys.sd_wrapping_keys[0], KeyRef::File("a.key".into()));
        assert!(matches!(&args.keys.sd_wrapping_keys[1], KeyRef::Token(t) if t.token == "alice"));
        let one = Args::try_parse_from(["t", "--key", "alice.key"]).unwrap();
        assert_eq!(one.one.key, KeyRef::File("alice.key".into()));
    }

    /// A malformed URI is a usage error naming its flag and what is wrong,
    /// with what to do as clap's tip, and the PIN it holds is not repeated.
    #[test]
    fn a_malformed_uri_is_a_usage_error_naming_the_flag_without_the_pin() {
        let bad = "pkcs11:token=alice?module-path=/m.so&pin-value=4711";
        let err = Args::try_parse_from(["t", "--key", bad]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), i32::from(super::super::errors::EXIT_USAGE));
        let text = err.render().to_string();
        assert!(!text.contains("4711"), "{text}");
        for says in [
            "invalid value 'pkcs11:token=alice?module-path=/m.so&pin-value=***' for '--key <KEY>'",
            ": a PIN written in the URI (pin-value) is refused",
            "tip: Take pin-value out of the URI",
        ] {
            assert!(text.contains(says), "{says}: {text}");
        }
        let err = Quorum::try_parse_from(["t", "--sd-wrapping-keys", "a.key", "pkcs11:token=alice"]).unwrap_err();
        let text = err.render().to_string();
        assert!(
            text.contains("for '--sd-wrapping-keys <SD_WRAPPING_KEYS>...': it names no module"),
            "{text}"
        );
        assert!(text.contains("tip: Add ?module-path="), "{text}");
    }
}
