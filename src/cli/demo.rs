//! `hsm-ceremony demo`: the whole offline story in a temporary folder, with
//! generated passphrases and no prompts — each step runs the real command.

use std::path::{Path, PathBuf};

use clap::Args;

use super::custodian::{self, KeygenArgs, VerifyArgs};
use super::passphrase::{PassphraseArgs, Passphrases};
use super::restore::{self, RestoreBlobArgs};
use super::sd::{self, InspectArgs, SplitArgs};
use crate::crypto::b64::b64u;
use crate::crypto::rng::{os_rng, CryptoRng};
use crate::error::{Error, Result};
use crate::files::{self, Mode};
use crate::{inputs, recovery};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the ceremony's files in DIR (created; must not exist) instead of a
    /// temporary folder that is removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

fn step(n: usize, total: usize, what: &str) {
    println!("\n[{n}/{total}] {what}");
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
    println!(
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
    const TOTAL: usize = 6;
    let mut rng = os_rng();
    println!("hsm-ceremony demo in {}", dir.display());

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
            pin_files: Vec::new(),
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
        "A security domain is split 2-of-3 to their certificates (as the HSM does at activation)",
    );
    let sd_path = dir.join("sd.json");
    sd::split(&SplitArgs {
        certs: certs.clone(),
        quorum: 2,
        items: vec![],
        random_contents: true,
        out: sd_path.clone(),
        local: false,
    })?;

    step(
        3,
        TOTAL,
        "The security domain is inspected and matched to the custodians",
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
            key: key.clone(),
            cert: None,
            passphrases: PassphraseArgs {
                files: vec![pass.clone()],
                fd: None,
                pin_files: Vec::new(),
            },
            json: false,
        })?;
    }

    step(
        5,
        TOTAL,
        "Custodians 0 and 2 build the restore blob for a new instance's exchange key",
    );
    let exchange = custodian::keygen_cmd(&KeygenArgs {
        name: Some("exchange".into()),
        count: None,
        prefix: None,
        out_dir: dir.to_path_buf(),
        bits: 2048,
        days: 30,
        passphrases: PassphraseArgs::default(),
        insecure_unencrypted_key: true,
        token: None,
        pkcs11_module: None,
        oaep_on_host: false,
        json: false,
    })?
    .remove(0);
    let blob_path = dir.join("restore-blob.json");
    restore::run(&RestoreBlobArgs {
        sd_file: sd_path.clone(),
        sd_exchange_key: exchange.cert_path.clone(),
        sd_wrapping_keys: vec![keys[0].clone(), keys[2].clone()],
        certs: vec![],
        out: blob_path.clone(),
        passwords: None,
        passphrases: PassphraseArgs {
            files: vec![pass_files[0].clone(), pass_files[2].clone()],
            fd: None,
            pin_files: Vec::new(),
        },
        json: false,
    })?;

    step(
        6,
        TOTAL,
        "The new instance opens the blob; its contents match what custodians 1 and 2 open from the security domain",
    );
    let exchange_key = inputs::key_file(&exchange.key_path)?
        .into_key(None)
        .map_err(|source| Error::Key {
            label: inputs::label(&exchange.key_path),
            source,
        })?;
    let blob = inputs::restore_blob(&blob_path)?;
    let from_blob = recovery::open_restore_blob(&blob, &exchange_key, &exchange.cert)?;
    let sd_file = inputs::security_domain(&sd_path)?;
    let mut pass = Passphrases::new(
        &PassphraseArgs {
            files: vec![pass_files[1].clone(), pass_files[2].clone()],
            fd: None,
            pin_files: Vec::new(),
        },
        None,
        2,
    )?;
    let other_quorum = restore::gather_quorum(&sd_file, &[keys[1].clone(), keys[2].clone()], &[], &mut pass)?;
    let (a, b) = (
        recovery::contents_fingerprint(&from_blob),
        recovery::contents_fingerprint(&other_quorum.items),
    );
    println!("contents fingerprint from the blob:            {a}");
    println!("contents fingerprint from custodians 1 and 2:  {b}");
    if a != b {
        return Err(Error::Crypto(
            "the restore blob does not carry the security domain's contents".into(),
        ));
    }
    println!("They match: the restore blob carries exactly the security domain's contents, under a new master key.");
    Ok(())
}
