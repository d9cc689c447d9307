//! Shared harness for the emulator tests: deterministic custodians, an
//! in-process emulator in a temporary state directory, raw HTTPS requests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hsm_ceremony::crypto::secret::{BearerToken, Passphrase};
use hsm_ceremony::custodian::cert::Certificate;
use hsm_ceremony::custodian::key::KeyFile;
use hsm_ceremony::emulator::{self, Role, RunningEmulator};
use hsm_ceremony::instance::InstanceClient;
use rand::SeedableRng;

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

pub struct Custodian {
    pub name: String,
    pub key: rsa::PrivateKey,
    pub cert: Certificate,
}

/// The harness's five custodians (`util::fixtures`: c0..c4, RSA-2048, made
/// once for the whole test binary), opened for the in-process tests.
pub fn custodians() -> &'static [Custodian] {
    static CELL: OnceLock<Vec<Custodian>> = OnceLock::new();
    CELL.get_or_init(|| {
        let f = crate::util::fixtures();
        (0..5)
            .map(|i| {
                let name = format!("c{i}");
                let pem = std::fs::read(f.path(&format!("{name}.key"))).unwrap();
                let pass = Passphrase::new(crate::util::passphrase(i));
                let key = KeyFile::parse(&pem).unwrap().into_key(Some(&pass)).unwrap();
                let cert = Certificate::from_bytes(&std::fs::read(f.path(&format!("{name}.cer"))).unwrap()).unwrap();
                Custodian { name, key, cert }
            })
            .collect()
    })
}

pub struct Emu {
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    running: RunningEmulator,
}

pub fn start() -> Emu {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instance");
    let mut emu = Emu::start_in(&dir);
    emu._tmp = Some(tmp);
    emu
}

impl Emu {
    pub fn start_in(dir: &Path) -> Emu {
        let running = emulator::spawn(emulator::Config::new(dir)).unwrap();
        Emu {
            _tmp: None,
            dir: dir.to_path_buf(),
            running,
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn url(&self) -> &str {
        self.running.url()
    }
    pub fn ca(&self) -> &Path {
        self.running.ca_pem_path().unwrap()
    }
    pub fn token(&self, principal: &str, roles: &[Role]) -> String {
        emulator::issue_token(&self.dir, principal, roles).unwrap().reveal()
    }
    pub fn client(&self, roles: &[Role]) -> InstanceClient {
        let token = self.token("tester", roles);
        InstanceClient::new(self.url(), BearerToken::new(token), Some(self.ca()))
            .unwrap()
            .with_polling(Duration::from_secs(20), Duration::from_millis(20))
    }
}

pub struct Raw {
    pub status: u16,
    pub body: String,
    pub www_authenticate: Option<String>,
    pub async_op: Option<String>,
    pub retry_after: Option<String>,
}

pub fn agent_for(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).unwrap();
    let cert = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One request as any client would send it; `path` includes the query.
pub fn raw(emu: &Emu, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Raw {
    raw_at(emu.url(), emu.ca(), method, path, token, body)
}

pub fn raw_at(url: &str, ca: &Path, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Raw {
    let agent = agent_for(ca);
    let url = format!("{url}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = if method == "GET" {
        let mut req = agent.get(&url);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.call()
    } else {
        // Any other method (POST, PUT, PATCH, DELETE) with a JSON body.
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Content-Type", "application/json");
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        agent.run(req.body(body.unwrap_or("").to_string()).unwrap())
    };
    let mut resp = result.unwrap();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    let www_authenticate = header("www-authenticate");
    let async_op = header("azure-asyncoperation");
    let retry_after = header("retry-after");
    Raw {
        status: resp.status().as_u16(),
        body: resp.body_mut().read_to_string().unwrap(),
        www_authenticate,
        async_op,
        retry_after,
    }
}

/// Polls the upload status until it is Success or Failed (at most 20 s).
pub fn wait_terminal(emu: &Emu, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = raw(
            emu,
            "GET",
            "/securitydomain/upload/pending?api-version=7.5",
            Some(token),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        if !r.body.contains("InProgress") {
            return r.body;
        }
        assert!(Instant::now() < deadline, "upload still in progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}
