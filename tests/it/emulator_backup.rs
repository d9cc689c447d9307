//! Full backup and restore end to end: a backup of an activated instance to
//! a local folder and to Azurite (Microsoft's storage emulator, on
//! loopback), restored into a second instance recovered from the same
//! security domain through the upload flow, with the inventory identical;
//! a foreign instance refusing it; selective key restore; the LRO shape.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::emulator::Role;
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::recovery;
use serde_json::{json, Value};

use common::{agent_for, custodians, raw, rng, start, Emu};

const V: &str = "api-version=7.5";

fn certs() -> Vec<Certificate> {
    custodians()[0..3].iter().map(|c| c.cert.clone()).collect()
}

struct Answer {
    status: u16,
    body: Value,
    async_op: Option<String>,
    retry_after: Option<String>,
    request_id: Option<String>,
}

/// One request with any method (the shared `raw` sends only GET and POST).
fn call(emu: &Emu, token: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
    let agent = agent_for(emu.ca());
    let url = format!("{}{path}?{V}", emu.url());
    let auth = format!("Bearer {token}");
    let result = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        ("PUT", b) => agent
            .put(&url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(b.unwrap_or(json!({})).to_string()),
        (_, b) => agent
            .post(&url)
            .header("Authorization", &auth)
            .content_type("application/json")
            .send(b.unwrap_or(json!({})).to_string()),
    };
    let mut resp = result.unwrap();
    let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (async_op, retry_after, request_id) = (
        header("azure-asyncoperation"),
        header("retry-after"),
        header("x-ms-request-id"),
    );
    let text = resp.body_mut().read_to_string().unwrap();
    Answer {
        status: resp.status().as_u16(),
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        async_op,
        retry_after,
        request_id,
    }
}

/// Starts an operation, checks the 202's shape, and polls its status URL to the end.
fn run_job(emu: &Emu, token: &str, method: &str, path: &str, body: Value) -> Value {
    let started = call(emu, token, method, path, Some(body));
    assert_eq!(started.status, 202, "{method} {path}: {}", started.body);
    assert_eq!(started.body["status"], "InProgress");
    assert_eq!(started.retry_after.as_deref(), Some("1"), "Retry-After on a 202");
    assert!(started.request_id.is_some(), "x-ms-request-id");
    let job = started.body["jobId"].as_str().unwrap().to_string();
    let status_url = started.async_op.expect("Azure-AsyncOperation");
    let kind = if path.contains("backup") { "backup" } else { "restore" };
    assert_eq!(status_url, format!("{}/{kind}/{job}/pending?{V}", emu.url()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = call(emu, token, "GET", &format!("/{kind}/{job}/pending"), None);
        assert_eq!(s.status, 200, "{}", s.body);
        assert_eq!(s.body["jobId"], job.as_str());
        if s.body["status"] != "InProgress" {
            assert!(s.body["endTime"].is_u64());
            assert_eq!(s.retry_after, None, "no Retry-After once the job has ended");
            return s.body;
        }
        assert_eq!(s.retry_after.as_deref(), Some("1"), "Retry-After while the job runs");
        assert!(Instant::now() < deadline, "job {job} still in progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create_key(emu: &Emu, token: &str, name: &str, body: Value) -> Value {
    let r = raw(
        emu,
        "POST",
        &format!("/keys/{name}/create?{V}"),
        Some(token),
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// Every key and version the test made, as the instance shows it (origin left out).
fn inventory(emu: &Emu, token: &str, versions: &[(&str, String)]) -> Vec<Value> {
    versions
        .iter()
        .map(|(name, version)| {
            let r = raw(emu, "GET", &format!("/keys/{name}/{version}?{V}"), Some(token), None);
            assert_eq!(r.status, 200, "{name}/{version}: {}", r.body);
            let v: Value = serde_json::from_str(&r.body).unwrap();
            json!({
                "kid": v["key"]["kid"].as_str().unwrap().rsplit('/').take(2).collect::<Vec<_>>(),
                "n": v["key"]["n"], "key_ops": v["key"]["key_ops"],
                "enabled": v["attributes"]["enabled"], "created": v["attributes"]["created"],
                "tags": v["tags"],
            })
        })
        .collect()
}

fn version_of(bundle: &Value) -> String {
    bundle["key"]["kid"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

/// An activated instance with two keys (one of two versions, one disabled with tags).
fn original() -> (Emu, String, String, Vec<(&'static str, String)>) {
    let a = start();
    let token = a.token("admin", &[Role::Administrator, Role::CryptoUser]);
    let client = a.client(&[Role::Administrator]);
    let sd = client.download(&certs(), 2).unwrap();
    let k1a = create_key(&a, &token, "k1", json!({"kty": "RSA-HSM"}));
    let k1b = create_key(&a, &token, "k1", json!({"kty": "RSA-HSM", "tags": {"v": "2"}}));
    let k2 = create_key(
        &a,
        &token,
        "k2",
        json!({"kty": "RSA-HSM", "key_ops": ["sign", "verify"], "attributes": {"enabled": false}, "tags": {"app": "payments"}}),
    );
    let versions = vec![
        ("k1", version_of(&k1a)),
        ("k1", version_of(&k1b)),
        ("k2", version_of(&k2)),
    ];
    (a, token, sd, versions)
}

/// A new instance recovered from `sd`'s security domain (transfer key, restore blob, upload).
fn recovered(sd: &str) -> (Emu, String) {
    let b = start();
    let token = b.token("admin", &[Role::Administrator, Role::CryptoUser]);
    let client = b.client(&[Role::Administrator]);
    let exchange = client.transfer_key().unwrap();
    let sd = SecurityDomain::from_json(sd.as_bytes()).unwrap();
    let mut q = recovery::Quorum::new(&sd);
    for c in &custodians()[1..3] {
        q.add(&recovery::CustodianKey::from_rsa(c.name.clone(), c.key.clone(), None))
            .unwrap();
    }
    let items = q.finish().unwrap().items;
    let blob = recovery::build_restore_blob_with_rng(&mut rng(70), &items, &exchange).unwrap();
    client.upload(&blob).unwrap();
    (b, token)
}

fn restore_body(uri: &str, token: Option<&str>, folder: &str) -> Value {
    json!({"sasTokenParameters": {"storageResourceUri": uri, "token": token}, "folderToRestore": folder})
}

/// Backs `a` up to `uri`, restores it into a recovered instance and a foreign one, and checks all.
const APP_ASSIGNMENT: &str =
    "/keys/k1/providers/Microsoft.Authorization/roleAssignments/0c0c0c0c-1111-4222-8333-555555555555";

/// An application's role at one key: what a restore must bring back beside the keys.
fn assign_app(emu: &Emu, token: &str) -> u16 {
    let body = json!({"properties": {
        "roleDefinitionId": format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{}", Role::CryptoUser.id()),
        "principalId": "payments-app",
    }});
    call(emu, token, "PUT", APP_ASSIGNMENT, Some(body)).status
}

fn backup_and_restore(uri: &str, sas: Option<&str>) {
    let (a, token_a, sd, versions) = original();
    assert_eq!(assign_app(&a, &token_a), 201);
    let before = inventory(&a, &token_a, &versions);

    let pre = run_job(
        &a,
        &token_a,
        "POST",
        "/prebackup",
        json!({"storageResourceUri": uri, "token": sas}),
    );
    assert_eq!(pre["status"], "Succeeded", "{pre}");
    let done = run_job(
        &a,
        &token_a,
        "POST",
        "/backup",
        json!({"storageResourceUri": uri, "token": sas}),
    );
    assert_eq!(done["status"], "Succeeded", "{done}");
    let folder_url = done["azureStorageBlobContainerUri"].as_str().unwrap();
    let (container, folder) = folder_url.rsplit_once('/').unwrap();
    assert_eq!(container, uri.trim_end_matches('/'));
    assert!(
        folder.starts_with("mhsm-emulator-") && folder.len() == "mhsm-emulator-".len() + 16,
        "{folder}"
    );

    // A foreign instance (its own security domain) refuses it, and keeps nothing.
    let c = start();
    let token_c = c.token("admin", &[Role::Administrator, Role::CryptoUser]);
    c.client(&[Role::Administrator]).download(&certs(), 2).unwrap();
    let refused = run_job(&c, &token_c, "PUT", "/restore", restore_body(uri, sas, folder));
    assert_eq!(refused["status"], "Failed");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another security domain"),
        "{refused}"
    );
    assert_eq!(
        raw(&c, "GET", &format!("/keys/k1?{V}"), Some(&token_c), None).status,
        404
    );

    // The recovered instance: pre-restore, full restore, the same inventory.
    let (b, token_b) = recovered(&sd);
    assert_eq!(
        raw(&b, "GET", &format!("/keys/k1?{V}"), Some(&token_b), None).status,
        404
    );
    let pre = run_job(&b, &token_b, "PUT", "/prerestore", restore_body(uri, sas, folder));
    assert_eq!(pre["status"], "Succeeded", "{pre}");
    assert_eq!(
        raw(&b, "GET", &format!("/keys/k1?{V}"), Some(&token_b), None).status,
        404,
        "a check restores nothing"
    );
    assert_eq!(call(&b, &token_b, "GET", APP_ASSIGNMENT, None).status, 404);
    let restored = run_job(&b, &token_b, "PUT", "/restore", restore_body(uri, sas, folder));
    assert_eq!(restored["status"], "Succeeded", "{restored}");
    assert_eq!(inventory(&b, &token_b, &versions), before);
    // The role assignments came back too, and the restorer kept its own.
    let back = call(&b, &token_b, "GET", APP_ASSIGNMENT, None);
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.body["properties"]["principalId"], "payments-app");
    assert_eq!(back.body["properties"]["scope"], "/keys/k1");
    assert_eq!(
        raw(&b, "GET", &format!("/keys/k1?{V}"), Some(&token_b), None).status,
        200
    );

    // Selective: one key, all its versions, into another recovered instance.
    let (d, token_d) = recovered(&sd);
    let body = json!({"sasTokenParameters": {"storageResourceUri": uri, "token": sas}, "folder": folder});
    let one = run_job(&d, &token_d, "PUT", "/keys/k2/restore", body.clone());
    assert_eq!(one["status"], "Succeeded", "{one}");
    assert_eq!(inventory(&d, &token_d, &versions[2..]), before[2..]);
    assert_eq!(
        raw(&d, "GET", &format!("/keys/k1?{V}"), Some(&token_d), None).status,
        404
    );
    let missing = run_job(&d, &token_d, "PUT", "/keys/nothere/restore", body);
    assert_eq!(missing["status"], "Failed");
    assert_eq!(missing["error"]["code"], "KeyNotFound", "{missing}");
}

/// Backups started back to back get distinct folders (the service's names
/// carry hundredths of a second), and every job's record, finished or not,
/// is answered after the server restarts on the same state folder.
#[test]
fn jobs_survive_a_restart_and_back_to_back_backups_get_their_own_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, store) = (tmp.path().join("a"), tmp.path().join("store"));
    std::fs::create_dir(&store).unwrap();
    let uri = format!("file://{}", store.display());
    let a = common::Emu::start_in(&state);
    let token = a.token("admin", &[Role::Administrator]);
    a.client(&[Role::Administrator]).download(&certs(), 2).unwrap();
    let sas = json!({"storageResourceUri": uri});
    let done: Vec<Value> = (0..3)
        .map(|_| run_job(&a, &token, "POST", "/backup", sas.clone()))
        .collect();
    let folders: std::collections::BTreeSet<&str> = done
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "Succeeded", "{d}");
            d["azureStorageBlobContainerUri"].as_str().unwrap()
        })
        .collect();
    assert_eq!(folders.len(), 3, "{folders:?}");
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 3);
    let failed = run_job(
        &a,
        &token,
        "PUT",
        "/restore",
        restore_body(&uri, None, "mhsm-emulator-none"),
    );
    assert_eq!(failed["status"], "Failed");
    let jobs = [("backup", &done[0]), ("backup", &done[2]), ("restore", &failed)];
    drop(a);

    let a = common::Emu::start_in(&state);
    for (kind, before) in jobs {
        let id = before["jobId"].as_str().unwrap();
        let after = call(&a, &token, "GET", &format!("/{kind}/{id}/pending"), None);
        assert_eq!((after.status, &after.body), (200, before), "{kind} job {id}");
    }
    assert_eq!(common_mode(&state.join("jobs.json")), 0o600);
}

#[test]
fn a_running_job_asks_for_retry_after_on_every_poll_as_its_202_did() {
    // A storage account that takes connections and never answers keeps the job running.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}/devstoreaccount1/stalled", stalled.local_addr().unwrap());
    let a = common::start();
    let token = a.token("admin", &[Role::Administrator]);
    a.client(&[Role::Administrator]).download(&certs(), 2).unwrap();
    let body = json!({"storageResourceUri": uri, "token": account_sas()});
    let started = call(&a, &token, "POST", "/backup", Some(body));
    assert_eq!(started.status, 202, "{}", started.body);
    let status = format!("/backup/{}/pending", started.body["jobId"].as_str().unwrap());
    for _ in 0..3 {
        let s = call(&a, &token, "GET", &status, None);
        assert_eq!(
            (s.status, s.body["status"].as_str()),
            (200, Some("InProgress")),
            "{}",
            s.body
        );
        assert_eq!(s.retry_after.as_deref(), Some("1"), "Retry-After on an InProgress poll");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Closing the listener resets the waiting connection: the job fails, and says so without Retry-After.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = loop {
        let s = call(&a, &token, "GET", &status, None);
        if s.body["status"] != "InProgress" {
            break s;
        }
        assert!(Instant::now() < deadline, "the stalled backup never ended");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ended.body["status"], "Failed", "{}", ended.body);
    assert_eq!(ended.retry_after, None);
}

#[test]
fn a_full_backup_to_a_local_folder_restores_into_a_recovered_instance_only() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", dir.path().display());
    backup_and_restore(&uri, None);
    // One folder, 0700, holding one blob, 0600, with no key material in clear.
    let folders: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1);
    assert_eq!(common_mode(&folders[0]), 0o700);
    let blob = folders[0].join("backup.hsmemu");
    assert_eq!(common_mode(&blob), 0o600);
    let bytes = std::fs::read(&blob).unwrap();
    assert!(bytes.starts_with(b"HSMEMUFB"));
    assert!(!String::from_utf8_lossy(&bytes).contains("pkcs8"));
}

fn common_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn backup_and_restore_are_refused_before_activation_and_without_the_role() {
    let e = start();
    let token = e.token("admin", &[Role::Administrator]);
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", dir.path().display());
    let r = call(
        &e,
        &token,
        "PUT",
        "/restore",
        Some(restore_body(&uri, None, "mhsm-emulator-20250101000000")),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("not activated"),
        "{}",
        r.body
    );
    assert!(r.request_id.is_some(), "x-ms-request-id on refusals too");
    let officer = e.token("officer", &[Role::CryptoOfficer]);
    let r = call(
        &e,
        &officer,
        "POST",
        "/backup",
        Some(json!({"storageResourceUri": uri})),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(&e, &token, "GET", "/backup/0123abcd/pending", None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

// ---- Azurite ----

/// Azurite's well-known development account and key (public, documented by Microsoft).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const SAS_VERSION: &str = "2021-12-02";

/// An account SAS (blob service; container and object; read, write, list, create), as Azure computes it.
pub fn account_sas() -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let (perms, services, types, expiry) = ("rwlc", "b", "co", "2099-01-01T00:00:00Z");
    let to_sign = format!("{ACCOUNT}\n{perms}\n{services}\n{types}\n\n{expiry}\n\nhttp\n{SAS_VERSION}\n\n");
    let key = base64::engine::general_purpose::STANDARD.decode(ACCOUNT_KEY).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig: String = sig
        .chars()
        .map(|c| match c {
            '+' => "%2B".into(),
            '/' => "%2F".into(),
            '=' => "%3D".into(),
            c => c.to_string(),
        })
        .collect();
    format!("sv={SAS_VERSION}&ss={services}&srt={types}&sp={perms}&se={expiry}&spr=http&sig={sig}")
}

/// A running Azurite (blob service, in memory), stopped by pid when dropped.
pub struct Azurite {
    child: Child,
    pub port: u16,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn azurite_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HSM_CEREMONY_AZURITE") {
        return Some(PathBuf::from(p));
    }
    // target/debug/deps/it-HASH -> target/azurite (where .ci/run installs it).
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    let bin = target.join("azurite/node_modules/.bin/azurite-blob");
    bin.exists().then_some(bin)
}

/// Starts Azurite on a free loopback port, or `None` (with a SKIP line) where it is not installed.
pub fn azurite() -> Option<Azurite> {
    let Some(bin) = azurite_bin() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Azurite is not installed under target/azurite; .ci/run installs it"
        );
        // Past libtest's capture, so the SKIP shows in .ci/run's log.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP emulator_backup Azurite tests: Azurite is not installed (npm install azurite into target/azurite)"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Azurite starts");
    let az = Azurite { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "Azurite did not listen within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(az)
}

impl Azurite {
    /// Creates `name` and returns its URL.
    pub fn container(&self, name: &str) -> String {
        let url = format!("http://127.0.0.1:{}/{ACCOUNT}/{name}", self.port);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        let r = agent
            .put(&format!("{url}?restype=container&{}", account_sas()))
            .header("x-ms-version", SAS_VERSION)
            .send_empty()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "container {name} created");
        url
    }
}

#[test]
fn a_full_backup_to_azurite_restores_into_a_recovered_instance_only() {
    let Some(az) = azurite() else { return };
    let url = az.container("backups");
    backup_and_restore(&url, Some(&account_sas()));

    // A wrong signature: the job fails naming the storage's refusal, never the SAS.
    let (a, token, _, _) = original();
    let bad = account_sas().replace("sig=", "sig=AAAA");
    let failed = run_job(
        &a,
        &token,
        "POST",
        "/backup",
        json!({"storageResourceUri": url, "token": bad}),
    );
    assert_eq!(failed["status"], "Failed");
    let msg = failed["error"]["message"].as_str().unwrap();
    assert!(msg.contains("403"), "{msg}");
    assert!(!msg.contains("sig="), "{msg}");
    // A container that does not exist.
    let none = format!("http://127.0.0.1:{}/{ACCOUNT}/nosuchcontainer", az.port);
    let failed = run_job(
        &a,
        &token,
        "POST",
        "/prebackup",
        json!({"storageResourceUri": none, "token": account_sas()}),
    );
    assert_eq!(failed["status"], "Failed", "{failed}");
}

// Timing is the benchmark's job (benches/emulator_load.sh); this pins that
// a store of many keys comes back whole, every one of them.
#[test]
fn many_keys_back_up_and_all_restore() {
    let (a, token, sd, _) = original();
    for i in 0..20 {
        create_key(&a, &token, &format!("bulk-{i}"), json!({"kty": "RSA-HSM"}));
    }
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("file://{}", dir.path().display());
    let (b, token_b) = recovered(&sd);
    let done = run_job(&a, &token, "POST", "/backup", json!({"storageResourceUri": uri}));
    let folder = done["azureStorageBlobContainerUri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let restored = run_job(&b, &token_b, "PUT", "/restore", restore_body(&uri, None, &folder));
    assert_eq!(restored["status"], "Succeeded", "{restored}");
    for i in 0..20 {
        let r = raw(&b, "GET", &format!("/keys/bulk-{i}?{V}"), Some(&token_b), None);
        assert_eq!(r.status, 200, "bulk-{i} did not come back");
    }
}
