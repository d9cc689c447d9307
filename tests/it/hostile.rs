//! The hostile-input corpus (`tests/hostile/`): every case in
//! `tests/hostile/cases.json` runs the real binary on malformed or
//! adversarial files and arguments, and must exit with its expected non-zero
//! code and message, never panic, never leave an output or temporary file,
//! never print a passphrase or a terminal escape. Static inputs live in
//! `tests/hostile/files/` (made by `make_static.py`); inputs that need the
//! shared custodians' keys, or are too large to commit, are generated here
//! (the case's `generate`). Emulator requests: `tests/hostile/emulator.json`,
//! sent raw to the in-process emulator, which must answer 4xx JSON and stay up.

use crate::util;

use std::ffi::OsString;
use std::fs;
#[cfg(feature = "network")]
use std::io::{Read, Write};
#[cfg(feature = "network")]
use std::net::TcpStream;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde::Deserialize;
use serde_json::Value;
use util::{fixtures, passphrase, set_mode, Dir, AZURE_SD, BIN};

const HOSTILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile");
/// The name a `{non-utf8}` argument stands for: not valid UTF-8.
const NON_UTF8: &[u8] = b"\xff\xfe-hostile.json";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    args: Vec<String>,
    code: i32,
    stderr: String,
    #[serde(default)]
    generate: Option<String>,
    /// What the case pins, in one line (required in the `cases-AREA.json` files).
    #[serde(default)]
    note: Option<String>,
}

fn static_dir() -> PathBuf {
    Path::new(HOSTILE).join("files")
}

/// `cases.json` and every `cases-AREA.json` beside it (one file per area of
/// hardening, so each grows on its own).
fn cases() -> Vec<Case> {
    let mut files: Vec<PathBuf> = fs::read_dir(HOSTILE)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name == "cases.json" || (name.starts_with("cases-") && name.ends_with(".json"))
        })
        .collect();
    files.sort();
    let mut all = Vec::new();
    for f in files {
        let mut some: Vec<Case> =
            serde_json::from_slice(&fs::read(&f).unwrap()).unwrap_or_else(|e| panic!("{} parses: {e}", f.display()));
        // The area files are newer: each case there says what it pins.
        if f.file_name().unwrap() != "cases.json" {
            if let Some(c) = some.iter().find(|c| c.note.as_deref().is_none_or(str::is_empty)) {
                panic!("{}: case {:?} has no note saying what it pins", f.display(), c.name);
            }
        }
        all.append(&mut some);
    }
    all
}

/// Copies the static inputs `args` name (and a log's `.head`), keys as 0600.
fn stage_static(d: &Dir, args: &[String]) {
    for a in args {
        // `--item TAG=FILE` names a file after the '='.
        let a = a.split_once('=').map_or(a.as_str(), |(_, f)| f);
        let src = static_dir().join(a);
        if a.contains('/') || !src.is_file() {
            continue;
        }
        fs::copy(&src, d.join(a)).unwrap();
        set_mode(&d.join(a), if a.ends_with(".key") { 0o600 } else { 0o644 });
        let head = static_dir().join(format!("{a}.head"));
        if head.is_file() {
            fs::copy(&head, d.join(&format!("{a}.head"))).unwrap();
        }
    }
}

fn sparse(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

fn azure() -> Value {
    serde_json::from_slice(&fs::read(AZURE_SD).unwrap()).unwrap()
}

/// A share's wire form: one 16-bit little-endian word per value.
fn words(x: u16, values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| ((x << 9) | v).to_le_bytes()).collect()
}

/// The shared sd.json with share `i` replaced by `bytes` encrypted to custodian `i`.
fn with_shares(d: &Dir, replace: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut sd: Value = serde_json::from_slice(&d.read("sd.json")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for (i, bytes) in replace {
        let cert = hsm_ceremony::custodian::cert::Certificate::from_bytes(&d.read(&format!("c{i}.cer"))).unwrap();
        let jwe =
            hsm_ceremony::crypto::jwe::encrypt_rsa_oaep256_with_rng(&mut rng, &cert.rsa_public_key().unwrap(), bytes)
                .unwrap();
        sd["SharedKeys"]["enc_shares"][*i]["enc_key"] = jwe.into();
    }
    serde_json::to_vec(&sd).unwrap()
}

fn scrypt(n: u64, r: u16, p: u16) -> pkcs8::pkcs5::pbes2::Kdf {
    pkcs8::pkcs5::pbes2::ScryptParams {
        salt: pkcs8::pkcs5::pbes2::Salt::new([7u8; 16]).unwrap(),
        cost_parameter: n,
        block_size: r,
        parallelization: p,
        key_length: Some(32),
    }
    .into()
}

fn pbkdf2(iterations: u32) -> pkcs8::pkcs5::pbes2::Kdf {
    pkcs8::pkcs5::pbes2::Kdf::Pbkdf2(pkcs8::pkcs5::pbes2::Pbkdf2Params {
        salt: pkcs8::pkcs5::pbes2::Salt::new([7u8; 16]).unwrap(),
        iteration_count: iterations,
        key_length: None,
        prf: pkcs8::pkcs5::pbes2::Pbkdf2Prf::HmacWithSha256,
    })
}

/// A DER `EncryptedPrivateKeyInfo` (mode 0600) with PBES2 `kdf` and
/// AES-256-CBC; the ciphertext is filler, since the file must be refused
/// from its parameters alone, before any derivation.
fn pkcs8_with(path: &Path, kdf: pkcs8::pkcs5::pbes2::Kdf) {
    use pkcs8::der::Encode;
    let filler = [0x5au8; 1232];
    let info = pkcs8::EncryptedPrivateKeyInfoRef {
        encryption_algorithm: pkcs8::pkcs5::EncryptionScheme::Pbes2(pkcs8::pkcs5::pbes2::Parameters {
            kdf,
            encryption: pkcs8::pkcs5::pbes2::EncryptionScheme::Aes256Cbc { iv: [9; 16] },
        }),
        encrypted_data: pkcs8::der::asn1::OctetStringRef::new(&filler).unwrap(),
    };
    fs::write(path, info.to_der().unwrap()).unwrap();
    set_mode(path, 0o600);
}

/// An unsigned manifest for `purpose`, 2 of c0..c(n-1), followed by `tail`.
fn manifest_for(d: &Dir, purpose: &str, n: usize, tail: &[u8]) -> Vec<u8> {
    let certs: Vec<String> = (0..n)
        .map(|i| {
            hsm_ceremony::custodian::cert::Certificate::from_bytes(&d.read(&format!("c{i}.cer")))
                .unwrap()
                .x5t_256()
        })
        .collect();
    let m = serde_json::json!({"terms": {"version": 1, "purpose": purpose, "custodians": n, "quorum": 2,
        "certificates": certs, "epoch": 1, "nonce": "AAAA", "created": "2025-01-01T00:00:00Z"}, "signatures": []});
    [serde_json::to_vec(&m).unwrap(), tail.to_vec()].concat()
}

/// Makes a case's generated input; `spec` is `KIND:NAME`.
fn generate(d: &Dir, spec: &str) {
    let (kind, name) = spec.split_once(':').expect("generate is KIND:NAME");
    let path = d.join(name);
    let ok32: Vec<u16> = (0..32).map(|i| (i * 37) % 257).collect();
    let share = |replace: Vec<(usize, Vec<u8>)>| fs::write(&path, with_shares(d, &replace)).unwrap();
    match kind {
        // A 1 GB file that takes no disk: refused by its size, never read.
        "sparse_1g" => sparse(&path, 1 << 30),
        "sd_big_tag" => {
            let mut v = azure();
            v["EncData"]["data"][0]["tag"] = "t".repeat(3_000_000).into();
            fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        }
        "sd_many_items" => {
            let mut v = azure();
            let items = v["EncData"]["data"].as_array().unwrap().clone();
            let many: Vec<Value> = items.iter().cycle().take(items.len() * 300).cloned().collect();
            v["EncData"]["data"] = many.into();
            fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        }
        "huge_log_line" => {
            let line = format!("{{\"seq\":1,\"command\":\"{}\"}}\n", "a".repeat(5_000_000));
            fs::write(&path, line).unwrap();
        }
        "non_utf8_copy" => {
            let target = d.path().join(OsString::from_vec(NON_UTF8.to_vec()));
            fs::copy(static_dir().join(name), target).unwrap();
        }
        "chmod_0640" => set_mode(&path, 0o640),
        "chmod_0644" => set_mode(&path, 0o644),
        // A secret (token) file that group or others can read.
        "secret_0644" => {
            fs::write(&path, "not-a-real-token\n").unwrap();
            set_mode(&path, 0o644);
        }
        // A private token file whose bytes are not text.
        "secret_non_utf8" => {
            fs::write(&path, b"\xff\xfe-token\n").unwrap();
            set_mode(&path, 0o600);
        }
        "share_x0" => share(vec![(0, words(0, &ok32))]),
        "share_x127" => share(vec![(0, words(127, &ok32))]),
        "share_mixed-lengths" => share(vec![
            (0, words(1, &ok32)),
            (1, words(2, &[ok32.clone(), vec![5]].concat())),
        ]),
        "share_odd-length" => share(vec![(0, words(1, &ok32)[..63].to_vec())]),
        "share_v257" => share(vec![(0, words(1, &[&ok32[..31], &[257]].concat()))]),
        "share_mixed-x" => share(vec![(0, [words(1, &ok32[..16]), words(2, &ok32[16..])].concat())]),
        "share_duplicate-x" => share(vec![(0, words(3, &ok32)), (1, words(3, &ok32))]),
        "share_share-31-bytes" => share(vec![(0, words(1, &ok32[..31]))]),
        // Custodian 0's modulus under another exponent: one person, two certificates.
        "twin_of_c0" => util::twin_certificate(d, 0, name),
        // A valid document, then more: refused as Python's json.load refuses it.
        "sd_then_object" => fs::write(&path, [&fs::read(AZURE_SD).unwrap()[..], b"\n{}"].concat()).unwrap(),
        "sd_then_garbage" => fs::write(&path, [&fs::read(AZURE_SD).unwrap()[..], b" x"].concat()).unwrap(),
        "sd_then_nul" => fs::write(&path, [&fs::read(AZURE_SD).unwrap()[..], b"\0"].concat()).unwrap(),
        // Encrypted PKCS#8 whose key derivation would allocate petabytes or run for hours.
        "pkcs8_scrypt_n2pow40" => pkcs8_with(&path, scrypt(1 << 40, 8, 1)),
        "pkcs8_scrypt_r_huge" => pkcs8_with(&path, scrypt(1 << 14, 65535, 1)),
        "pkcs8_scrypt_p_huge" => pkcs8_with(&path, scrypt(1 << 14, 8, 65535)),
        "pkcs8_scrypt_n0" => pkcs8_with(&path, scrypt(0, 8, 1)),
        "pkcs8_scrypt_n3" => pkcs8_with(&path, scrypt(3, 8, 1)),
        "pkcs8_pbkdf2_2pow31" => pkcs8_with(&path, pbkdf2(1 << 31)),
        "pkcs8_pbkdf2_u32max" => pkcs8_with(&path, pbkdf2(u32::MAX)),
        "manifest_then_object" => fs::write(&path, manifest_for(d, "split", 3, b" {}")).unwrap(),
        other => panic!("unknown generator {other}"),
    }
}

fn to_arg(a: &str) -> OsString {
    if a == "{non-utf8}" {
        OsString::from_vec(NON_UTF8.to_vec())
    } else {
        OsString::from(a)
    }
}

/// Names in `dir`, as bytes (non-UTF-8 names included).
fn listing(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    v.sort();
    v
}

/// Runs one case; returns what was wrong with it, if anything.
fn run_case(case: &Case) -> Result<(), String> {
    let d = Dir::new("hostile");
    d.ceremony();
    stage_static(&d, &case.args);
    if let Some(spec) = &case.generate {
        generate(&d, spec);
    }
    let before = listing(d.path());
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(case.args.iter().map(|a| to_arg(a)))
        .current_dir(d.path())
        .env_remove("HSM_CEREMONY_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run: {e}"))?;
    let took = started.elapsed();
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut wrong = Vec::new();
    if code != case.code {
        wrong.push(format!("exit code {code}, expected {}", case.code));
    }
    if code == 0 || code == 101 {
        wrong.push(format!("exit code {code} is success or a panic"));
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        wrong.push("it panicked".into());
    }
    if !stderr.contains("error") {
        wrong.push("no error printed".into());
    }
    if !stderr.contains(&case.stderr) {
        wrong.push(format!("stderr lacks {:?}", case.stderr));
    }
    for bytes in [&out.stdout, &out.stderr] {
        if bytes.iter().any(|&b| b == 0x1b || b == 0x07 || b == 0x9b) {
            wrong.push("a terminal control character was printed".into());
        }
    }
    for i in 0..5 {
        if stdout.contains(&passphrase(i)) || stderr.contains(&passphrase(i)) {
            wrong.push(format!("passphrase {i} was printed"));
        }
    }
    // Generated 1 GB files are refused by size: reading one would take seconds.
    if case.generate.as_deref().is_some_and(|g| g.starts_with("sparse_1g")) && took > Duration::from_secs(5) {
        wrong.push(format!("took {took:?}: the 1 GB file was read"));
    }
    let after = listing(d.path());
    let log = ["ceremony-log.jsonl", "ceremony-log.jsonl.head"].map(OsString::from);
    let new: Vec<&OsString> = after
        .iter()
        .filter(|n| !before.contains(n) && !log.contains(n))
        .collect();
    if !new.is_empty() {
        wrong.push(format!("files left behind: {new:?}"));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}\n  hsm-ceremony {}\n  --- stderr ---\n{}",
            case.name,
            wrong.join("; "),
            case.args.join(" "),
            stderr.lines().take(6).collect::<Vec<_>>().join("\n")
        ))
    }
}

#[test]
fn every_hostile_case_is_refused_cleanly() {
    let cases = cases();
    assert!(cases.len() >= 60, "the corpus has only {} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    fixtures();
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    println!(
        "hostile corpus: {} cases, {} passed",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases misbehaved:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_static_file_is_used_by_a_case() {
    let cases = cases();
    for entry in fs::read_dir(static_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("blob-") {
            continue; // every restore blob is uploaded by hostile_restore_blobs_fail_the_upload_cleanly
        }
        let base = name.trim_end_matches(".head");
        let used = cases.iter().any(|c| {
            c.args.iter().any(|a| a == base || a.ends_with(&format!("={base}")))
                || c.generate.as_deref().is_some_and(|g| g.ends_with(&format!(":{base}")))
        });
        assert!(used, "tests/hostile/files/{name} is not used by any case in cases.json");
    }
}

// ---------------------------------------------------------------------------
// Emulator requests (the network build only)

#[cfg(feature = "network")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmuCase {
    name: String,
    /// The request head as sent, `{token}` standing for an administrator's
    /// bearer token and `{host}` for the emulator's address.
    request: String,
    /// The body: a string, or `{"repeat": S, "times": N}`, or `{"nest": N}`.
    #[serde(default)]
    body: Option<Value>,
    /// What the case pins (one line); the older cases predate it.
    #[serde(default)]
    #[allow(dead_code, reason = "read by people, not by the harness")]
    note: Option<String>,
    /// Expected status (4xx).
    status: u16,
}

#[cfg(feature = "network")]
fn body_of(spec: &Option<Value>) -> Vec<u8> {
    match spec {
        None => Vec::new(),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        Some(v) if v.get("repeat").is_some() => v["repeat"]
            .as_str()
            .unwrap()
            .repeat(v["times"].as_u64().unwrap() as usize)
            .into_bytes(),
        Some(v) if v.get("nest").is_some() => {
            let n = v["nest"].as_u64().unwrap() as usize;
            format!("{{\"value\":{}\"x\"{}}}", "[".repeat(n), "]".repeat(n)).into_bytes()
        }
        Some(v) => panic!("bad body spec {v}"),
    }
}

/// Sends raw bytes and reads the answer until the server closes; returns
/// the status (0 when the connection closed without one) and the body.
#[cfg(feature = "network")]
fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, String) {
    let (status, _, body) = send_raw_with_head(addr, bytes);
    (status, body)
}

/// [`send_raw`], with the response head (status line and headers) too.
#[cfg(feature = "network")]
fn send_raw_with_head(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("the emulator accepts connections");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and close before reading a large body.
    // (No half-close: hyper treats end of input as an abandoned request.)
    let _ = s.write_all(bytes);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    (status, head, body)
}

#[cfg(feature = "network")]
#[test]
fn hostile_emulator_requests_get_4xx_json_and_the_server_stays_up() {
    use hsm_ceremony::emulator::{self, Role};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instance");
    let mut config = emulator::Config::new(&dir);
    config.tls = false;
    let running = emulator::spawn(config).unwrap();
    let addr = running.local_addr();
    let token = emulator::issue_token(
        &dir,
        "hostile",
        &[Role::Administrator, Role::CryptoOfficer, Role::CryptoUser],
    )
    .unwrap()
    .reveal();
    // Activated, so key requests reach their body checks; one known key for the operations.
    let certs: Vec<_> = crate::common::custodians()[0..3]
        .iter()
        .map(|c| c.cert.clone())
        .collect();
    hsm_ceremony::instance::InstanceClient::new(
        &format!("http://{addr}"),
        hsm_ceremony::crypto::secret::BearerToken::new(token.clone()),
        None,
    )
    .unwrap()
    .download(&certs, 2)
    .unwrap();
    for (name, body) in [
        ("hostile-ec", r#"{"kty":"EC-HSM","crv":"P-256"}"#),
        (
            "hostile-aes",
            r#"{"kty":"oct-HSM","key_size":256,"attributes":{"enabled":false}}"#,
        ),
    ] {
        let req = format!(
            "POST /keys/{name}/create?api-version=7.5 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(send_raw(addr, req.as_bytes()).0, 200, "{name}");
    }
    let cases: Vec<EmuCase> =
        serde_json::from_slice(&fs::read(Path::new(HOSTILE).join("emulator.json")).unwrap()).unwrap();
    assert!(cases.len() >= 15);
    let healthy = || {
        let req = format!(
            "GET /securitydomain/download/pending?api-version=7.5 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        send_raw(addr, req.as_bytes())
    };
    let mut failures = Vec::new();
    let mut failed_cases = 0;
    for case in &cases {
        let failures_before = failures.len();
        let body = body_of(&case.body);
        let head = case
            .request
            .replace("{token}", &token)
            .replace("{host}", &addr.to_string())
            .replace("{len}", &body.len().to_string());
        let mut bytes = head.replace('\n', "\r\n").into_bytes();
        bytes.extend_from_slice(&body);
        let (status, resp_head, resp) = send_raw_with_head(addr, &bytes);
        // Key Vault's error shape, or for the sign-in paths Entra's (AADSTS code first).
        let json_error = serde_json::from_str::<Value>(&resp).is_ok_and(|v| {
            v["error"]["message"].is_string()
                || (v["error"].is_string() && v["error_description"].as_str().is_some_and(|d| d.starts_with("AADSTS")))
        });
        let header_level = status == 400 && resp.is_empty();
        // A request with no Authorization header gets the service's bare
        // challenge: 401, WWW-Authenticate and an empty body; one with a
        // header that fails gets the challenge and a JSON body.
        let tokenless = !head.to_ascii_lowercase().contains("\nauthorization:");
        let challenged = resp_head
            .to_ascii_lowercase()
            .contains("\r\nwww-authenticate: bearer authorization=\"https://login.microsoftonline.com/");
        let bare_challenge = status == 401 && tokenless && resp.is_empty() && challenged;
        if status == 401 && !challenged {
            failures.push(format!("{}: 401 without the Bearer challenge", case.name));
        }
        if status == 401 && tokenless && !bare_challenge {
            failures.push(format!(
                "{}: no token, but not the bare challenge (body {:?})",
                case.name,
                resp.chars().take(300).collect::<String>()
            ));
        }
        if status != case.status || !(json_error || header_level || bare_challenge) {
            failures.push(format!(
                "{}: status {status} (expected {}), body {:?}",
                case.name,
                case.status,
                resp.chars().take(300).collect::<String>()
            ));
        }
        let (s, b) = healthy();
        if s != 404 && s != 200 {
            failures.push(format!(
                "{}: the server no longer answers properly ({s} {b})",
                case.name
            ));
        }
        failed_cases += usize::from(failures.len() > failures_before);
    }
    println!(
        "hostile emulator requests: {} cases, {} passed",
        cases.len(),
        cases.len() - failed_cases
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each `files/blob-*.json` is uploaded to a recovering emulator: the upload
/// is accepted (202, as the service does), then reported Failed with a
/// reason; the instance stays recovering and keeps answering.
#[cfg(feature = "network")]
#[test]
fn hostile_restore_blobs_fail_the_upload_cleanly() {
    use hsm_ceremony::emulator::{self, Role, Status};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instance");
    let mut config = emulator::Config::new(&dir);
    config.tls = false;
    let running = emulator::spawn(config).unwrap();
    let addr = running.local_addr();
    let token = emulator::issue_token(&dir, "hostile", &[Role::Administrator])
        .unwrap()
        .reveal();
    let request = |method: &str, path: &str, body: &str| {
        let req = format!(
            "{method} {path}?api-version=7.5 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        send_raw(addr, req.as_bytes())
    };
    let (status, body) = request("GET", "/securitydomain/upload", "");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let jwk: Value = serde_json::from_str(v["transfer_key"].as_str().unwrap()).unwrap();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(jwk["x5c"][0].as_str().unwrap())
        .unwrap();
    let x5t = util::b64u(&util::sha256(&der));
    let mut blobs: Vec<String> = fs::read_dir(static_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("blob-"))
        .collect();
    blobs.sort();
    assert!(blobs.len() >= 10);
    let mut failures = Vec::new();
    for name in &blobs {
        let text = fs::read_to_string(static_dir().join(name))
            .unwrap()
            .replace("{x5t}", &x5t);
        let upload = serde_json::json!({ "value": text }).to_string();
        let (status, body) = request("POST", "/securitydomain/upload", &upload);
        if status != 202 {
            failures.push(format!("{name}: upload answered {status} {body}"));
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let outcome = loop {
            let (s, b) = request("GET", "/securitydomain/upload/pending", "");
            let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
            if s != 200 || v["status"] != "InProgress" || Instant::now() > deadline {
                break (s, v);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let reason = outcome.1["status_details"].as_str().unwrap_or("");
        if outcome.0 != 200 || outcome.1["status"] != "Failed" || reason.is_empty() {
            failures.push(format!("{name}: pending answered {} {}", outcome.0, outcome.1));
        }
        if emulator::inspect(&dir).unwrap().status != Status::Recovering {
            failures.push(format!("{name}: the instance left recovery"));
        }
    }
    println!(
        "hostile restore blobs: {} uploads, {} refused cleanly",
        blobs.len(),
        blobs.len() - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
