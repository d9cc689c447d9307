//! `hsm-ceremony manifest …`: the parameters custodians sign before a split,
//! a download or a rotation.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use super::keys;
use crate::say;
use hsm_ceremony::ceremony::log;
use hsm_ceremony::ceremony::manifest::{Manifest, Purpose};
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::error::{Error, ParameterError, Result};
use hsm_ceremony::files::{self, Mode};
use hsm_ceremony::inputs;

#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Write the terms: N, M, every certificate thumbprint, the epoch, a nonce.
    #[command(
        after_help = "Example:\n  hsm-ceremony manifest create --purpose download --quorum 2 --epoch 1 \\\n      \
        --certs cert_0.cer cert_1.cer cert_2.cer --out manifest.json"
    )]
    #[command(alias = "manifest")]
    Create(CreateArgs),
    /// Sign the terms with a custodian's wrapping key.
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
    /// How many custodians must have signed it (default: all N).
    #[arg(long, requires = "manifest")]
    pub manifest_signatures: Option<usize>,
}

/// What a checked manifest fixes for the step: its epoch and its nonce
/// (recorded in the log, so the same manifest cannot be used twice).
pub struct Signed {
    pub epoch: u64,
    pub nonce: String,
}

impl ManifestCheck {
    /// Checks the manifest, if one was given, against the step's terms and
    /// the log the step records in (`log`): at least M signatures whatever
    /// --manifest-signatures says, an epoch above every epoch the log has
    /// seen, and a nonce no recorded step has used.
    pub fn check(
        &self,
        purpose: Purpose,
        certs: &[Certificate],
        quorum: usize,
        log: Option<&Path>,
    ) -> Result<Option<Signed>> {
        let Some(path) = &self.manifest else { return Ok(None) };
        let m = inputs::manifest(path)?;
        // Fewer than M signers could not have opened the master key together: never enough.
        let needed = self.manifest_signatures.unwrap_or(certs.len()).max(quorum);
        m.check(purpose, certs, quorum, needed)?;
        let lines = recorded_lines(log)?;
        let ok = || lines.iter().filter(|l| l.entry.outcome.is_ok());
        if let Some(l) =
            ok().find(|l| l.entry.details.get("manifest_nonce").and_then(|n| n.as_str()) == Some(&m.terms.nonce))
        {
            return Err(Error::manifest_refused(format!(
                "its nonce was already used by line {} of the ceremony log ({}); a manifest is signed for one step",
                l.seq, l.entry.command
            )));
        }
        if let Some(highest) = highest_epoch(&lines) {
            if m.terms.epoch <= highest {
                return Err(Error::manifest_refused(format!(
                    "it is for custodian-set epoch {}, but the ceremony log already has epoch {highest}; epochs only increase",
                    m.terms.epoch
                )));
            }
        }
        say!(
            "manifest {} checked: {} signatures ({needed} required), epoch {}",
            path.display(),
            m.signatures.len(),
            m.terms.epoch
        );
        Ok(Some(Signed {
            epoch: m.terms.epoch,
            nonce: m.terms.nonce,
        }))
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

/// The highest custodian-set epoch that a successful step recorded.
pub fn highest_epoch(lines: &[log::Line]) -> Option<u64> {
    lines
        .iter()
        .filter(|l| l.entry.outcome.is_ok())
        .filter_map(|l| l.entry.details.get("epoch").and_then(|e| e.as_u64()))
        .max()
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
        ManifestCommand::Create(args) => {
            files::ensure_absent(&args.out)?;
            files::ensure_writable_folder(&files::folder_of(&args.out), &args.out)?;
            let labelled: Vec<(String, Certificate)> = args
                .certs
                .iter()
                .map(|p| Ok((inputs::label(p), inputs::certificate(p)?)))
                .collect::<Result<_>>()?;
            hsm_ceremony::recovery::check_distinct_custodians(&labelled)?;
            let certs: Vec<Certificate> = labelled.into_iter().map(|(_, c)| c).collect();
            let m = Manifest::new_with_rng(
                &mut os_rng(),
                args.purpose.parse().map_err(Error::Usage)?,
                &certs,
                args.quorum,
                args.epoch,
                OffsetDateTime::now_utc(),
            )?;
            files::write_new(&args.out, m.to_json().as_bytes(), Mode::Public)?;
            crate::out!(
                "wrote {}: {} of {} custodians, epoch {}, nonce {}. Each custodian now signs it with `manifest sign`.",
                args.out.display(),
                m.terms.quorum,
                m.terms.custodians,
                m.terms.epoch,
                m.terms.nonce
            );
            Ok(())
        }
        ManifestCommand::Sign(args) => {
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
            crate::out!(
                "signed by {} ({}); {} of {} custodians have signed",
                k.label,
                cert.x5t_256(),
                m.signatures.len(),
                m.terms.custodians
            );
            Ok(())
        }
    }
}
