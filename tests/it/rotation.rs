//! `rotate`: two-phase custodian rotation with the real binary. The new file
//! restores to the same contents, finalize waits for proofs of possession,
//! cancel changes nothing, old keys cannot open the new file, a signed
//! manifest is enforced, and kill -9 at any moment never loses the security
//! domain.

use crate::util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hsm_ceremony::crypto::secret::Passphrase;
use hsm_ceremony::inputs;
use hsm_ceremony::recovery::{contents_fingerprint, open_restore_blob, CustodianKey, Quorum};
use util::{fixtures, passphrase, set_mode, Dir, BIN, EXIT_INPUT, EXIT_INTEGRITY, EXIT_QUORUM};

/// Three new custodians `n0..n2` (unencrypted keys, so proofs need no
/// passphrase), made once per test binary with the real `keygen`.
fn new_custodians() -> &'static Path {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    CELL.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Folders of finished runs are removed, as the shared fixtures do.
        for e in fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("hsm-ceremony-rotation-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(format!("hsm-ceremony-rotation-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let runner = Dir::new("rotation-keygen");
        runner
            .run(&[
                "custodian",
                "keygen",
                "--count",
                "3",
                "--prefix",
                "n",
                "--bits",
                "2048",
                "--insecure-unencrypted-key",
                "--no-log",
                "--out-dir",
                dir.to_str().unwrap(),
            ])
            .ok();
        dir
    })
}

/// Copies the new custodians' key and certificate files into `dir`.
fn copy_new(dir: &Dir) {
    for i in 0..3 {
        for ext in ["key", "cer"] {
            let name = format!("n{i}.{ext}");
            fs::copy(new_custodians().join(&name), dir.join(&name)).unwrap();
        }
        set_mode(&dir.join(&format!("n{i}.key")), 0o600);
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `--sd-wrapping-keys cI.key … --passphrase-file cI.pass …` for old custodians `old`.
fn old_keys(old: &[usize]) -> Vec<String> {
    let mut args = vec!["--sd-wrapping-keys".to_string()];
    args.extend(old.iter().map(|i| format!("c{i}.key")));
    for i in old {
        args.push("--passphrase-file".into());
        args.push(format!("c{i}.pass"));
    }
    args
}

/// `rotate` from `sd` with old custodians `old` to `new_certs`, quorum `m`, into `out`.
fn rotate_args(sd: &str, old: &[usize], new_certs: &[&str], m: usize, out: &str) -> Vec<String> {
    let mut args: Vec<String> = vec!["rotate".into(), "--sd-file".into(), sd.into()];
    args.extend(old_keys(old));
    args.push("--new-certs".into());
    args.extend(new_certs.iter().map(|s| s.to_string()));
    args.extend(["--quorum".into(), m.to_string(), "--out".into(), out.into()]);
    args
}

/// `custodian verify` of `key` (with its passphrase file, if it has one) on `sd`.
fn verify(dir: &Dir, sd: &str, key: &str) -> util::Output {
    let mut args = vec!["custodian", "verify", "--sd-file", sd, "--key", key];
    let pass = key.replace(".key", ".pass");
    if dir.exists(&pass) {
        args.extend(["--passphrase-file", &pass]);
    }
    dir.run(&args)
}

/// The contents fingerprint of a restore blob the binary makes from `sd`
/// with `keys`, opened with the exchange key through the library.
fn blob_fingerprint(dir: &Dir, sd: &str, keys: &[&str], out: &str) -> String {
    let mut args = vec![
        "restore-blob",
        "--sd-file",
        sd,
        "--sd-exchange-key",
        "exchange.cer",
        "--out",
        out,
        "--sd-wrapping-keys",
    ];
    args.extend(keys);
    let passes: Vec<String> = keys
        .iter()
        .map(|k| k.replace(".key", ".pass"))
        .filter(|p| dir.exists(p))
        .collect();
    for p in &passes {
        args.extend(["--passphrase-file", p]);
    }
    dir.run(&args).ok();
    let blob = inputs::restore_blob(&dir.join(out)).unwrap();
    let key = inputs::key_file(&dir.join("exchange.key"))
        .unwrap()
        .into_key(None)
        .unwrap();
    let cert = inputs::certificate(&dir.join("exchange.cer")).unwrap();
    contents_fingerprint(&open_restore_blob(&blob, &key, &cert).unwrap())
}

/// Opens `sd` fully (not just one share) through the library with the
/// custodians named `keys` (`cI` encrypted with their passphrase, `nI` plain);
/// returns the contents fingerprint, or why it failed.
fn open_with(dir: &Dir, sd: &str, keys: &[&str]) -> Result<String, String> {
    let sd = inputs::security_domain(&dir.join(sd)).map_err(|e| e.to_string())?;
    let mut quorum = Quorum::new(&sd);
    for name in keys {
        let secret = name
            .strip_prefix('c')
            .map(|i| Passphrase::new(passphrase(i.parse().unwrap())));
        let key = cached_key(dir, name, secret);
        let cert = inputs::certificate(&dir.join(&format!("{name}.cer"))).unwrap();
        let ck = CustodianKey::from_rsa(format!("{name}.key"), key, Some((format!("{name}.cer"), cert)));
        quorum.add(&ck).map_err(|e| e.to_string())?;
    }
    quorum
        .finish()
        .map(|r| contents_fingerprint(&r.items))
        .map_err(|e| e.to_string())
}

/// Decrypting a key is slow (PBKDF2): each is decrypted once per test binary.
fn cached_key(dir: &Dir, name: &str, secret: Option<Passphrase>) -> rsa::PrivateKey {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<String, rsa::PrivateKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(k) = cache.lock().unwrap().get(name) {
        return k.clone();
    }
    let key = inputs::key_file(&dir.join(&format!("{name}.key")))
        .unwrap()
        .into_key(secret.as_ref())
        .unwrap();
    cache.lock().unwrap().insert(name.to_string(), key.clone());
    key
}

fn log_verifies(dir: &Dir) {
    dir.run(&["log", "verify", "ceremony-log.jsonl"])
        .ok()
        .stdout_has("chain intact");
}

#[test]
fn two_of_three_to_three_of_five_restores_the_same_contents() {
    let dir = Dir::new("rotate-2of3-3of5");
    dir.ceremony();
    dir.custodian(3);
    dir.custodian(4);
    copy_new(&dir);
    let old = dir.read("sd.json");
    let new_certs = ["c3.cer", "c4.cer", "n0.cer", "n1.cer", "n2.cer"];
    dir.run(&rotate_args("sd.json", &[0, 1], &new_certs, 3, "sd2.json"))
        .ok()
        .stdout_has("sd2.json.pending");
    assert_eq!(
        dir.read("sd.json"),
        old,
        "the current file must not change before finalize"
    );
    assert!(!dir.exists("sd2.json"), "the new file appears only at finalize");
    assert!(dir.exists("sd2.json.pending") && dir.exists("sd2.json.rotation.json"));
    let pending = inputs::security_domain(&dir.join("sd2.json.pending")).unwrap();
    assert_eq!((pending.share_count(), pending.required()), (5, 3));

    // No proofs yet: refused, and nothing moved.
    let finalize = ["rotate", "finalize", "--record", "sd2.json.rotation.json"];
    dir.run(&finalize).fails(
        EXIT_QUORUM,
        &[
            "only 0 of the 3 required new custodians have proved possession",
            "custodian verify",
        ],
    );
    // The old custodians who are not in the new set cannot prove anything on the new file.
    verify(&dir, "sd2.json.pending", "c0.key").fails(EXIT_INTEGRITY, &["no share"]);
    verify(&dir, "sd2.json.pending", "n0.key").ok();
    verify(&dir, "sd2.json.pending", "c3.key").ok();
    dir.run(&finalize).fails(EXIT_QUORUM, &["only 2 of the 3 required"]);
    assert_eq!(dir.read("sd.json"), old);
    assert!(!dir.exists("sd2.json"));
    verify(&dir, "sd2.json.pending", "n1.key").ok();
    // More proved than required reads as enough, not "4 of the 3 proofs required".
    verify(&dir, "sd2.json.pending", "n2.key").ok();
    let status = dir.run(&["rotate", "status", "--record", "sd2.json.rotation.json"]);
    status.ok().stdout_has("4 proved, 3 required: enough to finalize");
    assert!(!status.stdout.contains("of the 3 proofs required"), "{}", status.stdout);
    dir.run(&finalize).ok().stdout_has("rotation finalized");

    assert!(!dir.exists("sd.json"), "the old file is retired");
    assert_eq!(dir.read("sd.json.retired"), old, "retired byte for byte");
    assert!(!dir.exists("sd2.json.pending"));
    let new = dir.read("sd2.json");
    assert_pending_became_current(&dir);
    // Finalize again after completion is harmless.
    dir.run(&finalize).ok();

    // Same contents, before and after, through real restore blobs.
    let before = blob_fingerprint(&dir, "sd.json.retired", &["c0.key", "c1.key"], "blob-old.json");
    let after = blob_fingerprint(&dir, "sd2.json", &["n0.key", "n1.key", "n2.key"], "blob-new.json");
    assert_eq!(before, after, "the rotated file must restore to the same contents");
    // The old keys open nothing in the new file.
    let mut args = vec![
        "restore-blob",
        "--sd-file",
        "sd2.json",
        "--sd-exchange-key",
        "exchange.cer",
        "--out",
        "blob-bad.json",
        "--sd-wrapping-keys",
        "c0.key",
        "c1.key",
        "c2.key",
    ];
    args.extend([
        "--passphrase-file",
        "c0.pass",
        "--passphrase-file",
        "c1.pass",
        "--passphrase-file",
        "c2.pass",
    ]);
    // Refused before any passphrase is read: none of these certificates has a share there.
    dir.run(&args).fails(
        util::EXIT_INTEGRITY,
        &["c0.cer", "has no share in this security domain"],
    );
    assert!(!dir.exists("blob-bad.json"));
    for k in ["c0", "c1", "c2"] {
        assert!(
            open_with(&dir, "sd2.json", &[k]).is_err(),
            "{k} opened a share of the new file"
        );
    }
    log_verifies(&dir);
    // The record: the proofs and the finalize, with the new file's fingerprint.
    let log = dir.read_string("ceremony-log.jsonl");
    let new_sha = hex(&util::sha256(&new));
    assert!(log.contains("\"command\":\"rotate finalize\""));
    assert!(log.contains(&new_sha));
}

/// The rotation record names the pending file's fingerprint; finalize must put
/// exactly that file at `--out`.
#[track_caller]
fn assert_pending_became_current(dir: &Dir) {
    let rec = util::read_json(&dir.join("sd2.json.rotation.json"));
    assert_eq!(rec["state"], "finalized");
    let want = rec["pending"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(hex(&util::sha256(&dir.read("sd2.json"))), want);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn three_of_five_to_two_of_three_waits_for_all_with_require_all() {
    let dir = Dir::new("rotate-3of5-2of3");
    dir.ceremony();
    dir.custodian(3);
    dir.custodian(4);
    copy_new(&dir);
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "c3.cer",
        "c4.cer",
        "--quorum",
        "3",
        "--random-contents",
        "--out",
        "sd5.json",
    ])
    .ok();
    let old = dir.read("sd5.json");
    let mut args = rotate_args("sd5.json", &[0, 2, 4], &["n0.cer", "n1.cer", "n2.cer"], 2, "sd3.json");
    args.push("--require-all".into());
    dir.run(&strs(&args)).ok();
    let finalize = ["rotate", "finalize", "--record", "sd3.json.rotation.json"];
    verify(&dir, "sd3.json.pending", "n0.key").ok();
    verify(&dir, "sd3.json.pending", "n2.key").ok();
    // M = 2 have proved, but all 3 were required.
    dir.run(&finalize).fails(EXIT_QUORUM, &["only 2 of the 3 required"]);
    dir.run(&["rotate", "status", "--record", "sd3.json.rotation.json"])
        .ok()
        .stdout_has("2 of the 3 proofs required");
    let status = dir
        .run(&["rotate", "status", "--record", "sd3.json.rotation.json", "--json"])
        .ok()
        .json();
    assert_eq!(
        (status["state"].as_str(), status["proofs"].as_u64()),
        (Some("pending"), Some(2))
    );
    assert_eq!(status["required_proofs"], 3);
    let proved: Vec<bool> = status["custodians"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["proved"].as_bool().unwrap())
        .collect();
    assert_eq!(proved, [true, false, true], "n0 and n2 proved, n1 not yet");
    assert_eq!(dir.read("sd5.json"), old);
    verify(&dir, "sd3.json.pending", "n1.key").ok();
    dir.run(&finalize).ok();
    assert_eq!(dir.read("sd5.json.retired"), old);
    let new = inputs::security_domain(&dir.join("sd3.json")).unwrap();
    assert_eq!((new.share_count(), new.required()), (3, 2));

    let before = blob_fingerprint(
        &dir,
        "sd5.json.retired",
        &["c1.key", "c2.key", "c3.key"],
        "blob-old.json",
    );
    let after = blob_fingerprint(&dir, "sd3.json", &["n1.key", "n2.key"], "blob-new.json");
    assert_eq!(before, after);
    for k in 0..5 {
        verify(&dir, "sd3.json", &format!("c{k}.key")).fails(EXIT_INTEGRITY, &["no share"]);
    }
    log_verifies(&dir);
}

#[test]
fn a_proof_on_another_file_does_not_count() {
    let dir = Dir::new("rotate-proof-elsewhere");
    dir.ceremony();
    copy_new(&dir);
    // n0 and n1 prove possession of a different file (a split to them), not of the pending one.
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "n0.cer",
        "n1.cer",
        "n2.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "other.json",
    ])
    .ok();
    verify(&dir, "other.json", "n0.key").ok();
    verify(&dir, "other.json", "n1.key").ok();
    dir.run(&rotate_args(
        "sd.json",
        &[0, 1],
        &["n0.cer", "n1.cer", "n2.cer"],
        2,
        "sd2.json",
    ))
    .ok();
    dir.run(&["rotate", "finalize", "--record", "sd2.json.rotation.json"])
        .fails(EXIT_QUORUM, &["only 0 of the 2 required"]);
    assert!(dir.exists("sd.json") && !dir.exists("sd2.json"));
}

#[test]
fn cancel_leaves_everything_as_it_was() {
    let dir = Dir::new("rotate-cancel");
    dir.ceremony();
    copy_new(&dir);
    let old = dir.read("sd.json");
    let before: Vec<String> = dir.listing();
    dir.run(&rotate_args(
        "sd.json",
        &[1, 2],
        &["n0.cer", "n1.cer", "n2.cer"],
        2,
        "sd2.json",
    ))
    .ok();
    verify(&dir, "sd2.json.pending", "n0.key").ok();
    dir.run(&["rotate", "cancel", "--record", "sd2.json.rotation.json"])
        .ok()
        .stdout_has("unchanged");
    assert_eq!(dir.read("sd.json"), old, "byte-identical");
    assert!(!dir.exists("sd2.json.pending") && !dir.exists("sd2.json") && !dir.exists("sd.json.retired"));
    // Only the record (now "cancelled") and the log were added.
    let mut after = dir.listing();
    after.retain(|n| !before.contains(n));
    assert_eq!(
        after,
        [
            "ceremony-log.jsonl",
            "ceremony-log.jsonl.head",
            "sd2.json.rotation.json"
        ]
    );
    assert_eq!(
        util::read_json(&dir.join("sd2.json.rotation.json"))["state"],
        "cancelled"
    );
    // A cancelled rotation cannot be finalized, and the old custodians still open the file.
    dir.run(&["rotate", "finalize", "--record", "sd2.json.rotation.json"])
        .fails(util::EXIT_USAGE, &["cancelled"]);
    assert!(open_with(&dir, "sd.json", &["c0", "c2"]).is_ok());
    log_verifies(&dir);
}

/// A signed manifest for `rotate` from sd.json (c0..c2, quorum 2) to n0..n2
/// with quorum `m`, signed by new custodians `signers` and current c0, c1.
fn manifest(dir: &Dir, name: &str, m: usize, signers: &[usize]) {
    manifest_at(dir, name, m, signers, 7)
}

fn manifest_at(dir: &Dir, name: &str, m: usize, signers: &[usize], epoch: u64) {
    let new = ["n0.cer", "n1.cer", "n2.cer"];
    rotation_manifest(dir, name, &new, m, &["c0.cer", "c1.cer", "c2.cer"], epoch);
    new_signs(dir, name, signers.iter().copied());
    current_signs(dir, name, &[0, 1]);
}

/// `manifest create --purpose rotate` to `new` (quorum `m`) from `current` (quorum 2).
fn rotation_manifest(dir: &Dir, name: &str, new: &[&str], m: usize, current: &[&str], epoch: u64) {
    let (m, epoch) = (m.to_string(), epoch.to_string());
    let mut args = vec![
        "manifest",
        "create",
        "--purpose",
        "rotate",
        "--quorum",
        &m,
        "--epoch",
        &epoch,
    ];
    args.push("--certs");
    args.extend(new);
    args.push("--current-certs");
    args.extend(current);
    args.extend(["--current-quorum", "2", "--out", name]);
    dir.run(&args).ok();
}

/// Current custodians `who` (cI.key, with their passphrase files) sign `name`.
fn current_signs(dir: &Dir, name: &str, who: &[usize]) {
    for i in who {
        let (key, pass) = (format!("c{i}.key"), format!("c{i}.pass"));
        dir.run(&[
            "manifest",
            "sign",
            "--manifest",
            name,
            "--key",
            &key,
            "--passphrase-file",
            &pass,
        ])
        .ok();
    }
}

/// New custodians `who` (nI.key, unencrypted) sign `name`.
fn new_signs(dir: &Dir, name: &str, who: impl IntoIterator<Item = usize>) {
    for i in who {
        dir.run(&["manifest", "sign", "--manifest", name, "--key", &format!("n{i}.key")])
            .ok();
    }
}

fn thumbprint(dir: &Dir, cert: &str) -> String {
    inputs::certificate(&dir.join(cert)).unwrap().x5t_256()
}

#[test]
fn a_rotation_follows_its_signed_manifest_or_is_refused() {
    let dir = Dir::new("rotate-manifest");
    dir.ceremony();
    copy_new(&dir);
    let new_certs = ["n0.cer", "n1.cer", "n2.cer"];
    let with = |m: &str| {
        let mut a = rotate_args("sd.json", &[0, 1], &new_certs, 2, "sd2.json");
        a.extend(["--manifest".to_string(), m.to_string()]);
        a
    };
    // Different parameters (quorum 3 signed, 2 asked): refused before anything is written.
    manifest(&dir, "m-quorum3.json", 3, &[0, 1, 2]);
    dir.run(&strs(&with("m-quorum3.json")))
        .fails(EXIT_INTEGRITY, &["manifest is refused", "2 of 3"]);
    assert!(!dir.exists("sd2.json.pending") && !dir.exists("sd2.json.rotation.json"));
    // Missing signatures: refused (all N by default)...
    manifest(&dir, "m-one.json", 2, &[0]);
    dir.run(&strs(&with("m-one.json")))
        .fails(EXIT_INTEGRITY, &["1 custodian(s) signed it; 3 are required"]);
    assert!(!dir.exists("sd2.json.pending"));
    // ...and a terms edit after signing is caught.
    manifest(&dir, "m-edited.json", 2, &[0, 1, 2]);
    let edited = dir.read_string("m-edited.json").replace("\"epoch\": 7", "\"epoch\": 8");
    dir.write("m-edited.json", edited);
    dir.run(&strs(&with("m-edited.json")))
        .fails(EXIT_INTEGRITY, &["does not verify"]);
    assert!(!dir.exists("sd2.json.pending"));
    // The agreed terms, signed by all: accepted, and the epoch is the manifest's.
    manifest(&dir, "m-good.json", 2, &[0, 1, 2]);
    // --epoch must agree with the signed epoch.
    let mut other_epoch = with("m-good.json");
    other_epoch.extend(["--epoch".to_string(), "8".to_string()]);
    dir.run(&strs(&other_epoch))
        .fails(EXIT_INTEGRITY, &["signed for custodian-set epoch 7, but --epoch 8"]);
    assert!(!dir.exists("sd2.json.pending"));
    dir.run(&strs(&with("m-good.json"))).ok();
    assert_eq!(util::read_json(&dir.join("sd2.json.rotation.json"))["epoch"], 7);
    // The refusals are in the log, as failures of `rotate`.
    let refused = dir
        .read_string("ceremony-log.jsonl")
        .lines()
        .filter(|l| l.contains("\"command\":\"rotate\"") && l.contains("failed: the manifest is refused"))
        .count();
    assert_eq!(refused, 4);
    dir.run(&["rotate", "cancel", "--record", "sd2.json.rotation.json"])
        .ok();
    // A manifest is signed for one step: its nonce, once used in the log, is refused.
    let mut again = rotate_args("sd.json", &[0, 1], &new_certs, 2, "sd4.json");
    again.extend(["--manifest".to_string(), "m-good.json".to_string()]);
    dir.run(&strs(&again))
        .fails(EXIT_INTEGRITY, &["its nonce was already used by line"]);
    // Epochs only increase: another manifest for epoch 7 is refused now that 7 was used.
    manifest(&dir, "m-seven.json", 2, &[0, 1, 2]);
    let mut seven = rotate_args("sd.json", &[0, 1], &new_certs, 2, "sd4.json");
    seven.extend(["--manifest".to_string(), "m-seven.json".to_string()]);
    dir.run(&strs(&seven))
        .fails(EXIT_INTEGRITY, &["already has epoch 7; epochs only increase"]);
    assert!(!dir.exists("sd4.json.pending"));
    // Fewer than M signatures is never enough, whatever --manifest-signatures says.
    manifest_at(&dir, "m-lone.json", 2, &[0], 8);
    let mut lone = rotate_args("sd.json", &[0, 1], &new_certs, 2, "sd4.json");
    lone.extend(["--manifest", "m-lone.json", "--manifest-signatures", "1"].map(String::from));
    dir.run(&strs(&lone))
        .fails(EXIT_INTEGRITY, &["1 custodian(s) signed it; 2 are required"]);
    assert!(!dir.exists("sd4.json.pending"));
    // A manifest signed by two is enough when two are asked for.
    manifest_at(&dir, "m-two.json", 2, &[0, 2], 8);
    let mut a = rotate_args("sd.json", &[0, 1], &new_certs, 2, "sd3.json");
    a.extend(["--manifest", "m-two.json", "--manifest-signatures", "2"].map(String::from));
    dir.run(&strs(&a)).ok();
    log_verifies(&dir);
}

/// Both sets sign a rotation's manifest: the current custodians it names
/// must be the old file's, and a quorum of them must have signed.
#[test]
fn a_rotation_needs_the_current_custodians_signatures() {
    let dir = Dir::new("rotate-manifest-current");
    dir.ceremony();
    dir.custodian(3);
    copy_new(&dir);
    let new_certs = ["n0.cer", "n1.cer", "n2.cer"];
    let rotate_with = |m: &str| {
        let mut a = rotate_args("sd.json", &[0, 1], &new_certs, 2, "sd2.json");
        a.extend(["--manifest".to_string(), m.to_string()]);
        dir.run(&strs(&a))
    };
    let nothing_written = || {
        for f in ["sd2.json", "sd2.json.pending", "sd2.json.rotation.json"] {
            dir.assert_absent(f);
        }
    };
    // A rotate manifest names the current set; no other manifest does.
    let base = [
        "manifest", "create", "--quorum", "2", "--epoch", "3", "--certs", "n0.cer", "n1.cer", "n2.cer",
    ];
    let mut no_current = base.to_vec();
    no_current.extend(["--purpose", "rotate", "--out", "m0.json"]);
    dir.run(&no_current).fails(
        util::EXIT_USAGE,
        &["a rotate manifest needs --current-certs", "--current-quorum"],
    );
    dir.assert_absent("m0.json");
    let mut split_current = base.to_vec();
    split_current.extend(["--purpose", "split", "--current-certs", "c0.cer", "--out", "m0.json"]);
    dir.run(&split_current).fails(
        util::EXIT_USAGE,
        &["for --purpose rotate only; a split has no current custodians"],
    );
    dir.assert_absent("m0.json");

    // Every new custodian signed, but only one current custodian of the two needed.
    rotation_manifest(
        &dir,
        "m-one-old.json",
        &new_certs,
        2,
        &["c0.cer", "c1.cer", "c2.cer"],
        3,
    );
    new_signs(&dir, "m-one-old.json", 0..3);
    current_signs(&dir, "m-one-old.json", &[2]);
    // Someone in neither set cannot sign.
    dir.run(&[
        "manifest",
        "sign",
        "--manifest",
        "m-one-old.json",
        "--key",
        "c3.key",
        "--passphrase-file",
        "c3.pass",
    ])
    .fails(util::EXIT_USAGE, &["is not one of this manifest's custodians"]);
    rotate_with("m-one-old.json").fails(
        EXIT_INTEGRITY,
        &[
            "1 current custodian(s) signed it; the security domain's quorum of 2 must",
            &thumbprint(&dir, "c0.cer"),
            "More current custodians (who open the old file) sign it",
        ],
    );
    nothing_written();

    // Current custodians that are not the old file's (c3 named, c2 left out): refused by name.
    rotation_manifest(&dir, "m-other.json", &new_certs, 2, &["c0.cer", "c1.cer", "c3.cer"], 3);
    rotate_with("m-other.json").fails(
        EXIT_INTEGRITY,
        &[
            &format!(
                "in the security domain but not the manifest: {}",
                thumbprint(&dir, "c2.cer")
            ),
            &format!(
                "in the manifest but not the security domain: {}",
                thumbprint(&dir, "c3.cer")
            ),
            "sd inspect",
        ],
    );
    nothing_written();

    // A rotate manifest as earlier versions made it (the new set only): recreate it.
    let mut old_style = util::read_json(&dir.join("m-other.json"));
    let terms = old_style["terms"].as_object_mut().unwrap();
    terms.remove("current_certificates");
    terms.remove("current_quorum");
    dir.write("m-old-style.json", serde_json::to_string_pretty(&old_style).unwrap());
    rotate_with("m-old-style.json").fails(
        EXIT_INTEGRITY,
        &["does not name the current custodians", "--current-certs"],
    );
    nothing_written();

    // The same terms with a second current signature: accepted.
    current_signs(&dir, "m-one-old.json", &[0]);
    rotate_with("m-one-old.json")
        .ok()
        .stdout_has("3 signatures (3 required), 2 current custodians (2 required)");
    let sha = hex(&<sha2::Sha256 as sha2::Digest>::digest(
        fs::read(dir.join("m-one-old.json")).unwrap(),
    ));
    let log = dir.read_string("ceremony-log.jsonl");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("\"command\":\"rotate\"")).collect();
    assert_eq!(lines.len(), 4, "three refusals and the rotation, each recorded:\n{log}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("failed: the manifest is refused"))
            .count(),
        3
    );
    assert!(
        lines[3].contains(&sha),
        "the manifest recorded by the bytes checked: {}",
        lines[3]
    );
    log_verifies(&dir);
}

/// One custodian in both sets signs once and counts for both.
#[test]
fn a_custodian_in_both_sets_signs_once() {
    let dir = Dir::new("rotate-manifest-both");
    dir.ceremony();
    copy_new(&dir);
    let new_certs = ["n0.cer", "n1.cer", "c2.cer"];
    rotation_manifest(&dir, "m.json", &new_certs, 2, &["c0.cer", "c1.cer", "c2.cer"], 3);
    new_signs(&dir, "m.json", 0..2);
    current_signs(&dir, "m.json", &[2]);
    dir.run(&[
        "manifest",
        "sign",
        "--manifest",
        "m.json",
        "--key",
        "c2.key",
        "--passphrase-file",
        "c2.pass",
    ])
    .fails(util::EXIT_USAGE, &["has already signed this manifest"]);
    current_signs(&dir, "m.json", &[0]);
    let signatures = util::read_json(&dir.join("m.json"))["signatures"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(signatures, 4, "n0, n1, c2 once, c0");
    let mut a = rotate_args("sd.json", &[0, 1], &new_certs, 2, "sd2.json");
    a.extend(["--manifest".to_string(), "m.json".to_string()]);
    dir.run(&strs(&a))
        .ok()
        .stdout_has("3 signatures (3 required), 2 current custodians (2 required)");
    assert!(dir.exists("sd2.json.pending"));
}

#[test]
fn a_split_follows_its_signed_manifest_or_is_refused() {
    let dir = Dir::new("split-manifest");
    copy_new(&dir);
    // `ceremony manifest` is accepted as another name for `manifest create`.
    dir.run(&[
        "ceremony",
        "manifest",
        "--purpose",
        "split",
        "--quorum",
        "2",
        "--epoch",
        "3",
        "--certs",
        "n0.cer",
        "n1.cer",
        "n2.cer",
        "--out",
        "m.json",
    ])
    .ok();
    new_signs(&dir, "m.json", 0..3);
    let split = |certs: &[&str], m: &str, out: &str| {
        let mut a = vec!["sd", "split", "--certs"];
        a.extend(certs);
        a.extend(["--quorum", m, "--random-contents", "--manifest", "m.json", "--out", out]);
        dir.run(&a)
    };
    split(&["n0.cer", "n2.cer", "n1.cer"], "2", "swapped.json")
        .fails(EXIT_INTEGRITY, &["manifest is refused", "order"]);
    assert!(!dir.exists("swapped.json"));
    split(&["n0.cer", "n1.cer", "n2.cer"], "3", "quorum3.json").fails(EXIT_INTEGRITY, &["manifest is refused"]);
    assert!(!dir.exists("quorum3.json"));
    split(&["n0.cer", "n1.cer", "n2.cer"], "2", "sd.json").ok();
    // The log records the refusals and the split with the manifest's epoch.
    let lines: Vec<serde_json::Value> = dir
        .read_string("ceremony-log.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let splits: Vec<&serde_json::Value> = lines.iter().filter(|l| l["command"] == "sd split").collect();
    assert_eq!(splits.len(), 3);
    assert!(splits[0]["outcome"]
        .as_str()
        .unwrap()
        .starts_with("failed: the manifest is refused"));
    assert_eq!(splits[2]["outcome"], "ok");
    assert_eq!(splits[2]["details"]["epoch"], 3);
    assert_eq!(
        splits[2]["outputs"][0]["sha256"],
        hex(&util::sha256(&dir.read("sd.json")))
    );
}

/// Spawns the binary with `args` in `dir`, kills it with SIGKILL after
/// `delay`, and reports whether it had already exited by itself.
fn run_and_kill(dir: &Dir, args: &[String], delay: Duration) -> bool {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_remove("HSM_CEREMONY_PASSPHRASE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill(); // SIGKILL on Unix
    child.wait().unwrap();
    finished
}

/// Delays spread over `0..=span`, with a little jitter from the clock.
fn delays(n: u32, span: Duration) -> Vec<Duration> {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_micros() as u64;
    (0..n)
        .map(|i| span * i / (n - 1) + Duration::from_micros((jitter * (i as u64 + 1)) % 2000))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap().flatten() {
        let mode = util::mode_of(&e.path());
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
        set_mode(&to.join(e.file_name()), mode);
    }
}

#[test]
fn kill_9_during_rotate_start_never_loses_the_security_domain() {
    let _ = fixtures();
    let base = Dir::new("rotate-kill-start-base");
    base.ceremony();
    copy_new(&base);
    let old_contents = open_with(&base, "sd.json", &["c0", "c1"]).unwrap();
    let args = rotate_args("sd.json", &[0, 1], &["n0.cer", "n1.cer", "n2.cer"], 2, "sd2.json");
    // How long an undisturbed run takes, to spread the kills over it.
    let timing = Dir::new("rotate-kill-start-timing");
    copy_dir(base.path(), timing.path());
    let t = Instant::now();
    timing.run(&strs(&args)).ok();
    let span = t.elapsed();
    let mut outcomes = (0, 0);
    for delay in delays(14, span) {
        let dir = Dir::new("rotate-kill-start");
        copy_dir(base.path(), dir.path());
        let finished = run_and_kill(&dir, &args, delay);
        // The current file is never touched by the first phase, killed or not.
        assert_eq!(dir.read("sd.json"), base.read("sd.json"), "killed after {delay:?}");
        assert_eq!(open_with(&dir, "sd.json", &["c0", "c1"]).as_ref(), Ok(&old_contents));
        assert!(!dir.exists("sd2.json"), "nothing becomes current without finalize");
        if dir.exists("sd2.json.rotation.json") {
            // A complete pending rotation: the pending file is whole and opens.
            assert_eq!(
                open_with(&dir, "sd2.json.pending", &["n0", "n1"]).as_ref(),
                Ok(&old_contents)
            );
            outcomes.1 += 1;
        } else {
            outcomes.0 += 1;
        }
        assert!(!finished || dir.exists("sd2.json.rotation.json"));
    }
    eprintln!(
        "rotate start: {} killed before the record, {} pending",
        outcomes.0, outcomes.1
    );
}

#[test]
fn kill_9_during_finalize_leaves_old_or_new_and_finalize_completes() {
    let base = Dir::new("rotate-kill-finalize-base");
    base.ceremony();
    copy_new(&base);
    base.run(&rotate_args(
        "sd.json",
        &[0, 1],
        &["n0.cer", "n1.cer", "n2.cer"],
        2,
        "sd2.json",
    ))
    .ok();
    verify(&base, "sd2.json.pending", "n0.key").ok();
    verify(&base, "sd2.json.pending", "n2.key").ok();
    let contents = open_with(&base, "sd.json", &["c0", "c2"]).unwrap();
    let pending = base.read("sd2.json.pending");
    let args: Vec<String> = ["rotate", "finalize", "--record", "sd2.json.rotation.json"]
        .map(String::from)
        .to_vec();
    let timing = Dir::new("rotate-kill-finalize-timing");
    copy_dir(base.path(), timing.path());
    let t = Instant::now();
    timing.run(&strs(&args)).ok();
    let span = t.elapsed();
    let mut seen = std::collections::BTreeSet::new();
    for delay in delays(16, span) {
        let dir = Dir::new("rotate-kill-finalize");
        copy_dir(base.path(), dir.path());
        run_and_kill(&dir, &args, delay);
        seen.insert(
            ["sd.json", "sd.json.retired", "sd2.json", "sd2.json.pending"]
                .iter()
                .filter(|f| dir.exists(f))
                .copied()
                .collect::<Vec<_>>()
                .join("+"),
        );
        // At every moment, the old file (under its name or retired) or the new one opens.
        let old_ok = ["sd.json", "sd.json.retired"]
            .iter()
            .any(|f| dir.exists(f) && open_with(&dir, f, &["c0", "c1"]).as_ref() == Ok(&contents));
        let new_ok = ["sd2.json", "sd2.json.pending"]
            .iter()
            .any(|f| dir.exists(f) && open_with(&dir, f, &["n0", "n1"]).as_ref() == Ok(&contents));
        assert!(old_ok && new_ok, "killed after {delay:?}: files {:?}", dir.listing());
        // Running finalize again completes the rotation.
        dir.run(&strs(&args)).ok();
        assert_eq!(dir.read("sd2.json"), pending, "killed after {delay:?}");
        assert_eq!(dir.read("sd.json.retired"), base.read("sd.json"));
        assert!(!dir.exists("sd.json") && !dir.exists("sd2.json.pending"));
        assert_eq!(
            util::read_json(&dir.join("sd2.json.rotation.json"))["state"],
            "finalized"
        );
    }
    eprintln!("finalize killed with these files present: {seen:?} (finalize takes {span:?})");
}

/// Checks that `dir` holds a finished rotation from `base`: the pending file
/// at `sd2.json`, the old one retired byte for byte.
#[track_caller]
fn assert_finalized(dir: &Dir, base: &Dir, pending: &[u8]) {
    assert_eq!(dir.read("sd2.json"), pending);
    assert_eq!(dir.read("sd.json.retired"), base.read("sd.json"));
    assert!(!dir.exists("sd.json") && !dir.exists("sd2.json.pending"));
    assert_eq!(
        util::read_json(&dir.join("sd2.json.rotation.json"))["state"],
        "finalized"
    );
}

/// Deterministic crashes: SIGKILL between every two steps of `rotate` and
/// `rotate finalize` (the binary's `HSM_CEREMONY_KILL_AT` test hook).
#[test]
fn kill_9_between_every_two_steps_is_recoverable() {
    use hsm_ceremony::ceremony::rotation::KILL_POINTS;
    let base = Dir::new("rotate-points-base");
    base.ceremony();
    copy_new(&base);
    let contents = open_with(&base, "sd.json", &["c0", "c1"]).unwrap();
    let start = rotate_args("sd.json", &[0, 1], &["n0.cer", "n1.cer", "n2.cer"], 2, "sd2.json");
    let proved = Dir::new("rotate-points-proved");
    copy_dir(base.path(), proved.path());
    proved.run(&strs(&start)).ok();
    verify(&proved, "sd2.json.pending", "n0.key").ok();
    verify(&proved, "sd2.json.pending", "n1.key").ok();
    let pending = proved.read("sd2.json.pending");
    let finalize = ["rotate", "finalize", "--record", "sd2.json.rotation.json"];
    for point in KILL_POINTS {
        let dir = Dir::new("rotate-point");
        let killed = |args: &[&str]| {
            let out = dir.run_with(args, |c| {
                c.env("HSM_CEREMONY_KILL_AT", point);
            });
            assert_eq!(
                out.code, -1,
                "not killed at {point} (a binary built without the test-hooks feature?): {out:?}"
            );
        };
        if point.starts_with("start:") {
            copy_dir(base.path(), dir.path());
            killed(&strs(&start));
            assert_eq!(dir.read("sd.json"), base.read("sd.json"), "{point}");
            assert!(!dir.exists("sd2.json"), "{point}");
            // Whatever was written is whole: the pending file opens for the new custodians.
            assert_eq!(
                open_with(&dir, "sd2.json.pending", &["n0", "n2"]).as_ref(),
                Ok(&contents)
            );
            if point == "start:pending-written" {
                // No record: the rotation never started; running it again says so and what to do.
                dir.run(&strs(&start)).fails(
                    util::EXIT_INPUT,
                    &[
                        "sd2.json.pending is left from a rotation that stopped before its record \
                         sd2.json.rotation.json was written; nothing took effect",
                        "Delete sd2.json.pending and run rotate again.",
                    ],
                );
                assert_eq!(dir.read("sd.json"), base.read("sd.json"));
                dir.remove("sd2.json.pending");
                dir.run(&strs(&start)).ok();
                assert!(dir.exists("sd2.json.rotation.json"), "{point}");
                continue;
            }
            // The record was saved: the rotation carries on as if nothing happened.
            verify(&dir, "sd2.json.pending", "n0.key").ok();
            verify(&dir, "sd2.json.pending", "n2.key").ok();
            dir.run(&finalize).ok();
            assert_eq!(
                open_with(&dir, "sd2.json", &["n0", "n1"]).as_ref(),
                Ok(&contents),
                "{point}"
            );
            assert_eq!(dir.read("sd.json.retired"), base.read("sd.json"), "{point}");
        } else {
            copy_dir(proved.path(), dir.path());
            killed(&finalize);
            let old_ok = ["sd.json", "sd.json.retired"]
                .iter()
                .any(|f| dir.exists(f) && open_with(&dir, f, &["c0", "c2"]).as_ref() == Ok(&contents));
            let new_ok = ["sd2.json", "sd2.json.pending"]
                .iter()
                .any(|f| dir.exists(f) && open_with(&dir, f, &["n1", "n2"]).as_ref() == Ok(&contents));
            assert!(old_ok && new_ok, "killed at {point}: files {:?}", dir.listing());
            dir.run(&finalize).ok();
            assert_finalized(&dir, &base, &pending);
        }
        dir.run(&["log", "verify", "ceremony-log.jsonl"]).ok();
    }
}

/// A new set that cannot be split is refused before any old custodian is
/// asked for a passphrase (no passphrase source is given here: a prompt
/// would fail with "no terminal" instead).
#[test]
fn a_weak_new_set_is_refused_before_anyone_types_a_passphrase() {
    let dir = Dir::new("rotate-weak-set");
    dir.ceremony();
    copy_new(&dir);
    let rotate = |new_certs: &[&str], m: &str| {
        let mut args = vec![
            "rotate",
            "--sd-file",
            "sd.json",
            "--sd-wrapping-keys",
            "c0.key",
            "c1.key",
        ];
        args.push("--new-certs");
        args.extend_from_slice(new_certs);
        args.extend(["--quorum", m, "--out", "sd2.json"]);
        dir.run(&args)
    };
    rotate(&["n0.cer", "n1.cer"], "2").fails(EXIT_INPUT, &["2 custodians is outside the allowed 3 to 10"]);
    rotate(&["n0.cer", "n1.cer", "n2.cer"], "4").fails(EXIT_INPUT, &["a quorum of 4 is outside"]);
    rotate(&["n0.cer", "n1.cer", "n0.cer"], "2").fails(EXIT_INPUT, &["n0.cer is the same certificate as n0.cer"]);
    for out in ["sd2.json", "sd2.json.pending", "sd2.json.rotation.json"] {
        assert!(!dir.exists(out), "{out}");
    }
}

/// A started rotation (2 of n0..n2, from sd.json to sd2.json) with one proof (n0): one short of finalize.
fn started_with_one_proof(name: &str) -> Dir {
    let dir = Dir::new(name);
    dir.ceremony();
    copy_new(&dir);
    dir.run(&rotate_args(
        "sd.json",
        &[0, 1],
        &["n0.cer", "n1.cer", "n2.cer"],
        2,
        "sd2.json",
    ))
    .ok();
    verify(&dir, "sd2.json.pending", "n0.key").ok();
    dir
}

/// One way of editing a rotation record.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

fn edit_record(dir: &Dir, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v = util::read_json(&dir.join("sd2.json.rotation.json"));
    edit(&mut v);
    dir.remove("sd2.json.rotation.json");
    dir.write("sd2.json.rotation.json", serde_json::to_vec_pretty(&v).unwrap());
}

/// Regression: finalize trusted the numbers in `.rotation.json`, so editing
/// `required_proofs` (or the quorum, or the custodians) to what one person
/// could meet finalized without the proofs. They are recomputed from the
/// pending file and the log, and an edited record is refused.
#[test]
fn an_edited_record_cannot_consent_to_finalize() {
    let finalize = ["rotate", "finalize", "--record", "sd2.json.rotation.json"];
    let edits: Vec<(&str, Edit)> = vec![
        ("required_proofs 1", Box::new(|v| v["required_proofs"] = 1.into())),
        ("required_proofs 0", Box::new(|v| v["required_proofs"] = 0.into())),
        (
            "quorum 1",
            Box::new(|v| {
                v["quorum"] = 1.into();
                v["required_proofs"] = 1.into();
            }),
        ),
        (
            "one custodian",
            Box::new(|v| {
                let first = v["custodians"][0].clone();
                v["custodians"] = serde_json::json!([first]);
                v["required_proofs"] = 1.into();
            }),
        ),
        ("another log", Box::new(|v| v["log"] = "forged-log.jsonl".into())),
        ("another target", Box::new(|v| v["target"] = "elsewhere.json".into())),
    ];
    for (what, edit) in edits {
        let dir = started_with_one_proof("rotate-edited");
        let old = dir.read("sd.json");
        edit_record(&dir, edit);
        let out = dir.run(&finalize);
        assert_eq!(out.code, EXIT_INTEGRITY, "{what}: {out:?}");
        out.stderr_has("the rotation record sd2.json.rotation.json is refused");
        assert_eq!(dir.read("sd.json"), old, "{what}: the current file was touched");
        assert!(!dir.exists("sd2.json") && !dir.exists("sd.json.retired"), "{what}");
    }
    // Untouched, the record is one proof short (exit 5), as it should be.
    let dir = started_with_one_proof("rotate-unedited");
    dir.run(&finalize).fails(EXIT_QUORUM, &["only 1 of the 2"]);
}

/// Regression: `rotate cancel` deleted whatever file the record named as
/// pending, so an edited record could make it delete the current file.
#[test]
fn cancel_deletes_only_the_pending_file_it_wrote() {
    let dir = started_with_one_proof("rotate-cancel-edited");
    let old = dir.read("sd.json");
    let sha = hex(&util::sha256(&old));
    edit_record(&dir, |v| {
        v["pending"] = serde_json::json!({"path": "sd.json", "sha256": sha})
    });
    dir.run(&["rotate", "cancel", "--record", "sd2.json.rotation.json"])
        .fails(EXIT_INTEGRITY, &["is refused", "as the pending file"]);
    assert_eq!(dir.read("sd.json"), old);
    assert!(dir.exists("sd2.json.pending"));
}

/// Finalize retires only the file the rotation started from, and never
/// removes a current file it has not kept: a changed current file, or a
/// `.retired` that is another file, stops it before anything moves.
#[test]
fn finalize_retires_only_the_file_it_started_from() {
    let finalize = ["rotate", "finalize", "--record", "sd2.json.rotation.json"];
    // The current file changed since the rotation started.
    let dir = started_with_one_proof("rotate-old-changed");
    verify(&dir, "sd2.json.pending", "n1.key").ok();
    let other = fixtures().dir().join("sd.json");
    let mut changed = fs::read(other).unwrap();
    changed.push(b'\n');
    dir.remove("sd.json");
    dir.write("sd.json", &changed);
    dir.run(&finalize)
        .fails(EXIT_INTEGRITY, &["sd.json is not the file the rotation started from"]);
    assert_eq!(dir.read("sd.json"), changed);
    assert!(!dir.exists("sd2.json") && !dir.exists("sd.json.retired"));
    // A .retired from an earlier rotation is another file: it is not taken for this one.
    let dir = started_with_one_proof("rotate-retired-taken");
    verify(&dir, "sd2.json.pending", "n1.key").ok();
    let old = dir.read("sd.json");
    dir.write("sd.json.retired", b"an earlier security domain");
    dir.run(&finalize).fails(
        EXIT_INTEGRITY,
        &["sd.json.retired is not the file the rotation started from"],
    );
    assert_eq!(
        dir.read("sd.json"),
        old,
        "the current file was removed without being kept"
    );
    assert_eq!(dir.read("sd.json.retired"), b"an earlier security domain");
    // Moved away, finalize completes.
    dir.remove("sd.json.retired");
    dir.run(&finalize).ok();
    assert_eq!(dir.read("sd.json.retired"), old);
}

/// After finalize, every old copy's destruction is logged (its SHA-256 read
/// before it goes) and countersigned; the current file is refused.
#[test]
fn old_copies_are_logged_as_destroyed_and_the_current_one_is_refused() {
    let dir = started_with_one_proof("rotate-destroyed");
    verify(&dir, "sd2.json.pending", "n1.key").ok();
    dir.run(&["rotate", "finalize", "--record", "sd2.json.rotation.json"])
        .ok();
    let log = "ceremony-log.jsonl";
    let lines = |dir: &Dir| dir.read_string(log).lines().count();
    let before = lines(&dir);
    let destroyed = |args: &[&str]| {
        let mut a = vec!["log", "destroyed", log];
        a.extend(args);
        dir.run(&a)
    };
    // Refusals: the current file, a file that is no security domain, a bad SHA-256, an empty --copy, no log.
    destroyed(&["--file", "sd2.json"]).fails(
        EXIT_INPUT,
        &[
            "sd2.json is the current security domain",
            "rotate finalize",
            "Do not destroy it",
        ],
    );
    destroyed(&["--file", "c0.cer"]).fails(EXIT_INPUT, &["c0.cer is not a valid security-domain file"]);
    destroyed(&["--copy", "safe A", "--sha256", "abc"]).fails(util::EXIT_USAGE, &["is not a SHA-256"]);
    destroyed(&["--sha256", &"ab".repeat(32)]).fails(util::EXIT_USAGE, &["--copy"]);
    destroyed(&["--copy", " ", "--sha256", &"ab".repeat(32)]).fails(util::EXIT_USAGE, &["--copy is empty"]);
    destroyed(&[]).fails(util::EXIT_USAGE, &[]);
    dir.run(&["log", "destroyed", "other-log.jsonl", "--file", "sd.json.retired"])
        .fails(util::EXIT_USAGE, &["other-log.jsonl does not exist"]);
    assert_eq!(lines(&dir), before, "a refusal appends nothing");
    dir.assert_absent("other-log.jsonl");

    // Until then, the new file's health names the retired one.
    let health = || dir.run(&["sd", "health", "sd2.json", "--certs", "n0.cer", "n1.cer", "n2.cer"]);
    let out = health();
    assert_eq!(out.code, 8, "at risk: {out:?}");
    assert!(
        out.stderr.contains("sd.json") && out.stderr.contains("has no `log destroyed` line"),
        "{out:?}"
    );
    let sha = hex(&util::sha256(&dir.read("sd.json.retired")));
    destroyed(&["--file", "sd.json.retired"]).ok().stdout_has(&format!(
        "line {}: sd.json.retired (sha256 {sha}) recorded as destroyed",
        before + 1
    ));
    destroyed(&["--copy", "safe A: stick 1", "--sha256", &sha]).ok();
    let out = health();
    assert!(
        !out.stderr.contains("log destroyed") && !out.stdout.contains("log destroyed"),
        "{out:?}"
    );
    let text = dir.read_string(log);
    let recorded: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["command"] == "log destroyed")
        .collect();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0]["inputs"][0]["sha256"], sha.as_str());
    assert_eq!(recorded[0]["details"]["declared"], false);
    assert_eq!(
        recorded[0]["thumbprints"].as_array().unwrap().len(),
        3,
        "the old file's custodians"
    );
    assert_eq!(recorded[1]["inputs"][0]["path"], "safe A: stick 1");
    assert_eq!(recorded[1]["details"]["declared"], true);
    // An old custodian countersigns the line, before their key is destroyed too.
    let line = (before + 1).to_string();
    dir.run(&[
        "log",
        "sign",
        log,
        "--line",
        &line,
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ])
    .ok();
    log_verifies(&dir);
}
