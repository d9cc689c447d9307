//! `hsm-ceremony custodian …`: generate a custodian's wrapping key and
//! certificate, show certificates, and prove possession of one share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use time::OffsetDateTime;

use super::keys;
use super::output::{colon_hex, date, print_json, warn};
use super::passphrase::{PassphraseArgs, Passphrases};
use super::record;
use crate::say;
use hsm_ceremony::ceremony::log::{Entry, Outcome, Step};
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::crypto::secret::Passphrase;
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::custodian::keygen::{self, Undone};
use hsm_ceremony::custodian::token;
use hsm_ceremony::error::{Error, ParameterError, Result};
use hsm_ceremony::files;
use hsm_ceremony::inputs;
use hsm_ceremony::recovery::{self, Possession};

#[derive(Subcommand, Debug)]
pub enum CustodianCommand {
    /// Generate a custodian's RSA wrapping key and self-signed certificate.
    #[command(
        after_help = "Examples:\n  hsm-ceremony custodian keygen --name alice --out-dir /media/alice\n  \
        hsm-ceremony custodian keygen --count 3 --prefix cert_ --out-dir ceremony/\n  \
        hsm-ceremony custodian keygen --name alice --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token alice"
    )]
    Keygen(KeygenArgs),
    /// Show certificates: subject, validity, key size, thumbprints, warnings.
    #[command(after_help = "Example:\n  hsm-ceremony custodian show cert_0.cer cert_1.cer cert_2.cer")]
    Show(ShowArgs),
    /// Prove one custodian's key opens a well-formed share of theirs, without any quorum.
    ///
    /// This proves that this key opens a well-formed share addressed to its
    /// certificate. It cannot prove the share is genuine: anyone with the
    /// certificate can encrypt a share to it. Only a drill (`hsm-ceremony
    /// drill`) proves that the shares combine into the master key.
    #[command(
        after_help = "Example:\n  hsm-ceremony custodian verify --sd-file sd.json --key alice.key --cert alice.cer"
    )]
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Custodian name: the certificate's CN and the files NAME.key, NAME.cer.
    #[arg(long, required_unless_present = "count", conflicts_with = "count")]
    pub name: Option<String>,
    /// Make COUNT custodians at once, named PREFIX0, PREFIX1, … (each asked for a passphrase in turn).
    #[arg(long, requires = "prefix")]
    pub count: Option<usize>,
    /// Name prefix for --count (the Azure docs use cert_).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Folder for the key and certificate files.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    /// RSA modulus size.
    #[arg(long, default_value_t = keygen::DEFAULT_BITS, value_parser = parse_bits)]
    pub bits: usize,
    /// Days the certificate stays valid (at most 3650).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    #[command(flatten)]
    pub passphrases: PassphraseArgs,
    /// Write the private key unencrypted (only for tests and throw-away rehearsals).
    #[arg(long)]
    pub insecure_unencrypted_key: bool,
    /// Generate the key pair on the PKCS#11 token with this label instead of
    /// in a key file: the private key never leaves the token. The PIN comes
    /// from the prompt, --pin-file or HSM_CEREMONY_PIN.
    #[arg(long, value_name = "LABEL", requires_all = ["pkcs11_module", "name"],
          conflicts_with_all = ["count", "insecure_unencrypted_key"])]
    pub token: Option<String>,
    /// The PKCS#11 module (shared library) for --token, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, value_name = "PATH", requires = "token")]
    pub pkcs11_module: Option<PathBuf>,
    /// For a token that does not do RSA-OAEP with SHA-256 (SoftHSM 2.6): let
    /// it do raw RSA and remove the OAEP padding on this computer. The key URI
    /// printed then carries x-oaep=host.
    #[arg(long, requires = "token")]
    pub oaep_on_host: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Certificate files (PEM or DER).
    #[arg(required = true)]
    pub certs: Vec<PathBuf>,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The security-domain file.
    #[arg(long)]
    pub sd_file: PathBuf,
    #[command(flatten)]
    pub custodian: keys::OneKey,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: CustodianCommand) -> Result<()> {
    match cmd {
        CustodianCommand::Keygen(args) => keygen_cmd(&args).map(|_| ()),
        CustodianCommand::Show(args) => show(&args),
        CustodianCommand::Verify(args) => verify(&args).map(|_| ()),
    }
}

pub use keygen::Made;

fn parse_bits(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(bits) if keygen::ALLOWED_BITS.contains(&bits) => Ok(bits),
        _ => Err(format!(
            "'{s}' is not offered: choose 2048, 3072 or 4096 (below 2048 is refused)"
        )),
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "'{name}' is not a usable custodian name: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

pub fn keygen_cmd(args: &KeygenArgs) -> Result<Vec<Made>> {
    if let (Some(token), Some(module)) = (&args.token, &args.pkcs11_module) {
        return keygen_on_token(args, module, token).map(|m| vec![m]);
    }
    let names: Vec<String> = match (&args.name, args.count) {
        (Some(name), _) => vec![name.clone()],
        (None, Some(count)) if (1..=10).contains(&count) => (0..count)
            .map(|i| format!("{}{i}", args.prefix.as_deref().unwrap_or("")))
            .collect(),
        (None, Some(count)) => return Err(Error::Usage(format!("--count {count} is outside 1 to 10"))),
        (None, None) => return Err(Error::Usage("give --name or --count".into())),
    };
    check_validity_and_folder(args)?;
    let mut plans = Vec::new();
    for name in &names {
        check_name(name)?;
        let key_path = args.out_dir.join(format!("{name}.key"));
        let cert_path = args.out_dir.join(format!("{name}.cer"));
        files::ensure_absent(&key_path)?;
        files::ensure_absent(&cert_path)?;
        plans.push((name.clone(), key_path, cert_path));
    }
    // Passphrases are asked first, in turn, so the slow part runs unattended.
    let passphrases: Vec<Option<Passphrase>> = if args.insecure_unencrypted_key {
        warn("the private keys will be written UNENCRYPTED; use them only for tests and throw-away rehearsals");
        std::iter::repeat_with(|| None).take(names.len()).collect()
    } else {
        let mut source = Passphrases::new(&args.passphrases, None, names.len())?;
        names
            .iter()
            .enumerate()
            .map(|(i, n)| source.new_for(i, n).map(Some))
            .collect::<Result<_>>()?
    };

    let generated = generate_parallel(&names, args.bits, args.days, &passphrases)?;
    let made = keygen::write_all(plans, generated)?;
    // The record: files by fingerprint and thumbprints; never the key or its passphrase.
    let mut made_files: Vec<&Path> = Vec::new();
    for m in &made {
        made_files.push(&m.key_path);
        made_files.push(&m.cert_path);
    }
    record::step(
        &keygen_log_anchor(args),
        Entry {
            command: Step::CustodianKeygen,
            outputs: record::refs(&made_files),
            thumbprints: made.iter().map(|m| m.cert.x5t_256()).collect(),
            outcome: Outcome::Ok,
            details: json!({
                "names": made.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
                "bits": args.bits, "days": args.days, "encrypted": !args.insecure_unencrypted_key,
            }),
            ..Default::default()
        },
    )?;
    report_made(&made, args);
    Ok(made)
}

/// The checks every keygen makes before any key is generated.
fn check_validity_and_folder(args: &KeygenArgs) -> Result<()> {
    if args.days == 0 || args.days > keygen::MAX_DAYS {
        return Err(ParameterError::Days {
            days: args.days,
            max: keygen::MAX_DAYS,
        }
        .into());
    }
    if !args.out_dir.is_dir() {
        return Err(Error::Usage(format!(
            "the output folder {} does not exist",
            args.out_dir.display()
        )));
    }
    // A folder that takes no files, or a log that takes no line, is found before anyone types a passphrase.
    files::ensure_writable_folder(&args.out_dir, &args.out_dir)?;
    record::preflight(&keygen_log_anchor(args))
}

/// Keygen's log goes beside the new files (or to --log).
fn keygen_log_anchor(args: &KeygenArgs) -> PathBuf {
    args.out_dir.join(hsm_ceremony::ceremony::log::DEFAULT_NAME)
}

/// `keygen --token`: the key pair is made on the token, the certificate is
/// signed there and stored both on the token and as NAME.cer.
fn keygen_on_token(args: &KeygenArgs, module: &Path, token: &str) -> Result<Made> {
    let name = args
        .name
        .clone()
        .ok_or_else(|| Error::Usage("--token needs --name".into()))?;
    check_name(&name)?;
    check_validity_and_folder(args)?;
    let cert_path = args.out_dir.join(format!("{name}.cer"));
    files::ensure_absent(&cert_path)?;
    let mut source = Passphrases::new(&args.passphrases, None, 1)?;
    let pin = source.pin_for(0, &format!("token '{token}'"), None)?;
    say!("generating an RSA-{} key pair on token '{token}'…", args.bits);
    let new = token::NewKey {
        module_path: module,
        token,
        name: &name,
        bits: args.bits,
        days: args.days,
        oaep_on_host: args.oaep_on_host,
    };
    let anchor = keygen_log_anchor(args);
    // Logged like a key file's keygen (the README says every keygen is): the URI and certificate, never the PIN.
    let record = |made: &token::Generated| {
        record::step(
            &anchor,
            Entry {
                command: Step::CustodianKeygen,
                outputs: record::refs(&[&cert_path]),
                thumbprints: vec![made.cert.x5t_256()],
                outcome: Outcome::Ok,
                details: json!({
                    "names": [name], "bits": args.bits, "days": args.days, "token": token,
                    "key": made.key.uri().to_string(),
                }),
                ..Default::default()
            },
        )
    };
    let made = match keygen::on_token_with_rng(&mut os_rng(), &new, &pin, OffsetDateTime::now_utc(), &cert_path, record)
    {
        Ok(made) => made,
        Err(failed) => {
            if let Some(Undone {
                x5t_256,
                key_pair: Err(left),
                ..
            }) = failed.undone.as_deref()
            {
                warn(&format!(
                    "the new key pair (certificate x5t#S256 {x5t_256}) is still on token '{token}': {left}"
                ));
            }
            return Err(failed.error);
        }
    };
    let uri = made.key.uri().to_string();
    if args.json {
        print_json(&json!([{
            "name": name, "key": uri, "certificate": cert_path, "token": token, "bits": made.cert.bits,
            "not_after": date(made.cert.not_after), "x5t_256": made.cert.x5t_256(), "sha256": made.cert.sha256_hex(),
        }]));
    } else {
        say!("custodian {name}");
        say!("  private key   on token '{token}' (sensitive, not extractable)");
        say!(
            "  certificate   {} and on the token (RSA-{}, valid until {})",
            cert_path.display(),
            made.cert.bits,
            date(made.cert.not_after)
        );
        crate::out!("  x5t#S256      {}", made.cert.x5t_256());
        say!("  SHA-256       {}", colon_hex(&made.cert.sha256_hex()));
        crate::out!("  key URI       {uri}");
        say!("Give the key URI wherever a key file is asked for (--key, --sd-wrapping-keys); quote it in the shell.");
    }
    Ok(Made {
        name,
        key_path: PathBuf::from(uri),
        cert_path,
        cert: made.cert,
    })
}

/// Generates the keys (on all cores, in the library) behind a progress bar.
fn generate_parallel(
    names: &[String],
    bits: usize,
    days: u32,
    passphrases: &[Option<Passphrase>],
) -> Result<Vec<keygen::NewKeyFile>> {
    let bar = indicatif::ProgressBar::new(names.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} generating RSA-{msg} keys [{bar:24}] {pos}/{len} ({elapsed})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(bits.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    let made = keygen::generate_many(
        names,
        bits,
        days,
        passphrases,
        OffsetDateTime::now_utc(),
        os_rng,
        || bar.inc(1),
    );
    bar.finish_and_clear();
    made
}

fn report_made(made: &[Made], args: &KeygenArgs) {
    if args.json {
        let list: Vec<_> = made
            .iter()
            .map(|m| {
                json!({
                    "name": m.name, "key": m.key_path, "certificate": m.cert_path,
                    "encrypted": !args.insecure_unencrypted_key, "bits": m.cert.bits,
                    "not_after": date(m.cert.not_after), "x5t_256": m.cert.x5t_256(),
                    "sha256": m.cert.sha256_hex(),
                })
            })
            .collect();
        print_json(&json!(list));
        return;
    }
    for m in made {
        say!("custodian {}", m.name);
        say!(
            "  private key   {} ({}, mode 0600)",
            m.key_path.display(),
            if args.insecure_unencrypted_key {
                "UNENCRYPTED"
            } else {
                "encrypted PKCS#8, PBKDF2-SHA256 + AES-256-CBC"
            }
        );
        say!(
            "  certificate   {} (RSA-{}, valid until {})",
            m.cert_path.display(),
            m.cert.bits,
            date(m.cert.not_after)
        );
        crate::out!("  x5t#S256      {}", m.cert.x5t_256());
        say!("  SHA-256       {}", colon_hex(&m.cert.sha256_hex()));
    }
    say!("Record each x5t#S256 in the ceremony log: it is how the security domain names the custodian.");
}

/// "N days left", "expired N days ago" or "not valid yet": a negative
/// count of days left reads as nonsense.
fn time_left(cert: &Certificate, now: OffsetDateTime) -> String {
    let days = cert.days_left(now);
    if now < cert.not_before {
        "not valid yet".into()
    } else if days < 0 {
        format!("expired {} days ago", -days)
    } else {
        format!("{days} days left")
    }
}

fn show(args: &ShowArgs) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::new();
    for path in &args.certs {
        let cert = inputs::certificate(path)?;
        let warnings = cert.warnings(now);
        if args.json {
            out.push(json!({
                "file": path, "subject": cert.subject, "serial": cert.serial,
                "not_before": date(cert.not_before), "not_after": date(cert.not_after),
                "days_left": cert.days_left(now), "bits": cert.bits,
                "x5t_256": cert.x5t_256(), "sha256": cert.sha256_hex(), "warnings": warnings,
            }));
            continue;
        }
        crate::out!("{}", path.display());
        // One line per field: a newline in the CN must not forge the next field.
        crate::out!("  subject       {}", super::output::one_line(&cert.subject));
        crate::out!("  serial        {}", cert.serial);
        crate::out!(
            "  valid         {} to {} ({})",
            date(cert.not_before),
            date(cert.not_after),
            time_left(&cert, now)
        );
        crate::out!("  key           RSA-{}", cert.bits);
        crate::out!("  x5t#S256      {}", cert.x5t_256());
        crate::out!("  SHA-256       {}", colon_hex(&cert.sha256_hex()));
        for w in warnings {
            warn(&format!("{}: {w}", path.display()));
        }
    }
    if args.json {
        print_json(&json!(out));
    }
    Ok(())
}

/// What verify proves, and what it cannot (said in its output, help and README).
pub const VERIFY_PROVES: &str = "This proves that this key opens a well-formed share addressed to it \
    (64 bytes, one x throughout, every value in the field). It cannot prove the share is genuine: \
    anyone with the certificate can encrypt a share to it. Only a drill (`hsm-ceremony drill`) \
    proves that the shares combine into the master key. Nothing was reconstructed.";

/// Proves possession and records the attempt, failures included: rotation
/// finalize and `sd health` count the successful ones. The proof is
/// recorded before anything is printed, so a closed stdout cannot lose it.
pub fn verify(args: &VerifyArgs) -> Result<Possession> {
    let mut input_files: Vec<&Path> = vec![&args.sd_file];
    input_files.extend(args.custodian.cert.as_deref());
    let entry = Entry {
        command: Step::CustodianVerify,
        inputs: record::refs(&input_files),
        details: json!({"key": args.custodian.key.to_string()}),
        ..Default::default()
    };
    let v = record::logged(&args.sd_file, entry, |entry| verify_unlogged(args, entry))?;
    if args.json {
        print_json(&json!({
            "opens": true, "x": v.x, "position": v.position, "shares": v.of, "required": v.required,
            "x5t_256": v.x5t_256, "key": args.custodian.key.to_string(), "sd_file": args.sd_file,
            "share_genuine": "not proven: run a drill", "proves": VERIFY_PROVES,
        }));
    } else {
        crate::out!(
            "share x={} of {} opens for {} (x5t_256 {})",
            v.x,
            v.of,
            v.who,
            v.x5t_256
        );
        say!("{VERIFY_PROVES}");
    }
    Ok(v)
}

fn verify_unlogged(args: &VerifyArgs, entry: &mut Entry) -> Result<Possession> {
    let (sd, sha256) = inputs::security_domain_hashed(&args.sd_file)?;
    record::parsed(&mut entry.inputs, &args.sd_file, sha256);
    let pool = match &args.custodian.cert {
        Some(p) => {
            let (pool, hashes) = keys::cert_pool(std::slice::from_ref(p))?;
            for sha256 in hashes {
                record::parsed(&mut entry.inputs, p, sha256);
            }
            pool
        }
        None => Default::default(),
    };
    // A certificate with no share here is refused before the passphrase is asked.
    keys::check_certs_have_shares(&sd, std::slice::from_ref(&args.custodian.key), &pool)?;
    let mut pass = Passphrases::new(&args.custodian.passphrases, None, 1)?;
    let ck = keys::open(&args.custodian.key, 0, &pool, &mut pass)?;
    if let Some((_, c)) = &ck.cert {
        entry.thumbprints = vec![c.x5t_256()];
    }
    // An explicit --cert must be the key's own; the .cer beside the key must not stand in for it.
    let given = match (&args.custodian.cert, pool.certificates().first()) {
        (Some(p), Some((_, c))) => Some((inputs::label(p), c)),
        _ => None,
    };
    let proved = recovery::prove_possession(
        &sd,
        &ck,
        &args.custodian.key.to_string(),
        given.as_ref().map(|(label, c)| (label.as_str(), *c)),
    )?;
    entry.thumbprints = vec![proved.x5t_256.clone()];
    entry.details["position"] = json!(proved.position);
    Ok(proved)
}
