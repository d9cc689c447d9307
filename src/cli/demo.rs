//! `hsm-ceremony demo`: the whole story in a temporary folder — custodian
//! keys, activation of an in-process emulated Managed HSM, inspection,
//! proofs of possession, a canary set with its full backup, and a recovery
//! drill into a second instance that restores the backup and proves the
//! keys HSM-side — with generated passphrases and no prompts. Each step
//! runs the real command.

use std::path::{Path, PathBuf};

use clap::Args;

use super::custodian::{self, KeygenArgs, VerifyArgs};
use super::drill::{self, DrillArgs, PrepareArgs};
use super::instance::{self, Connect, DownloadArgs};
use super::keys::QuorumKeys;
use super::passphrase::PassphraseArgs;
use super::sd::{self, InspectArgs};
use hsm_ceremony::crypto::b64::b64u;
use hsm_ceremony::crypto::rng::{os_rng, CryptoRng};
use hsm_ceremony::emulator::{self, Role};
use hsm_ceremony::error::{Error, InstanceError, Result};
use hsm_ceremony::files::{self, Mode};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the ceremony's files in DIR (created; must not exist) instead of a
    /// temporary folder that is removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

fn step(n: usize, total: usize, what: &str) {
    crate::out!("\n[{n}/{total}] {what}");
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let temp;
    let dir: PathBuf = match &args.keep {
        Some(d) => {
            // A folder, not a file: an existing one is "already exists", not "not a file".
            if std::fs::symlink_metadata(d).is_ok() {
                return Err(Error::OutputExists { path: d.clone() });
            }
            std::fs::create_dir_all(d).map_err(|source| Error::Write {
                path: d.clone(),
                source,
            })?;
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(|source| Error::Write {
                path: std::env::temp_dir(),
                source,
            })?;
            temp.path().to_path_buf()
        }
    };
    run_in(&dir)?;
    crate::out!(
        "\nDemo complete. Files are in {}{}",
        dir.display(),
        if args.keep.is_some() { "" } else { " (removed now)" }
    );
    Ok(())
}

fn passphrase_file<R: CryptoRng + ?Sized>(rng: &mut R, dir: &Path, name: &str) -> Result<PathBuf> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 18]);
    rng.fill_bytes(&mut bytes[..]);
    let path = dir.join(format!("{name}.passphrase"));
    files::write_new(&path, b64u(&bytes[..]).as_bytes(), Mode::Private)?;
    Ok(path)
}

fn run_in(dir: &Path) -> Result<()> {
    const TOTAL: usize = 7;
    let mut rng = os_rng();
    crate::out!("hsm-ceremony demo in {}", dir.display());

    step(
        1,
        TOTAL,
        "Three custodians generate RSA wrapping keys and certificates (passphrases generated for the demo)",
    );
    let pass_files: Vec<PathBuf> = (0..3)
        .map(|i| passphrase_file(&mut rng, dir, &format!("cert_{i}")))
        .collect::<Result<_>>()?;
    let made = custodian::keygen_cmd(&KeygenArgs {
        name: None,
        count: Some(3),
        prefix: Some("cert_".into()),
        out_dir: dir.to_path_buf(),
        bits: 2048,
        days: 365,
        passphrases: PassphraseArgs {
            files: pass_files.clone(),
            fd: None,
            pin_files: vec![],
        },
        insecure_unencrypted_key: false,
        token: None,
        pkcs11_module: None,
        oaep_on_host: false,
        json: false,
    })?;
    let certs: Vec<PathBuf> = made.iter().map(|m| m.cert_path.clone()).collect();
    let keys: Vec<PathBuf> = made.iter().map(|m| m.key_path.clone()).collect();

    step(
        2,
        TOTAL,
        "An emulated Managed HSM starts (in this process); the activation downloads its security domain, 2 of 3",
    );
    let original_dir = dir.join("instance-a");
    std::fs::create_dir_all(&original_dir).map_err(|source| Error::Write {
        path: original_dir.clone(),
        source,
    })?;
    let token = emulator::issue_token(&original_dir, "demo-admin", &[Role::Administrator, Role::CryptoUser])?;
    let token_file = dir.join("admin.token");
    files::write_new(&token_file, token.expose().as_bytes(), Mode::Private)?;
    // `local:DIR` serves the instance inside this process: the demo opens no socket.
    let connect = Connect {
        url: format!("local:{}", original_dir.display()),
        token_file: Some(token_file.clone()),
        ca: None,
    };
    crate::out!("instance A: in process, state {}", original_dir.display());
    let sd_path = dir.join("sd.json");
    instance::download(&DownloadArgs {
        connect: connect.clone(),
        certs: certs.clone(),
        quorum: 2,
        out: sd_path.clone(),
        manifest: Default::default(),
    })?;

    step(
        3,
        TOTAL,
        "The downloaded security domain is inspected and matched to the custodians",
    );
    sd::run(sd::SdCommand::Inspect(InspectArgs {
        sd_file: sd_path.clone(),
        certs: certs.clone(),
        json: false,
    }))?;

    step(4, TOTAL, "Each custodian proves they can open their own share");
    for (key, pass) in keys.iter().zip(&pass_files) {
        custodian::verify(&VerifyArgs {
            sd_file: sd_path.clone(),
            custodian: super::keys::OneKey {
                key: key.clone(),
                cert: None,
                passphrases: PassphraseArgs {
                    files: vec![pass.clone()],
                    fd: None,
                    pin_files: vec![],
                },
            },
            json: false,
        })?;
    }

    step(
        5,
        TOTAL,
        "A canary set on instance A: RSA, EC and AES keys, a DEK wrapped under two of them, a signature, a full backup",
    );
    let canary = dir.join("canary.json");
    drill::prepare(&PrepareArgs {
        connect,
        name: "drill-canary".into(),
        out: canary.clone(),
        storage: None,
        sas_file: None,
        yes: false,
    })?;

    step(
        6,
        TOTAL,
        "Drill: custodians 0 and 2 recover a fresh emulated instance B (in memory only); the full backup restores \
         there, the inventory matches and the restored keys prove themselves HSM-side",
    );
    let report_dir = dir.join("drill-report");
    let report = drill::drill(&DrillArgs {
        sd_file: Some(sd_path.clone()),
        keys: QuorumKeys {
            sd_wrapping_keys: vec![keys[0].clone(), keys[2].clone()],
            certs: vec![],
        },
        instance: "local".into(),
        token_file: None,
        ca: None,
        canary: Some(canary),
        sas_file: None,
        report: Some(report_dir.clone()),
        passphrases: PassphraseArgs {
            files: vec![pass_files[0].clone(), pass_files[2].clone()],
            fd: None,
            pin_files: vec![],
        },
        json: false,
    })?;

    step(7, TOTAL, "The evidence");
    let md = std::fs::read_to_string(report_dir.join(drill::REPORT_MD)).map_err(|source| Error::Read {
        path: report_dir.join(drill::REPORT_MD),
        source,
    })?;
    crate::out!("{md}");
    if !report.passed() {
        return Err(InstanceError::DrillFailed.into());
    }
    crate::out!(
        "The full backup of instance A restored on instance B, and its keys unwrapped, verified and signed there: \
         the recovery works."
    );
    Ok(())
}
