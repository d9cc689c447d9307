//! The library's error: what happened, naming the file or custodian it
//! concerns. The CLI adds what to do about it and picks the exit code from
//! [`Error::kind`].

use std::path::PathBuf;

use thiserror::Error;

use crate::crypto::CryptoError;
use crate::custodian::token::TokenError;
use crate::custodian::CustodianError;
use crate::format::FormatError;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} already exists; it is never overwritten", path.display())]
    OutputExists { path: PathBuf },
    #[error("{} is a directory, not a file", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is a symbolic link; a ceremony log, its .head and every output must be a real file", path.display())]
    SymlinkRefused { path: PathBuf },
    #[error("the output folder {} cannot be used for {}: {reason}", folder.display(), output.display())]
    OutputFolder {
        folder: PathBuf,
        output: PathBuf,
        reason: String,
    },
    #[error(
        "{} is left from a rotation that stopped before its record {} was written; nothing took effect",
        pending.display(), record.display()
    )]
    InterruptedRotation { pending: PathBuf, record: PathBuf },
    #[error("{} is {size} bytes; no {what} is larger than {limit} bytes, so it was not read", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("{} is not a valid security-domain file: {source}", path.display())]
    SecurityDomain { path: PathBuf, source: FormatError },
    #[error("{} is not a valid restore blob: {source}", path.display())]
    RestoreBlob { path: PathBuf, source: FormatError },
    #[error("the certificate {label} cannot be used: {source}")]
    Certificate { label: String, source: CustodianError },
    #[error("the key {label} cannot be used: {source}")]
    Key { label: String, source: CustodianError },
    #[error("{source}")]
    Token { source: TokenError },
    #[error("{} can be read by other users of this machine; a private key must be readable by its owner only", path.display())]
    KeyFileExposed { path: PathBuf },
    #[error("{} can be read by other users of this machine; a {what} must be readable by its owner only", path.display())]
    SecretFileExposed { path: PathBuf, what: &'static str },
    #[error("the key {key} does not belong to the certificate {cert}")]
    KeyCertMismatch { key: String, cert: String },
    #[error("the certificate {cert} (x5t_256 {x5t_256}) has no share in this security domain")]
    CertNotInSd { cert: String, x5t_256: String },
    #[error("the key {key} opens none of the {shares} shares in this security domain")]
    KeyOpensNoShare { key: String, shares: usize },
    #[error("the share of {who} failed its integrity check: {source}")]
    ShareIntegrity { who: String, source: CryptoError },
    #[error("{second} is the same key as {first} ({why}); each custodian's key is given once")]
    DuplicateKey {
        first: String,
        second: String,
        why: &'static str,
    },
    #[error("the share of {who} was already opened; each custodian counts once")]
    DuplicateCustodian { who: String },
    #[error("{}", not_enough(.opened, .needed, .failures))]
    NotEnoughShares {
        opened: Vec<String>,
        needed: usize,
        failures: Vec<String>,
    },
    #[error(
        "only {} of the {needed} required new custodians have proved possession of {pending}{}",
        .proved.len(),
        if .proved.is_empty() { String::new() } else { format!(" ({})", .proved.join(", ")) }
    )]
    NotEnoughProofs {
        proved: Vec<String>,
        needed: usize,
        pending: String,
        log: String,
    },
    #[error("the shares do not rebuild the master key: {reason}")]
    SharesInconsistent { reason: String },
    #[error("data item '{tag}' failed its integrity check: {source}")]
    ItemIntegrity { tag: String, source: CryptoError },
    #[error("the restore blob is for another exchange key (x5t_256 {blob}), not this instance's ({ours})")]
    WrongExchangeKey { blob: String, ours: String },
    #[error("the rotation record {} is refused: {reason}", path.display())]
    RecordRefused { path: PathBuf, reason: String },
    #[error("the ceremony log {} is broken at line {line}: {reason}", path.display())]
    LogBroken { path: PathBuf, line: u64, reason: String },
    #[error("the self-test failed: {}; this binary must not be used for a ceremony", failed.join(", "))]
    SelfTestFailed { failed: Vec<&'static str> },
    #[error("the manifest is refused: {0}")]
    ManifestRefused(String),
    /// `sd health`: recovery still works, but the quorum is at risk.
    #[error("the quorum is at risk:\n  - {}", .0.join("\n  - "))]
    QuorumAtRisk(Vec<String>),
    /// `sd health`: too few usable custodians remain to recover.
    #[error("the security domain cannot be recovered:\n  - {}", .0.join("\n  - "))]
    CannotRecover(Vec<String>),
    #[error("{0}")]
    WeakParameters(String),
    /// A custodian set that cannot be used, each problem with its cause so
    /// each gets its own advice.
    #[error("the certificates are not ready for the download:\n  - {}", cert_problems(.0))]
    CertsNotReady(Vec<CertProblem>),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Crypto(String),
    #[error("{0}")]
    Instance(String),
    /// An `--url` that is not an instance's base URL (shown with any user
    /// info and query masked: they may hold a secret).
    #[error("--url {url}: {why}")]
    InstanceUrl { url: String, why: String },
    /// No answer: connection refused, DNS, timeout.
    #[error("{request} to {url} failed: {reason}")]
    InstanceUnreachable {
        url: String,
        request: String,
        reason: String,
    },
    /// The TLS handshake failed: usually a CA that does not sign the instance's certificate.
    #[error("{request} to {url} failed: the TLS connection was refused: {reason}")]
    InstanceTls {
        url: String,
        request: String,
        reason: String,
    },
    /// A non-2xx answer.
    #[error("{request} was refused with {status}: {detail}")]
    InstanceRefused {
        request: String,
        status: u16,
        detail: String,
    },
}

fn not_enough(opened: &[String], needed: &usize, failures: &[String]) -> String {
    let mut msg = format!(
        "not enough custodians: {} share(s) opened{}, {needed} needed",
        opened.len(),
        if opened.is_empty() {
            String::new()
        } else {
            format!(" ({})", opened.join(", "))
        }
    );
    for f in failures {
        msg.push_str(&format!("\n  - {f}"));
    }
    msg
}

/// What is wrong with one certificate of a custodian set (or with the set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertCause {
    /// The custodian count or quorum is outside what is accepted.
    Quorum,
    /// The certificate's key is unusable (not RSA, too short).
    Key,
    /// The same certificate given twice.
    Duplicate,
    /// Two certificates of one key: one person would hold two shares.
    SameKey,
    /// Expired, or not valid yet.
    NotValid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertProblem {
    pub cause: CertCause,
    pub text: String,
}

fn cert_problems(problems: &[CertProblem]) -> String {
    problems
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join("\n  - ")
}

/// Families of errors, one exit code each (see the README and man pages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file or argument is malformed, weak or refused.
    Input,
    /// A tag, passphrase or key check failed: the data or key is not the right one.
    Integrity,
    /// Fewer shares than the quorum could be opened.
    Quorum,
    /// The file system said no.
    Io,
    /// The instance (or emulator) refused or could not be reached.
    Instance,
    /// `sd health`: the quorum is at risk.
    AtRisk,
    /// `sd health`: the security domain cannot be recovered.
    CannotRecover,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        use CustodianError as C;
        match self {
            Error::Read { .. } | Error::Write { .. } | Error::OutputFolder { .. } => ErrorKind::Io,
            Error::Key {
                source: C::WrongPassphrase,
                ..
            } => ErrorKind::Integrity,
            Error::Token {
                source: TokenError::WrongPin { .. } | TokenError::PinLocked { .. },
            } => ErrorKind::Integrity,
            Error::KeyCertMismatch { .. }
            | Error::CertNotInSd { .. }
            | Error::KeyOpensNoShare { .. }
            | Error::ShareIntegrity { .. }
            | Error::SharesInconsistent { .. }
            | Error::ItemIntegrity { .. }
            | Error::WrongExchangeKey { .. }
            | Error::ManifestRefused(_)
            | Error::RecordRefused { .. }
            | Error::LogBroken { .. }
            | Error::SelfTestFailed { .. } => ErrorKind::Integrity,
            Error::NotEnoughShares { .. } | Error::NotEnoughProofs { .. } => ErrorKind::Quorum,
            Error::QuorumAtRisk(_) => ErrorKind::AtRisk,
            Error::CannotRecover(_) => ErrorKind::CannotRecover,
            Error::Instance(_)
            | Error::InstanceUnreachable { .. }
            | Error::InstanceTls { .. }
            | Error::InstanceRefused { .. } => ErrorKind::Instance,
            _ => ErrorKind::Input,
        }
    }
}

impl From<TokenError> for Error {
    fn from(source: TokenError) -> Self {
        Error::Token { source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
