//! `sd inspect`: what a security-domain file holds, on the real Azure file and
//! on one of ours matched to its certificates.

use crate::util;

use util::{fixtures, Dir, AZURE_SD, AZURE_X5T};

#[test]
fn real_azure_file_text() {
    let dir = Dir::new("inspect-azure");
    let out = dir.run(&["sd", "inspect", AZURE_SD]);
    out.ok()
        .stdout_has("SHA-256       38976a398607b702b614a786cbe23e0855c7ba8c31dbcc388c74c1f7eedf0eee")
        .stdout_has("version       2")
        .stdout_has("quorum        2 of 3 custodians");
    for (i, x5t) in AZURE_X5T.iter().enumerate() {
        out.stdout_has(&format!("    {}  x5t_256 {x5t}\n", i + 1));
    }
    let items: Vec<(String, String)> = out
        .stdout
        .lines()
        .filter(|l| l.contains("bytes of ciphertext"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_string(), w[1].to_string())
        })
        .collect();
    let want = [
        ("hsm_backup", "8192"),
        ("base_enclave_backup", "880"),
        ("partition_enclave_backup", "2960"),
    ];
    assert_eq!(items, want.map(|(t, n)| (t.to_string(), n.to_string())));
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn real_azure_file_json_gives_the_same_numbers() {
    let dir = Dir::new("inspect-azure-json");
    let v = dir.run(&["sd", "inspect", "--json", AZURE_SD]).ok().json();
    assert_eq!(v["required"], 2);
    assert_eq!(v["shares"], 3);
    assert_eq!(v["version"], 2);
    assert_eq!(v["kdf"], "sp108_kdf");
    assert_eq!(
        v["sha256"],
        "38976a398607b702b614a786cbe23e0855c7ba8c31dbcc388c74c1f7eedf0eee"
    );
    let shares: Vec<&str> = v["enc_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["x5t_256"].as_str().unwrap())
        .collect();
    assert_eq!(shares, AZURE_X5T);
    let items: Vec<(&str, u64)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["tag"].as_str().unwrap(), i["ciphertext_bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        items,
        [
            ("hsm_backup", 8192),
            ("base_enclave_backup", 880),
            ("partition_enclave_backup", 2960)
        ]
    );
}

#[test]
fn certificates_not_in_the_azure_file_are_named() {
    let dir = Dir::new("inspect-azure-certs");
    dir.custodian(0);
    let out = dir.run(&["sd", "inspect", AZURE_SD, "--certs", "c0.cer"]);
    out.ok()
        .stdout_has("(no certificate given)")
        .stderr_has("warning: c0.cer has no share in this security domain");
    let v = dir
        .run(&["sd", "inspect", "--json", AZURE_SD, "--certs", "c0.cer"])
        .ok()
        .json();
    assert_eq!(v["certificates_without_share"], serde_json::json!(["c0.cer"]));
    assert!(v["enc_shares"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["certificate"].is_null()));
}

#[test]
fn certs_name_which_share_each_owns() {
    let dir = Dir::new("inspect-certs");
    dir.ceremony();
    dir.custodian(3);
    // Given out of order, plus one outsider: pairing is by thumbprint, not position.
    let out = dir.run(&[
        "sd", "inspect", "sd.json", "--certs", "c2.cer", "c3.cer", "c0.cer", "c1.cer",
    ]);
    out.ok().stdout_has("quorum        2 of 3 custodians");
    for i in 0..3 {
        out.stdout_has(&format!("    {}  x5t_256 {}  c{i}.cer\n", i + 1, fixtures().x5t[i]));
    }
    out.stderr_has("warning: c3.cer has no share in this security domain");
    let v = dir
        .run(&["sd", "inspect", "--json", "sd.json", "--certs", "c1.cer"])
        .ok()
        .json();
    let owners: Vec<&serde_json::Value> = v["enc_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["certificate"])
        .collect();
    assert_eq!(
        owners,
        [
            &serde_json::Value::Null,
            &serde_json::json!("c1.cer"),
            &serde_json::Value::Null
        ]
    );
    // Our random contents have the real tags and sizes.
    let sizes: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ciphertext_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [8192, 880, 2960]);
}

/// A manifest for `quorum` of `certs` (download, epoch 1), signed by every custodian.
fn signed_manifest(dir: &Dir, out: &str, quorum: &str, certs: &[usize]) {
    let mut create = vec![
        "manifest",
        "create",
        "--purpose",
        "download",
        "--quorum",
        quorum,
        "--epoch",
        "1",
        "--out",
        out,
    ];
    let names: Vec<String> = certs.iter().map(|i| format!("c{i}.cer")).collect();
    create.push("--certs");
    create.extend(names.iter().map(String::as_str));
    dir.run(&create).ok();
    for i in certs {
        let (key, pass) = (format!("c{i}.key"), format!("c{i}.pass"));
        dir.run(&[
            "manifest",
            "sign",
            "--manifest",
            out,
            "--key",
            &key,
            "--passphrase-file",
            &pass,
        ])
        .ok();
    }
}

/// The witness's check: the downloaded security domain against the signed
/// manifest, line by line, failing on any difference and naming it.
#[test]
fn inspect_compares_the_file_with_the_signed_manifest() {
    let dir = Dir::new("inspect-manifest");
    dir.ceremony();
    dir.custodian(3);
    let inspect = |manifest: &str, certs: &[&str]| {
        let mut a = vec!["--no-log", "sd", "inspect", "sd.json", "--manifest", manifest];
        if !certs.is_empty() {
            a.push("--certs");
            a.extend_from_slice(certs);
        }
        dir.run(&a)
    };
    let all = ["c0.cer", "c1.cer", "c2.cer", "c3.cer"];
    signed_manifest(&dir, "same.json", "2", &[0, 1, 2]);
    let out = inspect("same.json", &all[..3]);
    out.ok()
        .stdout_has("manifest same.json (download, epoch 1): 3 signatures verified")
        .stdout_has("    match    custodians (N)         3\n")
        .stdout_has("    match    quorum (M)             2\n");
    for i in 1..=3 {
        out.stdout_has(&format!("    match    share {i} certificate    "));
    }
    assert!(!out.stdout.contains("DIFFERS"), "{}", out.stdout);
    let v = dir
        .run(&[
            "--no-log",
            "sd",
            "inspect",
            "sd.json",
            "--json",
            "--manifest",
            "same.json",
            "--certs",
            "c0.cer",
            "c1.cer",
            "c2.cer",
        ])
        .ok()
        .json();
    assert_eq!(v["manifest"]["comparisons"].as_array().unwrap().len(), 5);
    assert!(v["manifest"]["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["matches"] == true));

    // Another quorum.
    signed_manifest(&dir, "quorum.json", "3", &[0, 1, 2]);
    let out = inspect("quorum.json", &all[..3]);
    out.fails(
        4,
        &[
            "the security domain differs from the signed manifest",
            "quorum (M): manifest 3, security domain 2",
        ],
    )
    .stdout_has("    DIFFERS  quorum (M)             manifest 3, security domain 2")
    .stdout_has("    match    custodians (N)");
    assert!(!out.stderr.contains("share 1"), "{}", out.stderr);
    // Another order: shares 2 and 3 differ, share 1 matches.
    signed_manifest(&dir, "order.json", "2", &[0, 2, 1]);
    let out = inspect("order.json", &all[..3]);
    out.fails(4, &["share 2 certificate: manifest", "share 3 certificate: manifest"])
        .stdout_has("    match    share 1 certificate")
        .stdout_has("    DIFFERS  share 2 certificate");
    // Another custodian set: N differs, and the manifest's fourth certificate has no share.
    signed_manifest(&dir, "four.json", "2", &[0, 1, 2, 3]);
    inspect("four.json", &all)
        .fails(
            4,
            &[
                "custodians (N): manifest 4, security domain 3",
                "share 4 certificate: manifest",
            ],
        )
        .stdout_has("security domain (none)");

    // A signature that does not verify: refused before any comparison.
    let mut m = util::read_json(&dir.join("same.json"));
    m["signatures"][1]["signature"] = m["signatures"][0]["signature"].clone();
    dir.write("forged.json", serde_json::to_vec(&m).unwrap());
    let out = inspect("forged.json", &all[..3]);
    out.fails(4, &["the manifest is refused", "does not verify"]);
    assert!(!out.stdout.contains("match"), "{}", out.stdout);
    // A certificate the manifest names and --certs lacks, or no --certs at all.
    inspect("same.json", &["c0.cer", "c1.cer"]).fails(2, &["the manifest's certificate 3 (", "--certs"]);
    inspect("same.json", &[]).fails(2, &["--manifest: give the custodians' certificates with --certs"]);
}
