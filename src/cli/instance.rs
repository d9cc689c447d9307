//! `hsm-ceremony instance …`: talk to a Managed HSM (real, or an emulator)
//! for the activation download, the exchange key, the upload and statuses.
//! Only these commands, and `drill`, open network connections, and only to
//! the URL given.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::manifest::ManifestCheck;
use super::output::print_json;
use super::record;
use crate::say;
use hsm_ceremony::ceremony::log::{Entry, FileRef, Step};
use hsm_ceremony::crypto::secret::BearerToken;
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::error::{Error, InstanceError, Result};
use hsm_ceremony::files::{self, Mode};
use hsm_ceremony::inputs;
use hsm_ceremony::instance::{Download, InstanceClient};
use zeroize::Zeroizing;

/// The variable read for the bearer token when no --token-file is given.
pub const TOKEN_ENV: &str = "HSM_CEREMONY_TOKEN";

/// How to reach an instance. The token is never a flag: the command line is
/// visible to every user of the machine.
#[derive(Args, Debug, Clone)]
pub struct Connect {
    /// The instance URL, e.g. `https://contoso.managedhsm.azure.net` or an emulator's
    /// `https://127.0.0.1:PORT`; or `local:DIR` for an emulated instance's state folder,
    /// served inside this process with no socket.
    #[arg(long)]
    pub url: String,
    /// A file holding the bearer token (default: the HSM_CEREMONY_TOKEN variable).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// A CA certificate to trust instead of the public roots (the emulator's ca.pem).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl Connect {
    pub fn client(&self) -> Result<InstanceClient> {
        let token = read_token(self.token_file.as_deref())?;
        if let Some(dir) = self.url.strip_prefix("local:") {
            let emulator = hsm_ceremony::emulator::InProcess::open(dir)?;
            return Ok(InstanceClient::in_process(std::sync::Arc::new(emulator), token));
        }
        InstanceClient::new(&self.url, token, self.ca.as_deref())
    }
}

pub fn read_token(file: Option<&Path>) -> Result<BearerToken> {
    let token = match file {
        Some(path) => inputs::bearer_token(path)?,
        None => {
            let value = Zeroizing::new(std::env::var(TOKEN_ENV).unwrap_or_default());
            BearerToken::new(value.trim().to_string())
        }
    };
    if token.is_empty() {
        return Err(Error::Usage(format!(
            "no bearer token: give --token-file FILE or set {TOKEN_ENV}"
        )));
    }
    Ok(token)
}

#[derive(Subcommand, Debug)]
pub enum InstanceCommand {
    /// Activate an instance: send the custodians' certificates and quorum, save the security domain.
    #[command(
        after_help = "Example:\n  hsm-ceremony instance download --url https://127.0.0.1:8443 --ca state/ca.pem \\\n      \
        --token-file admin.token --certs cert_0.cer cert_1.cer cert_2.cer --quorum 2 --out sd.json"
    )]
    Download(DownloadArgs),
    /// Put a new instance into recovery and save its exchange-key certificate.
    #[command(
        after_help = "Example:\n  hsm-ceremony instance init-recovery --url https://127.0.0.1:8444 --ca b/ca.pem \\\n      \
        --token-file admin.token --out exchange.cer"
    )]
    InitRecovery(InitRecoveryArgs),
    /// Upload a restore blob and wait for the instance to report the outcome.
    #[command(
        after_help = "Example:\n  hsm-ceremony instance upload --url https://127.0.0.1:8444 --ca b/ca.pem \\\n      \
        --token-file admin.token --restore-blob restore-blob.json"
    )]
    Upload(UploadArgs),
    /// Restore a key backup (the canary from `drill prepare`) and check it is the same key.
    #[command(
        after_help = "Example:\n  hsm-ceremony instance restore-key --url https://127.0.0.1:8444 --ca b/ca.pem \\\n      \
        --token-file admin.token --canary canary.json"
    )]
    RestoreKey(RestoreKeyArgs),
    /// Show the instance's activation state (Active, NotActivated, Failed) and its download and upload statuses.
    #[command(
        after_help = "Example:\n  hsm-ceremony instance status --url https://127.0.0.1:8444 --ca b/ca.pem --token-file admin.token"
    )]
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// The custodians' certificates, in share order (3 to 10).
    #[arg(long, required = true, num_args = 1..)]
    pub certs: Vec<PathBuf>,
    /// The quorum M.
    #[arg(long, visible_alias = "sd-quorum")]
    pub quorum: usize,
    /// Where to save the security domain (must not exist).
    #[arg(long, visible_alias = "security-domain-file")]
    pub out: PathBuf,
    #[command(flatten)]
    pub manifest: ManifestCheck,
}

#[derive(Args, Debug)]
pub struct InitRecoveryArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Where to save the exchange-key certificate, PEM (must not exist).
    #[arg(long, visible_alias = "sd-exchange-key")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct UploadArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// The restore blob made by `hsm-ceremony restore-blob`.
    #[arg(long, visible_alias = "sd-file")]
    pub restore_blob: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreKeyArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// The canary backup made by `drill prepare`.
    #[arg(long)]
    pub canary: PathBuf,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: InstanceCommand) -> Result<()> {
    match cmd {
        InstanceCommand::Download(a) => download(&a),
        InstanceCommand::InitRecovery(a) => init_recovery(&a),
        InstanceCommand::Upload(a) => upload(&a),
        InstanceCommand::RestoreKey(a) => restore_key(&a),
        InstanceCommand::Status(a) => status(&a),
    }
}

pub fn download(args: &DownloadArgs) -> Result<()> {
    let download = Download::prepare(&args.certs, args.quorum, &args.out)?;
    let certs = &download.certs;
    let mut inputs = download.files.clone();
    let signed = args.manifest.check(
        hsm_ceremony::ceremony::manifest::Purpose::Download,
        certs,
        args.quorum,
        None,
        record::log_path(&args.out).as_deref(),
        &mut inputs,
    )?;
    let epoch = signed.as_ref().map_or(1, |s| s.epoch);
    let mut entry = Entry {
        command: Step::InstanceDownload,
        inputs,
        thumbprints: certs.iter().map(Certificate::x5t_256).collect(),
        details: json!({"instance": args.connect.url, "quorum": args.quorum, "custodians": certs.len(), "epoch": epoch}),
        ..Default::default()
    };
    if let Some(s) = &signed {
        entry.details["manifest_nonce"] = json!(s.nonce);
    }
    let done = record::logged(&args.out, entry, |entry| {
        let done = download.run(&args.connect.client()?)?;
        entry.outputs = vec![done.file.clone()];
        Ok(done)
    })?;
    say!(
        "wrote {}: the instance is activated, {} of {} custodians.",
        args.out.display(),
        done.quorum,
        done.custodians
    );
    say!(
        "Next: hsm-ceremony sd inspect {} --certs ..., then each custodian runs custodian verify.",
        args.out.display()
    );
    Ok(())
}

pub fn init_recovery(args: &InitRecoveryArgs) -> Result<()> {
    files::ensure_absent(&args.out)?;
    let cert = args.connect.client()?.transfer_key()?;
    files::write_new(&args.out, cert.to_pem().as_bytes(), Mode::Public)?;
    say!(
        "wrote {}: the instance's exchange key (RSA-{}, x5t#S256 {}).",
        args.out.display(),
        cert.bits,
        cert.x5t_256()
    );
    say!(
        "Next: hsm-ceremony restore-blob --sd-file SD --sd-exchange-key {} --sd-wrapping-keys ... --out BLOB",
        args.out.display()
    );
    Ok(())
}

pub fn upload(args: &UploadArgs) -> Result<()> {
    let (blob, sha256) = inputs::restore_blob_hashed(&args.restore_blob)?;
    let entry = Entry {
        command: Step::InstanceUpload,
        inputs: vec![FileRef::parsed(&args.restore_blob, sha256)],
        details: json!({"instance": args.connect.url}),
        ..Default::default()
    };
    record::logged(&args.restore_blob, entry, |_| args.connect.client()?.upload(&blob))?;
    crate::out!("upload succeeded: {} now holds the security domain.", args.connect.url);
    Ok(())
}

fn restore_key(args: &RestoreKeyArgs) -> Result<()> {
    let canary = inputs::key_canary(&args.canary)?;
    let key = args.connect.client()?.restore_key(&canary.backup)?;
    if key.name != canary.name || key.version != canary.key_version {
        return Err(InstanceError::WrongKeyRestored {
            got: key.name,
            got_version: key.version,
            want: canary.name,
            want_version: canary.key_version,
        }
        .into());
    }
    crate::out!(
        "{} (made on {}) restored as {}",
        canary.name,
        canary.instance,
        shown_kid(&key.kid)
    );
    Ok(())
}

/// A key id as people read it: an in-process instance has no real address,
/// so its made-up origin is left out.
pub fn shown_kid(kid: &str) -> String {
    match kid.strip_prefix(hsm_ceremony::emulator::IN_PROCESS_ORIGIN) {
        Some(path) => format!("{path} on the in-process instance"),
        None => kid.to_string(),
    }
}

fn status(args: &StatusArgs) -> Result<()> {
    let client = args.connect.client()?;
    let st = client.instance_status()?;
    let show = |s: &Option<hsm_ceremony::instance::OperationStatus>| match s {
        Some(s) if s.status_details.is_empty() => s.status.clone(),
        Some(s) => format!("{} ({})", s.status, s.status_details),
        None => "none".into(),
    };
    if args.json {
        let part = |s: &Option<hsm_ceremony::instance::OperationStatus>| {
            (
                s.as_ref().map_or("none", |s| s.status.as_str()).to_string(),
                s.as_ref().map_or("", |s| s.status_details.as_str()).to_string(),
            )
        };
        let ((download, download_details), (upload, upload_details)) = (part(&st.download), part(&st.upload));
        print_json(&json!({
            "url": args.connect.url,
            "activation": st.activation.as_str(),
            "download": download,
            "download_details": download_details,
            "upload": upload,
            "upload_details": upload_details,
        }));
    } else {
        crate::out!("{}", args.connect.url);
        crate::out!("  activation             {}", st.activation.as_str());
        crate::out!("  download (activation)  {}", show(&st.download));
        crate::out!("  upload (recovery)      {}", show(&st.upload));
    }
    Ok(())
}
