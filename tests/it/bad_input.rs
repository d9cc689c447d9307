//! Security-domain files that are not what Azure writes, made by mutating the
//! real Azure fixture: `sd inspect` and `restore-blob` both refuse each one,
//! name the file and what is wrong with it, and write nothing.

use crate::util;

use serde_json::{json, Value};
use util::{b64u, fixtures, mutate_jwe, Dir, AZURE_SD, AZURE_X5T, EXIT_INPUT, EXIT_INTEGRITY};

fn azure() -> Value {
    serde_json::from_slice(&std::fs::read(AZURE_SD).unwrap()).unwrap()
}

fn with(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = azure();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// The first share's JWE with `f` applied.
fn share0(f: impl FnOnce(&str) -> String) -> Vec<u8> {
    with(|v| {
        let k = &mut v["SharedKeys"]["enc_shares"][0]["enc_key"];
        *k = f(k.as_str().unwrap()).into();
    })
}

fn header(alg: &str) -> String {
    b64u(format!(r#"{{"alg":"{alg}","enc":"A256CBC-HS512","kid":"not used"}}"#).as_bytes())
}

fn replace_part(jwe: &str, part: usize, text: &str) -> String {
    let mut parts: Vec<&str> = jwe.split('.').collect();
    parts[part] = text;
    parts.join(".")
}

/// Each bad file, and what the error must say after "NAME is not a valid security-domain file: ".
fn cases() -> Vec<(&'static str, Vec<u8>, String)> {
    let text = std::fs::read_to_string(AZURE_SD).unwrap();
    let share1 = format!("share 1 (x5t_256 {}): ", AZURE_X5T[0]);
    vec![
        (
            "truncated.json",
            text.as_bytes()[..1000].to_vec(),
            "it is not valid JSON for this file: at EncData.data[0].compact_jwe".into(),
        ),
        (
            "not-json.json",
            b"{\"EncData\": [".to_vec(),
            "it is not valid JSON".into(),
        ),
        ("empty.json", Vec::new(), "it is not valid JSON".into()),
        (
            "no-required.json",
            with(|v| {
                v["SharedKeys"].as_object_mut().unwrap().remove("required");
            }),
            "it is not valid JSON for this file: at SharedKeys: missing field `required`".into(),
        ),
        (
            "no-enc-data.json",
            with(|v| {
                v.as_object_mut().unwrap().remove("EncData");
            }),
            "it is not valid JSON for this file: missing field `EncData`".into(),
        ),
        (
            "key-algorithm.json",
            with(|v| v["SharedKeys"]["key_algorithm"] = json!("shamir")),
            "SharedKeys.key_algorithm is 'shamir', it must be 'shamir_share'".into(),
        ),
        (
            "version-3.json",
            with(|v| v["version"] = json!(3)),
            "version is 3, it must be 2".into(),
        ),
        (
            "kdf.json",
            with(|v| v["EncData"]["kdf"] = json!("hkdf")),
            "EncData.kdf is 'hkdf', it must be 'sp108_kdf'".into(),
        ),
        (
            "required-1.json",
            with(|v| v["SharedKeys"]["required"] = json!(1)),
            "SharedKeys.required is 1, it must be between 2 and 10".into(),
        ),
        (
            "required-11.json",
            with(|v| v["SharedKeys"]["required"] = json!(11)),
            "SharedKeys.required is 11, it must be between 2 and 10".into(),
        ),
        (
            "required-4.json",
            with(|v| v["SharedKeys"]["required"] = json!(4)),
            "the number of shares is 3, it must be between the quorum (4) and 10".into(),
        ),
        (
            "required-minus-1.json",
            with(|v| v["SharedKeys"]["required"] = json!(-1)),
            "it is not valid JSON for this file: at SharedKeys.required: invalid value: integer `-1`, expected u64"
                .into(),
        ),
        (
            "required-string.json",
            with(|v| v["SharedKeys"]["required"] = json!("2")),
            "it is not valid JSON for this file: at SharedKeys.required: invalid type: string \"2\", expected u64"
                .into(),
        ),
        (
            "duplicate-key.json",
            text.replace(r#""required":2"#, r#""required":2,"required":3"#)
                .into_bytes(),
            "it is not valid JSON for this file: at SharedKeys: duplicate field `required`".into(),
        ),
        (
            "same-cert-twice.json",
            with(|v| v["SharedKeys"]["enc_shares"][1]["x5t_256"] = json!(AZURE_X5T[0])),
            format!("shares 1 and 2 are for the same certificate (x5t_256 {})", AZURE_X5T[0]),
        ),
        (
            "short-x5t.json",
            with(|v| v["SharedKeys"]["enc_shares"][2]["x5t_256"] = json!(b64u(&[1; 20]))),
            "share 3 x5t_256 is 20 bytes, it must be 32 bytes".into(),
        ),
        (
            "four-parts.json",
            share0(|k| k.rsplit_once('.').unwrap().0.to_string()),
            format!("{share1}a compact JWE must have 5 parts separated by '.', this one has 4"),
        ),
        (
            "six-parts.json",
            share0(|k| format!("{k}.AAAA")),
            format!("{share1}a compact JWE must have 5 parts separated by '.', this one has 6"),
        ),
        (
            "bad-base64.json",
            share0(|k| replace_part(k, 2, "!!!!!!!!!!!!!!!!!!!!!!")),
            format!("{share1}the JWE IV is not valid base64url"),
        ),
        (
            "padded-base64.json",
            share0(|k| {
                let p: Vec<&str> = k.split('.').collect();
                replace_part(k, 2, &format!("{}==", p[2]))
            }),
            format!("{share1}the JWE IV is not valid base64url"),
        ),
        (
            "tag-31.json",
            share0(|k| mutate_jwe(k, 4, |t| t.truncate(31))),
            format!("{share1}the JWE authentication tag is 31 bytes, it must be 32"),
        ),
        (
            "tag-33.json",
            share0(|k| mutate_jwe(k, 4, |t| t.push(0))),
            format!("{share1}the JWE authentication tag is 33 bytes, it must be 32"),
        ),
        (
            "alg-rsa1_5.json",
            share0(|k| replace_part(k, 0, &header("RSA1_5"))),
            format!("{share1}the JWE uses algorithm 'RSA1_5', which is refused"),
        ),
        (
            "alg-none.json",
            share0(|k| replace_part(k, 0, &header("none"))),
            format!("{share1}the JWE uses algorithm 'none', which is refused"),
        ),
        (
            "alg-dir-share.json",
            share0(|k| replace_part(k, 0, &header("dir"))),
            format!("{share1}the JWE header is not valid: a 'dir' JWE must have an empty encrypted key"),
        ),
        (
            "item-kid.json",
            with(|v| {
                let item = &mut v["EncData"]["data"][1]["compact_jwe"];
                let h = b64u(br#"{"alg":"dir","enc":"A256CBC-HS512","kid":"hsm_backup"}"#);
                *item = replace_part(item.as_str().unwrap(), 0, &h).into();
            }),
            "data item 'base_enclave_backup': its JWE says kid 'hsm_backup', not the item's tag".into(),
        ),
        (
            "item-rsa.json",
            with(|v| {
                let item = &mut v["EncData"]["data"][0]["compact_jwe"];
                *item = replace_part(item.as_str().unwrap(), 0, &header("RSA-OAEP-256")).into();
            }),
            "data item 'hsm_backup': the JWE header is not valid: an RSA JWE must carry an encrypted key".into(),
        ),
        (
            "no-items.json",
            with(|v| v["EncData"]["data"] = json!([])),
            "EncData.data holds no items".into(),
        ),
    ]
}

#[test]
fn inspect_refuses_each_bad_file() {
    let dir = Dir::new("bad-inspect");
    for (name, bytes, why) in cases() {
        dir.write(name, &bytes);
        dir.run(&["sd", "inspect", name]).fails(
            EXIT_INPUT,
            &[&format!("error: {name} is not a valid security-domain file: {why}")],
        );
    }
    // Control: the unmodified fixture, re-serialised the same way, is accepted.
    dir.write("control.json", with(|_| {}));
    dir.run(&["sd", "inspect", "control.json"]).ok();
}

#[test]
fn restore_blob_refuses_each_bad_file_and_writes_nothing() {
    let dir = Dir::new("bad-restore");
    dir.ceremony();
    for (name, bytes, why) in cases() {
        dir.write(name, &bytes);
        let out = dir.run(&[
            "restore-blob",
            "--sd-file",
            name,
            "--sd-exchange-key",
            "exchange.cer",
            "--sd-wrapping-keys",
            "c0.key",
            "c1.key",
            "--passphrase-file",
            "c0.pass",
            "--passphrase-file",
            "c1.pass",
            "--out",
            "blob.json",
        ]);
        out.fails(
            EXIT_INPUT,
            &[&format!("error: {name} is not a valid security-domain file: {why}")],
        );
        dir.assert_absent("blob.json");
    }
}

#[test]
fn a_file_over_the_size_limit_is_refused_without_parsing() {
    let dir = Dir::new("bad-large");
    // Valid JSON (the real file, padded with spaces) that is too large to be a security domain.
    let mut bytes = std::fs::read(AZURE_SD).unwrap();
    bytes.resize(5 * 1024 * 1024, b' ');
    dir.write("big.json", &bytes);
    let msg = "big.json is 5242880 bytes; no security-domain file is larger than 4194304 bytes, so it was not read";
    dir.run(&["sd", "inspect", "big.json"]).fails(EXIT_INPUT, &[msg]);
    dir.ceremony();
    dir.run(&[
        "restore-blob",
        "--sd-file",
        "big.json",
        "--sd-exchange-key",
        "exchange.cer",
        "--sd-wrapping-keys",
        "c0.key",
        "c1.key",
        "--passphrase-file",
        "c0.pass",
        "--passphrase-file",
        "c1.pass",
        "--out",
        "blob.json",
    ])
    .fails(EXIT_INPUT, &[msg]);
    dir.assert_absent("blob.json");
    // Control: the same padding under the limit is read and accepted.
    bytes.truncate(1024 * 1024);
    dir.write("padded.json", &bytes);
    dir.run(&["sd", "inspect", "padded.json"]).ok();
}

#[test]
fn a_directory_or_missing_file_is_named() {
    let dir = Dir::new("bad-dir");
    dir.ceremony();
    std::fs::create_dir(dir.join("folder.json")).unwrap();
    dir.run(&["sd", "inspect", "folder.json"])
        .fails(EXIT_INPUT, &["folder.json is a directory, not a file"]);
    dir.run(&["sd", "inspect", "absent.json"])
        .fails(6, &["cannot read absent.json"]);
    let base = [
        "--sd-exchange-key",
        "exchange.cer",
        "--sd-wrapping-keys",
        "c0.key",
        "c1.key",
        "--passphrase-file",
        "c0.pass",
        "--passphrase-file",
        "c1.pass",
        "--out",
        "blob.json",
    ];
    let mut args = vec!["restore-blob", "--sd-file", "folder.json"];
    args.extend(base);
    dir.run(&args)
        .fails(EXIT_INPUT, &["folder.json is a directory, not a file"]);
    dir.assert_absent("blob.json");
}

/// Anyone holding a custodian's public certificate can encrypt a bogus share
/// to it; the share then opens, but the rebuilt key does not open the items.
#[test]
fn a_replaced_share_is_caught_by_the_items() {
    use hsm_ceremony::crypto::{jwe, rng::os_rng, shamir};
    let dir = Dir::new("bad-replaced-share");
    dir.ceremony();
    let cert = hsm_ceremony::inputs::certificate(&fixtures().path("c1.cer")).unwrap();
    let bogus = shamir::split_with_rng(&mut os_rng(), &[0x5a; 32], 3, 2).unwrap();
    let enc_key =
        jwe::encrypt_rsa_oaep256_with_rng(&mut os_rng(), &cert.rsa_public_key().unwrap(), &bogus[1].to_bytes())
            .unwrap();
    let mut sd = util::read_json(&dir.join("sd.json"));
    sd["SharedKeys"]["enc_shares"][1]["enc_key"] = enc_key.into();
    std::fs::remove_file(dir.join("sd.json")).unwrap();
    dir.write("sd.json", serde_json::to_vec(&sd).unwrap());

    // The file is well formed, and the bogus share passes its own checks.
    dir.run(&["sd", "inspect", "sd.json"]).ok();
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c1.key",
        "--passphrase-file",
        "c1.pass",
    ])
    .ok();
    let out = dir.run(&util::restore_blob_args(
        &["c0.key", "c1.key"],
        &["c0.pass", "c1.pass"],
        "blob.json",
    ));
    // Usually the rebuilt key fails the items' tags; for some share values the
    // interpolation leaves the field first. Both are the same verdict.
    out.fails(
        EXIT_INTEGRITY,
        &["error: the shares do not rebuild the master key", "tampered with"],
    );
    assert!(
        out.stderr.contains("does not open data item 'hsm_backup'") || out.stderr.contains("inconsistent"),
        "{}",
        out.stderr
    );
    dir.assert_absent("blob.json");
    // Control: custodians 0 and 2 (whose shares are genuine) still recover.
    dir.run(&util::restore_blob_args(
        &["c0.key", "c2.key"],
        &["c0.pass", "c2.pass"],
        "blob.json",
    ))
    .ok();
}

#[test]
fn tampered_share_ciphertext_is_an_integrity_failure() {
    let dir = Dir::new("bad-tampered-bits");
    dir.ceremony();
    let mut sd = util::read_json(&dir.join("sd.json"));
    // The encrypted CEK of c0's share, the IV of c1's, the tag of c2's (the
    // ciphertext is covered in restore_blob.rs).
    for (i, part) in [(0, 1), (1, 2), (2, 4)] {
        let k = &mut sd["SharedKeys"]["enc_shares"][i]["enc_key"];
        *k = mutate_jwe(k.as_str().unwrap(), part, |b| b[7] ^= 0x80).into();
    }
    std::fs::remove_file(dir.join("sd.json")).unwrap();
    dir.write("sd.json", serde_json::to_vec(&sd).unwrap());
    for i in 0..3 {
        let (key, pass) = (format!("c{i}.key"), format!("c{i}.pass"));
        dir.run(&[
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            &key,
            "--passphrase-file",
            &pass,
        ])
        .fails(
            EXIT_INTEGRITY,
            &[&format!(
                "the share of c{i}.key (certificate c{i}.cer) failed its integrity check"
            )],
        );
    }
}

/// A custodian's real share, re-encrypted to another custodian's certificate:
/// both open, but they carry the same x, and that is caught before any key is rebuilt.
#[test]
fn a_share_copied_to_another_custodian_is_caught() {
    use hsm_ceremony::crypto::{jwe, rng::os_rng, secret::Passphrase};
    let dir = Dir::new("bad-copied-share");
    dir.ceremony();
    let f = fixtures();
    let sd = hsm_ceremony::inputs::security_domain(&f.path("sd.json")).unwrap();
    let key0 = hsm_ceremony::inputs::key_file(&f.path("c0.key"))
        .unwrap()
        .into_key(Some(&Passphrase::new(util::passphrase(0))))
        .unwrap();
    let share0 = sd.share_jwe(0).unwrap().decrypt_with(&key0).unwrap();
    let cert1 = hsm_ceremony::inputs::certificate(&f.path("c1.cer")).unwrap();
    let copied =
        jwe::encrypt_rsa_oaep256_with_rng(&mut os_rng(), &cert1.rsa_public_key().unwrap(), share0.expose()).unwrap();
    let mut v = util::read_json(&dir.join("sd.json"));
    v["SharedKeys"]["enc_shares"][1]["enc_key"] = copied.into();
    dir.remove("sd.json");
    dir.write("sd.json", serde_json::to_vec(&v).unwrap());

    // Custodian 1 alone cannot tell: their "share" opens, as x=1.
    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c1.key",
        "--passphrase-file",
        "c1.pass",
    ])
    .ok()
    .stdout_has("share x=1 of 3 opens for c1.key");
    let out = dir.run(&util::restore_blob_args(
        &["c0.key", "c1.key"],
        &["c0.pass", "c1.pass"],
        "blob.json",
    ));
    out.fails(
        EXIT_INTEGRITY,
        &[
            "the shares do not rebuild the master key",
            "two shares carry the same x=1",
        ],
    );
    dir.assert_absent("blob.json");
}

#[test]
fn unknown_extra_keys_are_tolerated() {
    let dir = Dir::new("bad-extra-keys");
    let bytes = with(|v| {
        v["comment"] = json!("added by a tool");
        v["SharedKeys"]["extra"] = json!(1);
        v["EncData"]["data"][0]["note"] = json!(null);
    });
    dir.write("extra.json", bytes);
    dir.run(&["sd", "inspect", "extra.json"])
        .ok()
        .stdout_has("quorum        2 of 3 custodians");
}
