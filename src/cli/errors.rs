//! Turning an error into what a custodian at 2 a.m. needs: what happened,
//! what to do next, and a distinct exit code per family.

use super::output;
use crate::custodian::CustodianError;
use crate::error::{Error, ErrorKind};

/// Exit codes, documented in the README and every man page.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INPUT: u8 = 3;
pub const EXIT_INTEGRITY: u8 = 4;
pub const EXIT_QUORUM: u8 = 5;
pub const EXIT_IO: u8 = 6;
pub const EXIT_INSTANCE: u8 = 7;

pub fn exit_code(err: &Error) -> u8 {
    if matches!(err, Error::Usage(_)) {
        return EXIT_USAGE;
    }
    match err.kind() {
        ErrorKind::Input => EXIT_INPUT,
        ErrorKind::Integrity => EXIT_INTEGRITY,
        ErrorKind::Quorum => EXIT_QUORUM,
        ErrorKind::Io => EXIT_IO,
        ErrorKind::Instance => EXIT_INSTANCE,
    }
}

/// What to do about it, when there is something useful to say.
pub fn advice(err: &Error) -> Option<String> {
    use CustodianError as C;
    let text = match err {
        Error::OutputExists { .. } => "Choose another output path, or move the existing file away after checking what it is.".into(),
        Error::NotAFile { .. } => "Give the path of a file, not of a folder.".into(),
        Error::TooLarge { .. } => "Check that this is the file you meant; a real one is far smaller.".into(),
        Error::SecurityDomain { .. } => {
            "Use the file exactly as `az keyvault security-domain download` wrote it; compare its SHA-256 with the ceremony record."
                .into()
        }
        Error::RestoreBlob { .. } => "Rebuild the restore blob with `hsm-ceremony restore-blob`; do not edit it.".into(),
        Error::Key { source: C::WrongPassphrase, label } => {
            format!("The custodian who owns {label} must type their passphrase; the key is not usable without it.")
        }
        Error::Key { source: C::NeedsPassphrase, .. } => {
            "Run on a terminal to be asked, or give --passphrase-file / --passphrase-fd.".into()
        }
        Error::Key { source: C::LegacyEncryption, label } => format!(
            "Convert it once to encrypted PKCS#8: openssl pkcs8 -topk8 -v2 aes-256-cbc -in {label} -out NEW.key"
        ),
        Error::Key { .. } => "Check that this is the custodian's private key (PEM or DER, PKCS#8 or PKCS#1, RSA 2048 bits or more).".into(),
        Error::KeyFileExposed { path } => format!("Restrict it, then run again: chmod 600 {}", path.display()),
        Error::Certificate { .. } => "Give the custodian's certificate (.cer, PEM or DER) with an RSA key of 2048 bits or more.".into(),
        Error::KeyCertMismatch { .. } => "Pair each key with its own certificate: give the right --cert, or fix the .cer file beside the key.".into(),
        Error::CertNotInSd { .. } => {
            "This custodian is not in this security domain: check the file (it may be from another HSM or an older custodian set)."
                .into()
        }
        Error::KeyOpensNoShare { .. } => "This key belongs to no custodian of this security domain; check you have the right key and file.".into(),
        Error::ShareIntegrity { .. } => {
            "The share was altered or belongs to another key. Keep this file as evidence and try the next custodian."
                .into()
        }
        Error::DuplicateCustodian { .. } => "Each custodian's key may be given once; bring another custodian.".into(),
        Error::NotEnoughShares { .. } => "Bring more custodians with their keys and passphrases, then run again.".into(),
        Error::SharesInconsistent { .. } | Error::ItemIntegrity { .. } => {
            "The security domain has been tampered with or mixes files. Stop, keep the files as evidence, and compare the file's SHA-256 with the ceremony record."
                .into()
        }
        Error::WrongExchangeKey { .. } => "Fetch the exchange key of the instance you upload to, and build the blob for it.".into(),
        Error::LogBroken { .. } => {
            "Keep the log as evidence and compare it with the paper record and other copies; do not append to it until the break is explained."
                .into()
        }
        Error::ManifestRefused(_) => {
            "Do not proceed: the parameters differ from what the custodians signed. Make a new manifest and have every custodian sign it."
                .into()
        }
        Error::WeakParameters(_) => "Choose stronger parameters; see --help for what is accepted.".into(),
        Error::Write { .. } => "Check the disk has room and the folder is writable; nothing was left at the output path.".into(),
        Error::Read { .. } => "Check the path and its permissions.".into(),
        Error::Usage(_) => "See --help for the command's usage and examples.".into(),
        Error::Crypto(_) | Error::Instance(_) => return None,
    };
    Some(text)
}

/// Prints the error and its advice to stderr.
pub fn report(err: &Error) {
    eprintln!("error: {}", output::printable(&err.to_string()));
    if let Some(what) = advice(err) {
        eprintln!("  what to do: {}", output::printable(&what));
    }
}
