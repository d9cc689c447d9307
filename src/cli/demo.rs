//! `hsm-ceremony demo`: the whole story in a temporary folder (see
//! [`hsm_ceremony::demo`], which runs it). Each step runs the real command,
//! which prints as it does; this file prints the story around them.

use std::path::{Path, PathBuf};

use clap::Args;

use super::custodian::{self, KeygenArgs, VerifyArgs};
use super::drill::{self, DrillArgs, PrepareArgs};
use super::instance::{self, Connect, DownloadArgs};
use super::keys::{OneKey, QuorumKeys};
use super::passphrase::PassphraseArgs;
use super::sd::{self, InspectArgs};
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::custodian::keygen::Made;
use hsm_ceremony::custodian::KeyRef;
use hsm_ceremony::demo::{self, Commands, Event, Folder, Instance, STEPS};
use hsm_ceremony::error::Result;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the ceremony's files in DIR (created; must not exist) instead of a
    /// temporary folder that is removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let folder = Folder::create(args.keep.as_deref())?;
    let dir = folder.path();
    crate::out!("hsm-ceremony demo in {}", dir.display());
    demo::run_with_rng(&mut os_rng(), dir, &mut RealCommands, &mut |event| match event {
        Event::Step { n, what } => crate::out!("\n[{n}/{STEPS}] {what}"),
        Event::InstanceStarted(i) => crate::out!("instance A: in process, state {}", i.state.display()),
        Event::Evidence(md) => crate::out!("{md}"),
    })?;
    crate::out!(
        "The full backup of instance A restored on instance B, and its keys unwrapped, verified and signed there: \
         the recovery works."
    );
    crate::out!(
        "\nDemo complete. Files are in {}{}",
        dir.display(),
        if folder.is_kept() { "" } else { " (removed now)" }
    );
    Ok(())
}

/// Passphrases from files, one per key in order.
fn from_files(files: &[PathBuf]) -> PassphraseArgs {
    PassphraseArgs {
        files: files.to_vec(),
        fd: None,
        pin_files: vec![],
    }
}

fn connect(to: &Instance) -> Connect {
    Connect {
        url: to.url.clone(),
        token_file: Some(to.token_file.clone()),
        ca: None,
    }
}

/// The demo's steps are the commands a ceremony runs.
struct RealCommands;

impl Commands for RealCommands {
    fn keygen(&mut self, plan: &demo::Keygen<'_>) -> Result<Vec<Made>> {
        custodian::keygen_cmd(&KeygenArgs {
            name: None,
            count: Some(plan.count),
            prefix: Some(plan.prefix.into()),
            out_dir: plan.out_dir.to_path_buf(),
            bits: plan.bits,
            days: plan.days,
            passphrases: from_files(plan.passphrase_files),
            insecure_unencrypted_key: false,
            token: None,
            pkcs11_module: None,
            oaep_on_host: false,
            json: false,
        })
    }

    fn download(&mut self, from: &Instance, certs: &[PathBuf], quorum: usize, out: &Path) -> Result<()> {
        instance::download(&DownloadArgs {
            connect: connect(from),
            certs: certs.to_vec(),
            quorum,
            out: out.to_path_buf(),
            manifest: Default::default(),
        })
    }

    fn inspect(&mut self, sd: &Path, certs: &[PathBuf]) -> Result<()> {
        sd::run(sd::SdCommand::Inspect(InspectArgs {
            manifest: None,
            manifest_signatures: None,
            sd_file: sd.to_path_buf(),
            certs: certs.to_vec(),
            json: false,
        }))
        .map(|_| ())
    }

    fn verify(&mut self, sd: &Path, key: &Path, passphrase_file: &Path) -> Result<()> {
        custodian::verify(&VerifyArgs {
            sd_file: sd.to_path_buf(),
            custodian: OneKey {
                key: KeyRef::File(key.to_path_buf()),
                cert: None,
                passphrases: from_files(&[passphrase_file.to_path_buf()]),
            },
            json: false,
        })
        .map(|_| ())
    }

    fn prepare_canary(&mut self, on: &Instance, name: &str, out: &Path) -> Result<()> {
        drill::prepare(&PrepareArgs {
            connect: connect(on),
            name: name.into(),
            out: out.to_path_buf(),
            storage: None,
            sas_file: None,
            yes: false,
            inventory: drill::InventoryArg::All,
        })
        .map(|_| ())
    }

    fn drill(&mut self, plan: &demo::Drill<'_>) -> Result<bool> {
        let report = drill::drill(&DrillArgs {
            sd_file: Some(plan.sd.to_path_buf()),
            keys: QuorumKeys {
                sd_wrapping_keys: plan.keys.iter().cloned().map(KeyRef::File).collect(),
                certs: vec![],
            },
            instance: "local".into(),
            token_file: None,
            ca: None,
            canary: Some(plan.canary.to_path_buf()),
            sas_file: None,
            report: Some(plan.report.to_path_buf()),
            passphrases: from_files(plan.passphrase_files),
            json: false,
        })?;
        Ok(report.passed())
    }
}
