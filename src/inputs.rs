//! Loading ceremony inputs from files, with errors that name the file:
//! security domains, restore blobs, certificates, custodian keys, manifests,
//! rotation records, canary files and bearer-token files. Each file is read once, size-limited;
//! what is reported about it (its SHA-256) comes from the bytes parsed.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ceremony::drill::{self, Canary, KeyCanary, MAX_CANARY_BYTES};
use crate::ceremony::manifest::Manifest;
use crate::ceremony::rotation::Record;
use crate::crypto::secret::BearerToken;
use crate::custodian::cert::Certificate;
use crate::custodian::key::KeyFile;
use crate::custodian::CustodianError;
use crate::error::{Error, Result};
use crate::files::read_limited;
use crate::format::limits::{MAX_KEY_FILE_BYTES, MAX_SD_FILE_BYTES};
use crate::format::restore_blob::RestoreBlob;
use crate::format::sdfile::SecurityDomain;

/// Manifests and rotation records are small JSON documents.
const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

pub fn label(path: &Path) -> String {
    path.display().to_string()
}

pub fn security_domain(path: &Path) -> Result<SecurityDomain> {
    Ok(security_domain_hashed(path)?.0)
}

/// A security domain and the SHA-256 (hex) of the very bytes it was parsed
/// from: a file replaced between a hash and a second read could otherwise be
/// reported by one fingerprint and assessed as another.
pub fn security_domain_hashed(path: &Path) -> Result<(SecurityDomain, String)> {
    let bytes = read_limited(path, MAX_SD_FILE_BYTES, "security-domain file")?;
    let sd = SecurityDomain::from_json(&bytes).map_err(|source| Error::SecurityDomain {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((sd, hex::encode(Sha256::digest(&bytes))))
}

/// A signed manifest (`manifest create`'s output).
pub fn manifest(path: &Path) -> Result<Manifest> {
    Ok(manifest_hashed(path)?.0)
}

/// A manifest and the SHA-256 (hex) of the very bytes it was parsed from,
/// for the log line of the step it is checked for.
pub fn manifest_hashed(path: &Path) -> Result<(Manifest, String)> {
    let bytes = read_limited(path, MAX_DOCUMENT_BYTES, "manifest")?;
    let m = Manifest::from_json(&bytes).map_err(|why| Error::NotA {
        path: path.to_path_buf(),
        what: "manifest",
        why,
    })?;
    Ok((m, hex::encode(Sha256::digest(&bytes))))
}

/// The canary set `drill prepare` wrote, and the SHA-256 (hex) of the bytes
/// it was parsed from, for the step that records it.
pub fn canary_set_hashed(path: &Path) -> Result<(Canary, String)> {
    let bytes = read_limited(path, MAX_CANARY_BYTES, "canary file")?;
    let canary = drill::parse_canary_set(path, &bytes)?;
    Ok((canary, hex::encode(Sha256::digest(&bytes))))
}

pub fn canary_set(path: &Path) -> Result<Canary> {
    Ok(canary_set_hashed(path)?.0)
}

/// The canary `instance restore-key` proves: a single-key canary, or a
/// canary set's RSA key.
pub fn key_canary(path: &Path) -> Result<KeyCanary> {
    let bytes = read_limited(path, MAX_CANARY_BYTES, "canary file")?;
    drill::parse_key_canary(path, &bytes)
}

/// A rotation's record (`<new>.rotation.json`).
pub fn rotation_record(path: &Path) -> Result<Record> {
    let bytes = read_limited(path, MAX_DOCUMENT_BYTES, "rotation record")?;
    crate::format::json::from_slice(&bytes).map_err(|why| Error::NotA {
        path: path.to_path_buf(),
        what: "rotation record",
        why,
    })
}

/// A bearer token from a file: its first line, trimmed (a secret, so the
/// file must be private). Empty when the file's first line is.
pub fn bearer_token(path: &Path) -> Result<BearerToken> {
    let bytes = secret_file(path, MAX_TOKEN_FILE_BYTES, "token file")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::NotA {
        path: path.to_path_buf(),
        what: "token file",
        why: "it is not UTF-8 text".into(),
    })?;
    Ok(BearerToken::new(text.lines().next().unwrap_or("").trim().to_string()))
}

pub fn restore_blob(path: &Path) -> Result<RestoreBlob> {
    Ok(restore_blob_hashed(path)?.0)
}

/// A restore blob and the SHA-256 (hex) of the very bytes it was parsed from.
pub fn restore_blob_hashed(path: &Path) -> Result<(RestoreBlob, String)> {
    let bytes = read_limited(path, MAX_SD_FILE_BYTES, "restore blob")?;
    let blob = RestoreBlob::from_json(&bytes).map_err(|source| Error::RestoreBlob {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((blob, hex::encode(Sha256::digest(&bytes))))
}

/// A certificate, PEM or DER whatever the extension. Weak keys are still
/// returned (so they can be shown); use [`Certificate::rsa_public_key`] to
/// enforce the floor.
pub fn certificate(path: &Path) -> Result<Certificate> {
    Ok(certificate_hashed(path)?.0)
}

/// A certificate and the SHA-256 (hex) of the very file bytes it was parsed
/// from (PEM or DER as given, not the DER inside), for a step that records
/// the file: a second read could log one certificate and pair keys with another.
pub fn certificate_hashed(path: &Path) -> Result<(Certificate, String)> {
    let bytes = read_limited(path, MAX_KEY_FILE_BYTES, "certificate")?;
    let cert = Certificate::from_bytes(&bytes).map_err(|source| Error::Certificate {
        label: label(path),
        source,
    })?;
    Ok((cert, hex::encode(Sha256::digest(&bytes))))
}

pub fn key_file(path: &Path) -> Result<KeyFile> {
    let bytes = read_limited(path, MAX_KEY_FILE_BYTES, "private key file")?;
    let parsed = KeyFile::parse(&bytes);
    // A file that holds no key (a certificate given by mistake) is named as
    // such; only a key is refused for being readable by others.
    let not_a_key = matches!(
        parsed,
        Err(CustodianError::NotAKey(_) | CustodianError::CertificateNotKey)
    );
    if !not_a_key && readable_by_others(path) {
        return Err(Error::KeyFileExposed {
            path: path.to_path_buf(),
        });
    }
    parsed.map_err(|source| Error::Key {
        label: label(path),
        source,
    })
}

/// A file holding a secret (a passphrase, PIN or bearer token), at most
/// `limit` bytes; refused like a key file when group or others can read it,
/// since the secret opens as much as the key it guards.
pub fn secret_file(path: &Path, limit: u64, what: &'static str) -> Result<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(read_limited(path, limit, what)?);
    if readable_by_others(path) {
        return Err(Error::SecretFileExposed {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(bytes)
}

/// The certificate the Azure CLI expects beside a key: `cert_0.key` →
/// `cert_0.cer`, when it exists.
pub fn sibling_certificate(key_path: &Path) -> Option<PathBuf> {
    let cer = key_path.with_extension("cer");
    (cer != key_path && cer.is_file()).then_some(cer)
}

/// Whether a private key or secret file can be read by group or others.
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            return meta.permissions().mode() & 0o077 != 0;
        }
    }
    let _ = path;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint is of the bytes parsed: the Azure fixture's published SHA-256.
    #[test]
    fn a_security_domain_comes_with_the_hash_of_its_bytes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/azure/sdfile.json");
        let (sd, sha) = security_domain_hashed(&path).unwrap();
        assert_eq!(sha, "38976a398607b702b614a786cbe23e0855c7ba8c31dbcc388c74c1f7eedf0eee");
        assert_eq!(sd.required(), 2);
    }

    /// The file's hash, not the DER's: a PEM file is recorded as the bytes
    /// on disk, the certificate as the DER they hold.
    #[test]
    fn a_certificate_comes_with_the_hash_of_its_file() {
        let cert = &crate::test_support::custodians()[0].cert;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cer");
        std::fs::write(&path, cert.to_pem()).unwrap();
        let (parsed, sha) = certificate_hashed(&path).unwrap();
        assert_eq!(parsed.der(), cert.der());
        assert_eq!(sha, hex::encode(Sha256::digest(cert.to_pem().as_bytes())));
        assert_ne!(sha, cert.sha256_hex());
        std::fs::write(&path, b"not a certificate").unwrap();
        assert!(matches!(certificate_hashed(&path), Err(Error::Certificate { .. })));
    }

    #[test]
    fn documents_that_are_not_what_they_should_be_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, b"null").unwrap();
        assert!(matches!(manifest(&path), Err(Error::NotA { what: "manifest", .. })));
        assert!(matches!(
            rotation_record(&path),
            Err(Error::NotA {
                what: "rotation record",
                ..
            })
        ));
        let token = dir.path().join("t.token");
        std::fs::write(&token, b"\xff\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(
            bearer_token(&token),
            Err(Error::NotA { what: "token file", .. })
        ));
        std::fs::write(&token, b"  abc \nsecond\n").unwrap();
        assert_eq!(bearer_token(&token).unwrap().expose(), "abc");
    }
}
