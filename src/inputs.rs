//! Loading ceremony inputs from files, with errors that name the file:
//! security domains, restore blobs, certificates and custodian keys.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::custodian::cert::Certificate;
use crate::custodian::key::KeyFile;
use crate::custodian::CustodianError;
use crate::error::{Error, Result};
use crate::files::read_limited;
use crate::format::limits::{MAX_KEY_FILE_BYTES, MAX_SD_FILE_BYTES};
use crate::format::restore_blob::RestoreBlob;
use crate::format::sdfile::SecurityDomain;

pub fn label(path: &Path) -> String {
    path.display().to_string()
}

pub fn security_domain(path: &Path) -> Result<SecurityDomain> {
    let bytes = read_limited(path, MAX_SD_FILE_BYTES, "security-domain file")?;
    SecurityDomain::from_json(&bytes).map_err(|source| Error::SecurityDomain {
        path: path.to_path_buf(),
        source,
    })
}

pub fn restore_blob(path: &Path) -> Result<RestoreBlob> {
    let bytes = read_limited(path, MAX_SD_FILE_BYTES, "restore blob")?;
    RestoreBlob::from_json(&bytes).map_err(|source| Error::RestoreBlob {
        path: path.to_path_buf(),
        source,
    })
}

/// A certificate, PEM or DER whatever the extension. Weak keys are still
/// returned (so they can be shown); use [`Certificate::rsa_public_key`] to
/// enforce the floor.
pub fn certificate(path: &Path) -> Result<Certificate> {
    let bytes = read_limited(path, MAX_KEY_FILE_BYTES, "certificate")?;
    Certificate::from_bytes(&bytes).map_err(|source| Error::Certificate {
        label: label(path),
        source,
    })
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
