//! Opening custodians' keys for a command: passphrase, retries, and pairing
//! each key with its certificate by what it is, not by its file name.

use std::path::{Path, PathBuf};

use crate::custodian::cert::Certificate;
use crate::custodian::CustodianError;
use crate::error::{Error, Result};
use crate::inputs;
use crate::recovery::CustodianKey;

use super::passphrase::Passphrases;

/// A custodian's key in memory, for signing as well as unwrapping.
pub struct OpenedKey {
    pub label: String,
    pub key: rsa::PrivateKey,
    pub cert: Option<(String, Certificate)>,
}

/// Opens the key at `path` for share unwrapping; see [`open_rsa`].
pub fn open(
    path: &Path,
    index: usize,
    pool: &[(PathBuf, Certificate)],
    pass: &mut Passphrases,
) -> Result<CustodianKey> {
    let k = open_rsa(path, index, pool, pass)?;
    Ok(CustodianKey::from_rsa(k.label, k.key, k.cert))
}

/// Opens the key at `path` (key `index` of the command's keys). The
/// certificate is the first of `pool` whose key matches, else the `.cer`
/// beside the key (which must then match), else none.
pub fn open_rsa(
    path: &Path,
    index: usize,
    pool: &[(PathBuf, Certificate)],
    pass: &mut Passphrases,
) -> Result<OpenedKey> {
    let label = inputs::label(path);
    let file = inputs::key_file(path)?;
    let key = if file.is_encrypted() {
        let mut attempt = 0;
        loop {
            let given = pass.for_key(index, &label, attempt)?;
            let typed = given.as_ref().map(|g| g.typed).unwrap_or(false);
            let file = inputs::key_file(path)?;
            match file.into_key(given.as_ref().map(|g| &g.passphrase)) {
                Ok(key) => break key,
                Err(CustodianError::WrongPassphrase) if typed && attempt < 2 => {
                    eprintln!("That passphrase does not open {label}.");
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
    let public = key.to_public_key();
    let cert = match pool.iter().find(|(_, c)| c.matches(&public)) {
        Some((p, c)) => Some((inputs::label(p), c.clone())),
        None => match inputs::sibling_certificate(path) {
            Some(cer) => {
                let c = inputs::certificate(&cer)?;
                if !c.matches(&public) {
                    return Err(Error::KeyCertMismatch {
                        key: label,
                        cert: inputs::label(&cer),
                    });
                }
                Some((inputs::label(&cer), c))
            }
            None => None,
        },
    };
    Ok(OpenedKey { label, key, cert })
}

/// Loads `--cert` files for pairing.
pub fn cert_pool(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Certificate)>> {
    paths.iter().map(|p| Ok((p.clone(), inputs::certificate(p)?))).collect()
}
