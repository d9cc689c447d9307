//! `hsm-ceremony manifest …`: the parameters custodians sign before a split,
//! a download or a rotation.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use super::keys;
use crate::ceremony::manifest::Manifest;
use crate::crypto::rng::os_rng;
use crate::custodian::cert::Certificate;
use crate::error::{Error, Result};
use crate::files::{self, read_limited, Mode};
use crate::{inputs, say};

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

impl ManifestCheck {
    /// Checks the manifest, if one was given; returns its epoch.
    pub fn check(&self, purpose: &str, certs: &[Certificate], quorum: usize) -> Result<Option<u64>> {
        let Some(path) = &self.manifest else { return Ok(None) };
        let m = load(path)?;
        m.check(purpose, certs, quorum, self.manifest_signatures.unwrap_or(certs.len()))?;
        say!(
            "manifest {} checked: {} signatures, epoch {}",
            path.display(),
            m.signatures.len(),
            m.terms.epoch
        );
        Ok(Some(m.terms.epoch))
    }
}

fn load(path: &Path) -> Result<Manifest> {
    let bytes = read_limited(path, 1024 * 1024, "manifest")?;
    Manifest::from_json(&bytes).map_err(|e| Error::Usage(format!("{} is not a manifest: {e}", path.display())))
}

pub fn run(cmd: ManifestCommand) -> Result<()> {
    match cmd {
        ManifestCommand::Create(args) => {
            files::ensure_absent(&args.out)?;
            let labelled: Vec<(String, Certificate)> = args
                .certs
                .iter()
                .map(|p| Ok((inputs::label(p), inputs::certificate(p)?)))
                .collect::<Result<_>>()?;
            crate::recovery::check_distinct_custodians(&labelled)?;
            let certs: Vec<Certificate> = labelled.into_iter().map(|(_, c)| c).collect();
            let m = Manifest::new_with_rng(
                &mut os_rng(),
                &args.purpose,
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
            let mut m = load(&args.manifest)?;
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
