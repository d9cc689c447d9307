//! `hsm-ceremony drill …`: parse, prompt and print around
//! [`hsm_ceremony::ceremony::drill`]. `drill prepare` makes the canary set
//! on the original instance; `drill` recovers a new instance from a quorum,
//! restores the canary set's full backup there and proves the keys.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::instance::{read_token, Connect};
use super::keys::QuorumKeys;
use super::passphrase::{PassphraseArgs, Passphrases};
use super::record;
use super::restore::gather_quorum;
use crate::say;
use hsm_ceremony::ceremony::drill::{
    self, canary_names, Canary, InventoryRecord, PrepareOptions, Report, ReportPaths, CANARY_TAG,
};
use hsm_ceremony::ceremony::log::{Entry, FileRef, Outcome, Step};
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::custodian::pairing::CertPool;
use hsm_ceremony::error::{Error, Result};
use hsm_ceremony::files;
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::inputs;
use hsm_ceremony::instance::{base_url, is_emulator_url, DrillInstance, Progress};

/// `drill`'s manual text (the variant in `cli` carries it: a doc comment there would win).
pub const LONG_ABOUT: &str =
    "Rehearse the recovery Microsoft's disaster-recovery guide describes, and leave evidence.\n\n\
    The steps: start a fresh emulated instance (--instance local, in memory only) or reach the instance at a URL; \
    fetch its exchange key; the custodians named by --sd-wrapping-keys open their shares (each asked for a \
    passphrase, until the quorum is met); build and upload the restore blob and wait for Success. With --canary \
    (the file `drill prepare` wrote on the original): restore the canary set's full backup, compare the recovered \
    inventory (every key version, its tags and enabled state) with the canary file's, and prove HSM-side that the \
    keys are the originals: both DEKs unwrap to the recorded SHA-256, the original's signature verifies, a new \
    signature is made and verified.\n\n\
    The report (drill-report.json and drill-report.md in --report, written even when the drill fails) lists each \
    step with its outcome and duration, the inventory before and after, each proof, the custodians by thumbprint, \
    the security domain's SHA-256, and what was and was not proven: an emulated target proves the quorum, the \
    restore blob and the backup/restore procedure, not that Azure accepts them (a backup from a real Managed HSM \
    cannot restore on an emulator).\n\n\
    A canary set's backup in a blob container needs its SAS token (--sas-file); one in a file:/// folder takes \
    none. A single-key canary file from an earlier version is refused: run `drill prepare` again.";

/// The folder beside `--out` a local or emulated original backs up to by default.
pub const DEFAULT_BACKUP_FOLDER: &str = "drill-backups";

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
    /// Make the canary set on the original instance: an RSA, an EC and an AES key, a DEK wrapped
    /// under two of them, a signature, a full backup; and a canary file of public material only.
    #[command(
        long_about = "Make the canary set on the original instance (or its emulated stand-in).\n\n\
        Creates PREFIX-rsa (RSA-HSM 2048), PREFIX-ec (EC-HSM P-256) and PREFIX-aes (oct-HSM 256), each tagged \
        hsm-ceremony-canary; wraps a fresh random DEK under the RSA key (RSA-OAEP-256) and the AES key (A256KW); \
        signs a digest with the EC key (ES256); checks those on the original; records the inventory (every key \
        version: name, version, tags, enabled); and makes a full backup to --storage. The canary file (--out) \
        holds public material only: key ids and versions, the wrapped DEKs, the signature and digest, the DEK's \
        SHA-256 (never the DEK), the backup's location (never its SAS), the inventory, and the RSA key's sealed \
        backup for `instance restore-key`.\n\n\
        The inventory names every key of the original by default, which on a real HSM is production metadata. \
        --inventory digests keeps the canary keys by name and every key version (name, version, tags, enabled) \
        as an HMAC-SHA256 keyed by the canary DEK: the file then names no other key, and a guess at a name \
        cannot be tested without the HSM. The compare stays exact: the drill unwraps the DEK HSM-side and matches \
        every key version found; one missing is counted (its name is not in the file), one added or changed is \
        named.\n\n\
        Production variant: on a URL that is not an emulator (https://NAME.managedhsm.azure.net with an az-provided \
        token) it says what it will create and asks first (--yes to go on without asking); --storage and \
        --sas-file are required. Delete the three canary keys after the drill."
    )]
    #[command(after_help = "Examples:\n  \
        hsm-ceremony drill prepare --url https://127.0.0.1:8443 --ca a/ca.pem \\\n      \
        --token-file admin.token --out canary.json\n  \
        # Production variant: named, tagged canary keys on a real Managed HSM (delete them after the drill)\n  \
        hsm-ceremony drill prepare --url https://NAME.managedhsm.azure.net --token-file az.token \\\n      \
        --storage https://ACCOUNT.blob.core.windows.net/CONTAINER --sas-file backup.sas --out canary.json")]
    Prepare(PrepareArgs),
    /// Run the canary proofs alone against an instance already recovered by hand: compare its
    /// inventory with the canary file's and prove HSM-side that its canary keys are the originals.
    #[command(long_about = PROOFS_ABOUT)]
    #[command(after_help = "Examples:\n  \
        hsm-ceremony drill proofs --url https://127.0.0.1:8444 --ca b/ca.pem --token-file b.token \\\n      \
        --canary canary.json --report proofs\n  \
        # After a real recovery (asks first; --yes without a terminal)\n  \
        hsm-ceremony drill proofs --url https://NAME.managedhsm.azure.net --token-file az.token \\\n      \
        --canary canary.json --report recovery-proofs")]
    Proofs(ProofsArgs),
}

/// `drill proofs`' manual text.
pub const PROOFS_ABOUT: &str =
    "Run the canary proofs alone against an instance that was already recovered by hand (a new HSM, \
    init-recovery, restore-blob, upload, a full restore from the latest backup), as the emergency-recovery runbook \
    does.\n\n\
    No quorum is gathered, nothing is uploaded and nothing is restored: the command lists the instance's keys and \
    compares that inventory (every key version, its tags and enabled state) with the canary file's, then proves \
    HSM-side that the canary keys there are the originals: both DEKs unwrap to the recorded SHA-256, the original's \
    signature verifies, a new signature is made and verified. The latest backup must hold the canary set, so make \
    it (`drill prepare`) before the backups that may be restored. The canary keys must be exactly as the canary \
    file records them; the other keys may have changed since (a backup newer than the canary file): each key \
    version missing, added or changed is listed under \"Inventory differences\" in the report for the key owners \
    to review, and does not fail the proofs.\n\n\
    The report (drill-report.json and drill-report.md in --report, written even when a proof fails) is the drill's, \
    with proofs_only set: its proven and not_proven lists say that the quorum, the upload and the restore were not \
    part of this run. A line `drill proofs` goes to the ceremony log beside the canary file (it names no custodian, \
    so it never counts as a custodian's drill).\n\n\
    On a URL that is not an emulator it says what it will do with the canary keys and asks first (--yes to go on \
    without asking), before the token is read.";

#[derive(Args, Debug)]
pub struct ProofsArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// The canary file made by `drill prepare` on the original instance.
    #[arg(long)]
    pub canary: PathBuf,
    /// Folder for the report (drill-report.json and drill-report.md); created if missing.
    #[arg(long)]
    pub report: PathBuf,
    /// Use the canary keys on an instance that is not an emulator without asking.
    #[arg(long)]
    pub yes: bool,
    /// Print the report as JSON (what drill-report.json holds), for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// The canary keys' name prefix: PREFIX-rsa, PREFIX-ec and PREFIX-aes.
    #[arg(long, default_value = "drill-canary", value_name = "PREFIX")]
    pub name: String,
    /// Where to save the canary file (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// The full backup's storage: a blob container URL (with --sas-file), or file:///FOLDER for an
    /// emulator. Default for an emulator: the folder drill-backups beside --out (created).
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// A file holding the storage container's SAS token (read, write, list, create).
    #[arg(long, value_name = "FILE")]
    pub sas_file: Option<PathBuf>,
    /// How the canary file records the inventory: `all` names every key version (name, version,
    /// tags, enabled); `digests` names the canary keys only and records every key version as an
    /// HMAC-SHA256 under the canary DEK, so the file holds no production key's name or tags.
    #[arg(long, value_enum, default_value_t = InventoryArg::All)]
    pub inventory: InventoryArg,
    /// Create the canary keys on an instance that is not an emulator without asking.
    #[arg(long)]
    pub yes: bool,
}

/// `--inventory`'s values: the library's [`InventoryRecord`], which knows no clap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InventoryArg {
    All,
    Digests,
}

impl From<InventoryArg> for InventoryRecord {
    fn from(arg: InventoryArg) -> InventoryRecord {
        match arg {
            InventoryArg::All => InventoryRecord::All,
            InventoryArg::Digests => InventoryRecord::Digests,
        }
    }
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
    /// The canary file made by `drill prepare` on the original instance.
    #[arg(long)]
    pub canary: Option<PathBuf>,
    /// A file holding the SAS token of the canary set's backup container (not for file:///).
    #[arg(long, value_name = "FILE")]
    pub sas_file: Option<PathBuf>,
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
        Some(DrillSub::Prepare(a)) => prepare(&a).map(|_| ()),
        Some(DrillSub::Proofs(a)) => proofs(&a).map(|_| ()),
        None => drill(&cmd.run).map(|_| ()),
    }
}

fn now_text() -> String {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format")
}

/// Slow backups and restores say they are still running, on standard error
/// (standard output may be a --json document).
fn progress() -> Progress {
    Arc::new(|what: &str, waited: std::time::Duration| {
        crate::note!("  the {what} is still running ({} s)", waited.as_secs());
    })
}

/// The SAS token in `file` (first line), a secret file like a token file.
fn read_sas(file: &Path) -> Result<Zeroizing<String>> {
    let bytes = inputs::secret_file(file, 64 * 1024, "SAS token file")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::Usage(format!("{} is not text", file.display())))?;
    let sas = text.lines().next().unwrap_or("").trim().trim_start_matches('?');
    if sas.is_empty() {
        return Err(Error::Usage(format!("{} holds no SAS token", file.display())));
    }
    Ok(Zeroizing::new(sas.to_string()))
}

/// The SAS for `storage`: none for a `file:///` folder, required otherwise.
fn sas_for(storage: &str, file: Option<&Path>, flag_owner: &str) -> Result<Option<Zeroizing<String>>> {
    match (storage.starts_with("file://"), file) {
        (true, None) => Ok(None),
        (true, Some(_)) => Err(Error::Usage(format!(
            "--sas-file: {flag_owner} {storage} is a local folder, which takes no SAS token; leave --sas-file out"
        ))),
        (false, Some(f)) => read_sas(f).map(Some),
        (false, None) => Err(Error::Usage(format!(
            "{flag_owner} {storage} is a storage container: give its SAS token with --sas-file FILE"
        ))),
    }
}

/// The default storage for an emulated original: `drill-backups` beside `out`.
fn default_backup_folder(out: &Path) -> PathBuf {
    files::folder_of(out).join(DEFAULT_BACKUP_FOLDER)
}

/// `folder` as an absolute `file:///` URL, the folder made (0700) if
/// missing; returns whether it was made, so a failed prepare removes it.
fn make_backup_folder(folder: &Path) -> Result<(String, bool)> {
    let made = !folder.is_dir();
    if made {
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(folder).map_err(|source| Error::Write {
            path: folder.to_path_buf(),
            source,
        })?;
    }
    let abs = std::fs::canonicalize(folder).map_err(|source| Error::Read {
        path: folder.to_path_buf(),
        source,
    })?;
    match abs.to_str() {
        Some(text) => Ok((format!("file://{text}"), made)),
        None => {
            if made {
                let _ = std::fs::remove_dir(folder);
            }
            Err(Error::Usage(format!(
                "{}: give --storage file:///FOLDER with a UTF-8 path",
                abs.display()
            )))
        }
    }
}

/// Keys are about to be made on something that is not an emulator: say so,
/// and go on only with --yes or a "y" typed at a terminal. Asked before any
/// token is read or request made.
fn confirm_production(args: &PrepareArgs, storage: &str) -> Result<()> {
    let url = &args.connect.url;
    let names = canary_names(&args.name)?;
    crate::note!(
        "drill prepare creates three keys on {url}: {}, tagged {CANARY_TAG}, and starts a full backup to {storage}.\n\
         This is the production variant: delete the three keys after the drill (see the recovery-drill runbook).",
        names.join(", ")
    );
    confirm(args.yes, "Create them?", || {
        format!("{url} is not an emulator: confirm creating the canary keys there with --yes")
    })
}

/// Goes on with `yes`, or a "y" typed at a terminal; otherwise `refused`.
fn confirm(yes: bool, prompt: &str, refused: impl Fn() -> String) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(refused()));
    }
    match dialoguer::Confirm::new().with_prompt(prompt).default(false).interact() {
        Ok(true) => Ok(()),
        _ => Err(Error::Usage(refused())),
    }
}

/// `drill proofs`: the canary proofs against an instance recovered by hand.
pub fn proofs(args: &ProofsArgs) -> Result<Report> {
    let url = &args.connect.url;
    // Everything checkable offline is checked before the instance is reached or a token read.
    let paths = ReportPaths::check(&args.report)?;
    let (canary, canary_sha256) = inputs::canary_set_hashed(&args.canary)?;
    if !url.starts_with("local:") {
        base_url(url)?;
    }
    record::preflight(&args.canary)?;
    if !is_emulator_url(url) {
        let k = &canary.keys;
        crate::note!(
            "drill proofs uses the canary keys on {url}: it lists the instance's keys, unwraps the canary DEKs with {} \
             and {}, and verifies and makes a signature with {}. It creates, changes and deletes nothing.",
            k.rsa.name,
            k.aes.name,
            k.ec.name
        );
        confirm(args.yes, "Run the proofs there?", || {
            format!("{url} is not an emulator: confirm running the canary proofs there with --yes")
        })?;
    }
    paths.create()?;
    let mut report = Report::proofs_only(now_text(), url.clone());
    report.with_canary(&args.canary, &canary);
    let connect = || {
        let client = args.connect.client()?.with_progress(progress());
        Ok((DrillInstance::new(client, url.clone()), url.clone()))
    };
    let outcome = drill::run_proofs_with_rng(&mut os_rng(), &mut report, connect, &canary);
    report.conclude(outcome.is_ok());
    paths.write(&report)?;
    record::step(
        &args.canary,
        Entry {
            command: Step::DrillProofs,
            inputs: vec![FileRef::parsed(&args.canary, canary_sha256)],
            outputs: record::refs(&[&paths.json, &paths.md]),
            outcome: Outcome::of(&outcome),
            details: json!({"instance": report.instance, "canary": report.canary}),
            ..Default::default()
        },
    )?;
    print_report(&report, &paths, args.json, "drill proofs");
    outcome.map(|_| report)
}

/// The report on standard output: as JSON, or its steps and proofs and where it is.
fn print_report(report: &Report, paths: &ReportPaths, json: bool, what: &str) {
    if json {
        super::output::stdout_bytes(format!("{}\n", report.to_json()).as_bytes());
        return;
    }
    for s in &report.steps {
        say!("  {:<44} {:>6} ms  {}", s.name, s.duration_ms, s.outcome);
    }
    for p in &report.proofs {
        say!("  proof: {}: {}", p.name, p.outcome);
    }
    crate::out!(
        "{what} {}: report in {} and {}",
        report.outcome.to_uppercase(),
        paths.json.display(),
        paths.md.display()
    );
}

pub fn prepare(args: &PrepareArgs) -> Result<Canary> {
    files::ensure_absent(&args.out)?;
    files::ensure_writable_folder(&files::folder_of(&args.out), &args.out)?;
    canary_names(&args.name)?;
    // A URL with a user name, query or path is refused as such, before anything is said about it.
    if !args.connect.url.starts_with("local:") {
        base_url(&args.connect.url)?;
    }
    let emulated = is_emulator_url(&args.connect.url);
    let given = args.storage.as_ref().map(|s| s.trim_end_matches('/').to_string());
    let shown = match &given {
        Some(s) => s.clone(),
        None if emulated => format!("file://{}", default_backup_folder(&args.out).display()),
        None => {
            return Err(Error::Usage(format!(
                "--storage is required for {}: give the backup container's URL and --sas-file",
                args.connect.url
            )))
        }
    };
    let sas = sas_for(&shown, args.sas_file.as_deref(), "--storage")?;
    if !emulated {
        confirm_production(args, &shown)?;
    }
    let client = args.connect.client()?.with_progress(progress());
    // The default folder is made only once the instance is reached, and
    // removed again (if still empty) when the prepare fails.
    let (storage, made) = match given {
        Some(s) => (s, None),
        None => {
            let folder = default_backup_folder(&args.out);
            let (url, made) = make_backup_folder(&folder)?;
            (url, made.then_some(folder))
        }
    };
    let original = DrillInstance::new(client, args.connect.url.clone());
    let result = drill::prepare_with_rng(
        &mut os_rng(),
        &original,
        &PrepareOptions {
            instance: &args.connect.url,
            prefix: &args.name,
            storage: &storage,
            sas: sas.as_deref().map(|s| s.as_str()),
            created: now_text(),
            inventory: args.inventory.into(),
        },
        &mut |what| say!("  {what}"),
    )
    .and_then(|canary| drill::write_canary(&args.out, &canary).map(|()| canary));
    let canary = match result {
        Ok(c) => c,
        Err(e) => {
            if let Some(folder) = made {
                let _ = std::fs::remove_dir(folder);
            }
            return Err(e);
        }
    };
    say!(
        "canary set {}, {}, {} created on {}, backed up to {}; canary file {}",
        canary.keys.rsa.name,
        canary.keys.ec.name,
        canary.keys.aes.name,
        args.connect.url,
        canary.backup.folder_url,
        args.out.display()
    );
    Ok(canary)
}

fn connect(args: &DrillArgs) -> Result<DrillInstance> {
    let target = if args.instance == "local" {
        DrillInstance::local()?
    } else {
        DrillInstance::remote(
            &args.instance,
            read_token(args.token_file.as_deref())?,
            args.ca.as_deref(),
        )?
    };
    Ok(DrillInstance::new(
        target.client.with_progress(progress()),
        target.label,
    ))
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
    // Everything checkable without a secret is checked before anyone is asked:
    // the files, the keys, where the report goes, and that the log takes a line.
    let paths = ReportPaths::check(report_dir)?;
    let (sd, sd_sha256) = inputs::security_domain_hashed(sd_path)?;
    let canary = args.canary.as_deref().map(inputs::canary_set).transpose()?;
    let sas = match &canary {
        Some(c) => sas_for(
            &c.backup.storage,
            args.sas_file.as_deref(),
            "the canary set's backup storage",
        )?,
        None if args.sas_file.is_some() => {
            return Err(Error::Usage(
                "--sas-file is for the canary set's backup: give --canary too".into(),
            ))
        }
        None => None,
    };
    let pool = super::keys::check_quorum_keys(&sd, &args.keys)?;
    record::preflight(sd_path)?;
    paths.create()?;

    let mut report = Report::new(
        now_text(),
        args.instance.clone(),
        sd_path.display().to_string(),
        sd_sha256,
        sd.required(),
        sd.share_count(),
    );
    if let (Some(c), Some(p)) = (&canary, &args.canary) {
        report.with_canary(p, c);
    }
    let outcome = run_steps(
        args,
        &sd,
        &pool,
        canary.as_ref(),
        sas.as_deref().map(|s| s.as_str()),
        &mut report,
    );
    report.conclude(outcome.is_ok());
    // The evidence is written whatever happened: a failed drill is the one to keep.
    paths.write(&report)?;
    record::step(
        sd_path,
        Entry {
            command: Step::Drill,
            inputs: vec![FileRef::parsed(sd_path, report.sd_sha256.clone())],
            outputs: record::refs(&[&paths.json, &paths.md]),
            thumbprints: report.participants.iter().map(|p| p.x5t_256.clone()).collect(),
            outcome: Outcome::of(&outcome),
            details: json!({"instance": report.instance, "canary": report.canary}),
            ..Default::default()
        },
    )?;
    print_report(&report, &paths, args.json, "drill");
    outcome.map(|_| report)
}

fn run_steps(
    args: &DrillArgs,
    sd: &SecurityDomain,
    pool: &CertPool,
    canary: Option<&Canary>,
    sas: Option<&str>,
    report: &mut Report,
) -> Result<()> {
    let connect = || {
        connect(args).map(|t| {
            let label = t.label.clone();
            (t, label)
        })
    };
    let quorum = || {
        let mut pass = Passphrases::new(&args.passphrases, None, args.keys.sd_wrapping_keys.len())?;
        Ok(move || gather_quorum(sd, &args.keys.sd_wrapping_keys, pool, &mut pass))
    };
    drill::run_steps_with_rng(&mut os_rng(), report, connect, quorum, canary, sas)
}
