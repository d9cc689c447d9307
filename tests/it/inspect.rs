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
