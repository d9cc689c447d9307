//! The library's errors: what happened, naming the file, custodian or flag it
//! concerns, never what to do about it. The CLI (src/cli/errors.rs) alone
//! adds the advice and picks the exit code.
//!
//! [`enum@Error`] holds the file-system and input errors every layer shares and
//! one typed enum per concern: [`FormatError`] (files' formats),
//! [`CryptoError`], [`CustodianError`] and [`TokenError`] (custodian keys
//! and certificates), [`RecoveryError`] (shares, quorum, data items, blobs),
//! [`LogError`] (ceremony log, rotation records, manifests),
//! [`InstanceError`] (the instance client) and [`EmulatorError`] (the
//! emulator's state and serving). Every enum is `#[non_exhaustive]` and keeps
//! its cause reachable through `source()`.

use std::path::PathBuf;

use thiserror::Error;

pub use crate::crypto::CryptoError;
pub use crate::custodian::token::TokenError;
pub use crate::custodian::CustodianError;
pub use crate::format::FormatError;

#[derive(Debug, Error)]
#[non_exhaustive]
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
    #[error("{} is {size} bytes; no {what} is larger than {limit} bytes, so it was not read", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("{} can be read by other users of this machine; a private key must be readable by its owner only", path.display())]
    KeyFileExposed { path: PathBuf },
    #[error("{} can be read by other users of this machine; a {what} must be readable by its owner only", path.display())]
    SecretFileExposed { path: PathBuf, what: &'static str },
    /// A JSON input that is not the document it should be (`what`: "canary
    /// backup from `drill prepare`", "rotation record", ...).
    #[error("{} is not a {what}: {why}", path.display())]
    NotA {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
    #[error("{} is not a valid security-domain file: {source}", path.display())]
    SecurityDomain { path: PathBuf, source: FormatError },
    #[error("{} is not a valid restore blob: {source}", path.display())]
    RestoreBlob { path: PathBuf, source: FormatError },
    #[error("the certificate {label} cannot be used: {source}")]
    Certificate { label: String, source: CustodianError },
    #[error("the key {label} cannot be used: {source}")]
    Key { label: String, source: CustodianError },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the key {key} does not belong to the certificate {cert}")]
    KeyCertMismatch { key: String, cert: String },
    #[error("the self-test failed: {}; this binary must not be used for a ceremony", failed.join(", "))]
    SelfTestFailed { failed: Vec<&'static str> },
    /// A parameter outside what is accepted (a count, a size, a weak
    /// passphrase), naming the flag or value it concerns.
    #[error(transparent)]
    Parameter(#[from] ParameterError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    /// The command line itself: a flag missing, two that exclude each other,
    /// a value the parser could not check. Only src/cli constructs it.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// [`LogError::ManifestRefused`] for `reason`.
    pub fn manifest_refused(reason: ManifestRefusal) -> Error {
        LogError::ManifestRefused { reason }.into()
    }
}

/// Why a ceremony log's chain is broken at a line: one variant per check,
/// so the advice can tell a killed append from an edit.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LogBreak {
    #[error("the last line is cut short (no newline): the log was truncated mid-line")]
    CutShort,
    /// The line is not JSON of a log line (`detail`: the parser's words).
    #[error("not a log line: {detail}")]
    NotALine { detail: String },
    #[error(
        "it is not the first line ever written (its prev hash is not the genesis value): lines were removed from the start"
    )]
    NotFirst,
    #[error(
        "its prev hash does not match line {previous}: line {previous} was edited, or a line was removed or moved here"
    )]
    PrevMismatch { previous: u64 },
    #[error("it says it is line {says} but it is line {is}")]
    WrongNumber { says: u64, is: u64 },
    #[error("it is not in the canonical form the tool writes: it was edited")]
    NotCanonical,
    #[error("the log has {lines} lines but its .head file records {head}: lines were removed from the end")]
    LinesRemovedFromEnd { lines: u64, head: u64 },
    /// More lines than the head's count plus the one an interrupted append leaves.
    #[error(
        "the log has {lines} lines but its .head file records {head}: a head lags by one append at most, so {} not appended by this tool",
        added_lines(*head, *lines)
    )]
    LinesAdded { lines: u64, head: u64 },
    #[error("{} is not the one the .head file records: it was edited{}", if *last { "the last line".to_string() } else { format!("line {line}") }, if *last { " (or the head was)" } else { "" })]
    HeadLineEdited { line: u64, last: bool },
    #[error("the .head file beside the log is missing")]
    HeadMissing,
    /// A `log sign` line that does not hold what a countersignature needs.
    #[error("{0}")]
    Countersignature(CountersignatureFault),
}

fn added_lines(head: u64, lines: u64) -> String {
    if head + 2 == lines {
        format!("line {lines} was")
    } else {
        format!("lines {} to {lines} were", head + 2)
    }
}

/// What is wrong with a countersignature line (`log sign`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CountersignatureFault {
    #[error("a countersignature without a line number")]
    NoLineNumber,
    #[error("it countersigns a line that does not exist")]
    NoSuchLine,
    #[error("it carries no certificate")]
    NoCertificate,
    #[error("its certificate cannot be read")]
    UnreadableCertificate,
    #[error("it carries no signature")]
    NoSignature,
    #[error("its thumbprint is not its certificate's")]
    ThumbprintMismatch,
    #[error("the countersignature of line {line} does not verify")]
    DoesNotVerify { line: u64 },
}

/// A value given that is outside what is accepted, one variant per rule so
/// each gets its own advice.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ParameterError {
    #[error("--days {days} is outside 1 to {max}")]
    Days { days: u32, max: u32 },
    /// Every passphrase typed at the prompt was refused.
    #[error("no acceptable passphrase was chosen for {key}")]
    NoPassphraseChosen { key: String },
    #[error("the passphrase for {key} is too weak: {source}")]
    WeakPassphrase {
        key: String,
        source: crate::custodian::key::PassphraseTooShort,
    },
    /// What a split would write is larger than any reader accepts.
    #[error(
        "the data items make a security domain of {bytes} bytes, more than the {max} any reader accepts; use smaller items"
    )]
    SecurityDomainTooLarge { bytes: u64, max: u64 },
    #[error("--epoch {epoch} is not above epoch {highest}, already in the ceremony log; epochs only increase")]
    EpochNotAbove { epoch: u64, highest: u64 },
    /// A manifest's certificates are not one per custodian.
    #[error("{}", .0.text)]
    SameCustodian(CertProblem),
    /// A rotate manifest made without the set that opens the old file.
    #[error("a rotate manifest names the current custodians (who open the old file) and their quorum too")]
    NoCurrentSet,
    /// Current custodians given for a split or download manifest.
    #[error("only a rotate manifest names current custodians, not a {purpose} manifest")]
    CurrentSetNotRotation {
        purpose: crate::ceremony::manifest::Purpose,
    },
    #[error("the current quorum {quorum} is not between 1 and the {custodians} current custodians")]
    CurrentQuorum { quorum: usize, custodians: usize },
    /// The current set's certificates are not one per custodian.
    #[error("current custodians: {}", .0.text)]
    SameCurrentCustodian(CertProblem),
}

/// Opening shares, meeting the quorum, data items, custodian sets and
/// restore blobs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error("the certificate {cert} (x5t_256 {x5t_256}) has no share in this security domain")]
    CertNotInSd { cert: String, x5t_256: String },
    #[error("the key {key} opens none of the {shares} shares in this security domain")]
    KeyOpensNoShare { key: String, shares: usize },
    /// The share itself cannot be decoded (a security-domain file that parsed
    /// but whose share JWE does not).
    #[error("{source}")]
    ShareMalformed { source: FormatError },
    #[error("the share of {who} failed its integrity check: {source}")]
    ShareIntegrity { who: String, source: CryptoError },
    /// The token holding `who`'s key could not do the unwrap at all.
    #[error("the token of {who} could not unwrap its share: {source}")]
    TokenUnwrap { who: String, source: CryptoError },
    #[error("{second} is the same key as {first} ({why}); each custodian's key is given once")]
    DuplicateKey {
        first: String,
        second: String,
        why: &'static str,
    },
    /// `who` opened a share, or the same share, as `first` did with the same
    /// RSA modulus: one custodian, whatever the certificates or exponents.
    #[error("the share of {who} was already opened: {first} has the same RSA modulus; each custodian counts once")]
    DuplicateCustodian { who: String, first: String },
    #[error("{}", not_enough(.opened, .needed, .failures))]
    NotEnoughShares {
        opened: Vec<String>,
        needed: usize,
        failures: Vec<String>,
    },
    #[error("the shares do not rebuild the master key: {reason}")]
    SharesInconsistent { reason: String },
    #[error("data item '{tag}' failed its integrity check: {source}")]
    ItemIntegrity { tag: String, source: CryptoError },
    #[error("data item '{tag}' is malformed: {source}")]
    ItemMalformed { tag: String, source: FormatError },
    #[error("a security domain needs at least one data item")]
    NoItems,
    #[error("data item tags must be non-empty and distinct ('{tag}')")]
    ItemTag { tag: String },
    #[error("the restore blob is for another exchange key (x5t_256 {blob}), not this instance's ({ours})")]
    WrongExchangeKey { blob: String, ours: String },
    #[error("the restore blob's wrapped key is malformed: {source}")]
    BlobMalformed { source: FormatError },
    #[error("the split is refused: {source}")]
    SplitParameters { source: CryptoError },
    /// Encrypting to a certificate or under the master key failed.
    #[error("encrypting {what} failed: {source}")]
    Encrypt { what: String, source: CryptoError },
    /// The freshly written security domain did not open again.
    #[error("internal check of the new security domain failed: {source}")]
    SelfCheck { source: FormatError },
    /// A custodian set that cannot be used, each problem with its cause so
    /// each gets its own advice.
    #[error("the certificates are not ready for the download:\n  - {}", cert_problems(.0))]
    CertsNotReady(Vec<CertProblem>),
}

/// The ceremony log, rotation records and manifests: the signed paper trail.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("the ceremony log {} is broken at line {line}: {reason}", path.display())]
    Broken { path: PathBuf, line: u64, reason: LogBreak },
    /// The last line has no newline: a writer died mid-line, or the file was cut.
    #[error("{} ends in a partial line", path.display())]
    PartialLine { path: PathBuf },
    /// A custodian's key could not sign (`what`: the manifest, line N).
    #[error("{what} cannot be signed: {source}")]
    Sign {
        what: String,
        // Boxed: a token's error would make every Result in the crate larger.
        source: Box<crate::custodian::signer::SignError>,
    },
    #[error(
        "{} is left from a rotation that stopped before its record {} was written; nothing took effect",
        pending.display(), record.display()
    )]
    InterruptedRotation { pending: PathBuf, record: PathBuf },
    #[error("the rotation record {} is refused: {reason}", path.display())]
    RecordRefused { path: PathBuf, reason: String },
    #[error("this rotation was cancelled")]
    RotationCancelled,
    #[error("this rotation is {state}, not pending")]
    RotationNotPending { state: String },
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
    #[error("the manifest is refused: {reason}")]
    ManifestRefused { reason: ManifestRefusal },
    /// `log destroyed` given the current security domain, not an old copy.
    #[error(
        "{copy} is the current security domain (line {line} of the ceremony log, {step}, made it), not an old copy"
    )]
    DestroyingCurrent { copy: String, line: u64, step: String },
    /// The manifest names a certificate that was not given, so its
    /// custodian's signature cannot be verified.
    #[error(
        "the manifest's certificate {position} ({x5t_256}) was not given: its signature cannot be verified without it"
    )]
    ManifestCertificateMissing { position: usize, x5t_256: String },
    /// A security domain holds other parameters than the manifest signed.
    #[error("the security domain differs from the signed manifest:\n  - {}", .differences.join("\n  - "))]
    DiffersFromManifest { differences: Vec<String> },
    #[error("the key does not belong to the certificate given")]
    SignerKeyMismatch,
    #[error("the certificate {x5t_256} is not one of this manifest's custodians")]
    NotACustodian { x5t_256: String },
    #[error("the custodian {x5t_256} has already signed this manifest")]
    AlreadySigned { x5t_256: String },
}

/// Why a signed manifest does not cover the step it is given to: each names
/// the custodian, number or field that differs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ManifestRefusal {
    #[error("it was signed for a {signed}, not a {step}")]
    Purpose {
        signed: crate::ceremony::manifest::Purpose,
        step: crate::ceremony::manifest::Purpose,
    },
    #[error("it says {signed_quorum} of {signed_custodians} custodians, but this {step} is {quorum} of {custodians}")]
    Parameters {
        step: crate::ceremony::manifest::Purpose,
        signed_quorum: usize,
        signed_custodians: usize,
        quorum: usize,
        custodians: usize,
    },
    /// One person's two certificates (the same modulus), so their signatures would count twice.
    #[error("{0}")]
    Identity(String),
    #[error("its certificates (or their order) differ from the ones given: {why}")]
    Certificates { why: String },
    #[error("it carries a signature by {x5t_256}, who is in none of its custodian sets")]
    Outsider { x5t_256: String },
    #[error("the signature of {x5t_256} does not verify: the terms were changed after signing")]
    BadSignature { x5t_256: String },
    #[error("the signature of current custodian {x5t_256} {why}")]
    SignerCertificate { x5t_256: String, why: &'static str },
    #[error("{signed} custodian(s) signed it; {needed} are required (not signed: {})", .unsigned.join(", "))]
    TooFewSignatures {
        signed: usize,
        needed: usize,
        unsigned: Vec<String>,
    },
    #[error(
        "it is a rotate manifest that does not name the current custodians (who open the old file) and their quorum"
    )]
    NoCurrentSet,
    #[error("it names current custodians, but a {step} has none")]
    UnexpectedCurrentSet { step: crate::ceremony::manifest::Purpose },
    #[error(
        "its current custodians are not the security domain's:{}{}",
        list("in the security domain but not the manifest", .missing),
        list("in the manifest but not the security domain", .extra)
    )]
    CurrentSetDiffers { missing: Vec<String>, extra: Vec<String> },
    #[error("it says the current quorum is {signed}, but the security domain's is {sd}")]
    CurrentQuorumDiffers { signed: usize, sd: usize },
    #[error(
        "{} current custodian(s) signed it; the security domain's quorum of {needed} must (not signed: {})",
        .signed.len(), .unsigned.join(", ")
    )]
    TooFewCurrentSignatures {
        signed: Vec<String>,
        needed: usize,
        unsigned: Vec<String>,
    },
    #[error(
        "its nonce was already used by line {line} of the ceremony log ({command}); a manifest is signed for one step"
    )]
    NonceUsed { line: u64, command: String },
    #[error(
        "it is for custodian-set epoch {epoch}, but the ceremony log already has epoch {highest}; epochs only increase"
    )]
    EpochNotAbove { epoch: u64, highest: u64 },
    #[error("it was signed for custodian-set epoch {signed}, but --epoch {given} was given")]
    EpochDiffers { signed: u64, given: u64 },
}

/// The instance client: what an instance (or emulator) answered, or why no
/// answer came.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// An `--url` that is not an instance's base URL (shown with any user
    /// info and query masked: they may hold a secret).
    #[error("--url {url}: {why}")]
    Url { url: String, why: String },
    #[error("{} is not a PEM certificate", path.display())]
    CaNotPem { path: PathBuf },
    /// No answer: connection refused, DNS, timeout.
    #[error("{request} to {url} failed: {reason}")]
    Unreachable {
        url: String,
        request: String,
        reason: String,
    },
    /// The TLS handshake failed: usually a CA that does not sign the instance's certificate.
    #[error("{request} to {url} failed: the TLS connection was refused: {reason}")]
    Tls {
        url: String,
        request: String,
        reason: String,
    },
    /// A key name outside `^[0-9a-zA-Z-]{1,127}$`, refused before any request.
    #[error("'{name}' is not a key name: use 1 to 127 letters, digits or '-'")]
    KeyName { name: String },
    /// A non-2xx answer.
    #[error("{request} was refused with {status}: {detail}")]
    Refused {
        request: String,
        status: u16,
        detail: String,
    },
    /// A 2xx answer that is not what the request returns.
    #[error("{request}: {what}: {why}")]
    BadAnswer {
        request: String,
        what: &'static str,
        why: String,
    },
    /// A long-running operation still running at the polling deadline.
    #[error("the {what} was still {status} after {waited:?}; check its status later")]
    StillRunning {
        what: &'static str,
        status: String,
        waited: std::time::Duration,
    },
    /// A long-running operation the instance reports as failed.
    #[error("the instance reports the {what} failed: {details}")]
    OperationFailed { what: &'static str, details: String },
    #[error("the instance refused the restore blob: {details}")]
    UploadRefused { details: String },
    /// A restore that gave back another key than the backup's.
    #[error("the restored key is {got} version {got_version}, not the canary {want} version {want_version}")]
    WrongKeyRestored {
        got: String,
        got_version: String,
        want: String,
        want_version: String,
    },
    /// The drill's last step: the canary did not come back.
    #[error("the canary key {name} did NOT restore on the recovered instance: {source}")]
    CanaryNotRestored { name: String, source: Box<Error> },
    /// The drill's full restore of the canary set's backup failed.
    #[error("the canary set's backup {folder_url} did NOT restore on the recovered instance: {source}")]
    BackupNotRestored { folder_url: String, source: Box<Error> },
    /// The recovered instance's key versions are not the ones the canary file recorded.
    #[error(
        "the recovered instance's inventory differs from the canary file's:{}{}{}",
        list("missing", .missing), list("not in the canary file", .unexpected), list("changed", .changed)
    )]
    InventoryMismatch {
        missing: Vec<String>,
        unexpected: Vec<String>,
        changed: Vec<String>,
    },
    /// HSM-side proofs that did not pass, each with its reason.
    #[error("{} HSM-side proof(s) failed: {}", .failed.len(), .failed.join("; "))]
    ProofsFailed { failed: Vec<String> },
    /// The drill ran but did not pass (`demo`).
    #[error("the drill did not pass")]
    DrillFailed,
    /// A request to an emulator in this process that could not be made.
    #[error("{request} in process failed: {why}")]
    InProcess { request: String, why: String },
}

/// ` what: a, b` for a non-empty list, nothing otherwise.
fn list(what: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" {what}: {};", items.join(", "))
    }
}

/// The emulator's state folder and serving.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// A state, key-store, token or TLS file that is not this emulator's.
    #[error("{} is not a {what} of this emulator: {why}", path.display())]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
    #[error("{} has format {format}, which this emulator does not understand", path.display())]
    UnknownFormat { path: PathBuf, format: u64 },
    /// As on Azure, purge protection stays on once the HSM is in use.
    #[error("purge protection cannot be turned off on an instance that has been activated or is recovering (as on Azure, it stays on once the HSM is in use)")]
    PurgeProtectionStaysOn,
    /// A write that would make a file the next start refuses.
    #[error("{what} would be {size} bytes, more than the {limit} the emulator reads; nothing was changed")]
    WouldGrow { what: String, size: u64, limit: u64 },
    #[error("'{0}' is not a principal name: use 1 to 64 letters, digits, '.', '_', '@' or '-'")]
    Principal(String),
    #[error("another emulator is already serving {}; one instance is one state directory", dir.display())]
    AlreadyServed { dir: PathBuf },
    #[error("{0} is not a loopback address; the emulator only listens on 127.0.0.1 or ::1")]
    NotLoopback(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("cannot start the emulator's {what}: {source}")]
    Start { what: &'static str, source: std::io::Error },
    #[error("cannot make the emulator's TLS certificate: {why}")]
    TlsCertificate { why: String },
    #[error("cannot encode {what}: {why}")]
    Encode { what: &'static str, why: String },
    /// `az-setup` needs the emulator running on the folder: its URL comes from there.
    #[error("no emulator is serving {}", dir.display())]
    NotServed { dir: PathBuf },
    #[error("{} does not hold an https loopback URL", path.display())]
    UrlFile { path: PathBuf },
    /// az's MSAL takes only https authorities, and the secret must stay on loopback.
    #[error("--url {url:?} is not an emulator URL: give https://127.0.0.1:PORT as `emulator serve` prints it")]
    NotEmulatorUrl { url: String },
    #[error("{} is missing: az trusts the emulator through its CA", path.display())]
    NoCa { path: PathBuf },
    #[error("{} is not valid UTF-8; az cannot be pointed at it", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{} is not a folder (a link or a file)", path.display())]
    NotAFolder { path: PathBuf },
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
#[non_exhaustive]
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
