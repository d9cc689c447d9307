//! `hsm-ceremony rotate …`: re-split the same master key to a new custodian
//! set, in two phases: a pending file that the new custodians prove they can
//! open, then `finalize` (or `cancel`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::keys::{self, QuorumKeys};
use super::manifest::{self, ManifestCheck};
use super::output::print_json;
use super::passphrase::{PassphraseArgs, Passphrases};
use super::record;
use super::restore::gather_quorum;
use crate::say;
use hsm_ceremony::ceremony::log::{self, Entry, FileRef, Step};
use hsm_ceremony::ceremony::manifest::{CurrentSet, Purpose};
use hsm_ceremony::ceremony::rotation;
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::error::{Error, ManifestRefusal, Result};
use hsm_ceremony::format::limits::Profile;
use hsm_ceremony::{inputs, recovery};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(
    after_help = "Examples:\n  hsm-ceremony rotate --sd-file sd.json --sd-wrapping-keys old_0.key old_1.key \\\n      \
    --new-certs new_0.cer new_1.cer new_2.cer new_3.cer new_4.cer --quorum 3 --out sd-epoch2.json\n  \
    hsm-ceremony custodian verify --sd-file sd-epoch2.json.pending --key new_0.key   # each new custodian\n  \
    hsm-ceremony rotate finalize --record sd-epoch2.json.rotation.json"
)]
pub struct RotateCmd {
    #[command(subcommand)]
    pub sub: Option<RotateSub>,
    #[command(flatten)]
    pub start: StartArgs,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// The current security-domain file.
    #[arg(long, required = true)]
    pub sd_file: Option<PathBuf>,
    #[command(flatten)]
    pub keys: QuorumKeys,
    /// The new custodians' certificates, in share order.
    #[arg(long, required = true, num_args = 1..)]
    pub new_certs: Vec<PathBuf>,
    /// The new quorum M.
    #[arg(long, required = true)]
    pub quorum: Option<usize>,
    /// The new file; written as OUT.pending with a record OUT.rotation.json.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// The file only serves a local instance (allows 2 custodians).
    #[arg(long)]
    pub local: bool,
    /// Finalize only once every new custodian (not just M) has proved possession.
    #[arg(long)]
    pub require_all: bool,
    /// The new custodian set's epoch (default: the manifest's, else one more than the log's highest).
    #[arg(long)]
    pub epoch: Option<u64>,
    #[command(flatten)]
    pub manifest: ManifestCheck,
    #[command(flatten)]
    pub passphrases: PassphraseArgs,
}

#[derive(Subcommand, Debug)]
pub enum RotateSub {
    /// Make the new file current and retire the old one, once enough new custodians proved possession.
    #[command(after_help = "Example:\n  hsm-ceremony rotate finalize --record sd-epoch2.json.rotation.json")]
    Finalize(RecordArg),
    /// Discard a pending rotation; the current file is untouched.
    #[command(after_help = "Example:\n  hsm-ceremony rotate cancel --record sd-epoch2.json.rotation.json")]
    Cancel(RecordArg),
    /// Show a rotation's state and who has proved possession.
    #[command(after_help = "Example:\n  hsm-ceremony rotate status --record sd-epoch2.json.rotation.json")]
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub record: RecordArg,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RecordArg {
    /// The rotation record (OUT.rotation.json).
    #[arg(long)]
    pub record: PathBuf,
}

pub fn run(cmd: RotateCmd) -> Result<()> {
    match cmd.sub {
        None => start(&cmd.start),
        Some(RotateSub::Finalize(a)) => finalize(&a.record),
        Some(RotateSub::Cancel(a)) => cancel(&a.record),
        Some(RotateSub::Status(a)) => status(&a.record.record, a.json),
    }
}

fn required<'a, T>(v: &'a Option<T>, flag: &str) -> Result<&'a T> {
    v.as_ref().ok_or_else(|| Error::Usage(format!("{flag} is required")))
}

fn start(args: &StartArgs) -> Result<()> {
    let sd_path = required(&args.sd_file, "--sd-file")?;
    let out = required(&args.out, "--out")?;
    let quorum = *required(&args.quorum, "--quorum")?;
    let (pending, record_path) = rotation::start_paths(out)?;
    let (old, old_sha256) = inputs::security_domain_hashed(sd_path)?;
    let new_certs: Vec<(String, Certificate)> = args
        .new_certs
        .iter()
        .map(|p| Ok((inputs::label(p), inputs::certificate(p)?)))
        .collect::<Result<_>>()?;
    let plain: Vec<Certificate> = new_certs.iter().map(|(_, c)| c.clone()).collect();
    let log_path = record::log_path(out);
    let profile = if args.local { Profile::Local } else { Profile::Azure };
    let thumbprints: Vec<String> = plain.iter().map(Certificate::x5t_256).collect();
    // The old file is recorded by the bytes it was parsed from.
    let mut inputs = vec![FileRef::parsed(sd_path, old_sha256.clone())];
    inputs.extend(record::refs(
        &args.manifest.manifest.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
    ));
    let entry = Entry {
        command: Step::Rotate,
        inputs,
        thumbprints: thumbprints.clone(),
        details: json!({
            "phase": "pending", "quorum": quorum, "custodians": new_certs.len(),
            "required_proofs": if args.require_all { new_certs.len() } else { quorum },
        }),
        ..Default::default()
    };
    // A refused manifest is recorded too: it is what a bait-and-switch looks like.
    record::logged(out, entry, |entry| {
        // One person's two certificates are named by file before the manifest is read.
        recovery::check_distinct_custodians(&new_certs)?;
        // The current set is the old file's: whoever signed as current custodians must be its.
        let signed = args.manifest.check(
            Purpose::Rotate,
            &plain,
            quorum,
            Some(&CurrentSet::of(&old)),
            log_path.as_deref(),
            &mut entry.inputs,
        )?;
        let epoch = match (signed.as_ref().map(|s| s.epoch), args.epoch) {
            (Some(signed), Some(given)) if signed != given => {
                return Err(Error::manifest_refused(ManifestRefusal::EpochDiffers { signed, given }))
            }
            (Some(signed), _) => signed,
            (None, Some(given)) => {
                manifest::check_epoch_increases(given, log_path.as_deref())?;
                given
            }
            (None, None) => log::next_epoch(log_path.as_deref())?,
        };
        entry.details["epoch"] = json!(epoch);
        if let Some(s) = &signed {
            entry.details["manifest_nonce"] = json!(s.nonce);
        }
        let required_proofs = if args.require_all { new_certs.len() } else { quorum };
        let plan = rotation::Start {
            old_path: sd_path,
            old: &old,
            old_sha256: &old_sha256,
            new_certs: &new_certs,
            quorum,
            profile,
            required_proofs,
            epoch,
            out,
            log: log_path.as_deref(),
        };
        // The new set is refused before any custodian types a passphrase.
        let open_quorum = || {
            let pool = keys::check_quorum_keys(&old, &args.keys)?;
            let mut pass = Passphrases::new(&args.passphrases, None, args.keys.sd_wrapping_keys.len())?;
            gather_quorum(&old, &args.keys.sd_wrapping_keys, &pool, &mut pass)
        };
        // The pending file is the step's output as soon as it exists, even if its record then fails.
        rotation::start_with_rng(&mut os_rng(), &plan, open_quorum, |pending| {
            entry.outputs = vec![pending.clone()]
        })
        .map(|_| ())
    })?;
    say!("wrote {} (pending) and {}", pending.display(), record_path.display());
    say!(
        "The master key was split to {} new custodians, {} needed; it was never written and is wiped.",
        new_certs.len(),
        quorum
    );
    say!(
        "Next: each new custodian runs `hsm-ceremony custodian verify --sd-file {} --key THEIR.key`,",
        pending.display()
    );
    say!("then: hsm-ceremony rotate finalize --record {}", record_path.display());
    Ok(())
}

fn finalize(record_path: &Path) -> Result<()> {
    let mut rec = inputs::rotation_record(record_path)?;
    let entry = Entry {
        command: Step::RotateFinalize,
        inputs: vec![rec.old.clone()],
        thumbprints: rec.custodians.clone(),
        details: json!({"epoch": rec.epoch, "retired": rotation::retired_path(Path::new(&rec.old.path))}),
        ..Default::default()
    };
    // The log is found from the record's own path, not from what the record says.
    let anchor = rotation::target_of(record_path).unwrap_or_else(|| PathBuf::from(&rec.target));
    let log_path = record::log_path(&anchor);
    record::logged(&anchor, entry, |entry| {
        rec.finalize(record_path, log_path.as_deref())?;
        entry.outputs = record::refs(&[Path::new(&rec.target)]);
        Ok(())
    })?;
    crate::out!(
        "rotation finalized: {} is current (epoch {}); the old file is retired as {}",
        rec.target,
        rec.epoch,
        rotation::retired_path(Path::new(&rec.old.path)).display()
    );
    Ok(())
}

fn cancel(record_path: &Path) -> Result<()> {
    let mut rec = inputs::rotation_record(record_path)?;
    let entry = Entry {
        command: Step::RotateCancel,
        inputs: vec![rec.pending.clone()],
        ..Default::default()
    };
    // The log is found from the record's own path, not from what the record says.
    let anchor = rotation::target_of(record_path).unwrap_or_else(|| PathBuf::from(&rec.target));
    let log_path = record::log_path(&anchor);
    record::logged(&anchor, entry, |_| rec.cancel(record_path, log_path.as_deref()))?;
    crate::out!(
        "rotation cancelled: {} removed; {} is unchanged",
        rec.pending.path,
        rec.old.path
    );
    Ok(())
}

fn status(record_path: &Path, as_json: bool) -> Result<()> {
    let rec = inputs::rotation_record(record_path)?;
    let proved = rec.proofs()?;
    let state = rec.state.to_string();
    if as_json {
        print_json(&json!({
            "state": state,
            "epoch": rec.epoch,
            "quorum": rec.quorum,
            "pending": rec.pending.path,
            "custodians": rec.custodians.iter().map(|t| json!({"x5t_256": t, "proved": proved.contains(t)})).collect::<Vec<_>>(),
            "proofs": proved.len(),
            "required_proofs": rec.required_proofs,
        }));
        return Ok(());
    }
    crate::out!(
        "rotation {}, epoch {}: {} new custodians, quorum {}",
        state,
        rec.epoch,
        rec.custodians.len(),
        rec.quorum
    );
    for t in &rec.custodians {
        crate::out!("  {}  {t}", if proved.contains(t) { "proved " } else { "pending" });
    }
    if proved.len() >= rec.required_proofs {
        crate::out!(
            "{} proved, {} required: enough to finalize",
            proved.len(),
            rec.required_proofs
        );
    } else {
        crate::out!("{} of the {} proofs required", proved.len(), rec.required_proofs);
    }
    Ok(())
}
