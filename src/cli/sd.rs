//! `hsm-ceremony sd …`: check certificates before the download, inspect a
//! security domain, and split a new one for a local instance.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use time::OffsetDateTime;

use super::manifest::ManifestCheck;
use super::output::{date, print_json, warn};
use super::record;
use crate::say;
use hsm_ceremony::ceremony::health::{self, Verdict};
use hsm_ceremony::ceremony::log::{self, Entry, FileRef, Step};
use hsm_ceremony::ceremony::witness;
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::crypto::secret::{MasterKey, SecretBytes};
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::error::{Error, ParameterError, Result};
use hsm_ceremony::files::{self, Mode};
use hsm_ceremony::format::limits::{Profile, MAX_SD_FILE_BYTES};
use hsm_ceremony::inputs;
use hsm_ceremony::recovery::{self, PlainItem};

#[derive(Subcommand, Debug)]
pub enum SdCommand {
    /// Check custodian certificates as Azure will at download, and print the `az` line to run.
    #[command(after_help = "Example:\n  hsm-ceremony sd check-certs --quorum 2 cert_0.cer cert_1.cer cert_2.cer")]
    CheckCerts(CheckCertsArgs),
    /// Show what a security-domain file holds: quorum, shares, items.
    #[command(
        after_help = "Examples:\n  hsm-ceremony sd inspect sd.json --certs cert_0.cer cert_1.cer cert_2.cer\n  \
        hsm-ceremony sd inspect sd.json --certs cert_0.cer cert_1.cer cert_2.cer --manifest manifest.json\n\n\
        With --manifest, one line per compared value (N, M, each share's certificate thumbprint) says match or\n\
        DIFFERS; any difference, a signature that does not verify or a certificate missing from --certs fails."
    )]
    Inspect(InspectArgs),
    /// Make a new security domain (Azure format) for a local instance.
    #[command(
        after_help = "Example:\n  hsm-ceremony sd split --certs a.cer b.cer c.cer --quorum 2 --random-contents --out sd.json"
    )]
    Split(SplitArgs),
    /// Judge whether the quorum can still recover: certificates, proofs, drills.
    #[command(
        after_help = "Examples:\n  hsm-ceremony sd health sd.json --certs cert_0.cer cert_1.cer cert_2.cer\n  \
        hsm-ceremony sd health sd.json --certs cert_*.cer --log ceremony-log.jsonl --at 2027-03-01\n\n\
        Reads the ceremony log given with --log, else ceremony-log.jsonl beside the security domain if there is one\n\
        (a broken log is an error). Exit code: 0 healthy, 8 at risk, 9 cannot recover."
    )]
    Health(HealthArgs),
}

#[derive(Args, Debug)]
pub struct CheckCertsArgs {
    /// The quorum M (how many custodians are needed to recover).
    #[arg(long)]
    pub quorum: usize,
    /// The custodians' certificates, in the order they will be given to `az`.
    #[arg(required = true)]
    pub certs: Vec<PathBuf>,
    /// Accept 2 custodians (a local instance; Azure wants 3 to 10).
    #[arg(long)]
    pub local: bool,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The security-domain file.
    pub sd_file: PathBuf,
    /// Certificates to match against the shares (with --manifest: every certificate it names).
    #[arg(long, num_args = 1..)]
    pub certs: Vec<PathBuf>,
    /// The signed manifest of the download: verify its signatures with --certs, compare its N, M
    /// and certificate thumbprints (in order) with the file's, and fail on any difference.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// With --manifest: how many custodians must have signed it (default: all N; never fewer than M).
    #[arg(long, requires = "manifest", value_name = "COUNT")]
    pub manifest_signatures: Option<usize>,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("contents").required(true).args(["items", "random_contents"])))]
pub struct SplitArgs {
    /// The custodians' certificates; shares follow this order.
    #[arg(long, required = true, num_args = 1..)]
    pub certs: Vec<PathBuf>,
    /// The quorum M.
    #[arg(long)]
    pub quorum: usize,
    /// A data item: TAG=FILE (repeatable; order is kept).
    #[arg(long = "item", value_name = "TAG=FILE")]
    pub items: Vec<String>,
    /// Three random items with the real tags and sizes.
    #[arg(long)]
    pub random_contents: bool,
    /// Where to write the security domain (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Accept 2 custodians (the file then only serves a local instance).
    #[arg(long)]
    pub local: bool,
    #[command(flatten)]
    pub manifest: ManifestCheck,
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The security-domain file.
    pub sd_file: PathBuf,
    /// The custodians' certificates; a share without one counts as lost.
    #[arg(long, required = true, num_args = 1..)]
    pub certs: Vec<PathBuf>,
    /// Assess as of this date (YYYY-MM-DD, UTC) instead of now, e.g. the day of the next drill.
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    pub at: Option<OffsetDateTime>,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

fn parse_day(s: &str) -> std::result::Result<OffsetDateTime, String> {
    let bad = || format!("'{s}' is not a date: write it as YYYY-MM-DD, e.g. 2027-03-01");
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else { return Err(bad()) };
    let (y, m, d): (i32, u8, u8) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let month = time::Month::try_from(m).map_err(|_| bad())?;
    let day = time::Date::from_calendar_date(y, month, d).map_err(|_| bad())?;
    Ok(day.midnight().assume_utc())
}

pub fn run(cmd: SdCommand) -> Result<super::Done> {
    let done = |r: Result<()>| r.map(|()| super::Done::Ok);
    match cmd {
        SdCommand::CheckCerts(args) => done(check_certs(&args)),
        SdCommand::Inspect(args) => done(inspect(&args)),
        SdCommand::Split(args) => done(split(&args).map(|_| ())),
        SdCommand::Health(args) => health(&args),
    }
}

/// Certificates with the label each is named by.
type Labelled = Vec<(String, Certificate)>;

/// Certificates by label, each with its file's fingerprint as parsed, for a
/// step that records them.
fn load_certs(paths: &[PathBuf]) -> Result<(Labelled, Vec<FileRef>)> {
    let mut certs = Vec::with_capacity(paths.len());
    let mut refs = Vec::with_capacity(paths.len());
    for p in paths {
        let (cert, sha256) = inputs::certificate_hashed(p)?;
        certs.push((inputs::label(p), cert));
        refs.push(FileRef::parsed(p, sha256));
    }
    Ok((certs, refs))
}

fn check_certs(args: &CheckCertsArgs) -> Result<()> {
    let anchor = args.certs.first().cloned().unwrap_or_default();
    let entry = Entry {
        command: Step::SdCheckCerts,
        inputs: record::refs(&args.certs.iter().map(|p| p.as_path()).collect::<Vec<_>>()),
        details: json!({"quorum": args.quorum, "custodians": args.certs.len(), "local": args.local}),
        ..Default::default()
    };
    record::logged(&anchor, entry, |entry| check_certs_unlogged(args, entry))
}

fn check_certs_unlogged(args: &CheckCertsArgs, entry: &mut Entry) -> Result<()> {
    let profile = if args.local { Profile::Local } else { Profile::Azure };
    let (certs, parsed) = load_certs(&args.certs)?;
    for f in parsed {
        record::parsed(&mut entry.inputs, Path::new(&f.path), f.sha256);
    }
    entry.thumbprints = certs.iter().map(|(_, c)| c.x5t_256()).collect();
    let check = recovery::check_certs(&certs, args.quorum, profile, OffsetDateTime::now_utc());
    let (problems, warnings) = (&check.problems, &check.warnings);
    let az = format!(
        "az keyvault security-domain download --hsm-name <HSM_NAME> --sd-wrapping-keys {} --sd-quorum {} --security-domain-file <SD_FILE>",
        args.certs.iter().map(|p| shell_word(&p.display().to_string())).collect::<Vec<_>>().join(" "),
        args.quorum
    );
    if args.json {
        print_json(&json!({
            "ok": problems.is_empty(), "problems": problems.iter().map(|p| &p.text).collect::<Vec<_>>(), "warnings": warnings,
            "custodians": certs.iter().map(|(l, c)| json!({"file": l, "x5t_256": c.x5t_256(), "bits": c.bits})).collect::<Vec<_>>(),
            "az": problems.is_empty().then_some(&az),
        }));
    } else {
        for w in warnings {
            warn(w);
        }
        if problems.is_empty() {
            say!("{} certificates, quorum {}: all checks pass.", certs.len(), args.quorum);
            for (label, cert) in &certs {
                say!("  {label}  x5t#S256 {}", cert.x5t_256());
            }
            say!("On the connected workstation, run:");
            crate::out!("{az}");
        }
    }
    check.into_result().map(drop)
}

fn shell_word(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/+=:@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn inspect(args: &InspectArgs) -> Result<()> {
    let (sd, fingerprint) = inputs::security_domain_hashed(&args.sd_file)?;
    let (certs, _) = load_certs(&args.certs)?;
    let compared = match &args.manifest {
        None => None,
        Some(_) if certs.is_empty() => {
            return Err(Error::Usage(
                "--manifest: give the custodians' certificates with --certs, so its signatures can be verified".into(),
            ))
        }
        Some(path) => {
            let m = inputs::manifest(path)?;
            let given: Vec<Certificate> = certs.iter().map(|(_, c)| c.clone()).collect();
            let c = witness::compare(&m, &given, args.manifest_signatures, &sd)?;
            Some((path, m, c))
        }
    };
    let owner = |x5t: &str| certs.iter().find(|(_, c)| c.x5t_256() == x5t).map(|(l, _)| l.clone());
    let items: Vec<(String, usize)> = (0..sd.enc_data.data.len())
        .map(|i| {
            Ok((
                sd.enc_data.data[i].tag.clone(),
                sd.item_jwe(i)
                    .map_err(|source| Error::SecurityDomain {
                        path: args.sd_file.clone(),
                        source,
                    })?
                    .ciphertext
                    .len(),
            ))
        })
        .collect::<Result<_>>()?;
    let unmatched: Vec<&String> = certs
        .iter()
        .filter(|(_, c)| sd.share_index(&c.x5t_256()).is_none())
        .map(|(l, _)| l)
        .collect();
    if args.json {
        print_json(&json!({
            "file": args.sd_file, "sha256": fingerprint, "version": sd.version,
            "required": sd.required(), "shares": sd.share_count(), "kdf": sd.enc_data.kdf,
            "enc_shares": sd.shared_keys.enc_shares.iter().enumerate().map(|(i, s)| json!({
                "position": i + 1, "x5t_256": s.x5t_256, "certificate": owner(&s.x5t_256),
            })).collect::<Vec<_>>(),
            "items": items.iter().map(|(t, n)| json!({"tag": t, "ciphertext_bytes": n})).collect::<Vec<_>>(),
            "certificates_without_share": unmatched,
            "manifest": compared.as_ref().map(|(path, m, c)| json!({
                "file": path, "purpose": m.terms.purpose, "epoch": m.terms.epoch,
                "signatures": m.signatures.len(),
                "comparisons": c.iter().map(|c| json!({
                    "what": c.what, "manifest": c.manifest, "security_domain": c.found, "matches": c.matches(),
                })).collect::<Vec<_>>(),
            })),
        }));
        return compared.map_or(Ok(()), |(_, _, c)| witness::differences(&c));
    }
    crate::out!("security domain {}", args.sd_file.display());
    crate::out!("  SHA-256       {fingerprint}");
    crate::out!("  version       {}", sd.version);
    crate::out!("  quorum        {} of {} custodians", sd.required(), sd.share_count());
    crate::out!("  shares (RSA-OAEP-256 + A256CBC-HS512):");
    for (i, s) in sd.shared_keys.enc_shares.iter().enumerate() {
        let who = match owner(&s.x5t_256) {
            Some(l) => format!("  {l}"),
            None if certs.is_empty() => String::new(),
            None => "  (no certificate given)".into(),
        };
        crate::out!("    {}  x5t_256 {}{who}", i + 1, s.x5t_256);
    }
    crate::out!("  data items ({}, dir + A256CBC-HS512):", sd.enc_data.kdf);
    for (tag, n) in &items {
        crate::out!("    {tag:<26} {n} bytes of ciphertext");
    }
    for l in unmatched {
        warn(&format!("{l} has no share in this security domain"));
    }
    let Some((path, m, compared)) = compared else {
        return Ok(());
    };
    crate::out!(
        "  manifest {} ({}, epoch {}): {} signatures verified",
        path.display(),
        m.terms.purpose,
        m.terms.epoch,
        m.signatures.len()
    );
    for c in &compared {
        if c.matches() {
            crate::out!("    match    {:<22} {}", c.what, c.found);
        } else {
            crate::out!(
                "    DIFFERS  {:<22} manifest {}, security domain {}",
                c.what,
                c.manifest,
                c.found
            );
        }
    }
    witness::differences(&compared)
}

/// Reads `TAG=FILE` items. Each is a security domain's plaintext (in a real
/// ceremony, key material), so it is held to the passphrase files' rule:
/// readable by its owner only.
fn read_items(specs: &[String]) -> Result<Vec<PlainItem>> {
    let pairs: Vec<(&str, &str)> = specs
        .iter()
        .map(|spec| {
            spec.split_once('=')
                .filter(|(t, f)| !t.is_empty() && !f.is_empty())
                .ok_or_else(|| Error::Usage(format!("--item '{spec}' is not TAG=FILE")))
        })
        .collect::<Result<_>>()?;
    recovery::check_item_tags(&pairs.iter().map(|(t, _)| *t).collect::<Vec<_>>())?;
    pairs
        .into_iter()
        .map(|(tag, file)| {
            let bytes = inputs::secret_file(std::path::Path::new(file), MAX_SD_FILE_BYTES / 2, "data item")?;
            Ok(PlainItem {
                tag: tag.to_string(),
                plaintext: SecretBytes::new(bytes.to_vec()),
            })
        })
        .collect()
}

pub fn split(args: &SplitArgs) -> Result<hsm_ceremony::format::sdfile::SecurityDomain> {
    files::ensure_absent(&args.out)?;
    files::ensure_writable_folder(&files::folder_of(&args.out), &args.out)?;
    let profile = if args.local { Profile::Local } else { Profile::Azure };
    let (certs, mut recorded) = load_certs(&args.certs)?;
    let plain: Vec<Certificate> = certs.iter().map(|(_, c)| c.clone()).collect();
    recorded.extend(record::refs(args.manifest.manifest.as_deref().as_slice()));
    let entry = Entry {
        command: Step::SdSplit,
        inputs: recorded,
        thumbprints: plain.iter().map(Certificate::x5t_256).collect(),
        details: json!({"quorum": args.quorum, "custodians": certs.len(), "local": args.local}),
        ..Default::default()
    };
    record::logged(&args.out, entry, |entry| {
        // One person's two certificates are named by file before the manifest is read.
        recovery::check_distinct_custodians(&certs)?;
        // Refused before any key material exists when the terms differ from what was signed.
        let signed = args.manifest.check(
            hsm_ceremony::ceremony::manifest::Purpose::Split,
            &plain,
            args.quorum,
            None,
            record::log_path(&args.out).as_deref(),
            &mut entry.inputs,
        )?;
        entry.details["epoch"] = json!(signed.as_ref().map_or(1, |s| s.epoch));
        if let Some(s) = signed {
            entry.details["manifest_nonce"] = json!(s.nonce);
        }
        let sd = split_unlogged(args, &certs, profile)?;
        entry.outputs = record::refs(&[&args.out]);
        Ok(sd)
    })
}

fn split_unlogged(
    args: &SplitArgs,
    certs: &[(String, Certificate)],
    profile: Profile,
) -> Result<hsm_ceremony::format::sdfile::SecurityDomain> {
    let mut rng = os_rng();
    let items = if args.random_contents {
        recovery::random_items_with_rng(&mut rng)
    } else {
        read_items(&args.items)?
    };
    let master = MasterKey::generate_with_rng(&mut rng);
    let sd = recovery::split_with_rng(&mut rng, &master, &items, certs, args.quorum, profile)?;
    drop(master);
    let json = sd.to_json();
    // Never write a file that no reader (this tool included) would accept.
    if json.len() as u64 > MAX_SD_FILE_BYTES {
        return Err(ParameterError::SecurityDomainTooLarge {
            bytes: json.len() as u64,
            max: MAX_SD_FILE_BYTES,
        }
        .into());
    }
    files::write_new(&args.out, json.as_bytes(), Mode::Public)?;
    say!(
        "wrote {}: {} of {} custodians, {} data items; the master key was never written and is gone from memory.",
        args.out.display(),
        args.quorum,
        certs.len(),
        items.len()
    );
    Ok(sd)
}

fn health(args: &HealthArgs) -> Result<super::Done> {
    let (sd, sha) = inputs::security_domain_hashed(&args.sd_file)?;
    let (certs, _) = load_certs(&args.certs)?;
    let log_path = record::log_to_read(&args.sd_file);
    let lines = match &log_path {
        Some(p) => Some(log::verified(p)?),
        None => None,
    };
    let now = args.at.unwrap_or_else(OffsetDateTime::now_utc);
    let h = health::assess(&sd, &sha, &certs, lines.as_deref(), now);
    if args.json {
        let mut v = serde_json::to_value(&h).expect("plain data");
        v["sd_file"] = json!(args.sd_file);
        v["sha256"] = json!(sha);
        v["log"] = json!(log_path);
        v["as_of"] = json!(date(now));
        print_json(&v);
    } else {
        crate::out!("security domain {} (SHA-256 {})", args.sd_file.display(), sha);
        crate::out!("  as of {}; quorum {} of {}", date(now), h.required, h.custodians.len());
        match &log_path {
            Some(p) => crate::out!(
                "  ceremony log {} ({} lines, chain intact)",
                p.display(),
                lines.as_ref().map_or(0, Vec::len)
            ),
            None => crate::out!("  no ceremony log: proofs of possession and drills not assessed (give --log)"),
        }
        for c in &h.custodians {
            let cert = c.certificate.as_deref().unwrap_or("(no certificate)");
            let validity = match (c.bits, c.days_left) {
                (Some(bits), Some(days)) if days >= 0 => format!("RSA-{bits}, {days} days left"),
                (Some(bits), Some(days)) => format!("RSA-{bits}, expired {} days ago", -days),
                _ => "certificate unknown".into(),
            };
            crate::out!(
                "  {} {}  {}  {}  {}",
                c.position,
                if c.usable { "usable" } else { "LOST  " },
                cert,
                c.x5t_256,
                validity
            );
            if lines.is_some() {
                crate::out!(
                    "      last proof {}, last drill {}",
                    c.last_proof.as_deref().unwrap_or("never"),
                    c.last_drill.as_deref().unwrap_or("never")
                );
            }
            for p in &c.problems {
                crate::out!("      - {p}");
            }
        }
        if h.can_lose >= 0 {
            crate::out!(
                "  {} usable, {} needed: {} custodian(s) can be lost before recovery becomes impossible",
                h.usable,
                h.required,
                h.can_lose
            );
        } else {
            crate::out!("  {} usable, {} needed: recovery is impossible", h.usable, h.required);
        }
        let verdict = match h.verdict {
            Verdict::Healthy => "healthy",
            Verdict::AtRisk => "AT RISK",
            Verdict::CannotRecover => "CANNOT RECOVER",
        };
        crate::out!("verdict: {verdict}");
    }
    Ok(match h.verdict {
        Verdict::Healthy => super::Done::Ok,
        verdict => super::Done::Verdict(verdict, h.reasons),
    })
}
