//! `sd split`: a new security domain in the Azure format, and what it refuses
//! without writing anything.

use crate::util;

use util::{fixtures, read_json, Dir, EXIT_INPUT};

fn certs3(dir: &Dir) {
    for i in 0..3 {
        dir.custodian(i);
    }
}

#[test]
fn random_contents_make_a_valid_file() {
    let dir = Dir::new("split-random");
    certs3(&dir);
    let out = dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--quorum",
        "3",
        "--random-contents",
        "--out",
        "new.json",
    ]);
    out.ok().stdout_has("wrote new.json: 3 of 3 custodians, 3 data items");
    dir.assert_no_temp();
    let v = read_json(&dir.join("new.json"));
    assert_eq!(v["version"], 2);
    assert_eq!(v["SharedKeys"]["required"], 3);
    assert_eq!(v["SharedKeys"]["key_algorithm"], "shamir_share");
    let x5t: Vec<&str> = v["SharedKeys"]["enc_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["x5t_256"].as_str().unwrap())
        .collect();
    assert_eq!(
        x5t,
        fixtures().x5t[..3].iter().map(String::as_str).collect::<Vec<_>>(),
        "shares follow the certificate order"
    );
    let tags: Vec<&str> = v["EncData"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["hsm_backup", "base_enclave_backup", "partition_enclave_backup"]);
    // One line of compact JSON, as the service writes it.
    let text = dir.read_string("new.json");
    assert!(!text.contains('\n') && !text.contains(": "), "compact JSON expected");
    dir.run(&["sd", "inspect", "new.json"])
        .ok()
        .stdout_has("quorum        3 of 3 custodians");
}

#[test]
fn items_from_files_keep_tag_and_order() {
    let dir = Dir::new("split-items");
    certs3(&dir);
    dir.write_secret("a.bin", vec![7u8; 100]);
    dir.write_secret("b.bin", b"second item");
    let out = dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--quorum",
        "2",
        "--item",
        "zeta=a.bin",
        "--item",
        "alpha=b.bin",
        "--out",
        "items.json",
    ]);
    out.ok().stdout_has("2 data items");
    let v = dir.run(&["sd", "inspect", "--json", "items.json"]).ok().json();
    let items: Vec<(&str, u64)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["tag"].as_str().unwrap(), i["ciphertext_bytes"].as_u64().unwrap()))
        .collect();
    // PKCS#7: 100 bytes -> 112, 11 bytes -> 16.
    assert_eq!(items, [("zeta", 112), ("alpha", 16)]);

    dir.run(&[
        "sd", "split", "--certs", "c0.cer", "c1.cer", "c2.cer", "--quorum", "2", "--item", "nofile", "--out",
        "bad.json",
    ])
    .fails(util::EXIT_USAGE, &["--item 'nofile' is not TAG=FILE"]);
    dir.assert_absent("bad.json");
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--quorum",
        "2",
        "--item",
        "t=missing.bin",
        "--out",
        "bad.json",
    ])
    .fails(6, &["missing.bin"]);
    dir.assert_absent("bad.json");
}

/// A data item is a security domain's plaintext: like a passphrase file it
/// must be its owner's alone, and nothing is written when it is not.
#[test]
fn an_item_others_can_read_is_refused() {
    let dir = Dir::new("split-item-mode");
    for i in 0..3 {
        dir.custodian(i);
    }
    dir.write("open.bin", b"key material");
    dir.chmod("open.bin", 0o644);
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--quorum",
        "2",
        "--item",
        "t=open.bin",
        "--out",
        "out.json",
    ])
    .fails(util::EXIT_INPUT, &["open.bin can be read by other users", "chmod 600"]);
    dir.assert_absent("out.json");
}

#[test]
fn refuses_two_certificates_without_local() {
    let dir = Dir::new("split-two");
    dir.custodian(0);
    dir.custodian(1);
    let args = [
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "two.json",
    ];
    dir.run(&args)
        .fails(EXIT_INPUT, &["2 custodians is outside the allowed 3 to 10"]);
    dir.assert_absent("two.json");
    let mut local = args.to_vec();
    local.push("--local");
    dir.run(&local).ok();
    assert!(dir.exists("two.json"));
}

#[test]
fn refuses_quorum_out_of_range() {
    let dir = Dir::new("split-quorum");
    certs3(&dir);
    for q in ["1", "4"] {
        dir.run(&[
            "sd",
            "split",
            "--certs",
            "c0.cer",
            "c1.cer",
            "c2.cer",
            "--quorum",
            q,
            "--random-contents",
            "--out",
            "q.json",
        ])
        .fails(EXIT_INPUT, &[&format!("a quorum of {q} is outside")]);
        dir.assert_absent("q.json");
    }
}

#[test]
fn refuses_a_duplicate_certificate() {
    let dir = Dir::new("split-dup");
    dir.custodian(0);
    dir.custodian(1);
    std::fs::copy(dir.join("c1.cer"), dir.join("again.cer")).unwrap();
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "again.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "d.json",
    ])
    .fails(EXIT_INPUT, &["again.cer is the same certificate as c1.cer"]);
    dir.assert_absent("d.json");
}

#[test]
fn refuses_an_existing_out_and_leaves_it_untouched() {
    let dir = Dir::new("split-exists");
    certs3(&dir);
    dir.write("sd.json", "precious");
    dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "c2.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "sd.json",
    ])
    .fails(EXIT_INPUT, &["sd.json already exists", "never overwritten"]);
    assert_eq!(dir.read_string("sd.json"), "precious");
    dir.assert_no_temp();
}

/// Regression: items that fit one by one could make a file larger than any
/// reader accepts; split wrote it, and `sd inspect` then refused it.
#[test]
fn refuses_items_that_make_an_unreadable_file() {
    let dir = Dir::new("split-too-large");
    certs3(&dir);
    let noise: Vec<u8> = (0..1_600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    dir.write_secret("i1.bin", &noise);
    dir.write_secret("i2.bin", &noise);
    let args = [
        "sd", "split", "--certs", "c0.cer", "c1.cer", "c2.cer", "--quorum", "2", "--item", "a=i1.bin",
    ];
    let two = [&args[..], &["--item", "b=i2.bin", "--out", "big.json"]].concat();
    dir.run(&two)
        .fails(EXIT_INPUT, &["more than the 4194304 any reader accepts"]);
    dir.assert_absent("big.json");
    // Control: one such item fits, and the file reads back.
    let one = [&args[..], &["--out", "ok.json"]].concat();
    dir.run(&one).ok();
    dir.run(&["sd", "inspect", "ok.json"])
        .ok()
        .stdout_has("1600016 bytes of ciphertext");
}

/// Regression: two certificates of one key were accepted, so one person held
/// two shares and could meet a 2-of-3 quorum alone (`check-certs` refused it).
#[test]
fn refuses_two_certificates_of_one_key() {
    let dir = Dir::new("split-same-key");
    certs3(&dir);
    // Custodian 0 has a second certificate made for the same key.
    util::openssl(
        &dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "c0.key",
            "-passin",
            "file:c0.pass",
            "-subj",
            "/CN=again",
            "-days",
            "30",
            "-out",
            "again.cer",
        ],
    );
    let out = dir.run(&[
        "sd",
        "split",
        "--certs",
        "c0.cer",
        "c1.cer",
        "again.cer",
        "--quorum",
        "2",
        "--random-contents",
        "--out",
        "s.json",
    ]);
    out.fails(
        EXIT_INPUT,
        &[
            "again.cer has the same key as c0.cer (the same RSA modulus)",
            "each custodian needs their own key",
        ],
    );
    dir.assert_absent("s.json");
    dir.run(&["sd", "check-certs", "--quorum", "2", "c0.cer", "c1.cer", "again.cer"])
        .fails(EXIT_INPUT, &["again.cer has the same key as c0.cer"]);
}
