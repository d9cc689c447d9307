//! The emulator's key data plane under load, loopback only, bounded in time
//! and request count:
//!
//! 1. 1,000 keys created on an activated instance (100 RSA-2048, 450 EC
//!    P-256, 450 AES-256: RSA generation would otherwise be the whole run),
//!    from 4 clients.
//! 2. A full backup of them to a local folder, and a full restore into a
//!    second instance recovered from the same security domain; timed
//!    together, then every key checked to be back.
//! 3. RSA-2048 signatures (RS256) and RSA-OAEP-256 unwraps by the HSM from
//!    4 keep-alive clients: at most 20,000 each or 10 s; throughput and
//!    latency percentiles.
//! 4. Peak RSS of the emulator holding the 1,000 keys (VmHWM).
//! 5. For scale, in process on one thread without HTTP: RS256 signatures
//!    per second with the key decoded once (as the emulator keeps it),
//!    unblinded (as the emulator signs) and blinded (as it signed before),
//!    and blinded with the key decoded from PKCS#8 for each signature; and
//!    the load average, since the served figures share the machine's cores
//!    with whatever else runs.
//!
//! Prints the figures and exits non-zero if a target is missed (backup and
//! restore under 10 s, ≥ 500 signatures/s served, RSS < 100 MB, no error).
//! Run with `benches/emulator_load.sh` (or `cargo bench --bench emulator_keys`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
mod common;

use common::{percentile, rss_kb, serve, Served};
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::custodian::keygen;
use hsm_ceremony::emulator::{self, Role};
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::instance::InstanceClient;
use hsm_ceremony::recovery;
use rand::SeedableRng;
use serde_json::{json, Value};

const KEYS: usize = 1_000;
const CLIENTS: usize = 4;
const MAX_OPS: usize = 20_000;
const OP_BUDGET: Duration = Duration::from_secs(10);
const V: &str = "api-version=7.5";

/// A keep-alive HTTPS client for one served instance with one token.
#[derive(Clone)]
struct Http {
    agent: ureq::Agent,
    url: String,
    bearer: String,
}

impl Http {
    fn new(s: &Served, principal: &str, roles: &[Role]) -> Http {
        let token = emulator::issue_token(&s.dir, principal, roles).unwrap().reveal();
        let ca = std::fs::read(&s.ca).unwrap();
        let root = ureq::tls::Certificate::from_pem(&ca).unwrap();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Http {
            agent,
            url: s.url.clone(),
            bearer: format!("Bearer {}", token.as_str()),
        }
    }

    /// Sends one request; `Err` names the route and status of anything but 2xx.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}?{V}", self.url);
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", &self.bearer)
            .header("Content-Type", "application/json")
            .body(text)
            .map_err(|e| e.to_string())?;
        let mut resp = self.agent.run(req).map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let answer = resp.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: {status} {answer}"));
        }
        Ok(serde_json::from_str(&answer).unwrap_or(Value::Null))
    }

    /// Starts a backup or restore and polls it to its end.
    fn job(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let started = self.call(method, path, Some(body))?;
        let job = started["jobId"].as_str().ok_or("no jobId")?.to_string();
        let kind = if path.contains("backup") { "backup" } else { "restore" };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.call("GET", &format!("/{kind}/{job}/pending"), None)?;
            match s["status"].as_str() {
                Some("InProgress") if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Some("Succeeded") => return Ok(s),
                _ => return Err(format!("{path} job ended {s}")),
            }
        }
    }
}

fn b64u(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn spec(i: usize) -> Value {
    match i % 20 {
        0 | 1 => json!({"kty": "RSA-HSM", "key_size": 2048}),
        n if n % 2 == 0 => json!({"kty": "EC-HSM", "crv": "P-256"}),
        _ => json!({"kty": "oct-HSM", "key_size": 256}),
    }
}

/// Runs `op` from CLIENTS threads until MAX_OPS or OP_BUDGET: latencies and errors.
fn throughput(op: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> (Vec<Duration>, f64, usize) {
    let op = Arc::new(op);
    let deadline = Instant::now() + OP_BUDGET;
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let op = op.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0;
                while lat.len() < MAX_OPS / CLIENTS && Instant::now() < deadline {
                    let t = Instant::now();
                    if let Err(e) = op() {
                        if errors == 0 {
                            eprintln!("error: {e}");
                        }
                        errors += 1;
                    }
                    lat.push(t.elapsed());
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (lat, e) = t.join().unwrap();
        all.extend(lat);
        errors += e;
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    (all, rate, errors)
}

/// Operations per second of `op` on this thread: at most 2,000 or 3 s.
fn rate(mut op: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u32;
    while n < 2_000 && started.elapsed() < Duration::from_secs(3) {
        op();
        n += 1;
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}

/// RS256 signatures/s on one thread with the key decoded once: unblinded (as
/// the emulator signs), blinded (as it signed before), and blinded decoding
/// the PKCS#8 key per signature (as it did before that).
fn sign_in_process(key: &rsa::PrivateKey) -> (f64, f64, f64) {
    use pkcs8::{DecodePrivateKey, EncodePrivateKey};
    use rsa::traits::SignatureScheme as _;
    let der = key.to_pkcs8_der().unwrap();
    let digest = [7u8; 32];
    let mut rng = hsm_ceremony::crypto::rng::os_rng();
    let decoded = rsa::PrivateKey::from_pkcs8_der(der.as_bytes()).unwrap();
    let unblinded = rate(|| {
        rsa::Pkcs1v15Sign::new::<sha2::Sha256>()
            .sign(None::<&mut rand::rngs::StdRng>, &decoded, &digest)
            .unwrap();
    });
    let blinded = rate(|| {
        decoded
            .pkcs1v15_sign_prehash_with_rng::<sha2::Sha256, _>(&mut rng, &digest)
            .unwrap();
    });
    let each = rate(|| {
        rsa::PrivateKey::from_pkcs8_der(der.as_bytes())
            .unwrap()
            .pkcs1v15_sign_prehash_with_rng::<sha2::Sha256, _>(&mut rng, &digest)
            .unwrap();
    });
    (unblinded, blinded, each)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let custodians: Vec<(rsa::PrivateKey, Certificate)> = (0..3)
        .map(|i| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(900 + i);
            let key = keygen::generate_key_with_rng(&mut rng, 2048).unwrap();
            let cert = keygen::self_signed_certificate_with_rng(&mut rng, &key, &format!("c{i}"), 30, now).unwrap();
            (key, cert)
        })
        .collect();
    let certs: Vec<Certificate> = custodians.iter().map(|(_, c)| c.clone()).collect();
    let roles = [Role::Administrator, Role::CryptoUser];
    let mut errors: Vec<String> = Vec::new();

    // The original, activated, and a second instance recovered from its security domain.
    let source = serve(&tmp.path().join("source"));
    let admin = |s: &Served| {
        let token = emulator::issue_token(&s.dir, "admin", &[Role::Administrator]).unwrap();
        InstanceClient::new(&s.url, token, Some(&s.ca))
            .unwrap()
            .with_polling(Duration::from_secs(60), Duration::from_millis(20))
    };
    let sd_json = admin(&source).download(&certs, 2).unwrap();
    let target = serve(&tmp.path().join("target"));
    let exchange = admin(&target).transfer_key().unwrap();
    let sd = SecurityDomain::from_json(sd_json.as_bytes()).unwrap();
    let mut q = recovery::Quorum::new(&sd);
    for (n, (key, _)) in custodians.iter().take(2).enumerate() {
        q.add(&recovery::CustodianKey::from_rsa(format!("c{n}"), key.clone(), None))
            .unwrap();
    }
    let items = q.finish().unwrap().items;
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    let blob = recovery::build_restore_blob_with_rng(&mut rng, &items, &exchange).unwrap();
    admin(&target).upload(&blob).unwrap();

    // 1. 1,000 keys.
    let http = Http::new(&source, "load", &roles);
    let created_at = Instant::now();
    let creators: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let http = http.clone();
            std::thread::spawn(move || -> Vec<String> {
                (0..KEYS)
                    .filter(|i| i % CLIENTS == c)
                    .filter_map(|i| http.call("POST", &format!("/keys/k{i}/create"), Some(spec(i))).err())
                    .collect()
            })
        })
        .collect();
    for c in creators {
        errors.extend(c.join().unwrap());
    }
    let create_time = created_at.elapsed();

    // 2. Full backup and full restore, timed together.
    let store = tmp.path().join("backups");
    std::fs::create_dir_all(&store).unwrap();
    let uri = format!("file://{}", store.display());
    let restorer = Http::new(&target, "load", &roles);
    let br_at = Instant::now();
    let restored = http
        .job("POST", "/backup", json!({"storageResourceUri": uri}))
        .and_then(|done| {
            let folder = done["azureStorageBlobContainerUri"]
                .as_str()
                .and_then(|u| u.rsplit('/').next())
                .ok_or("no folder")?
                .to_string();
            restorer.job(
                "PUT",
                "/restore",
                json!({"sasTokenParameters": {"storageResourceUri": uri}, "folderToRestore": folder}),
            )
        });
    let backup_restore_time = br_at.elapsed();
    if let Err(e) = restored {
        errors.push(e);
    }
    let missing = (0..KEYS)
        .filter(|i| restorer.call("GET", &format!("/keys/k{i}"), None).is_err())
        .count();
    if missing > 0 {
        errors.push(format!("{missing} keys missing after the restore"));
    }

    // 3. HSM-side RSA-2048 signatures and unwraps on the original.
    let rsa_kid = http.call("GET", "/keys/k0", None).unwrap()["key"]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let version = rsa_kid.rsplit('/').next().unwrap().to_string();
    let sign_path = format!("/keys/k0/{version}/sign");
    let digest = b64u(&[7u8; 32]);
    let signer = http.clone();
    let (sign_lat, sign_rate, sign_errors) = throughput(move || {
        signer
            .call("POST", &sign_path, Some(json!({"alg": "RS256", "value": digest})))
            .map(drop)
    });
    let wrapped = http
        .call(
            "POST",
            &format!("/keys/k0/{version}/wrapkey"),
            Some(json!({"alg": "RSA-OAEP-256", "value": b64u(&[9u8; 32])})),
        )
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let unwrap_path = format!("/keys/k0/{version}/unwrapkey");
    let unwrapper = http.clone();
    let (unwrap_lat, unwrap_rate, unwrap_errors) = throughput(move || {
        unwrapper
            .call(
                "POST",
                &unwrap_path,
                Some(json!({"alg": "RSA-OAEP-256", "value": wrapped})),
            )
            .map(drop)
    });

    // 4. Memory of the emulator holding the keys.
    let hwm = rss_kb(source.child.id(), "VmHWM:");
    let load_served = load_average();

    // 5. The same signature in process, on one thread.
    let (unblinded_rate, blinded_rate, each_rate) = sign_in_process(&custodians[0].0);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "keys: {KEYS} created from {CLIENTS} clients in {:.2} s",
        create_time.as_secs_f64()
    );
    println!(
        "full backup + full restore of {KEYS} keys (local folder): {:.2} s",
        backup_restore_time.as_secs_f64()
    );
    println!(
        "RS256 signatures: {} in {OP_BUDGET:?} max = {sign_rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {sign_errors} errors",
        sign_lat.len(),
        ms(percentile(&sign_lat, 0.50)),
        ms(percentile(&sign_lat, 0.99))
    );
    println!(
        "RSA-OAEP-256 unwraps: {} = {unwrap_rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {unwrap_errors} errors",
        unwrap_lat.len(),
        ms(percentile(&unwrap_lat, 0.50)),
        ms(percentile(&unwrap_lat, 0.99))
    );
    println!(
        "emulator memory with {KEYS} keys: peak RSS {:.1} MB",
        hwm as f64 / 1024.0
    );
    println!(
        "in process, one thread, no HTTP, the key decoded once: RS256 {unblinded_rate:.0}/s unblinded \
         (as the emulator signs), {blinded_rate:.0}/s blinded, {each_rate:.0}/s blinded decoding PKCS#8 \
         per signature; {} cores, load average {load_served} after the served runs, {} now",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );

    let mut missed = Vec::new();
    for e in errors.iter().take(5) {
        println!("error: {e}");
    }
    if !errors.is_empty() || sign_errors > 0 || unwrap_errors > 0 {
        missed.push("errors".to_string());
    }
    if backup_restore_time >= Duration::from_secs(10) {
        missed.push(format!(
            "backup + restore {:.2} s >= 10 s",
            backup_restore_time.as_secs_f64()
        ));
    }
    if sign_rate < 500.0 {
        missed.push(format!("{sign_rate:.0} signatures/s < 500"));
    }
    if hwm >= 100 * 1024 {
        missed.push(format!("peak RSS {:.1} MB >= 100 MB", hwm as f64 / 1024.0));
    }
    // exit() skips destructors: stop the emulators first, or they outlive the run.
    drop(source);
    drop(target);
    if missed.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed: {}", missed.join("; "));
        std::process::exit(1);
    }
}
