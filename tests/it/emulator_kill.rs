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
    InstanceClient::new(&s.url, token, Some(&s.ca))
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
        let token = emulator::issue_token(&dir, "admin", &[Role::Administrator, Role::CryptoUser]).unwrap();

        // Kill while the exchange key may be being made.
        let s = serve(&dir);
        let url = s.url.clone();
        let ca_path = s.ca.clone();
        let t = token.clone();
        let getter = std::thread::spawn(move || {
            InstanceClient::new(&url, t, Some(&ca_path))
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
