//! Crash safety: `hsm-ceremony emulator serve` is killed with SIGKILL at
//! various moments of a recovery (transfer key, upload) and restarted on the
//! same state directory. The state must always parse and be recovering:
//! contents learned from an upload are held in memory only, never written.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hsm_ceremony::crypto::secret::BearerToken;
use hsm_ceremony::emulator::{self, Role, Status};
use hsm_ceremony::format::sdfile::SecurityDomain;
use hsm_ceremony::instance::InstanceClient;
use hsm_ceremony::recovery;

use common::{custodians, rng, start};

/// A served child process, killed (SIGKILL) when dropped.
struct Served {
    child: Child,
    url: String,
    ca: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hsm-ceremony"))
        .args(["emulator", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut served = Served {
        child,
        url: String::new(),
        ca: PathBuf::new(),
    };
    for _ in 0..2 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server prints its address");
        if let Some(url) = line.strip_prefix("listening on ") {
            served.url = url.to_string();
        } else if let Some(ca) = line.strip_prefix("CA certificate: ") {
            served.ca = PathBuf::from(ca);
        }
    }
    assert!(served.url.starts_with("https://127.0.0.1:"), "{}", served.url);
    assert_eq!(served.ca, dir.join("ca.pem"));
    served
}

fn client(s: &Served, token: &str) -> InstanceClient {
    InstanceClient::new(&s.url, BearerToken::new(token.to_string()), Some(&s.ca))
        .unwrap()
        .with_polling(Duration::from_secs(20), Duration::from_millis(20))
}

#[test]
fn sigkill_during_recovery_never_half_activates() {
    let a = start();
    let ca = a.client(&[Role::Administrator, Role::CryptoUser]);
    let sd = ca
        .download(&custodians()[..3].iter().map(|c| c.cert.clone()).collect::<Vec<_>>(), 2)
        .unwrap();
    ca.create_rsa_key("canary").unwrap();
    let backup = ca.backup_key("canary").unwrap();
    let sd = SecurityDomain::from_json(sd.as_bytes()).unwrap();
    let mut q = recovery::Quorum::new(&sd);
    for c in &custodians()[..2] {
        q.add(&recovery::CustodianKey::from_rsa(c.name.clone(), c.key.clone(), None))
            .unwrap();
    }
    let items = q.finish().unwrap().items;

    let tmp = tempfile::tempdir().unwrap();
    let delays_ms = [0u64, 1, 2, 5, 10, 30];
    for (round, delay) in delays_ms.iter().enumerate() {
        let dir = tmp.path().join(format!("b{round}"));
        let token = emulator::issue_token(&dir, "admin", &[Role::Administrator, Role::CryptoUser])
            .unwrap()
            .reveal();

        // Kill while the exchange key may be being made.
        let s = serve(&dir);
        let url = s.url.clone();
        let ca_path = s.ca.clone();
        let t = token.clone();
        let getter = std::thread::spawn(move || {
            InstanceClient::new(&url, BearerToken::new(t), Some(&ca_path))
                .unwrap()
                .transfer_key()
                .is_ok()
        });
        std::thread::sleep(Duration::from_millis(*delay));
        drop(s);
        let _ = getter.join();
        let status = emulator::inspect(&dir).expect("state parses after SIGKILL").status;
        assert!(
            matches!(status, Status::Provisioned | Status::Recovering),
            "round {round}: {status:?}"
        );

        // Kill during the upload.
        let s = serve(&dir);
        let c = client(&s, &token);
        let exchange = c.transfer_key().unwrap();
        let blob = recovery::build_restore_blob_with_rng(&mut rng(100 + round as u64), &items, &exchange).unwrap();
        c.start_upload(&blob).unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        drop(s);
        let summary = emulator::inspect(&dir).expect("state parses after SIGKILL");
        eprintln!(
            "round {round}: killed {delay} ms after the upload: {:?}",
            summary.status
        );
        // Uploaded contents are never written: killed before or after the
        // upload finished, the instance on disk is recovering.
        assert_eq!(summary.status, Status::Recovering, "round {round}");
        assert_eq!(summary.contents_fingerprint, None);

        // After a restart: the recovery is done again, then the canary restores.
        let s = serve(&dir);
        let c = client(&s, &token);
        let st = c.status().unwrap();
        assert!(
            st.is_failed() && st.status_details.contains("upload"),
            "round {round}: an interrupted or forgotten upload is reported failed: {st:?}"
        );
        assert_eq!(
            c.transfer_key().unwrap().der(),
            exchange.der(),
            "the exchange key survived"
        );
        c.upload(&blob).unwrap();
        let after = emulator::inspect(&dir).unwrap();
        assert_eq!(after.status, Status::Recovering, "still nothing of it written");
        c.restore_key(&backup).unwrap();
    }
}

/// One request to a served child; `None` once the server is gone.
fn send(s: &Served, token: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, serde_json::Value)> {
    send_to(&common::agent_for(&s.ca), &s.url, token, method, path, body)
}

fn send_to(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, serde_json::Value)> {
    let url = format!("{url}{path}");
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(&url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    let mut resp = agent.run(req.body(body.unwrap_or("").to_string()).unwrap()).ok()?;
    let text = resp.body_mut().read_to_string().ok()?;
    Some((resp.status().as_u16(), serde_json::from_str(&text).unwrap_or_default()))
}

/// Killed while a backup job runs (or just after), the server restarts and
/// answers the job's status: Succeeded, or Failed as interrupted — never
/// NotFound, never a job left running forever.
#[test]
fn sigkill_during_a_backup_leaves_its_job_answered_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, store) = (tmp.path().join("a"), tmp.path().join("store"));
    std::fs::create_dir(&store).unwrap();
    let token = emulator::issue_token(&dir, "admin", &[Role::Administrator])
        .unwrap()
        .reveal();
    let s = serve(&dir);
    client(&s, &token)
        .download(&custodians()[..3].iter().map(|c| c.cert.clone()).collect::<Vec<_>>(), 2)
        .unwrap();
    drop(s);
    let body = serde_json::json!({"storageResourceUri": format!("file://{}", store.display())}).to_string();
    let mut outcomes = Vec::new();
    for (round, delay) in [0u64, 1, 3, 10, 50].into_iter().enumerate() {
        let s = serve(&dir);
        let (status, started) = send(&s, &token, "POST", "/backup?api-version=7.5", Some(&body)).unwrap();
        assert_eq!(status, 202, "round {round}: {started}");
        let id = started["jobId"].as_str().unwrap().to_string();
        std::thread::sleep(Duration::from_millis(delay));
        drop(s);

        let s = serve(&dir);
        let (status, job) = send(
            &s,
            &token,
            "GET",
            &format!("/backup/{id}/pending?api-version=7.5"),
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "round {round}: {job}");
        match job["status"].as_str() {
            Some("Succeeded") => assert!(job["azureStorageBlobContainerUri"].is_string()),
            Some("Failed") => assert_eq!(job["error"]["code"], "Interrupted", "round {round}: {job}"),
            other => panic!("round {round}: {other:?} after a restart: {job}"),
        }
        outcomes.push(job["status"].as_str().unwrap().to_string());
        drop(s);
    }
    eprintln!("backup outcomes after SIGKILL: {outcomes:?}");
}

/// Killed during a burst of role-assignment and setting writes (each an
/// atomic replace of rbac.json or settings.json), the server restarts on
/// documents that parse, holding every assignment it acknowledged.
#[test]
fn sigkill_during_role_assignment_writes_loses_no_acknowledged_one() {
    let tmp = tempfile::tempdir().unwrap();
    for (round, delay) in [5u64, 40, 150, 400].into_iter().enumerate() {
        let dir = tmp.path().join(format!("r{round}"));
        let token = emulator::issue_token(&dir, "admin", &[Role::Administrator])
            .unwrap()
            .reveal();
        let s = serve(&dir);
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = {
            let (url, ca, token, acked) = (s.url.clone(), s.ca.clone(), token.clone(), acked.clone());
            std::thread::spawn(move || {
                // One connection pool: the burst is the writes, not TLS handshakes.
                let agent = common::agent_for(&ca);
                for i in 0u32.. {
                    let id = format!("0c0c0c0c-1111-4222-8333-{i:012}");
                    let body = serde_json::json!({"properties": {
                        "roleDefinitionId": format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{}", Role::CryptoUser.id()),
                        "principalId": format!("app-{i}"),
                    }})
                    .to_string();
                    let path = format!("/providers/Microsoft.Authorization/roleAssignments/{id}?api-version=7.5");
                    match send_to(&agent, &url, &token, "PUT", &path, Some(&body)) {
                        Some((201, _)) => acked.lock().unwrap().push(id),
                        Some(other) => panic!("assignment {i} refused: {other:?}"),
                        None => break,
                    }
                    let value = if i % 2 == 0 { "true" } else { "false" };
                    let setting = "/settings/AllowKeyManagementOperationsThroughARM?api-version=7.5";
                    let body = format!("{{\"value\":\"{value}\"}}");
                    if send_to(&agent, &url, &token, "PATCH", setting, Some(&body)).is_none() {
                        break;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(delay));
        drop(s);
        writer.join().unwrap();
        let acked = acked.lock().unwrap().clone();

        for file in ["rbac.json", "settings.json"] {
            let path = dir.join(file);
            if path.exists() {
                let text = std::fs::read(&path).unwrap();
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&text).is_ok(),
                    "round {round}: {file} is torn"
                );
            }
        }
        let s = serve(&dir);
        for id in &acked {
            let path = format!("/providers/Microsoft.Authorization/roleAssignments/{id}?api-version=7.5");
            let (status, body) = send(&s, &token, "GET", &path, None).unwrap();
            assert_eq!(status, 200, "round {round}: acknowledged {id} lost: {body}");
        }
        let (status, body) = send(
            &s,
            &token,
            "GET",
            "/settings/AllowKeyManagementOperationsThroughARM?api-version=7.5",
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "round {round}: {body}");
        eprintln!(
            "round {round}: killed after {delay} ms, {} assignments acknowledged",
            acked.len()
        );
    }
}
