//! `hsm-ceremony log …`: verify the chain, show a timeline, countersign a line.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::keys;
use super::output::print_json;
use crate::say;
use hsm_ceremony::ceremony::destruction::{self, Copy};
use hsm_ceremony::ceremony::log::{self, Entry, Outcome, Step};
use hsm_ceremony::ceremony::signing;
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::error::{CountersignatureFault, Error, LogBreak, LogError, Result};

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Check the hash chain; print the first broken line.
    ///
    /// An intact chain shows that no line was edited, removed or moved on its
    /// own. It cannot show that the log was not rewritten consistently (new
    /// lines, new hashes, new head): such a chain verifies. Only the last line
    /// hash written on paper, or a countersignature, catches that.
    #[command(after_help = "Example:\n  hsm-ceremony log verify ceremony-log.jsonl")]
    Verify(LogFileArgs),
    /// Print a readable timeline (of a chain checked as `log verify` checks it).
    ///
    /// The chain is checked first; it cannot show that the log was not
    /// rewritten consistently: compare the last line hash with the paper record.
    #[command(after_help = "Example:\n  hsm-ceremony log show ceremony-log.jsonl")]
    Show(LogFileArgs),
    /// Countersign a line with a custodian's wrapping key (who was present).
    #[command(after_help = "Example:\n  hsm-ceremony log sign ceremony-log.jsonl --line 7 --key alice.key")]
    Sign(SignArgs),
    /// Record that an old copy of a security domain is destroyed (its SHA-256, read before it is).
    ///
    /// Run it just before the copy is destroyed, in front of the witness, who
    /// then countersigns the line with `log sign`. A copy not at hand (a
    /// stick destroyed where it is kept) is named with --copy and its SHA-256
    /// from the paper record. The current security domain is refused.
    #[command(
        after_help = "Examples:\n  hsm-ceremony log destroyed ceremony-log.jsonl --file sd.json.retired\n  \
        hsm-ceremony log destroyed ceremony-log.jsonl --copy \"safe B stick\" --sha256 38976a39...0eee"
    )]
    Destroyed(DestroyedArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["file", "sha256"])))]
pub struct DestroyedArgs {
    /// The ceremony log.
    pub log_file: PathBuf,
    /// The copy, at hand: read once, before it is destroyed.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The SHA-256 (hex) of a copy not at hand, from the paper record.
    #[arg(long, requires = "copy")]
    pub sha256: Option<String>,
    /// What and where the copy not at hand is (with --sha256).
    #[arg(long, requires = "sha256")]
    pub copy: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogFileArgs {
    /// The ceremony log file (JSON lines).
    pub log: PathBuf,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The ceremony log.
    pub log_file: PathBuf,
    /// The line to countersign (1-based).
    #[arg(long)]
    pub line: u64,
    #[command(flatten)]
    pub custodian: keys::OneKey,
}

pub fn run(cmd: LogCommand) -> Result<()> {
    match cmd {
        LogCommand::Verify(args) => verify(&args),
        LogCommand::Show(args) => show(&args),
        LogCommand::Sign(args) => sign(&args),
        LogCommand::Destroyed(args) => destroyed(&args),
    }
}

/// What an intact chain proves and what it cannot, said wherever a chain is shown.
pub const CHAIN_PROVES: &str = "The chain shows no line was edited, removed or moved on its own. \
    It cannot show the log was not rewritten consistently (a rewritten chain verifies): \
    only the last line hash written on paper, or a countersignature, catches that.";

fn verified(path: &std::path::Path) -> Result<Vec<log::Line>> {
    log::verified(path)
}

fn verify(args: &LogFileArgs) -> Result<()> {
    let lines = verified(&args.log)?;
    // Countersignatures must verify against the certificate they carry.
    for l in &lines {
        if l.entry.command == Step::LogSign {
            check_countersignature(&lines, l).map_err(|fault| {
                Error::from(LogError::Broken {
                    path: args.log.clone(),
                    line: l.seq,
                    reason: LogBreak::Countersignature(fault),
                })
            })?;
        }
    }
    if args.json {
        print_json(&json!({
            "ok": true, "lines": lines.len(), "last": lines.last().map(log::line_hash), "proves": CHAIN_PROVES,
        }));
    } else {
        crate::out!("{}: {} lines, chain intact", args.log.display(), lines.len());
        if let Some(last) = lines.last() {
            crate::out!(
                "last line hash {} (compare it with the paper record, and write it there)",
                log::line_hash(last)
            );
        }
        say!("{CHAIN_PROVES}");
    }
    Ok(())
}

fn check_countersignature(lines: &[log::Line], l: &log::Line) -> std::result::Result<(), CountersignatureFault> {
    use CountersignatureFault as F;
    let d = &l.entry.details;
    let seq = d.get("line").and_then(|v| v.as_u64()).ok_or(F::NoLineNumber)?;
    let target = lines
        .get(seq.saturating_sub(1) as usize)
        .filter(|t| t.seq == seq)
        .ok_or(F::NoSuchLine)?;
    let cert_der = d.get("certificate").and_then(|v| v.as_str()).ok_or(F::NoCertificate)?;
    let cert = hsm_ceremony::crypto::b64::b64u_decode(cert_der, "certificate")
        .ok()
        .and_then(|der| Certificate::from_bytes(&der).ok())
        .ok_or(F::UnreadableCertificate)?;
    let signature = d.get("signature").and_then(|v| v.as_str()).ok_or(F::NoSignature)?;
    if !l.entry.thumbprints.contains(&cert.x5t_256()) {
        return Err(F::ThumbprintMismatch);
    }
    if !signing::verify(&cert, log::line_hash(target).as_bytes(), signature) {
        return Err(F::DoesNotVerify { line: seq });
    }
    Ok(())
}

fn show(args: &LogFileArgs) -> Result<()> {
    let lines = verified(&args.log)?;
    if args.json {
        print_json(&serde_json::to_value(&lines).expect("plain data"));
        return Ok(());
    }
    for l in &lines {
        let e = &l.entry;
        // Fields read from the log stay on their line: a newline in one must not forge a line.
        let one = super::output::one_line;
        crate::out!(
            "{:>4}  {}  {:<22} {}",
            l.seq,
            one(&l.time),
            one(e.command.as_str()),
            one(&e.outcome.to_string())
        );
        for f in e
            .inputs
            .iter()
            .map(|f| ("in ", f))
            .chain(e.outputs.iter().map(|f| ("out", f)))
        {
            crate::out!(
                "        {} {}  sha256 {}",
                f.0,
                one(&f.1.path),
                one(f.1.sha256.get(..16).unwrap_or(&f.1.sha256))
            );
        }
        for t in &e.thumbprints {
            crate::out!("        custodian {}", one(t));
        }
    }
    if let Some(last) = lines.last() {
        crate::out!("last line hash {}", log::line_hash(last));
    }
    say!("{CHAIN_PROVES}");
    Ok(())
}

fn sign(args: &SignArgs) -> Result<()> {
    let lines = verified(&args.log_file)?;
    let target = lines
        .iter()
        .find(|l| l.seq == args.line)
        .ok_or_else(|| Error::Usage(format!("{} has no line {}", args.log_file.display(), args.line)))?;
    // The log must take the countersignature before the custodian is asked for anything.
    log::check_appendable(&args.log_file)?;
    let (ck, cert) = args.custodian.signer()?;
    let signature =
        signing::sign(ck.signer.as_ref(), log::line_hash(target).as_bytes()).map_err(|source| LogError::Sign {
            what: format!("line {}", args.line),
            source: Box::new(source),
        })?;
    log::append(
        &args.log_file,
        Entry {
            command: Step::LogSign,
            thumbprints: vec![cert.x5t_256()],
            outcome: Outcome::Ok,
            details: json!({
                "line": args.line, "line_sha256": log::line_hash(target), "signature": signature,
                "certificate": hsm_ceremony::crypto::b64::b64u(cert.der()),
            }),
            ..Default::default()
        },
    )?;
    crate::out!("line {} countersigned by {} ({})", args.line, ck.label, cert.x5t_256());
    Ok(())
}

fn destroyed(args: &DestroyedArgs) -> Result<()> {
    // The line is the record: the log must take it before anything is read.
    log::check_appendable(&args.log_file)?;
    // Without the log that made the current file, the current file could not be refused.
    if !args.log_file.exists() {
        return Err(Error::Usage(format!(
            "{} does not exist: give the ceremony log of the rotation that retired this copy",
            args.log_file.display()
        )));
    }
    let lines = verified(&args.log_file)?;
    let at_hand = args
        .file
        .as_deref()
        .map(hsm_ceremony::inputs::security_domain_hashed)
        .transpose()?;
    let copy = match (&args.file, &at_hand, &args.sha256, &args.copy) {
        (Some(path), Some((sd, sha256)), _, _) => Copy::File { path, sd, sha256 },
        (_, _, Some(sha256), Some(name)) => {
            if !destruction::is_sha256(sha256) {
                return Err(Error::Usage(format!(
                    "--sha256 {sha256:?} is not a SHA-256: give the 64 lowercase hex digits of the copy, as the paper record \
                     or `sha256sum` shows them"
                )));
            }
            if name.trim().is_empty() {
                return Err(Error::Usage("--copy is empty: say what and where the copy is".into()));
            }
            Copy::Declared { name, sha256 }
        }
        _ => {
            return Err(Error::Usage(
                "give --file PATH, or --copy NAME with --sha256 HEX".into(),
            ))
        }
    };
    let line = log::append(&args.log_file, destruction::entry(&copy, &lines)?)?;
    let f = &line.entry.inputs[0];
    crate::out!(
        "line {}: {} (sha256 {}) recorded as destroyed. Destroy it now; the witness countersigns: \
         hsm-ceremony log sign {} --line {} --key THEIR.key",
        line.seq,
        super::output::one_line(&f.path),
        f.sha256,
        args.log_file.display(),
        line.seq
    );
    Ok(())
}
