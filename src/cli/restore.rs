//! `hsm-ceremony restore-blob`: a quorum opens its shares and the data items
//! are re-encrypted for a target instance's exchange key (security-domain(5), RESTORE BLOB). Flags
//! also answer to the Azure CLI's names, so an `az` runbook translates one to
//! one.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::keys;
use super::keys::QuorumKeys;
use super::output::{print_json, warn};
use super::passphrase::{CommandLineSecret, PassphraseArgs, Passphrases};
use super::record;
use crate::say;
use hsm_ceremony::ceremony::log::{Entry, Step};
use hsm_ceremony::crypto::rng::os_rng;
use hsm_ceremony::custodian::pairing::CertPool;
use hsm_ceremony::custodian::KeyRef;
use hsm_ceremony::error::{Error, Result};
use hsm_ceremony::files::{self, Mode};
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::inputs;
use hsm_ceremony::recovery::{self, GatherEvent, OpenFailure, Recovered};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  hsm-ceremony restore-blob --sd-file sd.json --sd-exchange-key exchange.cer \\\n      \
    --sd-wrapping-keys cert_0.key cert_2.key --out restore-blob.json\n  \
    # the same with the Azure CLI's flag names:\n  \
    hsm-ceremony restore-blob --sd-file sd.json --sd-exchange-key exchange.cer \\\n      \
    --sd-wrapping-keys cert_0.key cert_2.key --sd-file-restore-blob restore-blob.json"
)]
pub struct RestoreBlobArgs {
    /// The security-domain file, as downloaded.
    #[arg(long)]
    pub sd_file: PathBuf,
    /// The target instance's exchange-key certificate (PEM or DER).
    #[arg(long)]
    pub sd_exchange_key: PathBuf,
    #[command(flatten)]
    pub keys: QuorumKeys,
    /// Where to write the restore blob (must not exist).
    #[arg(long, visible_alias = "sd-file-restore-blob")]
    pub out: PathBuf,
    /// Azure CLI compatibility: one passphrase per key in order, "" for an
    /// unencrypted key. Every user of this machine can read the command line:
    /// prefer the prompt, --passphrase-file or --passphrase-fd.
    #[arg(long, num_args = 1.., value_parser = CommandLineSecret::parse)]
    pub passwords: Option<Vec<CommandLineSecret>>,
    #[command(flatten)]
    pub passphrases: PassphraseArgs,
    /// Print the result as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Opens shares from `wrapping_keys` in order until `sd`'s quorum is met
/// ([`recovery::gather_quorum`]), asking passphrases and PINs as it goes and
/// saying what each key did.
pub fn gather_quorum(
    sd: &SecurityDomain,
    wrapping_keys: &[KeyRef],
    pool: &CertPool,
    pass: &mut Passphrases,
) -> Result<Recovered> {
    recovery::gather_quorum(
        sd,
        wrapping_keys.len(),
        // A passphrase or PIN option that cannot work fails for every key: stop, do not skip.
        |i| {
            keys::open(&wrapping_keys[i], i, pool, pass).map_err(|e| match e {
                Error::Usage(_) => OpenFailure::Stop(e),
                e => e.into(),
            })
        },
        |event| match event {
            GatherEvent::Met { remaining } => say!("Quorum met; {remaining} remaining key(s) not needed."),
            GatherEvent::Opened { x, who, opened, needed } => {
                say!("share x={x} opened for {who} ({opened} of {needed} needed)")
            }
            GatherEvent::Skipped { error, .. } => warn(&format!("{error}; going on with the next key")),
        },
    )
}

/// Builds the blob and records the step, failures included; the record names
/// the custodians who opened shares, never their keys or passphrases.
pub fn run(args: &RestoreBlobArgs) -> Result<()> {
    files::ensure_absent(&args.out)?;
    files::ensure_writable_folder(&files::folder_of(&args.out), &args.out)?;
    let entry = Entry {
        command: Step::RestoreBlob,
        inputs: record::refs(&[&args.sd_file, &args.sd_exchange_key]),
        ..Default::default()
    };
    record::logged(&args.sd_file, entry, |entry| run_unlogged(args, entry))
}

fn run_unlogged(args: &RestoreBlobArgs, entry: &mut Entry) -> Result<()> {
    let (sd, sha256) = inputs::security_domain_hashed(&args.sd_file)?;
    record::parsed(&mut entry.inputs, &args.sd_file, sha256);
    let (exchange, exchange_sha256) = inputs::certificate_hashed(&args.sd_exchange_key)?;
    record::parsed(&mut entry.inputs, &args.sd_exchange_key, exchange_sha256);
    exchange.rsa_public_key().map_err(|source| Error::Certificate {
        label: inputs::label(&args.sd_exchange_key),
        source,
    })?;
    let pool = keys::check_quorum_keys(&sd, &args.keys)?;
    let mut pass = Passphrases::new(
        &args.passphrases,
        args.passwords.clone(),
        args.keys.sd_wrapping_keys.len(),
    )?;
    let recovered = gather_quorum(&sd, &args.keys.sd_wrapping_keys, &pool, &mut pass)?;
    entry.thumbprints = recovered.custodians.iter().map(|(x5t, _)| x5t.clone()).collect();
    entry.details = json!({"exchange_key_x5t_256": exchange.x5t_256(), "items": recovered.items.len()});
    let blob = recovery::build_restore_blob_with_rng(&mut os_rng(), &recovered.items, &exchange)?;
    files::write_new(&args.out, blob.to_json().as_bytes(), Mode::Public)?;
    entry.outputs = record::refs(&[&args.out]);
    if args.json {
        print_json(&json!({
            "out": args.out, "exchange_key_x5t_256": exchange.x5t_256(), "items": recovered.items.len(),
            "custodians": recovered.custodians.iter().map(|(x5t, who)| json!({"x5t_256": x5t, "who": who})).collect::<Vec<_>>(),
        }));
    } else {
        say!(
            "wrote {}: {} data items re-encrypted for exchange key {} (x5t_256 {}).",
            args.out.display(),
            recovered.items.len(),
            args.sd_exchange_key.display(),
            exchange.x5t_256()
        );
        say!(
            "Upload it with: az keyvault security-domain upload --hsm-name <HSM_NAME> --restore-blob --sd-file {}",
            args.out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// The parsed command line may be printed with `{:?}`: the `--passwords`
    /// values are not in it.
    #[test]
    fn passwords_are_not_in_the_debug_output() {
        let cli = super::super::Cli::try_parse_from([
            "hsm-ceremony",
            "restore-blob",
            "--sd-file",
            "sd.json",
            "--sd-exchange-key",
            "x.cer",
            "--sd-wrapping-keys",
            "a.key",
            "--out",
            "b.json",
            "--passwords",
            "hunter2-secret",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
