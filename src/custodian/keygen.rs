//! New custodian key pairs and their self-signed certificates (rcgen, with
//! the signature made by our RSA key so no other crypto backend is involved),
//! in key files or on a PKCS#11 token.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
    SigningKey,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::cert::Certificate;
use super::key as keyfile;
use super::signer::{SignError, Signer};
use super::token::{self, Generated, NewKey, TokenError};
use super::CustodianError;
use crate::crypto::rng::CryptoRng;
use crate::crypto::secret::Passphrase;
use crate::error::{Error, Result};
use crate::files::{self, Mode};
use crate::format::limits::MIN_RSA_BITS;

/// Key sizes offered; 3072 is the default (128-bit security).
pub const ALLOWED_BITS: [usize; 3] = [2048, 3072, 4096];
pub const DEFAULT_BITS: usize = 3072;
/// Longest validity accepted for a custodian certificate.
pub const MAX_DAYS: u32 = 3650;

pub fn generate_key_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    bits: usize,
) -> Result<rsa::PrivateKey, CustodianError> {
    if bits < MIN_RSA_BITS || !ALLOWED_BITS.contains(&bits) {
        return Err(CustodianError::Generation(format!(
            "{bits}-bit RSA is not offered; choose 2048, 3072 or 4096"
        )));
    }
    rsa::PrivateKey::new(rng, bits).map_err(|e| CustodianError::Generation(e.to_string()))
}

/// rcgen's view of a custodian's key; the signature is made by [`Signer`].
struct CertSigner<'a> {
    key: &'a dyn Signer,
    public_der: Vec<u8>,
    /// Why the signer failed: rcgen's error type cannot carry it.
    failure: std::cell::RefCell<Option<SignError>>,
}

impl PublicKeyData for CertSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl SigningKey for CertSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign_sha256(msg).map_err(|why| {
            *self.failure.borrow_mut() = Some(why);
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A self-signed certificate for `key` with CN = `name`, valid from `now`
/// for `days` days.
pub fn self_signed_certificate_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &rsa::PrivateKey,
    name: &str,
    days: u32,
    now: OffsetDateTime,
) -> Result<Certificate, CustodianError> {
    self_signed_certificate_by_with_rng(rng, key, name, days, now)
}

/// As [`self_signed_certificate_with_rng`], signed by any [`Signer`] (a
/// token key signs on the token).
pub fn self_signed_certificate_by_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    key: &dyn Signer,
    name: &str,
    days: u32,
    now: OffsetDateTime,
) -> Result<Certificate, CustodianError> {
    use pkcs1::EncodeRsaPublicKey;
    if days == 0 || days > MAX_DAYS {
        return Err(CustodianError::Generation(format!(
            "a validity of {days} days is outside 1 to {MAX_DAYS}"
        )));
    }
    let public_der = key
        .public_key()
        .to_pkcs1_der()
        .map_err(|e| CustodianError::Generation(e.to_string()))?
        .into_vec();
    let signer = CertSigner {
        key,
        public_der,
        failure: Default::default(),
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days as i64);
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&signer).map_err(|e| {
        CustodianError::Generation(signer.failure.take().map_or_else(|| e.to_string(), |f| f.to_string()))
    })?;
    Certificate::from_bytes(cert.der())
}

/// A new custodian key as PEM (encrypted unless it has no passphrase) and
/// its self-signed certificate.
pub struct NewKeyFile {
    pub pem: Zeroizing<String>,
    pub cert: Certificate,
}

/// Generates one key per name (`names[i]` with `passphrases[i]`) on all
/// cores, each worker with its own RNG from `rng`; `done` is called as each
/// key is ready (a progress bar). Errors name the key file (`NAME.key`); the
/// first failure in name order is returned, and nothing is written here.
pub fn generate_many<R: CryptoRng>(
    names: &[String],
    bits: usize,
    days: u32,
    passphrases: &[Option<Passphrase>],
    now: OffsetDateTime,
    rng: impl Fn() -> R + Sync,
    done: impl Fn() + Sync,
) -> Result<Vec<NewKeyFile>> {
    assert_eq!(names.len(), passphrases.len(), "one passphrase slot per name");
    let slots: Vec<Mutex<Option<Result<NewKeyFile>>>> = names.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(names.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut rng = rng();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= names.len() {
                        break;
                    }
                    let result = make_one(&mut rng, &names[i], bits, days, passphrases[i].as_ref(), now);
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    done();
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every slot is filled before the scope ends")
        })
        .collect()
}

fn make_one<R: CryptoRng + ?Sized>(
    rng: &mut R,
    name: &str,
    bits: usize,
    days: u32,
    passphrase: Option<&Passphrase>,
    now: OffsetDateTime,
) -> Result<NewKeyFile> {
    let gen_err = |source| Error::Key {
        label: format!("{name}.key"),
        source,
    };
    let key = generate_key_with_rng(rng, bits).map_err(gen_err)?;
    let cert = self_signed_certificate_with_rng(rng, &key, name, days, now).map_err(gen_err)?;
    let pem = match passphrase {
        Some(p) => keyfile::to_encrypted_pem_with_rng(rng, &key, p),
        None => keyfile::to_plain_pem(&key),
    }
    .map_err(gen_err)?;
    Ok(NewKeyFile { pem, cert })
}

/// A custodian's new files (or, for a key made on a token, its URI as the key's path).
#[derive(Debug)]
pub struct Made {
    pub name: String,
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
    pub cert: Certificate,
}

/// Writes each custodian's certificate, then key file (mode 0600), `made[i]`
/// to `paths[i]` as (name, key path, certificate path). All or nothing: on
/// any failure the files already written are removed again, since a
/// half-made custodian set is worse than none.
pub fn write_all(paths: Vec<(String, PathBuf, PathBuf)>, made: Vec<NewKeyFile>) -> Result<Vec<Made>> {
    assert_eq!(paths.len(), made.len(), "one set of paths per key");
    let mut written: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for ((name, key_path, cert_path), NewKeyFile { pem, cert }) in paths.into_iter().zip(made) {
        let outcome = files::write_new(&cert_path, cert.to_pem().as_bytes(), Mode::Public)
            .and_then(|()| {
                written.push(cert_path.clone());
                files::write_new(&key_path, pem.as_bytes(), Mode::Private)
            })
            .map(|()| written.push(key_path.clone()));
        if let Err(e) = outcome {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        out.push(Made {
            name,
            key_path,
            cert_path,
            cert,
        });
    }
    Ok(out)
}

/// A keygen on a token that failed: the error to report, and what was
/// undone of what it had made.
#[derive(Debug)]
pub struct TokenKeygenFailed {
    pub error: Error,
    /// `None` when the key pair was never made (a failure while making it
    /// leaves nothing on the token: [`token::generate_with_rng`] cleans up).
    pub undone: Option<Box<Undone>>,
}

/// What a failed keygen on a token had made, and whether each was removed.
#[derive(Debug)]
pub struct Undone {
    /// The new certificate's x5t#S256, which names the key pair to a custodian.
    pub x5t_256: String,
    /// The certificate file, when it had been written, and its removal.
    pub certificate_file: Option<(PathBuf, std::io::Result<()>)>,
    /// `Ok` when the key pair and its certificate are gone from the token
    /// again; otherwise they are still on it, and the token's reason.
    pub key_pair: Result<(), TokenError>,
}

/// `keygen --token`: makes the key pair and its certificate on the token
/// ([`token::generate_with_rng`]), writes the certificate to `cert_path` and
/// has the step recorded by `record`. All or nothing: when the write or the
/// record fails, the file and the key pair are removed again, since a key
/// pair whose keygen failed would block a retry under the same name; the
/// failure says what could not be removed.
pub fn on_token_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    new: &NewKey<'_>,
    pin: &Passphrase,
    now: OffsetDateTime,
    cert_path: &Path,
    record: impl FnOnce(&Generated) -> Result<()>,
) -> Result<Generated, TokenKeygenFailed> {
    let made = token::generate_with_rng(rng, new, pin, now).map_err(|e| TokenKeygenFailed {
        error: e.into(),
        undone: None,
    })?;
    let mut written = false;
    let finished = files::write_new(cert_path, made.cert.to_pem().as_bytes(), Mode::Public)
        .and_then(|()| {
            written = true;
            crate::ceremony::kill::fail_point("keygen:certificate-written").map_err(Error::Usage)
        })
        .and_then(|()| record(&made));
    match finished {
        Ok(()) => Ok(made),
        Err(error) => {
            let x5t_256 = made.cert.x5t_256();
            let certificate_file = written.then(|| (cert_path.to_path_buf(), std::fs::remove_file(cert_path)));
            let key_pair = made.discard();
            Err(TokenKeygenFailed {
                error,
                undone: Some(Box::new(Undone {
                    x5t_256,
                    certificate_file,
                    key_pair,
                })),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{rsa_2048, test_rng};

    #[test]
    fn certificate_carries_the_key_and_name() {
        let key = rsa_2048();
        let now = OffsetDateTime::now_utc();
        let cert = self_signed_certificate_with_rng(&mut test_rng(10), key, "alice", 365, now).unwrap();
        assert!(cert.subject.contains("CN=alice"), "{}", cert.subject);
        assert!(cert.matches(&key.to_public_key()));
        assert_eq!(cert.bits, 2048);
        assert!((364..=365).contains(&cert.days_left(now)));
        assert_eq!(
            Certificate::from_bytes(cert.to_pem().as_bytes()).unwrap().der(),
            cert.der()
        );
    }

    #[test]
    fn weak_or_odd_parameters_are_refused() {
        assert!(generate_key_with_rng(&mut test_rng(11), 1024).is_err());
        assert!(generate_key_with_rng(&mut test_rng(11), 2500).is_err());
        let now = OffsetDateTime::now_utc();
        assert!(self_signed_certificate_with_rng(&mut test_rng(12), rsa_2048(), "a", 0, now).is_err());
        assert!(self_signed_certificate_with_rng(&mut test_rng(12), rsa_2048(), "a", 4000, now).is_err());
    }

    #[test]
    fn many_keys_come_back_in_name_order_each_its_own() {
        let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let seed = AtomicUsize::new(40);
        let count = AtomicUsize::new(0);
        let made = generate_many(
            &names,
            2048,
            30,
            &[None, None],
            OffsetDateTime::now_utc(),
            || test_rng(seed.fetch_add(1, Ordering::Relaxed) as u64),
            || {
                count.fetch_add(1, Ordering::Relaxed);
            },
        )
        .unwrap();
        assert_eq!(count.into_inner(), 2);
        for (name, m) in names.iter().zip(&made) {
            assert!(m.cert.subject.contains(&format!("CN={name}")), "{}", m.cert.subject);
            let key = keyfile::KeyFile::parse(m.pem.as_bytes()).unwrap();
            assert!(matches!(key, keyfile::KeyFile::Plain(_)));
        }
        assert_ne!(made[0].cert.x5t_256(), made[1].cert.x5t_256());
        let refused = generate_many(
            &names[..1],
            1024,
            30,
            &[None],
            OffsetDateTime::now_utc(),
            || test_rng(1),
            || {},
        );
        assert!(matches!(refused, Err(Error::Key { ref label, .. }) if label == "a.key"));
    }

    fn plain(i: usize) -> NewKeyFile {
        let c = &crate::test_support::custodians()[i];
        NewKeyFile {
            pem: keyfile::to_plain_pem(&c.key).unwrap(),
            cert: c.cert.clone(),
        }
    }

    #[test]
    fn a_custodian_set_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let paths = |names: &[&str]| -> Vec<(String, PathBuf, PathBuf)> {
            names
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        dir.path().join(format!("{n}.key")),
                        dir.path().join(format!("{n}.cer")),
                    )
                })
                .collect()
        };
        // b's key file is taken: a's files and b's certificate, written by then, go again.
        std::fs::write(dir.path().join("b.key"), "someone else's").unwrap();
        let refused = write_all(paths(&["a", "b"]), vec![plain(0), plain(1)]);
        assert!(matches!(refused, Err(Error::OutputExists { ref path }) if path.ends_with("b.key")));
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["b.key"]);
        assert_eq!(std::fs::read(dir.path().join("b.key")).unwrap(), b"someone else's");

        let made = write_all(paths(&["c", "d"]), vec![plain(0), plain(1)]).unwrap();
        for (m, i) in made.iter().zip([0, 1]) {
            let c = &crate::test_support::custodians()[i];
            assert_eq!(
                Certificate::from_bytes(&std::fs::read(&m.cert_path).unwrap())
                    .unwrap()
                    .der(),
                c.cert.der()
            );
            assert!(keyfile::KeyFile::parse(&std::fs::read(&m.key_path).unwrap()).is_ok());
        }
        assert_eq!([&made[0].name, &made[1].name], ["c", "d"]);
    }

    #[test]
    fn a_token_keygen_that_cannot_start_has_nothing_to_undo() {
        let dir = tempfile::tempdir().unwrap();
        let new = NewKey {
            module_path: &dir.path().join("no-such-module.so"),
            token: "alice",
            name: "alice",
            bits: 2048,
            days: 30,
            oaep_on_host: true,
        };
        let cert = dir.path().join("alice.cer");
        let Err(failed) = on_token_with_rng(
            &mut test_rng(3),
            &new,
            &Passphrase::new("1234".into()),
            OffsetDateTime::now_utc(),
            &cert,
            |_| panic!("nothing made, nothing to record"),
        ) else {
            panic!("no module, no key pair")
        };
        assert!(
            matches!(failed.error, Error::Token(TokenError::Module { .. })),
            "{:?}",
            failed.error
        );
        assert!(failed.undone.is_none());
        assert!(!cert.exists());
    }

    /// With SoftHSM2 (the only test in this binary loading it, so its
    /// configuration variable is set before the module is first loaded).
    #[test]
    fn a_token_keygen_that_cannot_finish_leaves_nothing_behind() {
        const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
        assert!(
            Path::new(MODULE).is_file(),
            "SoftHSM2 is not installed ({MODULE} is missing): run `apt-get install softhsm2` (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let init = std::process::Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                "keygen",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ])
            .output()
            .expect("softhsm2-util runs (apt-get install softhsm2)");
        assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
        let new = NewKey {
            module_path: Path::new(MODULE),
            token: "keygen",
            name: "alice",
            bits: 2048,
            days: 30,
            // SoftHSM 2.6 has no OAEP with SHA-256.
            oaep_on_host: true,
        };
        let pin = Passphrase::new("1234".into());
        let cert = dir.path().join("alice.cer");
        let run = |seed, record: &dyn Fn(&Generated) -> Result<()>| {
            on_token_with_rng(
                &mut test_rng(seed),
                &new,
                &pin,
                OffsetDateTime::now_utc(),
                &cert,
                record,
            )
        };

        // The record fails: the certificate file and the key pair go again.
        let Err(failed) = run(4, &|_| Err(Error::Usage("the log is full".into()))) else {
            panic!("an unrecorded keygen failed")
        };
        assert!(matches!(failed.error, Error::Usage(ref m) if m == "the log is full"));
        let undone = failed.undone.expect("a key pair was made");
        assert!(
            matches!(&undone.certificate_file, Some((p, Ok(()))) if p == &cert),
            "{undone:?}"
        );
        assert!(undone.key_pair.is_ok(), "{undone:?}");
        assert!(!cert.exists());

        // The certificate file is taken: it is left as it was, the key pair goes.
        std::fs::write(&cert, "someone else's").unwrap();
        let Err(failed) = run(5, &|_| panic!("not written, not recorded")) else {
            panic!("a taken certificate file failed")
        };
        assert!(matches!(failed.error, Error::OutputExists { .. }), "{:?}", failed.error);
        let undone = failed.undone.expect("a key pair was made");
        assert!(
            undone.certificate_file.is_none() && undone.key_pair.is_ok(),
            "{undone:?}"
        );
        assert_eq!(std::fs::read(&cert).unwrap(), b"someone else's");
        std::fs::remove_file(&cert).unwrap();

        // Nothing was left under the name: the keygen runs through, once.
        let made = run(6, &|g| {
            assert!(cert.exists(), "recorded after the certificate file is written");
            assert!(g.cert.subject.contains("CN=alice"));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            Certificate::from_bytes(&std::fs::read(&cert).unwrap()).unwrap().der(),
            made.cert.der()
        );
        let Err(again) = run(7, &|_| panic!("refused before anything is made")) else {
            panic!("a second key pair under the name was made")
        };
        assert!(
            matches!(again.error, Error::Token(TokenError::LabelTaken { .. })) && again.undone.is_none(),
            "{:?}",
            again.error
        );
    }
}
