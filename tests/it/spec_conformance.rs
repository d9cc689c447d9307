//! The files we write, opened by an independent reading of the spec
//! (`man/hsm-ceremony-security-domain.5`): OpenSSL does the RSA-OAEP-256
//! and AES-256-CBC, this file does the rest (the A256CBC-HS512 tag, the share
//! words, Lagrange over GF(257), the SP 800-108 KDF) without the library's
//! crypto. A self-consistent but non-Azure encoding would fail here.

use crate::util;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;
use util::{b64u_decode, fixtures, openssl, passphrase, Dir};

/// The five parts of a compact JWE, decoded (the header kept as text).
struct Jwe {
    header_b64: String,
    header: String,
    encrypted_key: Vec<u8>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

fn parse(jwe: &str) -> Jwe {
    let p: Vec<&str> = jwe.split('.').collect();
    assert_eq!(p.len(), 5);
    Jwe {
        header_b64: p[0].to_string(),
        header: String::from_utf8(b64u_decode(p[0])).unwrap(),
        encrypted_key: b64u_decode(p[1]),
        iv: b64u_decode(p[2]),
        ciphertext: b64u_decode(p[3]),
        tag: b64u_decode(p[4]),
    }
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// RFC 7518 §5.2.2 with OpenSSL for the AES: checks the tag, then decrypts.
fn open_cbc_hs512(dir: &Dir, key: &[u8], jwe: &Jwe) -> Vec<u8> {
    assert_eq!(key.len(), 64);
    assert_eq!((jwe.iv.len(), jwe.tag.len()), (16, 32));
    let aad = jwe.header_b64.as_bytes();
    let al = ((aad.len() * 8) as u64).to_be_bytes();
    let t = hmac_sha512(&key[..32], &[aad, &jwe.iv, &jwe.ciphertext, &al]);
    assert_eq!(&t[..32], &jwe.tag[..], "the authentication tag");
    dir.write("ct.bin", &jwe.ciphertext);
    openssl(
        dir,
        &[
            "enc",
            "-d",
            "-aes-256-cbc",
            "-K",
            &hex::encode(&key[32..]),
            "-iv",
            &hex::encode(&jwe.iv),
            "-in",
            "ct.bin",
            "-out",
            "pt.bin",
        ],
    );
    let pt = dir.read("pt.bin");
    dir.remove("ct.bin");
    dir.remove("pt.bin");
    pt
}

/// RSA-OAEP with SHA-256 and MGF1-SHA-256 by OpenSSL, then the content.
fn open_rsa_jwe(dir: &Dir, jwe: &Jwe, key: &str, passin: Option<&str>) -> Vec<u8> {
    assert_eq!(
        jwe.header,
        r#"{"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":"not used"}"#
    );
    dir.write("ek.bin", &jwe.encrypted_key);
    let mut args = vec!["pkeyutl", "-decrypt", "-inkey", key, "-in", "ek.bin", "-out", "cek.bin"];
    if let Some(p) = passin {
        args.extend(["-passin", p]);
    }
    args.extend([
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
    ]);
    openssl(dir, &args);
    let cek = dir.read("cek.bin");
    dir.remove("ek.bin");
    dir.remove("cek.bin");
    open_cbc_hs512(dir, &cek, jwe)
}

const P: u32 = 257;

fn inv(a: u32) -> u32 {
    // a^(p-2) mod p
    (0..P - 2).fold(1, |acc, _| acc * a % P)
}

/// Spec §2: little-endian words `(x << 9) | v`; Lagrange at 0 over GF(257).
fn combine(shares: &[Vec<u8>]) -> Vec<u8> {
    let decoded: Vec<(u32, Vec<u32>)> = shares
        .iter()
        .map(|s| {
            assert_eq!(s.len(), 64, "a share of a 32-byte key is 64 bytes");
            let words: Vec<u16> = s.chunks(2).map(|w| u16::from_le_bytes([w[0], w[1]])).collect();
            let x = (words[0] >> 9) as u32;
            assert!(words.iter().all(|w| (w >> 9) as u32 == x), "one x throughout");
            let v: Vec<u32> = words.iter().map(|w| (w & 0x1ff) as u32).collect();
            assert!(v.iter().all(|&v| v <= 256));
            (x, v)
        })
        .collect();
    let basis: Vec<u32> = decoded
        .iter()
        .map(|(xj, _)| {
            decoded
                .iter()
                .filter(|(xk, _)| xk != xj)
                .fold(1, |acc, (xk, _)| acc * xk % P * inv((xk + P - xj) % P) % P)
        })
        .collect();
    (0..32)
        .map(|i| {
            let s = decoded
                .iter()
                .zip(&basis)
                .fold(0, |acc, ((_, v), l)| (acc + v[i] * l) % P);
            assert!(s < 256, "byte {i} interpolates to {s}");
            s as u8
        })
        .collect()
}

/// Spec §5 with L = 512: one HMAC.
fn item_key(master: &[u8], tag: &str) -> Vec<u8> {
    hmac_sha512(
        master,
        &[&1u32.to_be_bytes(), tag.as_bytes(), &[0], b"", &512u32.to_be_bytes()],
    )
}

/// Opens every item of `enc_data` under `master`, checking the header.
fn open_items(dir: &Dir, enc_data: &serde_json::Value, master: &[u8]) -> Vec<(String, Vec<u8>)> {
    assert_eq!(enc_data["kdf"], "sp108_kdf");
    enc_data["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let tag = item["tag"].as_str().unwrap().to_string();
            let jwe = parse(item["compact_jwe"].as_str().unwrap());
            assert_eq!(
                jwe.header,
                format!(r#"{{"alg":"dir","enc":"A256CBC-HS512","kid":"{tag}"}}"#)
            );
            assert!(jwe.encrypted_key.is_empty());
            let pt = open_cbc_hs512(dir, &item_key(master, &tag), &jwe);
            (tag, pt)
        })
        .collect()
}

/// The items as the library opens them with custodians 1 and 2.
fn library_items() -> Vec<(String, Vec<u8>)> {
    use hsm_ceremony::crypto::secret::Passphrase;
    use hsm_ceremony::inputs;
    use hsm_ceremony::recovery::{CustodianKey, Quorum};
    let f = fixtures();
    let sd = inputs::security_domain(&f.path("sd.json")).unwrap();
    let keys: Vec<CustodianKey> = [1, 2]
        .iter()
        .map(|&i| {
            let key = inputs::key_file(&f.path(&format!("c{i}.key")))
                .unwrap()
                .into_key(Some(&Passphrase::new(passphrase(i))))
                .unwrap();
            CustodianKey::from_rsa(format!("c{i}.key"), key, None)
        })
        .collect();
    let mut q = Quorum::new(&sd);
    for k in &keys {
        q.add(k).unwrap();
    }
    q.finish()
        .unwrap()
        .items
        .iter()
        .map(|i| (i.tag.clone(), i.plaintext.expose().to_vec()))
        .collect()
}

#[test]
fn our_security_domain_opens_by_the_spec() {
    let dir = Dir::new("spec-sd");
    dir.ceremony();
    let sd = util::read_json(&dir.join("sd.json"));
    let shares = &sd["SharedKeys"]["enc_shares"];
    // Custodians 0 and 2 (x = 1 and 3), each share opened by OpenSSL with the custodian's key.
    let opened: Vec<Vec<u8>> = [0usize, 2]
        .iter()
        .map(|&i| {
            assert_eq!(shares[i]["x5t_256"], fixtures().x5t[i]);
            let jwe = parse(shares[i]["enc_key"].as_str().unwrap());
            assert_eq!(
                (jwe.encrypted_key.len(), jwe.ciphertext.len()),
                (256, 80),
                "as in the real Azure file"
            );
            let share = open_rsa_jwe(&dir, &jwe, &format!("c{i}.key"), Some(&format!("file:c{i}.pass")));
            assert_eq!(
                u16::from_le_bytes([share[0], share[1]]) >> 9,
                i as u16 + 1,
                "x follows the certificate order"
            );
            share
        })
        .collect();
    let master = combine(&opened);
    let items = open_items(&dir, &sd["EncData"], &master);
    let tags: Vec<&str> = items.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, ["hsm_backup", "base_enclave_backup", "partition_enclave_backup"]);
    let sizes: Vec<usize> = items.iter().map(|(_, p)| p.len()).collect();
    assert_eq!(sizes, [8192 - 16, 880 - 16, 2960 - 16]);
    // Another quorum, through the library, sees the same bytes.
    assert_eq!(items, library_items());
}

#[test]
fn our_restore_blob_opens_by_the_spec() {
    let dir = Dir::new("spec-blob");
    dir.ceremony();
    dir.run(&util::restore_blob_args(
        &["c1.key", "c0.key"],
        &["c1.pass", "c0.pass"],
        "blob.json",
    ))
    .ok();
    let blob = util::read_json(&dir.join("blob.json"));
    let wrapped = &blob["WrappedKey"];
    let exchange_der = util::pem_der(&dir.read_string("exchange.cer"));
    assert_eq!(wrapped["x5t_256"], util::b64u(&util::sha256(&exchange_der)));
    let master = open_rsa_jwe(&dir, &parse(wrapped["enc_key"].as_str().unwrap()), "exchange.key", None);
    assert_eq!(master.len(), 32, "the wrapped key is a 32-byte master key");
    assert_eq!(open_items(&dir, &blob["EncData"], &master), library_items());
}

/// RFC 7518 §5.2.2 encryption, OpenSSL for the AES: the compact JWE text.
fn seal_cbc_hs512(dir: &Dir, header: &str, encrypted_key: &[u8], key: &[u8], iv: &[u8], plaintext: &[u8]) -> String {
    let header_b64 = util::b64u(header.as_bytes());
    dir.write("pt.bin", plaintext);
    openssl(
        dir,
        &[
            "enc",
            "-e",
            "-aes-256-cbc",
            "-K",
            &hex::encode(&key[32..]),
            "-iv",
            &hex::encode(iv),
            "-in",
            "pt.bin",
            "-out",
            "ct.bin",
        ],
    );
    let ct = dir.read("ct.bin");
    dir.remove("pt.bin");
    dir.remove("ct.bin");
    let al = ((header_b64.len() * 8) as u64).to_be_bytes();
    let tag = hmac_sha512(&key[..32], &[header_b64.as_bytes(), iv, &ct, &al]);
    [
        header_b64,
        util::b64u(encrypted_key),
        util::b64u(iv),
        util::b64u(&ct),
        util::b64u(&tag[..32]),
    ]
    .join(".")
}

/// Spec §4: readers may accept `RSA-OAEP` (SHA-1) shares from old files. One
/// is made here by OpenSSL (its OAEP default is SHA-1) and read by the tool.
#[test]
fn an_old_rsa_oaep_sha1_share_is_read() {
    let dir = Dir::new("spec-oaep-sha1");
    dir.ceremony();
    let mut sd = util::read_json(&dir.join("sd.json"));
    let share0 = open_rsa_jwe(
        &dir,
        &parse(sd["SharedKeys"]["enc_shares"][0]["enc_key"].as_str().unwrap()),
        "c0.key",
        Some("file:c0.pass"),
    );
    let cek: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    dir.write("cek.bin", &cek);
    openssl(
        &dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-certin",
            "-inkey",
            "c0.cer",
            "-in",
            "cek.bin",
            "-out",
            "ek.bin",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
        ],
    );
    let ek = dir.read("ek.bin");
    let old = seal_cbc_hs512(
        &dir,
        r#"{"alg":"RSA-OAEP","enc":"A256CBC-HS512","kid":"not used"}"#,
        &ek,
        &cek,
        &[7u8; 16],
        &share0,
    );
    sd["SharedKeys"]["enc_shares"][0]["enc_key"] = old.into();
    dir.remove("sd.json");
    dir.write("sd.json", serde_json::to_vec(&sd).unwrap());

    dir.run(&[
        "custodian",
        "verify",
        "--sd-file",
        "sd.json",
        "--key",
        "c0.key",
        "--passphrase-file",
        "c0.pass",
    ])
    .ok()
    .stdout_has("share x=1 of 3 opens");
    dir.run(&util::restore_blob_args(
        &["c0.key", "c1.key"],
        &["c0.pass", "c1.pass"],
        "blob.json",
    ))
    .ok();
    // The blob itself is always written with RSA-OAEP-256.
    let blob = util::read_json(&dir.join("blob.json"));
    let master = open_rsa_jwe(
        &dir,
        &parse(blob["WrappedKey"]["enc_key"].as_str().unwrap()),
        "exchange.key",
        None,
    );
    assert_eq!(open_items(&dir, &blob["EncData"], &master), library_items());
}

/// Control for the helpers above: a share sealed by this file with
/// RSA-OAEP-256 and a wrong tag is refused by the tool.
#[test]
fn a_share_sealed_here_with_a_bad_tag_is_refused() {
    let dir = Dir::new("spec-bad-tag");
    dir.ceremony();
    let mut sd = util::read_json(&dir.join("sd.json"));
    let share0 = open_rsa_jwe(
        &dir,
        &parse(sd["SharedKeys"]["enc_shares"][0]["enc_key"].as_str().unwrap()),
        "c0.key",
        Some("file:c0.pass"),
    );
    let cek = vec![0x42u8; 64];
    dir.write("cek.bin", &cek);
    openssl(
        &dir,
        &[
            "pkeyutl",
            "-encrypt",
            "-certin",
            "-inkey",
            "c0.cer",
            "-in",
            "cek.bin",
            "-out",
            "ek.bin",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
    );
    let ek = dir.read("ek.bin");
    let header = r#"{"alg":"RSA-OAEP-256","enc":"A256CBC-HS512","kid":"not used"}"#;
    let good = seal_cbc_hs512(&dir, header, &ek, &cek, &[9u8; 16], &share0);
    let bad = util::mutate_jwe(&good, 4, |t| t[0] ^= 1);
    for (jwe, ok) in [(good, true), (bad, false)] {
        sd["SharedKeys"]["enc_shares"][0]["enc_key"] = jwe.into();
        dir.remove("sd.json");
        dir.write("sd.json", serde_json::to_vec(&sd).unwrap());
        let out = dir.run(&[
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            "c0.key",
            "--passphrase-file",
            "c0.pass",
        ]);
        if ok {
            out.ok();
        } else {
            out.fails(
                util::EXIT_INTEGRITY,
                &["the share of c0.key (certificate c0.cer) failed its integrity check"],
            );
        }
    }
}
