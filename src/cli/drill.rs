//! `hsm-ceremony drill …`: rehearse a recovery end to end and leave evidence.
//! `drill prepare` makes and backs up a canary key on the original instance;
//! `drill` provisions a target (a fresh local emulator, or a URL), fetches its
//! exchange key, has a quorum open their shares, uploads the restore blob,
//! waits for Success and restores the canary there.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::instance::{read_token, shown_kid, Connect};
use super::keys::QuorumKeys;
use super::passphrase::{PassphraseArgs, Passphrases};
use super::record;
use super::restore::gather_quorum;
use crate::say;
use hsm_ceremony::ceremony::drill::{self, load_canary, Canary, Report, RestoredKey};
use hsm_ceremony::ceremony::log::Entry;
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::emulator::{self, Role};
use hsm_ceremony::error::{Error, Result};
use hsm_ceremony::files::{self, read_limited, Mode};
use hsm_ceremony::format::limits::MAX_SD_FILE_BYTES;
use hsm_ceremony::format::restore_blob::RestoreBlob;
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::inputs;
use hsm_ceremony::instance::InstanceClient;

pub const REPORT_JSON: &str = "drill-report.json";
pub const REPORT_MD: &str = "drill-report.md";

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(after_help = "Examples:\n  \
    hsm-ceremony drill prepare --url https://127.0.0.1:8443 --ca a/ca.pem --token-file admin.token --out canary.json\n  \
    hsm-ceremony drill --sd-file sd.json --sd-wrapping-keys cert_0.key cert_2.key \\\n      \
    --instance local --canary canary.json --report drills/2026-11")]
pub struct DrillCmd {
    #[command(subcommand)]
    pub sub: Option<DrillSub>,
    #[command(flatten)]
    pub run: DrillArgs,
}

#[derive(Subcommand, Debug)]
pub enum DrillSub {
    /// Create and back up a canary key on the original instance.
    #[command(
        after_help = "Example:\n  hsm-ceremony drill prepare --url https://127.0.0.1:8443 --ca a/ca.pem \\\n      \
        --token-file admin.token --out canary.json"
    )]
    Prepare(PrepareArgs),
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// The canary key's name on the instance.
    #[arg(long, default_value = "drill-canary")]
    pub name: String,
    /// Where to save the canary backup (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// The security-domain file of the original instance.
    #[arg(long, required = true)]
    pub sd_file: Option<PathBuf>,
    #[command(flatten)]
    pub keys: QuorumKeys,
    /// The target: `local` for a fresh emulated instance in this process, or an instance URL.
    #[arg(long, default_value = "local")]
    pub instance: String,
    /// With a URL: a file holding the bearer token (default: HSM_CEREMONY_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// With a URL: a CA certificate to trust (an emulator's ca.pem).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The canary backup made by `drill prepare` on the original instance.
    #[arg(long)]
    pub canary: Option<PathBuf>,
    /// Folder for the report (drill-report.json and drill-report.md); created if missing.
    #[arg(long, required = true)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub passphrases: PassphraseArgs,
    /// Print the report as JSON (what drill-report.json holds), for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: DrillCmd) -> Result<()> {
    match cmd.sub {
        Some(DrillSub::Prepare(a)) => prepare(&a),
        None => drill(&cmd.run).map(|_| ()),
    }
}

fn now_text() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format")
}

pub fn prepare(args: &PrepareArgs) -> Result<()> {
    files::ensure_absent(&args.out)?;
    files::ensure_writable_folder(&files::folder_of(&args.out), &args.out)?;
    let client = args.connect.client()?;
    let key = client.create_rsa_key(&args.name)?;
    let backup = client.backup_key(&args.name)?;
    let canary = Canary {
        version: 1,
        instance: args.connect.url.clone(),
        name: key.name.clone(),
        kid: key.kid.clone(),
        key_version: key.version.clone(),
        created: now_text(),
        backup,
    };
    files::write_new(
        &args.out,
        serde_json::to_string_pretty(&canary).expect("plain data").as_bytes(),
        Mode::Public,
    )?;
    say!(
        "canary key {} created on {} and backed up to {}",
        key.kid,
        args.connect.url,
        args.out.display()
    );
    Ok(())
}

/// A target instance for the drill; a local one lives as long as this does.
struct Target {
    client: InstanceClient,
    label: String,
}

/// The label a local drill's report names its instance by.
pub const LOCAL_LABEL: &str = "local emulated instance, in process, in memory only";

fn connect(args: &DrillArgs) -> Result<Target> {
    if args.instance != "local" {
        let token = read_token(args.token_file.as_deref())?;
        return Ok(Target {
            client: InstanceClient::new(&args.instance, token, args.ca.as_deref())?,
            label: args.instance.clone(),
        });
    }
    // What the drill uploads is the production security domain's contents:
    // the instance holding them has no state folder, token file or key store
    // on disk, and opens no socket (an in-memory connection carries requests).
    let emu = emulator::InProcess::in_memory()?;
    let token = emu.issue_token("drill", &[Role::Administrator, Role::CryptoUser])?;
    let client = InstanceClient::in_process(std::sync::Arc::new(emu), token);
    Ok(Target {
        client,
        label: LOCAL_LABEL.into(),
    })
}

pub fn drill(args: &DrillArgs) -> Result<Report> {
    let sd_path = args
        .sd_file
        .as_ref()
        .ok_or_else(|| Error::Usage("--sd-file is required".into()))?;
    let report_dir = args
        .report
        .as_ref()
        .ok_or_else(|| Error::Usage("--report is required".into()))?;
    let (json_path, md_path) = (report_dir.join(REPORT_JSON), report_dir.join(REPORT_MD));
    files::ensure_absent(&json_path)?;
    files::ensure_absent(&md_path)?;
    let sd_bytes = read_limited(sd_path, MAX_SD_FILE_BYTES, "security-domain file")?;
    let sd = inputs::security_domain(sd_path)?;
    let canary = args.canary.as_deref().map(load_canary).transpose()?;
    // Everything checkable without a secret is checked before anyone is asked:
    // the keys, where the report goes, and that the log takes a line.
    super::keys::check_quorum_keys(&sd, &args.keys)?;
    // The report folder is created if missing: its nearest existing ancestor must take it.
    let report_folder = report_dir
        .ancestors()
        .map(|a| if a.as_os_str().is_empty() { Path::new(".") } else { a })
        .find(|a| a.exists())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    files::ensure_writable_folder(&report_folder, &json_path)?;
    record::preflight(sd_path)?;
    std::fs::create_dir_all(report_dir).map_err(|source| Error::Write {
        path: report_dir.clone(),
        source,
    })?;

    let mut report = Report::new(
        now_text(),
        args.instance.clone(),
        sd_path.display().to_string(),
        hex::encode(Sha256::digest(&sd_bytes)),
        sd.required(),
        sd.share_count(),
    );
    let outcome = run_steps(args, &sd, canary.as_ref(), &mut report);
    report.outcome = if outcome.is_ok() {
        "passed".into()
    } else {
        "failed".into()
    };
    // The evidence is written whatever happened: a failed drill is the one to keep.
    files::write_new(&json_path, report.to_json().as_bytes(), Mode::Public)?;
    files::write_new(&md_path, report.to_markdown().as_bytes(), Mode::Public)?;
    record::step(
        sd_path,
        Entry {
            command: "drill".into(),
            inputs: record::refs(&[sd_path]),
            outputs: record::refs(&[&json_path, &md_path]),
            thumbprints: report.participants.iter().map(|p| p.x5t_256.clone()).collect(),
            outcome: match &outcome {
                Ok(()) => "ok".into(),
                Err(e) => format!("failed: {e}"),
            },
            details: json!({"instance": report.instance, "canary": report.canary}),
            ..Default::default()
        },
    )?;
    if args.json {
        super::output::stdout_bytes(format!("{}\n", report.to_json()).as_bytes());
        return outcome.map(|_| report);
    }
    for s in &report.steps {
        say!("  {:<34} {:>6} ms  {}", s.name, s.duration_ms, s.outcome);
    }
    crate::out!(
        "drill {}: report in {} and {}",
        report.outcome.to_uppercase(),
        json_path.display(),
        md_path.display()
    );
    outcome.map(|_| report)
}

impl drill::Target for Target {
    fn transfer_key(&self) -> Result<Certificate> {
        self.client.transfer_key()
    }

    fn upload(&self, blob: &RestoreBlob) -> Result<()> {
        self.client.upload(blob)
    }

    fn restore_key(&self, backup: &str) -> Result<RestoredKey> {
        let k = self.client.restore_key(backup)?;
        Ok(RestoredKey {
            kid: shown_kid(&k.kid),
            name: k.name,
            version: k.version,
        })
    }
}

fn run_steps(args: &DrillArgs, sd: &SecurityDomain, canary: Option<&Canary>, report: &mut Report) -> Result<()> {
    let connect = || {
        connect(args).map(|t| {
            let label = t.label.clone();
            (t, label)
        })
    };
    let quorum = || {
        let mut pass = Passphrases::new(&args.passphrases, None, args.keys.sd_wrapping_keys.len())?;
        Ok(move || gather_quorum(sd, &args.keys.sd_wrapping_keys, &args.keys.certs, &mut pass))
    };
    drill::run_steps_with_rng(&mut os_rng(), report, connect, quorum, canary)
}
