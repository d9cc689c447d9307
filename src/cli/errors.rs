//! Turning an error into what a custodian at 2 a.m. needs: what happened,
//! what to do next, and a distinct exit code per family.

use hsm_ceremony::ceremony::health::Verdict;
use hsm_ceremony::custodian::key::MIN_PASSPHRASE_CHARS;
use hsm_ceremony::custodian::signer::SignError;
use hsm_ceremony::custodian::token::{TokenError, UriPart, UriProblem, PATH_ATTRIBUTES, QUERY_ATTRIBUTES};
use hsm_ceremony::custodian::CustodianError;
use hsm_ceremony::error::{
    CertCause, CertProblem, EmulatorError, Error, InstanceError, LogBreak, LogError, ManifestRefusal, ParameterError,
    RecoveryError,
};

/// Exit codes, documented in the README and every man page.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INPUT: u8 = 3;
pub const EXIT_INTEGRITY: u8 = 4;
pub const EXIT_QUORUM: u8 = 5;
pub const EXIT_IO: u8 = 6;
pub const EXIT_INSTANCE: u8 = 7;
pub const EXIT_AT_RISK: u8 = 8;
pub const EXIT_CANNOT_RECOVER: u8 = 9;

/// Every exit code and what it means, for --help and the man pages.
pub const EXIT_CODES: [(u8, &str); 9] = [
    (0, "success"),
    (EXIT_USAGE, "usage error (bad flags or arguments)"),
    (
        EXIT_INPUT,
        "bad input: a malformed, weak or refused file or parameter, or an output that already exists",
    ),
    (
        EXIT_INTEGRITY,
        "integrity failure: a wrong passphrase, key or certificate, or a tampered file",
    ),
    (EXIT_QUORUM, "not enough custodians to meet the quorum"),
    (EXIT_IO, "file-system error"),
    (EXIT_INSTANCE, "the instance refused or could not be reached"),
    (EXIT_AT_RISK, "sd health: the quorum is at risk"),
    (
        EXIT_CANNOT_RECOVER,
        "sd health: the security domain cannot be recovered",
    ),
];

/// The exit code of `err`: the library says what happened, this table alone
/// says which family it belongs to.
pub fn exit_code(err: &Error) -> u8 {
    use CustodianError as C;
    use RecoveryError as R;
    match err {
        Error::Usage(_) => EXIT_USAGE,
        // Exit 2 for these is documented and pinned by the tests: each is a
        // flag's value the command cannot use (--log, the record or manifest
        // argument, --principal, --listen, an --item tag).
        Error::Log(
            LogError::PartialLine { .. }
            | LogError::NotACustodian { .. }
            | LogError::ManifestCertificateMissing { .. }
            | LogError::AlreadySigned { .. }
            | LogError::SignerKeyMismatch
            | LogError::RotationCancelled
            | LogError::RotationNotPending { .. },
        )
        | Error::NotA {
            what: "rotation record" | "manifest" | "token file",
            ..
        }
        | Error::Recovery(R::NoItems | R::ItemTag { .. })
        | Error::Emulator(
            EmulatorError::Principal(_)
            | EmulatorError::NotLoopback(_)
            | EmulatorError::PurgeProtectionStaysOn
            | EmulatorError::NotServed { .. }
            | EmulatorError::NotEmulatorUrl { .. }
            | EmulatorError::NoCa { .. }
            | EmulatorError::NotUtf8 { .. },
        ) => EXIT_USAGE,
        Error::Emulator(EmulatorError::UrlFile { .. } | EmulatorError::NotAFolder { .. }) => EXIT_INPUT,
        Error::Read { .. } | Error::Write { .. } | Error::OutputFolder { .. } => EXIT_IO,
        // The machine refused a resource: the state folder's lock, a port, a thread.
        Error::Emulator(
            EmulatorError::AlreadyServed { .. } | EmulatorError::Listen { .. } | EmulatorError::Start { .. },
        ) => EXIT_IO,
        Error::Key {
            source: C::WrongPassphrase,
            ..
        }
        | Error::Token(TokenError::WrongPin { .. } | TokenError::PinLocked { .. })
        | Error::KeyCertMismatch { .. }
        | Error::Recovery(
            R::CertNotInSd { .. }
            | R::KeyOpensNoShare { .. }
            | R::ShareIntegrity { .. }
            | R::SharesInconsistent { .. }
            | R::ItemIntegrity { .. }
            | R::WrongExchangeKey { .. },
        )
        | Error::SelfTestFailed { .. }
        | Error::Log(
            LogError::ManifestRefused { .. }
            | LogError::DiffersFromManifest { .. }
            | LogError::RecordRefused { .. }
            | LogError::Broken { .. },
        ) => EXIT_INTEGRITY,
        Error::Recovery(R::NotEnoughShares { .. }) | Error::Log(LogError::NotEnoughProofs { .. }) => EXIT_QUORUM,
        Error::Instance(InstanceError::Url { .. } | InstanceError::CaNotPem { .. } | InstanceError::KeyName { .. }) => {
            EXIT_INPUT
        }
        Error::Instance(_) => EXIT_INSTANCE,
        _ => EXIT_INPUT,
    }
}

/// `sd health`'s verdict: a result, not an error, with its own exit code.
pub fn verdict_exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Healthy => 0,
        Verdict::AtRisk => EXIT_AT_RISK,
        Verdict::CannotRecover => EXIT_CANNOT_RECOVER,
    }
}

/// Prints an unhealthy verdict's reasons and what to do about them.
pub fn report_verdict(verdict: Verdict, reasons: &[String]) {
    let (head, what) = match verdict {
        Verdict::Healthy => return,
        Verdict::AtRisk => (
            "the quorum is at risk",
            "Recovery still works today. Fix each reason before the next drill: renew expiring certificates \
             (rotate to new ones), have custodians who never proved possession run `hsm-ceremony custodian verify`, \
             or rotate to a larger custodian set.",
        ),
        Verdict::CannotRecover => (
            "the security domain cannot be recovered",
            "Too few usable custodians remain. If the HSM still holds this security domain, rotate to a new custodian \
             set now (`hsm-ceremony rotate`, or download a new security domain with new certificates); escalate today.",
        ),
    };
    crate::note!("error: {head}:\n  - {}", reasons.join("\n  - "));
    crate::note!("  what to do: {what}");
}

/// What to do about it, when there is something useful to say.
pub fn advice(err: &Error) -> Option<String> {
    use CustodianError as C;
    let text = match err {
        Error::OutputExists { .. } => "Choose another output path, or move the existing file away after checking what it is.".into(),
        Error::NotAFile { .. } => "Give the path of a file, not of a folder.".into(),
        Error::SymlinkRefused { .. } => {
            "Give the real file's path (or --log with it); a link could send the record or the output anywhere."
                .into()
        }
        Error::OutputFolder { .. } => {
            "Create the folder, make it writable, or free space on its disk, then run again; nothing was asked or written."
                .into()
        }
        Error::Log(LogError::InterruptedRotation { pending, .. }) => format!(
            "The current security domain is unchanged and no custodian has used the new one. \
             Delete {} and run rotate again.",
            pending.display()
        ),
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
        Error::Key { source: C::KdfTooCostly(_), label } => format!(
            "A key this tool or OpenSSL made never asks for that much: check where {label} came from. {}",
            super::keys::reencrypt_advice(label)
        ),
        Error::Key { source: C::UnsupportedEncryption(_), label } => super::keys::reencrypt_advice(label),
        Error::Key { source: C::CertificateNotKey, label } => format!(
            "{label} is a certificate: give the custodian's private key (the .key file, or a pkcs11: URI) here; \
             certificates go to --cert or --certs."
        ),
        Error::Key { .. } => "Check that this is the custodian's private key (PEM or DER, PKCS#8 or PKCS#1, RSA 2048 bits or more).".into(),
        Error::Token(source) => token_advice(source),
        Error::Log(LogError::Sign { source, .. }) => match source.as_ref() {
            SignError::Token(token) => token_advice(token),
            _ => return None,
        },
        Error::KeyFileExposed { path } | Error::SecretFileExposed { path, .. } => {
            format!("Restrict it, then run again: chmod 600 {}", path.display())
        }
        Error::Certificate { .. } => "Give the custodian's certificate (.cer, PEM or DER) with an RSA key of 2048 bits or more.".into(),
        Error::KeyCertMismatch { .. } => "Pair each key with its own certificate: give the right --cert, or fix the .cer file beside the key.".into(),
        Error::Recovery(RecoveryError::CertNotInSd { .. }) => {
            "This custodian is not in this security domain: check the file (it may be from another HSM or an older custodian set)."
                .into()
        }
        Error::Recovery(RecoveryError::KeyOpensNoShare { .. }) => "This key belongs to no custodian of this security domain; check you have the right key and file.".into(),
        Error::Recovery(RecoveryError::ShareIntegrity { .. }) => {
            "The share was altered or belongs to another key. Keep this file as evidence and try the next custodian."
                .into()
        }
        Error::Recovery(RecoveryError::DuplicateKey { .. }) => "Give each custodian's key once, and bring another custodian for the quorum; nothing was asked.".into(),
        Error::Recovery(RecoveryError::DuplicateCustodian { .. }) => "Each custodian's key may be given once; bring another custodian.".into(),
        Error::Recovery(RecoveryError::NotEnoughShares { .. }) => "Bring more custodians with their keys and passphrases, then run again.".into(),
        Error::Log(LogError::NotEnoughProofs { pending, log, .. }) => format!(
            "Nothing has changed yet. Each new custodian who has not proved runs: hsm-ceremony custodian verify \
             --sd-file {pending} --key THEIR.key --log {log}; then run finalize again."
        ),
        Error::Recovery(RecoveryError::SharesInconsistent { .. }) | Error::Recovery(RecoveryError::ItemIntegrity { .. }) => {
            "The security domain has been tampered with or mixes files. Stop, keep the files as evidence, and compare the file's SHA-256 with the ceremony record."
                .into()
        }
        Error::Recovery(RecoveryError::WrongExchangeKey { .. }) => "Fetch the exchange key of the instance you upload to, and build the blob for it.".into(),
        Error::Log(LogError::RecordRefused { .. }) => {
            "Do not finalize: the record does not match the files and log it names. Keep it as evidence, check \
             which files are genuine against the paper record, and start the rotation again if in doubt."
                .into()
        }
        Error::Log(LogError::Broken { path, reason, .. }) => broken_log_advice(path, reason),
        Error::Log(LogError::ManifestRefused { reason }) => manifest_advice(reason),
        Error::Log(LogError::DestroyingCurrent { .. }) => "Do not destroy it: it is the file that recovers the HSM now. \
            Destroy only old copies (OLD.json.retired and the old copies in the safes), each recorded first with \
            `hsm-ceremony log destroyed`; `hsm-ceremony log show` lists the file each step made."
            .into(),
        Error::SelfTestFailed { .. } => "Do not run the ceremony with this binary or on this machine: rebuild it (or \
            fetch it again), compare its SHA-256 with SHA256SUMS, and run `hsm-ceremony self-test` again; if it still \
            fails, use another laptop."
            .into(),
        Error::Parameter(p) => parameter_advice(p),
        Error::Recovery(RecoveryError::CertsNotReady(problems)) => certs_advice(problems),
        Error::Instance(InstanceError::Url { .. }) => "Give the instance's base URL and nothing else: https://NAME.managedhsm.azure.net, \
            or an emulator's https://127.0.0.1:PORT (http:// only to a loopback address); the token goes in --token-file \
            or HSM_CEREMONY_TOKEN."
            .into(),
        Error::Instance(InstanceError::Unreachable { .. }) => "Check the URL and port, that the instance (or `hsm-ceremony emulator serve`) \
            is running, and that this machine can reach it; then run again."
            .into(),
        Error::Instance(InstanceError::Tls { .. }) => "The instance's certificate is not trusted: for an emulator give its CA with \
            --ca STATE/ca.pem; for Azure leave --ca out; check the URL names the instance you meant."
            .into(),
        Error::Instance(InstanceError::Refused { status: 401, .. }) => "The token was refused: issue a new one for this instance \
            (Azure: az account get-access-token --resource https://managedhsm.azure.net; emulator: \
            hsm-ceremony emulator token) and give it with --token-file or HSM_CEREMONY_TOKEN."
            .into(),
        Error::Instance(InstanceError::Refused { status: 403, .. }) => "The token's principal lacks the local role for this step: \
            have an administrator grant it (Managed HSM Administrator, or Crypto User for keys), then run again."
            .into(),
        Error::Instance(InstanceError::Refused { .. } | InstanceError::OperationFailed { .. } | InstanceError::StillRunning { .. } | InstanceError::BadAnswer { .. } | InstanceError::UploadRefused { .. } | InstanceError::WrongKeyRestored { .. }) => "Check the instance is in the state this step needs \
            (`hsm-ceremony instance status`) and the URL names the right instance; the message above is the instance's own."
            .into(),
        Error::Write { .. } => "Check the disk has room and the folder is writable; nothing was left at the output path.".into(),
        Error::Read { .. } => "Check the path and its permissions.".into(),
        Error::Usage(_) => "See --help for the command's usage and examples.".into(),
        Error::Log(LogError::PartialLine { path }) => format!(
            "A writer stopped mid-line. Run `hsm-ceremony log verify {}` and compare the log with the paper record before appending.",
            path.display()
        ),
        Error::Log(LogError::ManifestCertificateMissing { .. }) => {
            "Give every certificate the manifest names with --certs (the custodians' .cer files), then run it again."
                .into()
        }
        Error::Log(LogError::DiffersFromManifest { .. }) => {
            "Do not accept this security domain: it is not what the custodians signed. Record the differences, keep the \
             file as evidence, and download again with the manifest's certificates and quorum."
                .into()
        }
        Error::Log(LogError::NotACustodian { .. }) => {
            "Only the custodians the manifest names sign it: give one of their keys.".into()
        }
        Error::Log(LogError::AlreadySigned { .. }) => {
            "Each custodian signs once; the next custodian signs with their own key.".into()
        }
        Error::Log(LogError::SignerKeyMismatch) => {
            "Give the key with its own certificate (--cert, or the .cer file beside it).".into()
        }
        Error::Log(LogError::RotationCancelled | LogError::RotationNotPending { .. }) => {
            "This rotation is over; `hsm-ceremony rotate status` shows it. Start a new rotation if one is needed.".into()
        }
        Error::NotA { .. } => "Give the file this option names; check you did not swap two files.".into(),
        Error::Recovery(RecoveryError::NoItems | RecoveryError::ItemTag { .. }) => {
            "Give each --item as TAG=FILE, at least one, each tag once.".into()
        }
        Error::Recovery(RecoveryError::TokenUnwrap { .. }) => {
            "Check the token is inserted and supports RSA-OAEP-256 (or use x-oaep=host), then run again.".into()
        }
        Error::Recovery(RecoveryError::ShareMalformed { .. } | RecoveryError::ItemMalformed { .. } | RecoveryError::BlobMalformed { .. }) => {
            "The file was damaged after it was written: compare its SHA-256 with the ceremony record and use a good copy.".into()
        }
        Error::Instance(InstanceError::KeyName { .. }) => {
            "Name the key with letters, digits and '-' only, as Managed HSM requires.".into()
        }
        Error::Instance(InstanceError::CaNotPem { .. }) => {
            "Give the emulator's CA certificate (STATE/ca.pem), or leave --ca out for Azure.".into()
        }
        Error::Instance(InstanceError::CanaryNotRestored { .. } | InstanceError::DrillFailed | InstanceError::InventoryMismatch { .. } | InstanceError::ProofsFailed { .. }) => {
            "The recovery did not prove itself: keep the drill report and escalate; do not rely on this security domain until a drill passes.".into()
        }
        Error::Instance(InstanceError::BackupNotRestored { .. }) => {
            "Check the canary file is from this security domain's original and its backup folder still exists (and the SAS, if any, allows read and list); keep the report and escalate if it is.".into()
        }
        Error::Emulator(EmulatorError::Corrupt { .. } | EmulatorError::UnknownFormat { .. }) => {
            "This state folder is not one this emulator wrote, or it was edited: serve a fresh --state folder.".into()
        }
        Error::Emulator(EmulatorError::NotServed { dir }) => format!(
            "Start `hsm-ceremony emulator serve --state {}` first (az-setup signs az in to that server), or pass --url.",
            dir.display()
        ),
        Error::Emulator(EmulatorError::UrlFile { .. }) => "Restart the emulator, or pass --url.".into(),
        Error::Emulator(EmulatorError::NoCa { .. }) => {
            "Serve the state folder over HTTPS (without --insecure-http), then run az-setup again.".into()
        }
        Error::Emulator(EmulatorError::NotUtf8 { .. }) => "Use a state folder whose path is UTF-8.".into(),
        Error::Emulator(EmulatorError::NotAFolder { .. }) => "Remove it; az-setup makes the folder anew.".into(),
        Error::Emulator(EmulatorError::PurgeProtectionStaysOn) => {
            "Start a new instance (a new --state folder) with --purge-protection off.".into()
        }
        Error::Emulator(EmulatorError::WouldGrow { .. }) => "Serve a fresh --state folder; nothing was changed.".into(),
        Error::Emulator(EmulatorError::AlreadyServed { .. }) => {
            "Stop the other emulator, or serve another --state folder.".into()
        }
        Error::Emulator(EmulatorError::Principal(_) | EmulatorError::NotLoopback(_)) => {
            "See --help for the command's usage and examples.".into()
        }
        Error::Emulator(EmulatorError::Listen { .. }) => "Choose another --listen port (127.0.0.1:0 picks a free one).".into(),
        _ => return None,
    };
    Some(text)
}

/// One piece of advice per distinct cause, in the order they were found.
fn broken_log_advice(path: &std::path::Path, reason: &LogBreak) -> String {
    let keep = "Keep the log as evidence and compare it with the paper record and other copies; do not append to it \
        until the break is explained.";
    match reason {
        LogBreak::HeadMissing => format!(
            "{keep} Its head ({}.head) records how many lines it has and the last one's hash: restore it from a copy \
             of the ceremony folder, never by hand.",
            path.display()
        ),
        LogBreak::CutShort => format!(
            "{keep} A last line cut short is what a full disk, a crash or a copy stopped midway leaves; a complete \
             copy shows which."
        ),
        LogBreak::Countersignature(_) => format!(
            "{keep} A countersignature that does not hold vouches for nothing: the line it names may have been \
             changed after it was signed, so check that line against the paper record first."
        ),
        _ => keep.into(),
    }
}

fn parameter_advice(p: &ParameterError) -> String {
    use ParameterError as P;
    match p {
        P::Days { max, .. } => format!("Give --days from 1 to {max}; a custodian set is renewed by a rotation, not a longer validity."),
        P::NoPassphraseChosen { .. } | P::WeakPassphrase { .. } => format!(
            "Choose a passphrase of at least {MIN_PASSPHRASE_CHARS} characters (a few unrelated words are easy to \
             remember and hard to guess) and run the command again."
        ),
        P::SecurityDomainTooLarge { .. } => {
            "Give fewer or smaller --item files: a security domain larger than this could not be read back or uploaded.".into()
        }
        P::EpochNotAbove { highest, .. } => format!(
            "Give an epoch above {highest}: each custodian set takes the next epoch, so a manifest signed for an old set cannot be replayed."
        ),
        P::SameCustodian(problem) | P::SameCurrentCustodian(problem) => certs_advice(std::slice::from_ref(problem)),
        P::NoCurrentSet => "Give the certificates of the custodians who open the old file with --current-certs, \
            and the old file's quorum with --current-quorum."
            .into(),
        P::CurrentSetNotRotation { .. } => {
            "Leave out --current-certs and --current-quorum: only a rotation hands the master key from one set to another.".into()
        }
        P::CurrentQuorum { custodians, .. } => format!(
            "Give --current-quorum as the old file's quorum (`hsm-ceremony sd inspect` shows it), from 1 to {custodians}."
        ),
        _ => "Change what the message names; see --help for what is accepted.".into(),
    }
}

fn certs_advice(problems: &[CertProblem]) -> String {
    let mut causes: Vec<CertCause> = Vec::new();
    for p in problems {
        if !causes.contains(&p.cause) {
            causes.push(p.cause);
        }
    }
    causes
        .iter()
        .map(|cause| match cause {
            CertCause::Quorum => "Choose a custodian count and quorum that are accepted (see --help).",
            CertCause::Key => "Give each custodian's certificate with an RSA key of 2048 bits or more.",
            CertCause::Duplicate => "Give each custodian's certificate once: remove the repeated file.",
            CertCause::SameKey => {
                "Each custodian needs their own key pair: one of them makes a new one with `hsm-ceremony custodian keygen`."
            }
            CertCause::NotValid => {
                "Have the custodian make a new certificate (`hsm-ceremony custodian keygen`); for one not valid yet, check this machine's clock."
            }
            _ => "Change what the message names; see --help for what is accepted.",
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the error and its advice to stderr.
pub fn report(err: &Error) {
    crate::note!("error: {err}");
    if let Some(what) = advice(err) {
        crate::note!("  what to do: {what}");
    }
}

/// A module that exists yet will not load from a static binary is most
/// likely a glibc of another version on this machine, not a wrong path.
fn module_advice(exists: bool, static_glibc: Option<String>) -> String {
    let paths = "Give the module's full path (Debian's SoftHSM2: /usr/lib/softhsm/libsofthsm2.so; \
        OpenSC: /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so; opencryptoki: /usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so, \
        whose daemon pkcsslotd must be running) and check it is the right architecture.";
    match static_glibc {
        Some(glibc) if exists => format!(
            "This binary is statically linked with glibc {glibc}, and loads a PKCS#11 module only where the \
             system's glibc is that same version (`ldd --version` shows it): use a release built on this \
             distribution release, or give the custodian's key file. Otherwise: {paths}"
        ),
        _ => paths.into(),
    }
}

/// What to do about a `pkcs11:` URI that cannot be used (as a usage error's
/// tip, or an error's advice).
pub fn uri_advice(problem: &UriProblem) -> String {
    use UriProblem as U;
    const FORM: &str = "pkcs11:token=LABEL;object=KEY?module-path=/path/to/module.so";
    const LIST_SLOTS: &str = "`pkcs11-tool --module MODULE --list-slots` shows the labels";
    match problem {
        U::NotPkcs11 => format!("Write it as {FORM}."),
        U::NotText => "Write the URI in ASCII: any other byte as %XX (RFC 7512), e.g. é as %C3%A9.".into(),
        U::NotNameValue { .. } => {
            format!(
                "Write each attribute as name=value, with ';' between them before the '?' and '&' after it: {FORM}."
            )
        }
        U::Repeated { attribute } => format!("Give '{attribute}' once."),
        U::BadEscape { .. } => "A % starts an escape: one byte as two hex digits (a space is %20, a % itself \
            %25, an id byte 0a is %0a)."
            .into(),
        U::NotUtf8 { attribute } => {
            format!("Give '{attribute}' as UTF-8 text, %-escaped (é is %C3%A9); only id= takes raw bytes.")
        }
        U::NotPrivate { .. } => {
            "Leave type out or write type=private: the URI names the custodian's private key, and its \
             certificate is found by itself."
                .into()
        }
        U::PinSourceNotFile { .. } => "Only a file is read for the PIN: write pin-source=/absolute/path (or \
            file:/absolute/path), or leave it out and give --pin-file or HSM_CEREMONY_PIN."
            .into(),
        U::BadOaep { .. } => "Write x-oaep=host for a token that cannot do RSA-OAEP with SHA-256 itself \
            (SoftHSM 2.6), or leave x-oaep out."
            .into(),
        U::PinValue => "Take pin-value out of the URI and give the PIN at the prompt, with --pin-file, \
            HSM_CEREMONY_PIN or the URI's pin-source=/path/to/file; a PIN on the command line is seen by \
            every user of this machine."
            .into(),
        U::Unknown { attribute, part } => {
            let (belongs, place) = match part {
                UriPart::Path => (
                    QUERY_ATTRIBUTES.contains(&attribute.as_str()),
                    "after the '?', joined by '&'",
                ),
                UriPart::Query => (
                    PATH_ATTRIBUTES.contains(&attribute.as_str()),
                    "before the '?', joined by ';'",
                ),
            };
            if belongs {
                format!("Move '{attribute}' {place}: {FORM}.")
            } else {
                format!(
                    "Remove '{attribute}': the attributes understood are {} before the '?', and {} after it.",
                    PATH_ATTRIBUTES.join(", "),
                    QUERY_ATTRIBUTES.join(", ")
                )
            }
        }
        U::NoToken => format!("Add token=LABEL, the token's label ({LIST_SLOTS}): {FORM}."),
        U::EmptyToken => format!("Give the token's label as token=LABEL ({LIST_SLOTS})."),
        U::NoModule => "Add ?module-path=/path/to/module.so, the token's PKCS#11 module \
            (e.g. /usr/lib/softhsm/libsofthsm2.so)."
            .into(),
        _ => format!("Write it as {FORM}."),
    }
}

fn token_advice(err: &TokenError) -> String {
    use TokenError as T;
    match err {
        T::Uri { problem, .. } => uri_advice(problem),
        T::Module { path, .. } => module_advice(path.is_file(), hsm_ceremony::custodian::token::static_glibc()),
        T::NoModuleLoading { .. } => "Use the glibc release binary (hsm-ceremony-ceremony-only-x86_64-linux-gnu), \
            which loads PKCS#11 modules, or give the custodian's key file instead of a pkcs11: URI."
            .into(),
        T::TokenNotFound { .. } => "Insert the token (or check SOFTHSM2_CONF), and check its label: \
            `pkcs11-tool --module MODULE --list-slots` shows it."
            .into(),
        T::WrongPin { .. } => "Type the token's user PIN (not the SO PIN). Each wrong PIN uses up a try; \
            the token locks after a few."
            .into(),
        T::PinLocked { .. } => {
            "The token's security officer must unlock the PIN (e.g. `pkcs11-tool --unlock-pin`).".into()
        }
        T::KeyNotFound { .. } | T::Ambiguous { .. } | T::SeveralKeys { .. } => {
            "Name the key by its label (object=) and id (id=): \
            `pkcs11-tool --module MODULE --login --list-objects --type privkey` shows them."
                .into()
        }
        T::NotRsa { .. } => {
            "Custodian wrapping keys are RSA; generate one with `hsm-ceremony custodian keygen --token`.".into()
        }
        T::NoDecrypt { .. } => "This key was made for signing only. Generate a wrapping key with \
            `hsm-ceremony custodian keygen --pkcs11-module MODULE --token LABEL --name NAME`, which allows decryption."
            .into(),
        T::PinPerUse { .. } => "Use a wrapping key whose PIN is asked once per session: make one with \
            `hsm-ceremony custodian keygen --pkcs11-module MODULE --token LABEL --name NAME`, or on a YubiKey use \
            the key-management slot 9d with PIN policy 'once', not 'always'."
            .into(),
        T::NoSign { .. } => {
            "This key may not sign; generate a custodian key with `hsm-ceremony custodian keygen --token`.".into()
        }
        T::NoOaep { .. } => "Shares are RSA-OAEP-256 (SHA-256) encrypted: keep this custodian's key on a token \
            that supports it, or in a key file."
            .into(),
        T::NoOaepSha256 { raw_offered: true, .. } => "Shares are RSA-OAEP-256. Add x-oaep=host to the key's URI \
            (`...?module-path=...&x-oaep=host`; keygen: --oaep-on-host) so the token does the raw RSA operation and \
            the OAEP padding is removed here (the private key still stays on the token), or use a token that does \
            OAEP with SHA-256."
            .into(),
        T::NoOaepSha256 { .. } => "Shares are RSA-OAEP-256 (SHA-256): keep this custodian's key on a token that \
            supports it, or in a key file."
            .into(),
        T::SelfTest { .. } => "The token is not working as PKCS#11 says it should: check it with \
            `pkcs11-tool --module MODULE --test --login`, and use another token or a key file."
            .into(),
        T::LabelTaken { .. } => "Choose another --name, or delete the old key from the token after checking \
            it is no custodian's."
            .into(),
        T::Refused { .. } | T::SignFailed { .. } => {
            "Check the token with `pkcs11-tool --module MODULE --list-token-slots` and try again.".into()
        }
    }
}

/// What to do about a refused manifest: more signatures where that is all
/// that is missing, a new manifest where the terms themselves are wrong.
fn manifest_advice(reason: &ManifestRefusal) -> String {
    use ManifestRefusal as M;
    match reason {
        M::NoCurrentSet => "Make the rotate manifest again with this version, naming the current custodians: \
            hsm-ceremony manifest create --purpose rotate ... --current-certs OLD_0.cer OLD_1.cer ... --current-quorum M; \
            then every new and current custodian signs it."
            .into(),
        M::CurrentSetDiffers { .. } | M::CurrentQuorumDiffers { .. } => "Do not proceed: the manifest was made for \
            another security domain's custodians. Check --sd-file is the current file (`hsm-ceremony sd inspect` lists its \
            custodians and quorum), then make a new manifest with those --current-certs and --current-quorum and have \
            every custodian sign it."
            .into(),
        M::TooFewSignatures { .. } => "More new custodians sign it (hsm-ceremony manifest sign --manifest FILE \
            --key THEIR.key), then run again; nothing was changed."
            .into(),
        M::TooFewCurrentSignatures { .. } => "More current custodians (who open the old file) sign it \
            (hsm-ceremony manifest sign --manifest FILE --key THEIR.key), then run again; nothing was changed."
            .into(),
        M::NonceUsed { .. } | M::EpochNotAbove { .. } => "A manifest serves one step: make a new manifest (the next \
            epoch) and have every custodian sign it."
            .into(),
        _ => "Do not proceed: the parameters differ from what the custodians signed. Make a new manifest and have \
            every custodian sign it."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(err: &Error) -> String {
        advice(err).unwrap_or_default()
    }

    /// Each way a URI is refused gets advice about that way: the attribute
    /// it names, where a misplaced one goes, never the generic form alone.
    #[test]
    fn each_uri_problem_has_its_own_advice() {
        use hsm_ceremony::custodian::token::TokenUri;
        let advice_for = |uri: &str| match TokenUri::parse(uri) {
            Err(e) => said(&Error::Token(e)),
            Ok(u) => panic!("{u}"),
        };
        for (uri, says) in [
            ("pkcs11:object=b?module-path=/m.so", "Add token=LABEL"),
            ("pkcs11:token=a;object=b", "Add ?module-path=/path/to/module.so"),
            ("pkcs11:token=;object=b?module-path=/m.so", "--list-slots"),
            ("pkcs11:token=a?module-path=/m.so&pin-value=1", "--pin-file"),
            (
                "pkcs11:token=a?module-path=/m.so&pin-source=pin.txt",
                "pin-source=/absolute/path",
            ),
            ("pkcs11:token=a;model=x;model=y?module-path=/m.so", "Give 'model' once."),
            (
                "pkcs11:token=a;object=%ff?module-path=/m.so",
                "Give 'object' as UTF-8 text",
            ),
            (
                "pkcs11:token=a?module-path=/m.so&model=x",
                "Move 'model' before the '?'",
            ),
            (
                "pkcs11:token=a;x-oaep=host?module-path=/m.so",
                "Move 'x-oaep' after the '?'",
            ),
            (
                "pkcs11:token=a;slot-id=1?module-path=/m.so",
                "Remove 'slot-id': the attributes understood are token,",
            ),
            ("pkcs11:token=a;id=%g1?module-path=/m.so", "a % itself %25"),
            ("pkcs11:token=a;type=cert?module-path=/m.so", "type=private"),
            ("pkcs11:token=a;object?module-path=/m.so", "name=value"),
            ("pkcs11:token=a?module-path=/m.so&x-oaep=sha1", "x-oaep=host"),
            ("file.key", "Write it as pkcs11:token=LABEL"),
        ] {
            let tip = advice_for(uri);
            assert!(tip.contains(says), "{uri}: {tip}");
        }
    }

    /// A static binary's failed module load names its glibc, the likely cause;
    /// a missing file or a dynamic binary keeps the path advice alone.
    #[test]
    fn a_static_binary_that_cannot_load_a_module_names_its_glibc() {
        let static_one = module_advice(true, Some("2.36".into()));
        assert!(static_one.contains("statically linked with glibc 2.36"), "{static_one}");
        assert!(static_one.contains("full path"), "{static_one}");
        assert!(!module_advice(false, Some("2.36".into())).contains("glibc 2.36"));
        assert!(!module_advice(true, None).contains("statically linked"));
    }

    /// Each cause of a refused custodian set has its own advice; a set with
    /// two causes gets both, once each.
    #[test]
    fn each_certificate_problem_gets_its_own_advice() {
        let causes = [
            CertCause::Quorum,
            CertCause::Key,
            CertCause::Duplicate,
            CertCause::SameKey,
            CertCause::NotValid,
        ];
        let one = |cause| {
            said(&Error::from(RecoveryError::CertsNotReady(vec![CertProblem {
                cause,
                text: "x".into(),
            }])))
        };
        let texts: Vec<String> = causes.iter().map(|&c| one(c)).collect();
        for (i, t) in texts.iter().enumerate() {
            assert!(!t.contains("stronger parameters"), "{t}");
            assert!(!texts[..i].contains(t), "two causes share the advice {t}");
        }
        let problem = |cause| CertProblem {
            cause,
            text: "x".into(),
        };
        let both = said(&Error::from(RecoveryError::CertsNotReady(vec![
            problem(CertCause::NotValid),
            problem(CertCause::Duplicate),
            problem(CertCause::NotValid),
        ])));
        assert_eq!(both, format!("{} {}", texts[4], texts[2]));
    }

    /// Each rule a parameter breaks, and each way a log is broken that a
    /// custodian can act on, has its own advice; the exit codes stay their
    /// family's (3 for a parameter, 4 for a broken log).
    #[test]
    fn parameters_and_log_breaks_get_advice_per_case() {
        use hsm_ceremony::custodian::key::PassphraseTooShort;
        use hsm_ceremony::error::CountersignatureFault;
        let params = [
            ParameterError::Days { days: 0, max: 3650 },
            ParameterError::WeakPassphrase {
                key: "c0".into(),
                source: PassphraseTooShort { chars: 3 },
            },
            ParameterError::SecurityDomainTooLarge { bytes: 10, max: 5 },
            ParameterError::EpochNotAbove { epoch: 1, highest: 3 },
            ParameterError::SameCustodian(CertProblem {
                cause: CertCause::Duplicate,
                text: "x".into(),
            }),
        ];
        let breaks = [
            LogBreak::NotCanonical,
            LogBreak::HeadMissing,
            LogBreak::CutShort,
            LogBreak::Countersignature(CountersignatureFault::DoesNotVerify { line: 2 }),
        ];
        let mut texts: Vec<String> = Vec::new();
        for p in params {
            let e = Error::from(p);
            assert_eq!(exit_code(&e), EXIT_INPUT, "{e}");
            texts.push(said(&e));
        }
        for reason in breaks {
            let e = Error::from(LogError::Broken {
                path: "ceremony-log.jsonl".into(),
                line: 2,
                reason,
            });
            assert_eq!(exit_code(&e), EXIT_INTEGRITY, "{e}");
            texts.push(said(&e));
        }
        for (i, t) in texts.iter().enumerate() {
            assert!(
                !t.is_empty() && !texts[..i].contains(t),
                "advice {i} is empty or shared: {t}"
            );
        }
        assert!(texts[6].contains("ceremony-log.jsonl.head"), "{}", texts[6]);
    }

    /// Every instance failure says what to do, and a refused token is not
    /// told the same as a missing role or a closed port.
    #[test]
    fn each_instance_failure_gets_its_own_advice() {
        let refused = |status| InstanceError::Refused {
            request: "GET /x".into(),
            status,
            detail: "d".into(),
        };
        let (u, r, q) = ("https://h".to_string(), "GET /x".to_string(), "r".to_string());
        let all = [
            InstanceError::Url {
                url: u.clone(),
                why: q.clone(),
            },
            InstanceError::Unreachable {
                url: u.clone(),
                request: r.clone(),
                reason: q.clone(),
            },
            InstanceError::Tls {
                url: u,
                request: r,
                reason: q,
            },
            refused(401),
            refused(403),
            refused(409),
            InstanceError::OperationFailed {
                what: "download",
                details: "d".into(),
            },
        ]
        .map(Error::from);
        let texts: Vec<String> = all.iter().map(said).collect();
        for (i, t) in texts.iter().enumerate().take(6) {
            assert!(!t.is_empty(), "{:?} has no advice", all[i]);
            assert!(!texts[..i].contains(t), "{:?} shares the advice {t}", all[i]);
        }
        assert!(!texts[6].is_empty());
        assert_eq!(exit_code(&all[0]), EXIT_INPUT);
        assert!(all[1..].iter().all(|e| exit_code(e) == EXIT_INSTANCE));
    }

    /// A token that will not sign a countersignature or manifest gets the
    /// token's advice: the refusal is a typed TokenError inside the signing
    /// error, no longer a message the CLI cannot tell apart.
    #[test]
    fn a_token_refusing_to_sign_gets_the_tokens_advice() {
        let no_sign = || TokenError::NoSign {
            token: "t".into(),
            object: "k".into(),
        };
        let signing = Error::from(LogError::Sign {
            what: "line 2".into(),
            source: Box::new(SignError::Token(no_sign())),
        });
        assert_eq!(said(&signing), said(&Error::from(no_sign())));
        assert!(signing.to_string().contains("may not sign"), "{signing}");
    }

    /// A build that can load no module is not told to check the module's architecture.
    #[test]
    fn a_build_without_module_loading_is_not_sent_to_check_the_module() {
        let path = std::path::PathBuf::from("/usr/lib/softhsm/libsofthsm2.so");
        let none = said(&Error::from(TokenError::NoModuleLoading { path: path.clone() }));
        let bad = said(&Error::from(TokenError::Module { path, why: "x".into() }));
        assert!(bad.contains("architecture"), "{bad}");
        assert!(
            !none.contains("architecture") && none.contains("glibc release binary"),
            "{none}"
        );
    }

    #[test]
    fn a_certificate_given_as_a_key_is_told_so() {
        let err = Error::Key {
            label: "alice.cer".into(),
            source: CustodianError::CertificateNotKey,
        };
        let t = said(&err);
        assert!(
            t.contains("alice.cer is a certificate") && !t.contains("more custodians"),
            "{t}"
        );
    }
}
