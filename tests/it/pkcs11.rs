//! Custodian keys on PKCS#11 tokens, with SoftHSM2 (Debian's `softhsm2`)
//! and opencryptoki's soft token (`opencryptoki`, see [`Ock`]), both
//! installed by `.ci/run`; the whole flow runs on each ([`the_whole_flow`]). Each test has its own SoftHSM configuration and
//! token folder (SOFTHSM2_CONF), so tests never see each other's tokens.
//! A missing SoftHSM2 fails the tests: it is never a silent pass.
//!
//! SoftHSM 2.6.1 (Debian 12's softhsm2) refuses CKM_RSA_PKCS_OAEP with SHA-256
//! (CKR_ARGUMENTS_BAD; it does SHA-1 only), so it is also the token that
//! does not support OAEP-SHA-256: its keys are made with `--oaep-on-host`
//! and named with `x-oaep=host`, and the refusal itself is tested.

use crate::util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm_ceremony::ceremony::manifest::Manifest;
use hsm_ceremony::inputs;
use hsm_ceremony::recovery::{contents_fingerprint, open_restore_blob};
use util::{fixtures, Dir, Output, EXIT_INPUT, EXIT_INTEGRITY, EXIT_QUORUM, EXIT_USAGE};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234-user";
const SO_PIN: &str = "5678-so";

/// A test folder with its own SoftHSM2 configuration and token store.
struct Hsm {
    dir: Dir,
    conf: PathBuf,
}

impl Hsm {
    #[track_caller]
    fn new(test: &str) -> Hsm {
        assert!(
            Path::new(MODULE).is_file(),
            "SoftHSM2 is not installed ({MODULE} is missing): run `apt-get install softhsm2` (.ci/run does). \
             The PKCS#11 tests need it and do not pass without it."
        );
        let dir = Dir::new(test);
        let tokens = dir.join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.write(
            "softhsm2.conf",
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        );
        dir.write_secret("pin", format!("{PIN}\n"));
        dir.write_secret("wrong-pin", "0000-wrong\n");
        Hsm { dir, conf }
    }

    /// A new token labelled `label`, user PIN [`PIN`].
    fn token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("softhsm2-util runs (apt-get install softhsm2)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs the binary with this folder's SoftHSM and no PIN in the environment.
    fn run(&self, args: &[&str]) -> Output {
        self.dir.run_with(args, |c| {
            c.env("SOFTHSM2_CONF", &self.conf).env_remove("HSM_CEREMONY_PIN");
        })
    }

    /// `custodian keygen --token` for `name` on token `name`; returns the key URI printed.
    fn keygen(&self, name: &str) -> String {
        self.token(name);
        let out = self.run(&[
            "custodian",
            "keygen",
            "--pkcs11-module",
            MODULE,
            "--token",
            name,
            "--name",
            name,
            "--bits",
            "2048",
            "--pin-file",
            "pin",
            "--oaep-on-host",
        ]);
        out.ok().stdout_has("key URI       pkcs11:");
        let uri = out
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("key URI"))
            .unwrap()
            .trim()
            .to_string();
        assert!(
            uri.starts_with(&format!("pkcs11:token={name};object={name};id=")),
            "{uri}"
        );
        assert!(
            uri.ends_with("?module-path=/usr/lib/softhsm/libsofthsm2.so&x-oaep=host"),
            "{uri}"
        );
        uri
    }

    /// Runs `f` with a logged-in read-write session on token `label`, through
    /// cryptoki in this process (see [`with_module`]).
    fn with_session<T>(&self, label: &str, f: impl FnOnce(&cryptoki::session::Session) -> T) -> T {
        with_module(&self.conf, |ctx| {
            let slot = ctx
                .get_slots_with_token()
                .unwrap()
                .into_iter()
                .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
                .unwrap();
            let session = ctx.open_rw_session(slot).unwrap();
            session.login(UserType::User, Some(&AuthPin::from(PIN))).unwrap();
            f(&session)
        })
    }
}

/// Runs `f` with SoftHSM loaded in this test process for configuration
/// `conf`. Tests run in parallel threads of one process and the module is
/// one per process, so each use is serialised and ends with C_Finalize.
fn with_module<T>(conf: &Path, f: impl FnOnce(&Pkcs11) -> T) -> T {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SoftHSM reads the variable at C_Initialize; only this thread touches it while the lock is held.
    std::env::set_var("SOFTHSM2_CONF", conf);
    let ctx = Pkcs11::new(MODULE).unwrap();
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let out = f(&ctx);
    ctx.finalize().unwrap();
    out
}

fn uri(token: &str, object: &str) -> String {
    format!("pkcs11:token={token};object={object}?module-path={MODULE}&x-oaep=host")
}

/// Whether this SoftHSM is one that refuses OAEP with SHA-256 (before 2.7).
fn softhsm_lacks_oaep_sha256(hsm: &Hsm) -> bool {
    let (major, minor) = with_module(&hsm.conf, |ctx| {
        let v = ctx.get_library_info().unwrap().library_version();
        (v.major(), v.minor())
    });
    (major, minor) < (2, 7)
}

/// Opens `blob` with the shared exchange key, as the target instance would.
fn blob_fingerprint(blob: &Path) -> String {
    let f = fixtures();
    let blob = inputs::restore_blob(blob).unwrap();
    let key = inputs::key_file(&f.path("exchange.key"))
        .unwrap()
        .into_key(None)
        .unwrap();
    let cert = inputs::certificate(&f.path("exchange.cer")).unwrap();
    contents_fingerprint(&open_restore_blob(&blob, &key, &cert).unwrap())
}

/// `sd split` to alice and bob (token keys) and c0 (a key file), 2 of 3.
fn mixed_ceremony(hsm: &Hsm) -> (String, String) {
    let alice = hsm.keygen("alice");
    let bob = hsm.keygen("bob");
    hsm.dir.custodian(0);
    hsm.dir.copy(&["exchange.cer"]);
    hsm.run(&[
        "sd",
        "split",
        "--certs",
        "alice.cer",
        "bob.cer",
        "c0.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd.json",
    ])
    .ok();
    (alice, bob)
}

fn restore(hsm: &Hsm, keys: &[&str], out: &str, extra: &[&str]) -> Output {
    let mut args = util::restore_blob_args(keys, &[], out);
    args.extend(extra.iter().map(|a| a.to_string()));
    hsm.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn keygen_on_a_token_leaves_only_the_certificate_on_disk() {
    let hsm = Hsm::new("p11-keygen");
    let alice = hsm.keygen("alice");
    assert_eq!(
        hsm.dir.listing(),
        [
            "alice.cer",
            "ceremony-log.jsonl",
            "ceremony-log.jsonl.head",
            "pin",
            "softhsm2.conf",
            "tokens",
            "wrong-pin"
        ]
    );
    let cert = inputs::certificate(&hsm.dir.join("alice.cer")).unwrap();
    // Regression: keygen on a token wrote no ceremony-log line, though every keygen is logged.
    let log = hsm.dir.read_string("ceremony-log.jsonl");
    let line: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(line["command"], "custodian keygen", "{log}");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["thumbprints"][0], cert.x5t_256());
    assert_eq!(line["details"]["token"], "alice");
    assert_eq!(line["details"]["key"], alice.as_str());
    assert!(!log.contains(PIN), "the PIN was logged");
    hsm.run(&["log", "verify", "ceremony-log.jsonl"]).ok();
    assert!(cert.subject.contains("CN=alice"), "{}", cert.subject);
    // The private key is sensitive and not extractable; the certificate is on the token too.
    let (attrs, value) = hsm.with_session("alice", |s| {
        let private = s
            .find_objects(&[Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY)])
            .unwrap();
        assert_eq!(private.len(), 1);
        let attrs = s
            .get_attributes(
                private[0],
                &[
                    cryptoki::object::AttributeType::Sensitive,
                    cryptoki::object::AttributeType::Extractable,
                    cryptoki::object::AttributeType::Decrypt,
                    cryptoki::object::AttributeType::Sign,
                ],
            )
            .unwrap();
        let certs = s
            .find_objects(&[Attribute::Class(cryptoki::object::ObjectClass::CERTIFICATE)])
            .unwrap();
        assert_eq!(certs.len(), 1);
        (
            attrs,
            s.get_attributes(certs[0], &[cryptoki::object::AttributeType::Value])
                .unwrap(),
        )
    });
    for want in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::Sign(true),
    ] {
        assert!(attrs.contains(&want), "{want:?} not in {attrs:?}");
    }
    assert_eq!(value, [Attribute::Value(cert.der().to_vec())]);
    // The same name again is refused rather than making a second key.
    hsm.dir.remove("alice.cer");
    hsm.run(&[
        "custodian",
        "keygen",
        "--pkcs11-module",
        MODULE,
        "--token",
        "alice",
        "--name",
        "alice",
        "--pin-file",
        "pin",
    ])
    .fails(
        EXIT_INPUT,
        &["token 'alice' already holds a private key labelled 'alice'"],
    );
    assert!(alice.contains("module-path=/usr/lib/softhsm/libsofthsm2.so"), "{alice}");
}

#[test]
fn a_security_domain_with_token_and_file_custodians_restores() {
    let hsm = Hsm::new("p11-mixed");
    let (alice, bob) = mixed_ceremony(&hsm);

    // One token key and one key file.
    restore(
        &hsm,
        &[&alice, "c0.key"],
        "blob1.json",
        &["--pin-file", "pin", "--passphrase-file", "c0.pass"],
    )
    .ok()
    .stdout_has("opened for pkcs11:token=alice;object=alice;id=")
    .stdout_has("(certificate on token 'alice') (1 of 2 needed)")
    .stdout_has("opened for c0.key (certificate c0.cer) (2 of 2 needed)");

    // Two token keys, one PIN file each; the second given as a hand-written URI.
    restore(
        &hsm,
        &[&alice, &uri("bob", "bob")],
        "blob2.json",
        &["--pin-file", "pin", "--pin-file", "pin"],
    )
    .ok()
    .stdout_has("(2 of 2 needed)");
    assert_eq!(
        blob_fingerprint(&hsm.dir.join("blob1.json")),
        blob_fingerprint(&hsm.dir.join("blob2.json"))
    );

    // The PIN from the environment, and the certificate given with --cert instead of read from the token.
    let out = hsm.dir.run_with(
        &[
            "restore-blob",
            "--sd-file",
            "sd.json",
            "--sd-exchange-key",
            "exchange.cer",
            "--out",
            "blob3.json",
            "--sd-wrapping-keys",
            &bob,
            "c0.key",
            "--cert",
            "bob.cer",
            "--passphrase-file",
            "c0.pass",
        ],
        |c| {
            c.env("SOFTHSM2_CONF", &hsm.conf).env("HSM_CEREMONY_PIN", PIN);
        },
    );
    out.ok().stdout_has("(certificate bob.cer) (1 of 2 needed)");
    assert_eq!(
        blob_fingerprint(&hsm.dir.join("blob3.json")),
        blob_fingerprint(&hsm.dir.join("blob1.json"))
    );
}

#[test]
fn the_pin_is_asked_at_a_hidden_prompt_naming_the_token() {
    let hsm = Hsm::new("p11-pin-prompt");
    let (alice, _) = mixed_ceremony(&hsm);
    let verify = ["custodian", "verify", "--sd-file", "sd.json", "--key", &alice];
    let on_terminal = || {
        util::pty::on_terminal_with(&hsm.dir, &verify, |c| {
            c.env("SOFTHSM2_CONF", &hsm.conf);
        })
    };
    let mut s = on_terminal();
    let mut seen = s.exp_string("PIN for token 'alice'").unwrap();
    s.send_line(PIN).unwrap();
    let (rest, code) = util::pty::finish(s);
    seen += &rest;
    assert_eq!(code, 0, "{seen}");
    assert!(seen.contains("share x=1 of 3 opens"), "{seen}");
    assert!(!seen.contains(PIN), "the PIN was echoed:\n{seen}");

    let mut s = on_terminal();
    s.exp_string("PIN for token 'alice'").unwrap();
    s.send_line("0000-wrong").unwrap();
    let (rest, code) = util::pty::finish(s);
    assert_eq!(code, EXIT_INTEGRITY, "{rest}");
    assert!(rest.contains("the PIN for token 'alice' is wrong"), "{rest}");
    assert!(!rest.contains("0000-wrong"), "the PIN was echoed:\n{rest}");
}

#[test]
fn custodian_verify_takes_a_token_uri() {
    let hsm = Hsm::new("p11-verify");
    let (alice, bob) = mixed_ceremony(&hsm);
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &alice,
        "--pin-file",
        "pin",
    ])
    .ok()
    .stdout_has("share x=1 of 3 opens for pkcs11:token=alice");
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &uri("bob", "bob"),
        "--cert",
        "bob.cer",
        "--pin-file",
        "pin",
    ])
    .ok()
    .stdout_has("share x=2 of 3 opens for");
    // With no certificate on the token and none given, the key finds its share by trying them.
    hsm.with_session("bob", |s| {
        for cert in s
            .find_objects(&[Attribute::Class(cryptoki::object::ObjectClass::CERTIFICATE)])
            .unwrap()
        {
            s.destroy_object(cert).unwrap();
        }
    });
    let out = hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &bob,
        "--pin-file",
        "pin",
    ]);
    out.ok().stdout_has("share x=2 of 3 opens for pkcs11:token=bob");
    assert!(!out.stdout.contains("(certificate"), "{}", out.stdout);
    // A token key with another's certificate is refused.
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &bob,
        "--cert",
        "alice.cer",
        "--pin-file",
        "pin",
    ])
    .fails(EXIT_INTEGRITY, &["does not belong to the certificate alice.cer"]);
}

#[test]
fn rotate_manifest_and_log_take_token_keys() {
    let hsm = Hsm::new("p11-sign");
    let alice = hsm.keygen("alice");
    hsm.dir.custodian(0);
    hsm.dir.custodian(1);
    hsm.run(&[
        "manifest",
        "create",
        "--purpose",
        "split",
        "--quorum",
        "2",
        "--epoch",
        "1",
        "--certs",
        "alice.cer",
        "c0.cer",
        "c1.cer",
        "--out",
        "m.json",
    ])
    .ok();
    hsm.run(&[
        "manifest",
        "sign",
        "--manifest",
        "m.json",
        "--key",
        &alice,
        "--pin-file",
        "pin",
    ])
    .ok()
    .stdout_has("signed by pkcs11:token=alice")
    .stdout_has("1 of 3 custodians have signed");
    // The signature verifies against the certificate.
    let m = Manifest::from_json(&hsm.dir.read("m.json")).unwrap();
    let certs = [
        inputs::certificate(&hsm.dir.join("alice.cer")).unwrap(),
        inputs::certificate(&hsm.dir.join("c0.cer")).unwrap(),
        inputs::certificate(&hsm.dir.join("c1.cer")).unwrap(),
    ];
    // One valid signature counted: short of the quorum of two, but not refused as forged.
    let expected = hsm_ceremony::ceremony::manifest::Expected {
        purpose: hsm_ceremony::ceremony::manifest::Purpose::Split,
        certs: &certs,
        quorum: 2,
        signatures: 1,
        current: None,
    };
    let refused = m.check(&expected, &[]).unwrap_err();
    assert!(
        matches!(
            refused,
            hsm_ceremony::error::ManifestRefusal::TooFewSignatures { signed: 1, .. }
        ),
        "{refused}"
    );

    // A rotation opened by two token keys is logged; a token countersigns the line.
    let bob = hsm.keygen("bob");
    hsm.dir.custodian(2);
    hsm.run(&[
        "sd",
        "split",
        "--certs",
        "alice.cer",
        "bob.cer",
        "c0.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd.json",
    ])
    .ok();
    hsm.run(&[
        "rotate",
        "--sd-file",
        "sd.json",
        "--sd-wrapping-keys",
        &alice,
        &bob,
        "--new-certs",
        "c1.cer",
        "c2.cer",
        "alice.cer",
        "--quorum",
        "2",
        "--out",
        "sd2.json",
        "--pin-file",
        "pin",
    ])
    .ok();
    // A new custodian proves possession with the token.
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd2.json.pending",
        "--key",
        &alice,
        "--pin-file",
        "pin",
    ])
    .ok()
    .stdout_has("share x=3 of 3 opens for");
    hsm.run(&[
        "log",
        "sign",
        "ceremony-log.jsonl",
        "--line",
        "1",
        "--key",
        &alice,
        "--pin-file",
        "pin",
    ])
    .ok()
    .stdout_has("line 1 countersigned by pkcs11:token=alice");
    hsm.run(&["log", "verify", "ceremony-log.jsonl"]).ok();
    // A countersignature altered afterwards is caught, so the check above can fail.
    let text = hsm.dir.read_string("ceremony-log.jsonl");
    let last = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    let sig = v
        .pointer("/details/signature")
        .and_then(|s| s.as_str())
        .unwrap()
        .to_string();
    let flipped = format!("{}{}", if sig.starts_with('A') { "B" } else { "A" }, &sig[1..]);
    hsm.dir.write("ceremony-log.jsonl", text.replace(&sig, &flipped));
    let out = hsm.run(&["log", "verify", "ceremony-log.jsonl"]);
    assert_ne!(out.code, 0, "{out:?}");
}

#[test]
fn a_wrong_pin_is_named_and_fails() {
    let hsm = Hsm::new("p11-wrong-pin");
    let (alice, _) = mixed_ceremony(&hsm);
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &alice,
        "--pin-file",
        "wrong-pin",
    ])
    .fails(
        EXIT_INTEGRITY,
        &["the PIN for token 'alice' is wrong", "user PIN (not the SO PIN)"],
    );
    // In a restore the custodian is skipped and named in the quorum failure.
    restore(
        &hsm,
        &[&alice, "c0.key"],
        "blob.json",
        &["--pin-file", "wrong-pin", "--passphrase-file", "c0.pass"],
    )
    .fails(
        EXIT_QUORUM,
        &["the PIN for token 'alice' is wrong", "1 share(s) opened"],
    );
    hsm.dir.assert_absent("blob.json");
}

#[test]
fn a_missing_token_is_named_and_fails() {
    let hsm = Hsm::new("p11-no-token");
    hsm.token("alice");
    hsm.dir.copy(&["sd.json"]);
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &uri("carol", "carol"),
        "--pin-file",
        "pin",
    ])
    .fails(
        EXIT_INPUT,
        &[
            "no token labelled 'carol' is present in /usr/lib/softhsm/libsofthsm2.so (present: 'alice')",
            "Insert the token",
        ],
    );
    let bad_module = "pkcs11:token=alice;object=a?module-path=/nonexistent/p11.so";
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        bad_module,
        "--pin-file",
        "pin",
    ])
    .fails(EXIT_INPUT, &["the PKCS#11 module /nonexistent/p11.so cannot be loaded"]);
    // A key that is not on the token.
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &uri("alice", "nobody"),
        "--pin-file",
        "pin",
    ])
    .fails(
        EXIT_INPUT,
        &["no RSA private key 'nobody' is on token 'alice'", "--list-objects"],
    );
}

/// A 2048-bit RSA key pair made on token `token` by hand, labelled `label`
/// with CKA_ID `id`, its private half carrying `usage` attributes.
fn hand_made_key(hsm: &Hsm, token: &str, label: &str, id: u8, usage: &[Attribute]) {
    hsm.with_session(token, |s| {
        let public = [
            Attribute::Token(true),
            Attribute::ModulusBits(2048u64.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(vec![id]),
        ];
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(vec![id]),
        ];
        private.extend_from_slice(usage);
        s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .unwrap();
    });
}

/// `custodian verify` of key `object` on token `alice`, with the PIN file.
fn verify_token_key(hsm: &Hsm, object: &str) -> Output {
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &uri("alice", object),
        "--pin-file",
        "pin",
    ])
}

#[test]
fn a_key_that_may_not_decrypt_is_refused() {
    let hsm = Hsm::new("p11-no-decrypt");
    hsm.token("alice");
    hsm.dir.copy(&["sd.json"]);
    hand_made_key(
        &hsm,
        "alice",
        "signer",
        7,
        &[Attribute::Decrypt(false), Attribute::Sign(true)],
    );
    verify_token_key(&hsm, "signer").fails(
        EXIT_INPUT,
        &[
            "the key 'signer' (id 07) on token 'alice' may not decrypt (its CKA_DECRYPT attribute is false)",
            "custodian keygen --pkcs11-module",
        ],
    );
}

#[test]
fn a_key_that_asks_for_its_pin_before_every_use_is_refused() {
    let hsm = Hsm::new("p11-always-auth");
    hsm.token("alice");
    hsm.dir.copy(&["sd.json"]);
    hand_made_key(
        &hsm,
        "alice",
        "piv",
        9,
        &[Attribute::Decrypt(true), Attribute::AlwaysAuthenticate(true)],
    );
    verify_token_key(&hsm, "piv").fails(
        EXIT_INPUT,
        &[
            "the key 'piv' (id 09) on token 'alice' asks for its PIN again before every use (CKA_ALWAYS_AUTHENTICATE)",
            "slot 9d with PIN policy 'once'",
        ],
    );
}

#[test]
fn pins_never_come_from_the_command_line() {
    let hsm = Hsm::new("p11-pin-sources");
    hsm.token("alice");
    hsm.dir.copy(&["sd.json"]);
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &uri("alice", "a"),
        "--pin",
        PIN,
    ])
    .fails(EXIT_USAGE, &["--pin"]);
    let in_uri = format!("{}&pin-value={PIN}", uri("alice", "a"));
    // Refused as the command line is read, and the PIN is not repeated back.
    hsm.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", &in_uri])
        .fails(EXIT_USAGE, &["'--key <KEY>'", "pin-value", "refused", "--pin-file"])
        .stderr_lacks(PIN);
    // No PIN source and no terminal: told where a PIN can come from.
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &uri("alice", "a"),
    ])
    .fails(
        EXIT_USAGE,
        &["no terminal to ask on; give --pin-file or HSM_CEREMONY_PIN"],
    );
    // A pin-source file in the URI is read.
    let with_file = format!(
        "{}&pin-source=file:{}",
        uri("alice", "a"),
        hsm.dir.join("wrong-pin").display()
    );
    hsm.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", &with_file])
        .fails(EXIT_INTEGRITY, &["the PIN for token 'alice' is wrong"]);
    // Regression: PIN files that others could read were used; now refused like key files.
    hsm.dir.chmod("wrong-pin", 0o644);
    hsm.run(&["custodian", "verify", "--sd-file", "sd.json", "--key", &with_file])
        .fails(
            EXIT_INPUT,
            &[
                "wrong-pin can be read by other users",
                "a PIN file must be readable by its owner only",
                "chmod 600",
            ],
        );
    hsm.dir.chmod("pin", 0o640);
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &uri("alice", "a"),
        "--pin-file",
        "pin",
    ])
    .fails(EXIT_INPUT, &["pin can be read by other users", "chmod 600"]);
}

#[test]
fn a_token_without_oaep_sha256_is_refused_with_what_to_do() {
    let hsm = Hsm::new("p11-no-oaep256");
    hsm.token("alice");
    let keygen = hsm.run(&[
        "custodian",
        "keygen",
        "--pkcs11-module",
        MODULE,
        "--token",
        "alice",
        "--name",
        "alice",
        "--bits",
        "2048",
        "--pin-file",
        "pin",
    ]);
    if !softhsm_lacks_oaep_sha256(&hsm) {
        // A SoftHSM that does OAEP-SHA-256 makes a key used by OAEP on the token.
        keygen.ok().stdout_has("/usr/lib/softhsm/libsofthsm2.so\n");
        return;
    }
    keygen.fails(
        EXIT_INPUT,
        &[
            "token 'alice' refused RSA-OAEP with SHA-256 and MGF1-SHA-256 (ArgumentsBad); \
             it does offer raw RSA decryption (CKM_RSA_X_509)",
            "Add x-oaep=host",
        ],
    );
    // Nothing is left behind: no certificate file, no key on the token.
    hsm.dir.assert_absent("alice.cer");
    assert_eq!(hsm.with_session("alice", |s| s.find_objects(&[]).unwrap().len()), 0);
    // A key that does work with x-oaep=host is refused without it.
    let made = hsm.keygen("bob");
    hsm.dir.copy(&["exchange.cer"]);
    hsm.dir.custodian(0);
    hsm.dir.custodian(1);
    hsm.run(&[
        "sd",
        "split",
        "--certs",
        "bob.cer",
        "c0.cer",
        "c1.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd.json",
    ])
    .ok();
    let without = made.replace("&x-oaep=host", "");
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &without,
        "--pin-file",
        "pin",
    ])
    .fails(
        EXIT_INPUT,
        &["token 'bob' refused RSA-OAEP with SHA-256", "x-oaep=host"],
    );
    hsm.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        &made,
        "--pin-file",
        "pin",
    ])
    .ok();
}

/// What the flow tests need of a PKCS#11 implementation under test.
trait Backend {
    fn name(&self) -> &'static str;
    fn dir(&self) -> &Dir;
    fn module(&self) -> &'static str;
    /// The user PIN of the tokens made by [`Backend::token`]; in the file `pin`.
    fn pin(&self) -> &'static str;
    /// Whether keys need `--oaep-on-host` (`x-oaep=host`): the token refuses OAEP-SHA-256.
    fn oaep_on_host(&self) -> bool;
    /// The CK_TOKEN_INFO manufacturer and model of its tokens, as RFC 7512 values.
    fn manufacturer_and_model(&self) -> (&'static str, &'static str);
    /// A new, initialised token labelled `label` with user PIN [`Backend::pin`].
    fn token(&self, label: &str);
    /// A command for `program` that reaches this backend's tokens, run in the test folder.
    fn command(&self, program: &str) -> Command;
}

impl Backend for Hsm {
    fn name(&self) -> &'static str {
        "SoftHSM"
    }
    fn dir(&self) -> &Dir {
        &self.dir
    }
    fn module(&self) -> &'static str {
        MODULE
    }
    fn pin(&self) -> &'static str {
        PIN
    }
    fn oaep_on_host(&self) -> bool {
        softhsm_lacks_oaep_sha256(self)
    }
    fn manufacturer_and_model(&self) -> (&'static str, &'static str) {
        ("SoftHSM project", "SoftHSM v2")
    }
    fn token(&self, label: &str) {
        Hsm::token(self, label)
    }
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.dir.path()).env("SOFTHSM2_CONF", &self.conf);
        c
    }
}

/// Runs the binary with `args` (and `env`) against backend `b`, no PIN in the environment.
fn run_on(b: &dyn Backend, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = b.command(util::BIN);
    c.args(args)
        .env_remove("HSM_CEREMONY_PIN")
        .env_remove("HSM_CEREMONY_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    let out = c.output().expect("the hsm-ceremony binary runs");
    Output {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn keygen_args<'a>(b: &'a dyn Backend, token: &'a str, name: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "custodian",
        "keygen",
        "--pkcs11-module",
        b.module(),
        "--token",
        token,
        "--name",
        name,
        "--bits",
        "2048",
        "--pin-file",
        "pin",
    ];
    if b.oaep_on_host() {
        args.push("--oaep-on-host");
    }
    args
}

/// `custodian keygen` of `name` on `token`; returns the key URI printed.
fn keygen_on(b: &dyn Backend, token: &str, name: &str) -> String {
    let out = run_on(b, &keygen_args(b, token, name), &[]);
    out.ok();
    let uri = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("key URI"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        uri.starts_with(&format!("pkcs11:token={token};object={name};id=")),
        "{uri}"
    );
    let tail = format!("?module-path={}", b.module());
    if b.oaep_on_host() {
        assert!(uri.ends_with(&format!("{tail}&x-oaep=host")), "{uri}");
    } else {
        assert!(uri.ends_with(&tail), "{} on-token OAEP: {uri}", b.name());
    }
    uri
}

/// The objects on token `token` (pkcs11-tool's listing after login), one line each.
fn token_objects(b: &dyn Backend, token: &str) -> Vec<String> {
    let out = b
        .command("pkcs11-tool")
        .args([
            "--module",
            b.module(),
            "--token-label",
            token,
            "--login",
            "--pin",
            b.pin(),
            "--list-objects",
        ])
        .output()
        .expect("pkcs11-tool runs (apt-get install opensc)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" Object;"))
        .map(str::to_string)
        .collect()
}

/// The URI of token `token` alone, as `p11tool --list-token-urls` gives it (module added).
fn token_only_uri(b: &dyn Backend, token: &str) -> String {
    format!(
        "pkcs11:token={token}?module-path={}{}",
        b.module(),
        if b.oaep_on_host() { "&x-oaep=host" } else { "" }
    )
}

/// Keygen, verify (by key URI, by token-only URI, by the URI with the
/// token's manufacturer and model), restore-blob, log sign and a wrong PIN,
/// then a second key that makes the token-only URI ambiguous.
fn the_whole_flow(b: &dyn Backend) {
    b.token("alice");
    let alice = keygen_on(b, "alice", "alice");
    let d = b.dir();
    d.custodian(0);
    d.custodian(1);
    d.copy(&["exchange.cer"]);
    let split = [
        "sd",
        "split",
        "--certs",
        "alice.cer",
        "c0.cer",
        "c1.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd.json",
    ];
    run_on(b, &split, &[]).ok();
    let verify = |key: &str, pin: &str| {
        run_on(
            b,
            &[
                "custodian",
                "verify",
                "--sd-file",
                "sd.json",
                "--key",
                key,
                "--pin-file",
                pin,
            ],
            &[],
        )
    };
    verify(&alice, "pin")
        .ok()
        .stdout_has("share x=1 of 3 opens for pkcs11:token=alice;object=alice;id=");
    // The token alone names its only decryption key: alice's share (x=1) opens.
    let only = token_only_uri(b, "alice");
    verify(&only, "pin")
        .ok()
        .stdout_has("share x=1 of 3 opens for pkcs11:token=alice?");
    let (manufacturer, model) = b.manufacturer_and_model();
    let enc = |v: &str| v.replace(' ', "%20");
    let p11tool = only.replacen(
        "pkcs11:token=alice",
        &format!(
            "pkcs11:model={};manufacturer={};token=alice",
            enc(model),
            enc(manufacturer)
        ),
        1,
    );
    verify(&p11tool, "pin").ok().stdout_has("share x=1 of 3 opens");
    let other_model = only.replacen("pkcs11:token=alice", "pkcs11:token=alice;model=Nope", 1);
    verify(&other_model, "pin").fails(
        EXIT_INPUT,
        &[
            "no token labelled 'alice' with model 'Nope' is present",
            &format!("(present: 'alice' (manufacturer '{manufacturer}', model '{model}'"),
        ],
    );
    // A restore opened by the token key and a key file.
    let mut args = util::restore_blob_args(&[&alice, "c0.key"], &[], "blob.json");
    args.extend(["--pin-file", "pin", "--passphrase-file", "c0.pass"].map(String::from));
    run_on(b, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
        .ok()
        .stdout_has("(2 of 2 needed)");
    blob_fingerprint(&d.join("blob.json"));
    // The token countersigns a log line, and the countersignature verifies.
    run_on(
        b,
        &[
            "log",
            "sign",
            "ceremony-log.jsonl",
            "--line",
            "1",
            "--key",
            &alice,
            "--pin-file",
            "pin",
        ],
        &[],
    )
    .ok()
    .stdout_has("line 1 countersigned by pkcs11:token=alice");
    run_on(b, &["log", "verify", "ceremony-log.jsonl"], &[]).ok();
    verify(&alice, "wrong-pin").fails(EXIT_INTEGRITY, &["the PIN for token 'alice' is wrong"]);
    // With a second decryption key the token alone no longer names one: both are listed.
    keygen_on(b, "alice", "alice2");
    let out = verify(&only, "pin");
    out.fails(
        EXIT_INPUT,
        &[
            "the URI names only token 'alice', which holds 2 RSA private keys that may decrypt",
            "'alice' (id ",
            "'alice2' (id ",
            "add object= or id= to name one",
        ],
    );
}

/// A keygen whose certificate step fails (a test hook) leaves no key on the
/// token and no certificate file, so the same keygen can be run again.
fn a_failed_keygen_leaves_nothing(b: &dyn Backend) {
    b.token("alice");
    for point in ["keygen:certificate-signed", "keygen:certificate-written"] {
        let out = run_on(b, &keygen_args(b, "alice", "alice"), &[("HSM_CEREMONY_FAIL_AT", point)]);
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains(point), "{out:?}");
        b.dir().assert_absent("alice.cer");
        assert_eq!(
            token_objects(b, "alice"),
            Vec::<String>::new(),
            "{} after {point}",
            b.name()
        );
    }
    keygen_on(b, "alice", "alice");
    assert_eq!(token_objects(b, "alice").len(), 3, "{:?}", token_objects(b, "alice"));
}

#[test]
fn softhsm_runs_the_whole_flow() {
    the_whole_flow(&Hsm::new("p11-flow-softhsm"));
}

#[test]
fn a_failed_keygen_on_softhsm_leaves_nothing() {
    a_failed_keygen_leaves_nothing(&Hsm::new("p11-keygen-fails-softhsm"));
}

/// opencryptoki's soft token (Debian's `opencryptoki`: the slot daemon
/// `pkcsslotd` and `libpkcs11_sw`), with none of its global state touched.
/// Its paths are compiled in (/etc/opencryptoki, /var/lib/opencryptoki,
/// /run for the daemon's socket and locks, /dev/shm for the soft token's
/// state) and the daemon and clients share SysV shared memory, so each test
/// gets its own mount and IPC namespace
/// (`unshare -m -i`, needs root) in which those paths are this test's
/// folders; the daemon runs there and every command enters it (`nsenter`).
/// Dropping it stops the daemon by its pid; a watchdog in the namespace
/// stops it after 15 minutes should the test process itself be killed.
struct Ock {
    dir: Dir,
    /// The namespace's state: configuration, token store, socket and locks.
    state: Dir,
    daemon: u32,
    watchdog: u32,
    initialised: std::cell::Cell<bool>,
}

const OCK_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so";
/// opencryptoki's soft token takes PINs of 4 to 8 characters.
const OCK_PIN: &str = "4321user";
/// The soft token's SO PIN before its first initialisation.
const OCK_DEFAULT_SO_PIN: &str = "87654321";
/// The soft token's slot in the configuration written here.
const OCK_SLOT: &str = "3";

impl Ock {
    /// The token's daemon in its own namespace, or why it cannot be started here.
    fn start(test: &str) -> Result<Ock, String> {
        for needed in [
            "/usr/sbin/pkcsslotd",
            OCK_MODULE,
            "/usr/lib/x86_64-linux-gnu/opencryptoki/stdll/libpkcs11_sw.so",
        ] {
            if !Path::new(needed).exists() {
                return Err(format!("{needed} is missing (apt-get install opencryptoki)"));
            }
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("pkcsslotd and the private mounts it needs here run as root only".into());
        }
        let state = Dir::new(&format!("{test}-ock"));
        for sub in ["conf", "lib/swtok/TOK_OBJ", "run/lock/opencryptoki/swtok"] {
            std::fs::create_dir_all(state.join(sub)).unwrap();
        }
        std::fs::write(
            state.join("conf/opencryptoki.conf"),
            format!("version opencryptoki-3.1\nslot {OCK_SLOT}\n{{\nstdll = libpkcs11_sw.so\n}}\n"),
        )
        .unwrap();
        // The daemon and the soft token use the pkcs11 group's access to these.
        let group = Command::new("chgrp")
            .args(["-R", "pkcs11"])
            .args([state.join("lib"), state.join("run/lock")])
            .status();
        if !group.is_ok_and(|s| s.success()) {
            return Err("there is no pkcs11 group (it comes with the opencryptoki package)".into());
        }
        let root = state.path().display().to_string();
        let script = format!(
            "set -e
             mount --bind '{root}/conf' /etc/opencryptoki
             mount --bind '{root}/lib' /var/lib/opencryptoki
             mount --bind '{root}/run' /run
             mount -t tmpfs -o size=16m,mode=1777 ock-shm /dev/shm
             /usr/sbin/pkcsslotd
             setsid sh -c 'sleep 900; kill $(cat /run/pkcsslotd.pid)' </dev/null >/dev/null 2>&1 &
             echo $! > /run/watchdog.pid"
        );
        let log = std::fs::File::create(state.join("start.log")).unwrap();
        // status(), not output(): the daemon keeps no pipe of ours open to wait for.
        let started = Command::new("unshare")
            .args(["-m", "-i", "--propagation", "private", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .status()
            .map_err(|e| format!("unshare cannot run: {e}"))?;
        let pid = |name: &str| -> Option<u32> {
            std::fs::read_to_string(state.join(&format!("run/{name}")))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        // The daemon's child writes its pid file and socket after the parent has returned.
        for _ in 0..250 {
            if pid("pkcsslotd.pid").is_some() && state.join("run/pkcsslotd.socket").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (Some(daemon), Some(watchdog)) = (pid("pkcsslotd.pid"), pid("watchdog.pid")) else {
            let why = std::fs::read_to_string(state.join("start.log")).unwrap_or_default();
            // SAFETY: signals what this attempt started, by pid (the watchdog by its group).
            unsafe {
                if let Some(p) = pid("pkcsslotd.pid") {
                    libc::kill(p as i32, libc::SIGTERM);
                }
                if let Some(p) = pid("watchdog.pid") {
                    libc::kill(-(p as i32), libc::SIGTERM);
                }
            }
            return Err(format!("pkcsslotd did not start ({started}): {}", why.trim()));
        };
        let ock = Ock {
            dir: Dir::new(test),
            state,
            daemon,
            watchdog,
            initialised: false.into(),
        };
        ock.dir.write_secret("pin", format!("{OCK_PIN}\n"));
        ock.dir.write_secret("wrong-pin", "0000wrng\n");
        Ok(ock)
    }

    /// [`Ock::start`], or `None` after a visible SKIP line; under CI
    /// (`CI=true`) a token that cannot be started fails the test instead.
    fn start_or_skip(test: &str) -> Option<Ock> {
        match Ock::start(test) {
            Ok(o) => Some(o),
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("opencryptoki cannot be started, and CI=true does not allow skipping: {why}")
            }
            Err(why) => {
                // Written past libtest's capture, so the SKIP shows in `cargo test` and .ci/run's log.
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIP {test}: opencryptoki cannot be started here: {why}"
                );
                None
            }
        }
    }

    fn tool(&self, args: &[&str]) {
        let out = self
            .command("pkcs11-tool")
            .args(["--module", OCK_MODULE])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Ock {
    fn drop(&mut self) {
        // SAFETY: signals the daemon, and the watchdog's process group (its
        // shell and sleep, made a group of their own by setsid), which this fixture started.
        unsafe {
            libc::kill(self.daemon as i32, libc::SIGTERM);
            libc::kill(-(self.watchdog as i32), libc::SIGTERM);
        }
        // The daemon removes its socket as it ends; wait for that (bounded) so the folder goes whole.
        for _ in 0..50 {
            if !self.state.join("run/pkcsslotd.socket").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Backend for Ock {
    fn name(&self) -> &'static str {
        "opencryptoki"
    }
    fn dir(&self) -> &Dir {
        &self.dir
    }
    fn module(&self) -> &'static str {
        OCK_MODULE
    }
    fn pin(&self) -> &'static str {
        OCK_PIN
    }
    fn oaep_on_host(&self) -> bool {
        false
    }
    fn manufacturer_and_model(&self) -> (&'static str, &'static str) {
        ("IBM Corp.", "IBM SoftTok")
    }
    /// The one soft token of the namespace (C_InitToken and C_InitPIN).
    fn token(&self, label: &str) {
        assert!(!self.initialised.replace(true), "the soft token has one slot here");
        self.tool(&[
            "--slot",
            OCK_SLOT,
            "--init-token",
            "--label",
            label,
            "--so-pin",
            OCK_DEFAULT_SO_PIN,
        ]);
        self.tool(&[
            "--slot",
            OCK_SLOT,
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            OCK_DEFAULT_SO_PIN,
            "--init-pin",
            "--pin",
            OCK_PIN,
        ]);
    }
    /// `program` inside the namespace; `env --chdir` there, since a working
    /// folder set before entering belongs to the other mount namespace (its
    /// files then cannot be renamed into place: EXDEV).
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.daemon.to_string(), "-m", "-i", "--", "env"])
            .arg(format!("--chdir={}", self.dir.path().display()))
            .arg(program);
        c
    }
}

#[test]
fn opencryptoki_runs_the_whole_flow_with_oaep_on_the_token() {
    if let Some(ock) = Ock::start_or_skip("p11-flow-opencryptoki") {
        the_whole_flow(&ock);
    }
}

#[test]
fn a_failed_keygen_on_opencryptoki_leaves_nothing() {
    if let Some(ock) = Ock::start_or_skip("p11-keygen-fails-ock") {
        a_failed_keygen_leaves_nothing(&ock);
    }
}
