//! `hsm-ceremony manifest …`: the parameters custodians sign before a split,
//! a download or a rotation.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use super::{keys, record};
use crate::say;
use hsm_ceremony::ceremony::log::{self, FileRef};
use hsm_ceremony::ceremony::manifest::{highest_epoch, CurrentSet, Expected, Manifest, Purpose, Signed};
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::error::{Error, ParameterError, Result};
use hsm_ceremony::files::{self, Mode};
use hsm_ceremony::inputs;

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Write the terms: N, M, every certificate thumbprint, the epoch, a nonce.
    #[command(
        after_help = "Examples:\n  hsm-ceremony manifest create --purpose download --quorum 2 --epoch 1 \\\n      \
        --certs cert_0.cer cert_1.cer cert_2.cer --out manifest.json\n  \
        hsm-ceremony manifest create --purpose rotate --quorum 3 --epoch 2 \\\n      \
        --certs new_0.cer new_1.cer new_2.cer new_3.cer new_4.cer \\\n      \
        --current-certs old_0.cer old_1.cer old_2.cer --current-quorum 2 --out manifest.json"
    )]
    #[command(alias = "manifest")]
    Create(CreateArgs),
    /// Sign the terms with a custodian's wrapping key (a rotation's new and current custodians each sign once).
    #[command(after_help = "Example:\n  hsm-ceremony manifest sign --manifest manifest.json --key cert_0.key")]
    Sign(SignArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// What the custodians agree to: split, download or rotate.
    #[arg(long, value_parser = ["split", "download", "rotate"])]
    pub purpose: String,
    /// The custodians' certificates, in the order the shares will follow.
    #[arg(long, required = true, num_args = 1..)]
    pub certs: Vec<PathBuf>,
    /// The quorum M the custodians agree to.
    #[arg(long)]
    pub quorum: usize,
    /// Rotate only (and required): the current custodians' certificates, who open the old file; they sign too.
    #[arg(long, num_args = 1..)]
    pub current_certs: Vec<PathBuf>,
    /// Rotate only (and required): the quorum of the security domain the current custodians open.
    #[arg(long)]
    pub current_quorum: Option<usize>,
    /// The custodian set's epoch (1 for the first set, then one more per rotation).
    #[arg(long)]
    pub epoch: u64,
    /// Where to write the manifest (never overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The manifest to sign; the signature is added to it.
    #[arg(long)]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub custodian: keys::OneKey,
}

/// `--manifest` and `--manifest-signatures` for commands that honour a manifest.
#[derive(Args, Debug, Clone, Default)]
pub struct ManifestCheck {
    /// Refuse unless this signed manifest's terms are exactly this command's.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// How many custodians must have signed it (default: all N; a rotation's current custodians: the old file's quorum).
    #[arg(long, requires = "manifest")]
    pub manifest_signatures: Option<usize>,
}

impl ManifestCheck {
    /// Checks the manifest, if one was given, against the step's terms and
    /// the log the step records in (`log`): at least M signatures whatever
    /// --manifest-signatures says, a rotation's current custodians as the
    /// old file names them, an epoch above every epoch the log has seen, and
    /// a nonce no recorded step has used. The manifest is read once: the
    /// fingerprint set in `recorded` is of the bytes checked.
    pub fn check(
        &self,
        purpose: Purpose,
        certs: &[Certificate],
        quorum: usize,
        current: Option<&CurrentSet>,
        log: Option<&Path>,
        recorded: &mut Vec<FileRef>,
    ) -> Result<Option<Signed>> {
        let Some(path) = &self.manifest else { return Ok(None) };
        let (m, sha256) = inputs::manifest_hashed(path)?;
        record::parsed(recorded, path, sha256);
        let expected = Expected {
            purpose,
            certs,
            quorum,
            signatures: self.manifest_signatures.unwrap_or(certs.len()),
            current,
        };
        let signed = m
            .check(&expected, &recorded_lines(log)?)
            .map_err(Error::manifest_refused)?;
        let current_part = match current {
            Some(c) => format!(
                ", {} current custodians ({} required)",
                signed.current_signers, c.quorum
            ),
            None => String::new(),
        };
        say!(
            "manifest {} checked: {} signatures ({} required){current_part}, epoch {}",
            path.display(),
            signed.new_signers,
            expected.signatures.max(quorum),
            signed.epoch
        );
        Ok(Some(signed))
    }
}

/// The lines of the step's log, when there is one (a broken one is an error:
/// its epochs and nonces cannot be trusted).
fn recorded_lines(log: Option<&Path>) -> Result<Vec<log::Line>> {
    match log.filter(|p| p.exists()) {
        None => Ok(Vec::new()),
        Some(p) => log::verified(p),
    }
}

/// Refuses an epoch given without a manifest that does not exceed the log's.
pub fn check_epoch_increases(epoch: u64, log: Option<&Path>) -> Result<()> {
    match highest_epoch(&recorded_lines(log)?) {
        Some(highest) if epoch <= highest => Err(ParameterError::EpochNotAbove { epoch, highest }.into()),
        _ => Ok(()),
    }
}

pub fn run(cmd: ManifestCommand) -> Result<()> {
    match cmd {
        ManifestCommand::Create(args) => create(&args),
        ManifestCommand::Sign(args) => sign(&args),
    }
}

/// Certificates from files, one person's two refused by file.
fn load_certs(paths: &[PathBuf]) -> Result<Vec<Certificate>> {
    let labelled: Vec<(String, Certificate)> = paths
        .iter()
        .map(|p| Ok((inputs::label(p), inputs::certificate(p)?)))
        .collect::<Result<_>>()?;
    hsm_ceremony::recovery::check_distinct_custodians(&labelled)?;
    Ok(labelled.into_iter().map(|(_, c)| c).collect())
}

fn create(args: &CreateArgs) -> Result<()> {
    let purpose: Purpose = args.purpose.parse().map_err(Error::Usage)?;
    let rotate = purpose == Purpose::Rotate;
    match (rotate, args.current_certs.is_empty(), args.current_quorum) {
        (true, true, _) | (true, _, None) => {
            return Err(Error::Usage(
                "a rotate manifest needs --current-certs (the certificates of the custodians who open the old \
                 file, as `sd inspect` lists them) and --current-quorum (the old file's quorum): they sign it too"
                    .into(),
            ))
        }
        (false, false, _) | (false, _, Some(_)) => {
            let why = format!(
                "--current-certs and --current-quorum are for --purpose rotate only; a {purpose} has no current custodians"
            );
            return Err(Error::Usage(why));
        }
        _ => {}
    }
    files::ensure_absent(&args.out)?;
    files::ensure_writable_folder(&files::folder_of(&args.out), &args.out)?;
    let certs = load_certs(&args.certs)?;
    let current = load_certs(&args.current_certs)?;
    let m = Manifest::new_with_rng(
        &mut os_rng(),
        purpose,
        &certs,
        args.quorum,
        args.current_quorum.map(|q| (current.as_slice(), q)),
        args.epoch,
        OffsetDateTime::now_utc(),
    )?;
    files::write_new(&args.out, m.to_json().as_bytes(), Mode::Public)?;
    let current_part = match m.terms.current_quorum {
        Some(q) => format!(
            ", from {q} of {} current custodians",
            m.terms.current_certificates.len()
        ),
        None => String::new(),
    };
    crate::out!(
        "wrote {}: {} of {} custodians{current_part}, epoch {}, nonce {}. Each custodian now signs it with `manifest sign`.",
        args.out.display(),
        m.terms.quorum,
        m.terms.custodians,
        m.terms.epoch,
        m.terms.nonce
    );
    Ok(())
}

fn sign(args: &SignArgs) -> Result<()> {
    let mut m = inputs::manifest(&args.manifest)?;
    // Checked before the custodian is asked anything: the manifest can be rewritten,
    // and the certificate known now is one of its custodians who has not signed yet.
    files::ensure_writable_folder(&files::folder_of(&args.manifest), &args.manifest)?;
    if let Some(cert) = args.custodian.known_certificate()? {
        m.check_signer(&cert)?;
    }
    let (k, cert) = args.custodian.signer()?;
    m.sign(k.signer.as_ref(), &cert)?;
    files::replace(&args.manifest, m.to_json().as_bytes(), Mode::Public)?;
    let t = &m.terms;
    let signed = |set: &[String]| m.signatures.iter().filter(|s| set.contains(&s.x5t_256)).count();
    if t.current_certificates.is_empty() {
        crate::out!(
            "signed by {} ({}); {} of {} custodians have signed",
            k.label,
            cert.x5t_256(),
            m.signatures.len(),
            t.custodians
        );
    } else {
        crate::out!(
            "signed by {} ({}); {} of {} new custodians and {} of {} current custodians have signed",
            k.label,
            cert.x5t_256(),
            signed(&t.certificates),
            t.custodians,
            signed(&t.current_certificates),
            t.current_certificates.len()
        );
    }
    Ok(())
}
