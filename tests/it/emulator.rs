//! The emulated Managed HSM end to end, in process: download and its
//! refusals, challenge auth and roles, transfer key, upload and its failures,
//! and the canary key that proves a recovered instance is a clone.

use crate::common;

use std::path::Path;
use std::time::Duration;

use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::emulator::{self, Role, Status};
use hsm_ceremony::format::restore_blob::RestoreBlob;
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::instance::InstanceClient;
use hsm_ceremony::recovery;

use common::{custodians, raw, rng, start, Emu};

fn admin(emu: &Emu) -> InstanceClient {
    emu.client(&[Role::Administrator, Role::CryptoUser])
}

fn certs(range: std::ops::Range<usize>) -> Vec<Certificate> {
    custodians()[range].iter().map(|c| c.cert.clone()).collect()
}

fn status_of(dir: &Path) -> Status {
    emulator::inspect(dir).unwrap().status
}

fn weak_certificate(dir: &Path) -> Certificate {
    let key = dir.join("weak.key");
    let cer = dir.join("weak.cer");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "2", "-subj", "/CN=weak", "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cer)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Certificate::from_bytes(&std::fs::read(&cer).unwrap()).unwrap()
}

/// POSTs a download request with these JWKs; returns (status, body).
fn download_raw(emu: &Emu, token: &str, jwks: Vec<serde_json::Value>, required: i64) -> (u16, String) {
    let body = serde_json::json!({"certificates": jwks, "required": required}).to_string();
    let r = raw(
        emu,
        "POST",
        "/securitydomain/download?api-version=7.5",
        Some(token),
        Some(&body),
    );
    (r.status, r.body)
}

fn jwk(c: &Certificate) -> serde_json::Value {
    serde_json::to_value(c.to_jwk().unwrap()).unwrap()
}

#[test]
fn download_refusals_leave_the_instance_provisioned_then_3_certs_2_of_3_activate() {
    let emu = start();
    let token = emu.token("admin", &[Role::Administrator]);
    let c = certs(0..4);
    let weak = weak_certificate(emu.dir());
    let mut weak_jwk = jwk(&c[0]);
    // A JWK for the 1024-bit certificate, built by hand since to_jwk refuses it.
    {
        use base64::Engine;
        weak_jwk["x5c"] = serde_json::json!([base64::engine::general_purpose::STANDARD.encode(weak.der())]);
    }
    let mut mismatched = jwk(&c[0]);
    mismatched["n"] = jwk(&c[1])["n"].clone();
    let cases: Vec<(Vec<serde_json::Value>, i64, &str)> = vec![
        (vec![jwk(&c[0]), jwk(&c[1])], 2, "2 custodians"),
        (vec![jwk(&c[0]), jwk(&c[1]), jwk(&c[2])], 1, "quorum of 1"),
        (vec![jwk(&c[0]), jwk(&c[1]), jwk(&c[2])], 4, "quorum of 4"),
        (vec![jwk(&c[0]), jwk(&c[1]), weak_jwk], 2, "1024 bits"),
        (vec![jwk(&c[0]), jwk(&c[1]), mismatched], 2, "do not match"),
        (vec![jwk(&c[0]), jwk(&c[1]), jwk(&c[0])], 2, "same certificate"),
        (vec![jwk(&c[0]); 11], 2, "11 custodians"),
    ];
    for (jwks, m, reason) in cases {
        let (status, body) = download_raw(&emu, &token, jwks, m);
        assert_eq!(status, 400, "{reason}: {body}");
        assert!(body.contains(reason), "expected '{reason}' in {body}");
        assert!(body.contains("\"error\""), "{body}");
        assert_eq!(status_of(emu.dir()), Status::Provisioned, "{reason} changed the state");
    }
    let (status, _) = download_raw(&emu, &token, vec![], 2);
    assert_eq!(status, 400);
    assert_eq!(
        raw(
            &emu,
            "POST",
            "/securitydomain/download?api-version=7.5",
            Some(&token),
            Some("{not json")
        )
        .status,
        400
    );

    let client = admin(&emu);
    let text = client.download(&c[..3], 2).unwrap();
    let sd = SecurityDomain::from_json(text.as_bytes()).unwrap();
    assert_eq!((sd.share_count(), sd.required()), (3, 2));
    let tags: Vec<&str> = sd.enc_data.data.iter().map(|d| d.tag.as_str()).collect();
    assert_eq!(tags, ["hsm_backup", "base_enclave_backup", "partition_enclave_backup"]);
    assert_eq!(status_of(emu.dir()), Status::Activated);
    assert!(client.download_status().unwrap().is_success());
    // The raw answer: 202, the header carries the request's api-version, statuses exact.
    let r = raw(
        &emu,
        "POST",
        "/securitydomain/download?api-version=2025-07-01",
        Some(&token),
        Some(&serde_json::json!({"certificates": [jwk(&c[0]), jwk(&c[1]), jwk(&c[2])], "required": 3}).to_string()),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        r.async_op.as_deref(),
        Some(format!("{}/securitydomain/download/pending?api-version=2025-07-01", emu.url()).as_str())
    );
    // As the service: InProgress (with Retry-After, which the SDK's poller
    // waits) while it activates, then Success in its words.
    let poll = || {
        raw(
            &emu,
            "GET",
            "/securitydomain/download/pending?api-version=2025-07-01",
            Some(&token),
            None,
        )
    };
    let first = poll();
    assert_eq!(first.body, r#"{"status":"InProgress","status_details":""}"#);
    assert_eq!(first.retry_after.as_deref(), Some("1"));
    let second = poll();
    assert_eq!(
        second.body,
        r#"{"status":"Success","status_details":"The resource is active."}"#
    );
    assert_eq!(second.retry_after, None, "a finished status asks for no more polls");
    // Activated: no transfer key.
    let err = client.transfer_key().unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("already activated"), "{err}");
}

#[test]
fn challenge_auth_and_roles() {
    let emu = start();
    // No token: 401 with the challenge, even for a body that is not JSON (it is never read).
    let r = raw(
        &emu,
        "POST",
        "/securitydomain/download?api-version=7.5",
        None,
        Some("this is not json"),
    );
    assert_eq!(r.status, 401);
    let challenge = r.www_authenticate.expect("challenge header");
    assert!(
        challenge.starts_with("Bearer authorization=\"https://login.microsoftonline.com/"),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("resource=\"{}\"", emu.url())),
        "{challenge}"
    );
    // As the service: the bare challenge, no body.
    assert_eq!(r.body, "", "no token: an empty body");
    // Wrong token: 401 with the challenge and Key Vault's error body naming the fault.
    let r = raw(
        &emu,
        "GET",
        "/securitydomain/upload?api-version=7.5",
        Some("hsmemu_notissued"),
        None,
    );
    assert_eq!(r.status, 401);
    assert!(r.www_authenticate.is_some(), "a refused token is challenged too");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "Unauthorized", "{}", r.body);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not issued by this instance"),
        "{}",
        r.body
    );
    // Missing api-version: 400.
    let owner = emu.token("subscription-owner", &[]);
    assert_eq!(
        raw(&emu, "GET", "/securitydomain/upload", Some(&owner), None).status,
        400
    );
    assert_eq!(
        raw(
            &emu,
            "GET",
            "/securitydomain/upload?api-version=6.0",
            Some(&owner),
            None
        )
        .status,
        400
    );
    // No local role: 403, and nothing happened.
    let jwks: Vec<serde_json::Value> = certs(0..3).iter().map(jwk).collect();
    let (status, body) = download_raw(&emu, &owner, jwks.clone(), 2);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("subscription-owner"), "{body}");
    assert_eq!(
        raw(
            &emu,
            "GET",
            "/securitydomain/upload?api-version=7.5",
            Some(&owner),
            None
        )
        .status,
        403
    );
    assert_eq!(
        status_of(emu.dir()),
        Status::Provisioned,
        "the transfer key was not made"
    );
    // A crypto role does not open security-domain operations.
    let user = emu.token("app", &[Role::CryptoUser]);
    assert_eq!(download_raw(&emu, &user, jwks.clone(), 2).0, 403);
    assert_eq!(status_of(emu.dir()), Status::Provisioned);
    // An administrator does not get keys.
    let admin_token = emu.token("admin", &[Role::Administrator]);
    assert_eq!(download_raw(&emu, &admin_token, jwks, 2).0, 202);
    let r = raw(
        &emu,
        "POST",
        "/keys/canary/create?api-version=7.5",
        Some(&admin_token),
        Some(r#"{"kty":"RSA"}"#),
    );
    assert_eq!(r.status, 403);
    let r = raw(
        &emu,
        "POST",
        "/keys/canary/create?api-version=7.5",
        Some(&user),
        Some(r#"{"kty":"RSA"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = raw(&emu, "GET", "/keys/canary?api-version=7.5", Some(&owner), None);
    assert_eq!(r.status, 403);
}

fn recovered_items(sd_json: &str) -> Vec<recovery::PlainItem> {
    let sd = SecurityDomain::from_json(sd_json.as_bytes()).unwrap();
    let mut q = recovery::Quorum::new(&sd);
    for c in &custodians()[1..3] {
        q.add(&recovery::CustodianKey::from_rsa(
            c.name.clone(),
            c.key.clone(),
            Some((c.name.clone(), c.cert.clone())),
        ))
        .unwrap();
    }
    q.finish().unwrap().items
}

#[test]
fn recovery_clones_the_instance_and_failures_leave_it_recovering() {
    // Instance A: activated, with a canary key backed up.
    let a = start();
    let ca = admin(&a);
    let sd_a = ca.download(&certs(0..3), 2).unwrap();
    let canary = ca.create_rsa_key("canary").unwrap();
    assert_eq!(canary.name, "canary");
    assert!(canary.kid.starts_with(&format!("{}/keys/canary/", a.url())));
    let backup = ca.backup_key("canary").unwrap();
    let items = recovered_items(&sd_a);

    // Instance B: recovering (its folder outlives it: it is restarted below).
    let b_tmp = tempfile::tempdir().unwrap();
    let b_dir = b_tmp.path().join("instance");
    let b = Emu::start_in(&b_dir);
    let cb = admin(&b).with_polling(Duration::from_secs(20), Duration::from_millis(20));
    assert!(cb
        .restore_key(&backup)
        .unwrap_err()
        .to_string()
        .contains("not activated"));
    let exchange = cb.transfer_key().unwrap();
    assert_eq!(status_of(b.dir()), Status::Recovering);
    assert_eq!(
        cb.transfer_key().unwrap().der(),
        exchange.der(),
        "one exchange key per instance"
    );
    let fingerprint_before = emulator::inspect(b.dir()).unwrap();

    // Another instance's exchange key.
    let c = start();
    let other_exchange = admin(&c).transfer_key().unwrap();
    let wrong = recovery::build_restore_blob_with_rng(&mut rng(30), &items, &other_exchange).unwrap();
    let err = cb.upload(&wrong).unwrap_err().to_string();
    assert!(err.contains("another exchange key"), "{err}");
    assert_eq!(status_of(b.dir()), Status::Recovering);
    assert!(cb.status().unwrap().is_failed());

    // A tampered item is named.
    let mut tampered = recovery::build_restore_blob_with_rng(&mut rng(31), &items, &exchange).unwrap();
    {
        let jwe = &mut tampered.enc_data.data[1].compact_jwe;
        let mut parts: Vec<String> = jwe.split('.').map(String::from).collect();
        let mut ct = hsm_ceremony::crypto::b64::b64u_decode(&parts[3], "ct").unwrap();
        ct[10] ^= 0x40;
        parts[3] = hsm_ceremony::crypto::b64::b64u(&ct);
        *jwe = parts.join(".");
    }
    let err = cb.upload(&tampered).unwrap_err().to_string();
    assert!(err.contains("base_enclave_backup"), "{err}");
    assert_eq!(status_of(b.dir()), Status::Recovering);

    // A malformed blob fails with a reason; a malformed request body is a 400.
    let token = b.token("admin2", &[Role::Administrator]);
    let r = raw(
        &b,
        "POST",
        "/securitydomain/upload?api-version=7.5",
        Some(&token),
        Some(r#"{"value": "{\"EncData\": 1}"}"#),
    );
    assert_eq!(r.status, 202);
    assert_eq!(
        r.async_op.as_deref(),
        Some(format!("{}/securitydomain/upload/pending?api-version=7.5", b.url()).as_str())
    );
    let st = common::wait_terminal(&b, &token);
    assert!(st.contains("\"Failed\"") && st.contains("malformed"), "{st}");
    assert_eq!(
        raw(
            &b,
            "POST",
            "/securitydomain/upload?api-version=7.5",
            Some(&token),
            Some("[]")
        )
        .status,
        400
    );
    assert_eq!(
        emulator::inspect(b.dir()).unwrap().contents_fingerprint,
        fingerprint_before.contents_fingerprint
    );
    assert_eq!(status_of(b.dir()), Status::Recovering);

    // The good blob: Success, same contents, the canary restores.
    let good = recovery::build_restore_blob_with_rng(&mut rng(32), &items, &exchange).unwrap();
    let good = RestoreBlob::from_json(good.to_json().as_bytes()).unwrap();
    cb.upload(&good).unwrap();
    let done = cb.status().unwrap();
    assert!(
        done.is_success() && done.status_details == "The resource is active.",
        "{done:?}"
    );
    // Another instance's contents are held in memory only: on disk B is
    // recovering, waiting for the same blob again.
    let summary_b = emulator::inspect(b.dir()).unwrap();
    assert_eq!(summary_b.status, Status::Recovering);
    assert_eq!(summary_b.contents_fingerprint, None);
    let why = summary_b.upload.as_ref().unwrap();
    assert!(
        why.status_details
            .contains("recovered contents are kept in memory only"),
        "{why:?}"
    );
    let restored = cb.restore_key(&backup).unwrap();
    assert_eq!(restored.version, canary.version);
    assert!(restored.kid.starts_with(b.url()));
    assert_eq!(cb.get_key("canary").unwrap().version, canary.version);
    assert!(cb.restore_key(&backup).unwrap_err().to_string().contains("409"));
    assert!(
        !b.dir().join("keys.json").exists(),
        "a key restored under uploaded contents is not written"
    );

    // Upload to an activated instance: 400.
    let err = cb.start_upload(&good).unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("already activated"), "{err}");
    assert_eq!(emulator::inspect(b.dir()).unwrap(), summary_b);

    // Restarted, B is recovering and says so; the same blob activates it again.
    drop(cb);
    drop(b);
    let b_again = Emu::start_in(&b_dir);
    let cb = admin(&b_again).with_polling(Duration::from_secs(20), Duration::from_millis(20));
    let st = cb.status().unwrap();
    assert!(
        st.is_failed() && st.status_details.contains("upload the restore blob again"),
        "{st:?}"
    );
    assert!(cb
        .restore_key(&backup)
        .unwrap_err()
        .to_string()
        .contains("not activated"));
    cb.upload(&good).unwrap();
    assert_eq!(cb.restore_key(&backup).unwrap().version, canary.version);

    // Instance D, with its own security domain, refuses A's backup.
    let d = start();
    let cd = admin(&d);
    cd.download(&certs(2..5), 3).unwrap();
    let err = cd.restore_key(&backup).unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("another security domain"), "{err}");
    assert!(cd.get_key("canary").unwrap_err().to_string().contains("404"));
}

#[test]
fn state_survives_a_restart_and_one_server_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start_in(dir.path());
    let client = admin(&emu);
    client.download(&certs(0..3), 2).unwrap();
    let key = client.create_rsa_key("canary").unwrap();
    let before = emulator::inspect(dir.path()).unwrap();
    let second = emulator::spawn(emulator::Config::new(dir.path()));
    assert!(
        second.is_err(),
        "a second server on the same state directory is refused"
    );
    let ca_before = std::fs::read(dir.path().join(emulator::CA_FILE)).unwrap();
    drop(client);
    drop(emu);
    let emu = Emu::start_in(dir.path());
    assert_eq!(emulator::inspect(dir.path()).unwrap(), before);
    assert_eq!(
        std::fs::read(dir.path().join(emulator::CA_FILE)).unwrap(),
        ca_before,
        "same CA after a restart"
    );
    let client = admin(&emu);
    assert_eq!(client.get_key("canary").unwrap().version, key.version);
    let mut config = emulator::Config::new(tempfile::tempdir().unwrap().path());
    config.listen = "0.0.0.0:0".parse().unwrap();
    assert!(emulator::spawn(config).is_err(), "non-loopback refused");
}

/// A served emulator (plain HTTP on 127.0.0.1, so raw sockets can speak to
/// it) with a short body timeout and a small connection cap.
fn bounded_emulator(dir: &Path) -> (emulator::RunningEmulator, String) {
    let mut config = emulator::Config::new(dir);
    config.tls = false;
    config.body_timeout = Duration::from_millis(800);
    config.max_connections = 4;
    let running = emulator::spawn(config).unwrap();
    let token = emulator::issue_token(dir, "slow", &[Role::Administrator])
        .unwrap()
        .reveal();
    (running, token)
}

fn read_until_closed(stream: &mut std::net::TcpStream, within: Duration) -> (Vec<u8>, bool) {
    use std::io::Read;
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = std::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// An authenticated client trickling its body is answered 408 (Key Vault
/// JSON) and cut off within the body timeout, however long it would go on.
#[test]
fn a_slow_body_is_cut_off_within_a_bounded_time() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (emu, token) = bounded_emulator(dir.path());
    let mut s = std::net::TcpStream::connect(emu.local_addr()).unwrap();
    let start = std::time::Instant::now();
    write!(
        s,
        "POST /securitydomain/download?api-version=7.5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
    )
    .unwrap();
    // One byte every 100 ms for up to 10 s, on a thread, until the server hangs up.
    let mut trickle = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            if trickle.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"RequestTimeout""#), "{text}");
    assert!(closed, "the connection stayed open: {text}");
    assert!(elapsed < Duration::from_secs(5), "cut off only after {elapsed:?}");
    drop(s);
    writer.join().unwrap();
}

/// Connections beyond the cap are closed at once; the server keeps serving
/// the ones it holds, and new ones once slots free up.
#[test]
fn connections_beyond_the_cap_are_refused_without_exhausting_the_server() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (emu, token) = bounded_emulator(dir.path());
    let request = format!(
        "GET /securitydomain/upload/pending?api-version=7.5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(emu.local_addr()).unwrap())
        .collect();
    // Give the accept loop time to take the four in.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        let mut extra = std::net::TcpStream::connect(emu.local_addr()).unwrap();
        let _ = extra.write_all(request.as_bytes());
        let (got, closed) = read_until_closed(&mut extra, Duration::from_secs(3));
        assert!(
            closed && got.is_empty(),
            "a connection past the cap was served: {got:?}"
        );
    }
    // A held connection is still served.
    let mut first = held.into_iter().collect::<Vec<_>>();
    first[0].write_all(request.as_bytes()).unwrap();
    let (got, _) = read_until_closed(&mut first[0], Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 404"), "{got:?}");
    drop(first);
    // Slots free up: a new connection is served again, soon.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = std::net::TcpStream::connect(emu.local_addr()).unwrap();
        let _ = s.write_all(request.as_bytes());
        let (got, _) = read_until_closed(&mut s, Duration::from_secs(3));
        if String::from_utf8_lossy(&got).starts_with("HTTP/1.1 404") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server no longer serves");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A crypto user filling the key store gets a Key Vault 4xx once it would
/// outgrow what a start reads back, and the instance still restarts.
#[test]
fn a_full_key_store_is_refused_and_the_instance_still_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instance");
    let emu = Emu::start_in(&dir);
    admin(&emu).download(&certs(0..3), 2).unwrap();
    let token = emu.token("user", &[Role::CryptoUser]);
    let mut refused = None;
    for i in 0..40 {
        // A tag value as large as a request body allows.
        let body = serde_json::json!({"kty": "RSA", "tags": {"t": "x".repeat(1000 * 1000)}}).to_string();
        let r = raw(
            &emu,
            "POST",
            &format!("/keys/k{i}/create?api-version=7.5"),
            Some(&token),
            Some(&body),
        );
        if r.status != 200 {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("the key store refused to grow");
    assert!(
        i >= 10 && (400..500).contains(&r.status),
        "{i}: {} {}",
        r.status,
        r.body
    );
    let err: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(err["error"]["code"], "QuotaExceeded", "{}", r.body);
    drop(emu);
    let emu = Emu::start_in(&dir);
    let client = emu.client(&[Role::CryptoUser]);
    assert!(
        client.get_key(&format!("k{}", i - 1)).is_ok(),
        "the keys made before are still there"
    );
    assert!(client.get_key(&format!("k{i}")).is_err());
}
