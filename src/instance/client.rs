//! [`InstanceClient`]: one instance URL, one bearer token, an optional
//! private CA; every failure becomes [`Error::Instance`] with the status code
//! and the service's own message.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::crypto::secret::BearerToken;
use crate::custodian::cert::Certificate;
use crate::error::{Error, InstanceError, Result};
use crate::format::restore_blob::RestoreBlob;
use crate::format::sdfile::SecurityDomain;
use crate::format::transfer_key::TransferKeyResponse;

/// What the Azure CLI of today sends.
pub const DEFAULT_API_VERSION: &str = "7.5";
const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

/// A long-running operation's state as the pending endpoints report it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct OperationStatus {
    /// `Success`, `InProgress` or `Failed`.
    pub status: String,
    #[serde(default)]
    pub status_details: String,
}

impl OperationStatus {
    pub fn is_success(&self) -> bool {
        self.status.eq_ignore_ascii_case("success") || self.status.eq_ignore_ascii_case("succeeded")
    }
    pub fn is_failed(&self) -> bool {
        self.status.eq_ignore_ascii_case("failed")
    }
}

/// An instance's activation state in the words `az keyvault show` uses
/// (`properties.securityDomainProperties.activationStatus`). The data plane
/// has no route for it; it follows from the two pending statuses: a
/// successful download (activation) or upload (recovery) is `Active`, a
/// failed one with no success `Failed`, anything else `NotActivated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Active,
    NotActivated,
    Failed,
}

impl Activation {
    /// `None`: the instance reports no such operation (404).
    pub fn from_statuses(download: Option<&OperationStatus>, upload: Option<&OperationStatus>) -> Activation {
        let seen = [download, upload];
        if seen.iter().flatten().any(|s| s.is_success()) {
            Activation::Active
        } else if seen.iter().flatten().any(|s| s.is_failed()) {
            Activation::Failed
        } else {
            Activation::NotActivated
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Active => "Active",
            Activation::NotActivated => "NotActivated",
            Activation::Failed => "Failed",
        }
    }
}

/// What `instance status` reports: both pending statuses and the activation state they imply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceStatus {
    pub download: Option<OperationStatus>,
    pub upload: Option<OperationStatus>,
    pub activation: Activation,
}

/// A key as the instance describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub name: String,
    /// `<instance>/keys/<name>/<version>`.
    pub kid: String,
    pub version: String,
}

/// A client for one instance. The token is never shown by `Debug`.
pub struct InstanceClient {
    base: String,
    token: BearerToken,
    transport: Transport,
    api_version: String,
    poll_timeout: Duration,
    poll_interval: Duration,
    progress: Option<Progress>,
}

/// Told what is still running and for how long, on slow work (a full
/// backup or restore of a large HSM takes minutes): the CLI prints it.
pub type Progress = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// When a slow operation is first reported, then how often.
const PROGRESS_AFTER: Duration = Duration::from_secs(3);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl std::fmt::Debug for InstanceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceClient")
            .field("base", &self.base)
            .field("api_version", &self.api_version)
            .finish()
    }
}

/// How requests travel: HTTPS (or loopback HTTP) to a URL, or in memory to
/// an emulated instance inside this process.
enum Transport {
    Http(ureq::Agent),
    InProcess(Arc<crate::emulator::InProcess>),
}

/// `name` checked before it becomes part of a request path: a `/`, `?` or
/// `%` would address another resource than the key named.
fn key_name(name: &str) -> Result<&str> {
    if crate::format::limits::is_key_name(name) {
        Ok(name)
    } else {
        Err(InstanceError::KeyName { name: name.to_string() }.into())
    }
}

fn bad_answer(request: impl Into<String>, what: &'static str, why: impl std::fmt::Display) -> Error {
    InstanceError::BadAnswer {
        request: request.into(),
        what,
        why: why.to_string(),
    }
    .into()
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The base URL (`scheme://host[:port]`) of `url`, parsed rather than
/// prefix-matched: `http://127.0.0.1:1@elsewhere` names the host
/// `elsewhere`, which would get the bearer token. Refused: user info, a path,
/// a query or a fragment (an instance URL has none), a scheme other than
/// https, and plain http to a host that is not loopback.
pub fn base_url(url: &str) -> Result<String> {
    let bad = |why: &str| -> Error {
        InstanceError::Url {
            url: masked(url),
            why: why.into(),
        }
        .into()
    };
    if url.contains('#') {
        return Err(bad("an instance URL has no fragment (#...)"));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad("not an absolute URL (https://host[:port])"));
    };
    if authority.as_str().contains('@') {
        return Err(bad(
            "a user name or password in the URL is refused: the token comes from --token-file or HSM_CEREMONY_TOKEN",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("an instance URL has no query (?...)"));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(bad("an instance URL has no path"));
    }
    let host = authority.host();
    match scheme.to_ascii_lowercase().as_str() {
        "https" => {}
        "http" => {
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            let loopback =
                host.eq_ignore_ascii_case("localhost") || ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
            if !loopback {
                return Err(bad(
                    "plain http is only allowed to a local emulator (127.0.0.1, localhost, [::1]): the token would travel in clear",
                ));
            }
        }
        _ => return Err(bad("not an https:// URL")),
    }
    if host.is_empty() {
        return Err(bad("the URL names no host"));
    }
    Ok(format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.as_str().to_ascii_lowercase()
    ))
}

/// Whether `base` (`scheme://host[:port]`) names a loopback host.
fn is_loopback_base(base: &str) -> bool {
    let host = base.split_once("://").map_or("", |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// Whether `url` (as `--url` takes it) is an emulator: `local:DIR`, or a
/// loopback address. Anything else may be a real Managed HSM.
pub fn is_emulator_url(url: &str) -> bool {
    url.starts_with("local:") || base_url(url).is_ok_and(|b| is_loopback_base(&b))
}

/// `url` for an error message, with what may be a secret masked: user info,
/// query and fragment.
fn masked(url: &str) -> String {
    let (head, cut) = match url.find(['?', '#']) {
        Some(at) => (&url[..at], true),
        None => (url, false),
    };
    let (scheme, rest) = match head.find("://") {
        Some(at) => (&head[..at + 3], &head[at + 3..]),
        None => ("", head),
    };
    let rest = match rest.find('/').map_or(rest, |at| &rest[..at]).rfind('@') {
        Some(at) => format!("***@{}", &rest[at + 1..]),
        None => rest.to_string(),
    };
    format!("{scheme}{rest}{}", if cut { "?***" } else { "" })
}

/// A request that got no HTTP answer, told apart by cause: a TLS refusal
/// (usually the wrong --ca) is not a closed port.
fn transport_error(url: &str, request: &str, e: ureq::Error) -> Error {
    let tls = match &e {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_) => true,
        ureq::Error::Io(io) => io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    };
    let (url, request, reason) = (url.to_string(), request.to_string(), e.to_string());
    if tls {
        InstanceError::Tls { url, request, reason }.into()
    } else {
        InstanceError::Unreachable { url, request, reason }.into()
    }
}

/// The deadline, progress lines and pause every wait on a long-running
/// operation shares.
struct Wait<'a> {
    client: &'a InstanceClient,
    what: &'static str,
    start: Instant,
    next_report: Instant,
}

impl<'a> Wait<'a> {
    fn new(client: &'a InstanceClient, what: &'static str) -> Wait<'a> {
        let start = Instant::now();
        Wait {
            client,
            what,
            start,
            next_report: start + PROGRESS_AFTER,
        }
    }

    /// Reports progress when due, then sleeps one poll interval; past the
    /// deadline the operation is still `status`, and the wait ends.
    fn pause(&mut self, status: String) -> Result<()> {
        let now = Instant::now();
        if let (Some(progress), true) = (&self.client.progress, now >= self.next_report) {
            progress(self.what, now - self.start);
            self.next_report = now + PROGRESS_EVERY;
        }
        if now >= self.start + self.client.poll_timeout {
            return Err(InstanceError::StillRunning {
                what: self.what,
                status,
                waited: self.client.poll_timeout,
            }
            .into());
        }
        std::thread::sleep(self.client.poll_interval);
        Ok(())
    }
}

impl InstanceClient {
    /// A client for `url` (`https://...`; `http://` only for a loopback
    /// emulator). `ca_pem` is a CA certificate to trust instead of the public
    /// roots (the emulator's `ca.pem`).
    ///
    /// Errors: a URL that is not http(s), plain HTTP to a non-loopback host,
    /// or an unreadable CA file.
    pub fn new(url: &str, token: BearerToken, ca_pem: Option<&Path>) -> Result<InstanceClient> {
        let base = base_url(url)?;
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(path) = ca_pem {
            let bytes = crate::files::read_limited(path, 256 * 1024, "CA certificate")?;
            let cert = Certificate::from_bytes(&bytes).ok();
            // The emulator's CA is ECDSA, which `Certificate` (RSA only) refuses; take the PEM as is.
            let der = match cert {
                Some(c) => c.der().to_vec(),
                None => match crate::custodian::pem::decode_first_block(&bytes) {
                    Some(Ok((label, der))) if label == "CERTIFICATE" => der.to_vec(),
                    _ => {
                        return Err(InstanceError::CaNotPem {
                            path: path.to_path_buf(),
                        }
                        .into())
                    }
                },
            };
            let root = ureq::tls::Certificate::from_der(&der).to_owned();
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .user_agent("hsm-ceremony")
            .build()
            .into();
        Ok(InstanceClient {
            base,
            token,
            transport: Transport::Http(agent),
            api_version: DEFAULT_API_VERSION.into(),
            poll_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(250),
            progress: None,
        })
    }

    /// A client for an emulated instance inside this process: no socket is
    /// opened (see [`crate::emulator::InProcess`]).
    pub fn in_process(emulator: Arc<crate::emulator::InProcess>, token: BearerToken) -> InstanceClient {
        InstanceClient {
            base: crate::emulator::IN_PROCESS_ORIGIN.into(),
            token,
            transport: Transport::InProcess(emulator),
            api_version: DEFAULT_API_VERSION.into(),
            poll_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(50),
            progress: None,
        }
    }

    pub fn with_api_version(mut self, v: impl Into<String>) -> Self {
        self.api_version = v.into();
        self
    }

    /// How long [`download`](Self::download) and [`upload`](Self::upload)
    /// poll before giving up, and how often.
    pub fn with_polling(mut self, timeout: Duration, interval: Duration) -> Self {
        self.poll_timeout = timeout;
        self.poll_interval = interval;
        self
    }

    /// Reports slow long-running operations to `progress`.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Whether this client talks to an emulator: one in this process, or a
    /// loopback address (a real Managed HSM is never on loopback).
    pub fn is_emulator(&self) -> bool {
        match &self.transport {
            Transport::InProcess(_) => true,
            Transport::Http(_) => is_loopback_base(&self.base),
        }
    }

    /// `path` may carry its own query (a list page's `$skiptoken`).
    fn path_and_query(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}api-version={}", self.api_version)
    }

    fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.base, self.path_and_query(path))
    }

    /// Sends one request; returns the status and body of a 2xx answer.
    fn request(&self, method: &str, path: &str, body: Option<String>) -> Result<(u16, String)> {
        let bearer = Zeroizing::new(format!("Bearer {}", self.token.expose()));
        let (status, text) = match &self.transport {
            Transport::InProcess(emulator) => {
                let path_and_query = self.path_and_query(path);
                emulator.call(method, &path_and_query, &bearer, body)?
            }
            Transport::Http(agent) => {
                let url = self.url_for(path);
                let result = match method {
                    "GET" => agent
                        .get(&url)
                        .header("Authorization", bearer.as_str())
                        .header("Accept", "application/json")
                        .call(),
                    "PUT" => agent
                        .put(&url)
                        .header("Authorization", bearer.as_str())
                        .header("Accept", "application/json")
                        .content_type("application/json")
                        .send(body.unwrap_or_default()),
                    _ => agent
                        .post(&url)
                        .header("Authorization", bearer.as_str())
                        .header("Accept", "application/json")
                        .content_type("application/json")
                        .send(body.unwrap_or_default()),
                };
                let mut resp = result.map_err(|e| transport_error(&self.base, &format!("{method} {path}"), e))?;
                let status = resp.status().as_u16();
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_RESPONSE_BYTES)
                    .read_to_string()
                    .map_err(|e| bad_answer(format!("{method} {path}"), "the answer could not be read", e))?;
                (status, text)
            }
        };
        if (200..300).contains(&status) {
            return Ok((status, text));
        }
        let detail = match crate::format::json::from_str::<ErrorBody>(&text) {
            Ok(b) if !b.error.message.is_empty() => {
                format!("{} ({})", b.error.message, b.error.code)
            }
            _ => text.chars().take(300).collect(),
        };
        Err(InstanceError::Refused {
            request: format!("{method} {path}"),
            status,
            detail,
        }
        .into())
    }

    fn poll(&self, path: &str, what: &'static str) -> Result<OperationStatus> {
        let mut wait = Wait::new(self, what);
        loop {
            let status = self.operation_status(path)?;
            if status.is_success() || status.is_failed() {
                return Ok(status);
            }
            wait.pause(status.status)?;
        }
    }

    fn operation_status(&self, path: &str) -> Result<OperationStatus> {
        let (_, text) = self.request("GET", path, None)?;
        crate::format::json::from_str(&text)
            .map_err(|e| bad_answer(format!("GET {path}"), "the answer is not an operation status", e))
    }

    /// Downloads the security domain wrapped to `certs` with quorum `quorum`
    /// (activating a new instance) and waits for the activation to finish.
    /// Returns the security-domain JSON exactly as the instance sent it.
    pub fn download(&self, certs: &[Certificate], quorum: usize) -> Result<String> {
        let jwks = certs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.to_jwk().map_err(|source| Error::Certificate {
                    label: format!("certificate {}", i + 1),
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let body = json!({"certificates": jwks, "required": quorum}).to_string();
        let (_, text) = self.request("POST", "/securitydomain/download", Some(body))?;
        #[derive(Deserialize)]
        struct Value {
            value: String,
        }
        let v: Value = crate::format::json::from_str(&text).map_err(|e| {
            bad_answer(
                "POST /securitydomain/download",
                "the answer carries no security domain",
                e,
            )
        })?;
        SecurityDomain::from_json(v.value.as_bytes()).map_err(|e| {
            bad_answer(
                "POST /securitydomain/download",
                "the security domain the instance sent is not valid",
                e,
            )
        })?;
        let status = self.poll("/securitydomain/download/pending", "activation")?;
        if status.is_failed() {
            return Err(InstanceError::OperationFailed {
                what: "download",
                details: status.status_details,
            }
            .into());
        }
        Ok(v.value)
    }

    pub fn download_status(&self) -> Result<OperationStatus> {
        self.operation_status("/securitydomain/download/pending")
    }

    /// Both pending statuses and the activation state. "No such operation"
    /// only when the instance answers 404; an unreachable instance, a wrong
    /// CA or a refused token is an error.
    pub fn instance_status(&self) -> Result<InstanceStatus> {
        let none_if_absent = |r: Result<OperationStatus>| match r {
            Ok(s) => Ok(Some(s)),
            Err(Error::Instance(InstanceError::Refused { status: 404, .. })) => Ok(None),
            Err(e) => Err(e),
        };
        let download = none_if_absent(self.download_status())?;
        let upload = none_if_absent(self.status())?;
        let activation = Activation::from_statuses(download.as_ref(), upload.as_ref());
        Ok(InstanceStatus {
            download,
            upload,
            activation,
        })
    }

    /// The exchange key of an instance in recovery mode, checked (its JWK's
    /// n/e must be its certificate's key, RSA of at least 2048 bits).
    pub fn transfer_key(&self) -> Result<Certificate> {
        let (_, text) = self.request("GET", "/securitydomain/upload", None)?;
        let jwk = TransferKeyResponse::parse(text.as_bytes())
            .map_err(|e| bad_answer("GET /securitydomain/upload", "the transfer key is malformed", e))?;
        Certificate::from_jwk(&jwk).map_err(|source| Error::Certificate {
            label: "the instance's transfer key".into(),
            source,
        })
    }

    /// Starts the upload of `blob` without waiting.
    pub fn start_upload(&self, blob: &RestoreBlob) -> Result<()> {
        self.request("POST", "/securitydomain/upload", Some(blob.upload_body()))?;
        Ok(())
    }

    /// Uploads `blob` and polls until the instance reports `Success` (Ok) or
    /// `Failed` (an error carrying its reason), within the polling timeout.
    pub fn upload(&self, blob: &RestoreBlob) -> Result<()> {
        self.start_upload(blob)?;
        let status = self.poll("/securitydomain/upload/pending", "upload")?;
        if status.is_failed() {
            return Err(InstanceError::UploadRefused {
                details: status.status_details,
            }
            .into());
        }
        Ok(())
    }

    /// The state of the last upload (`GET /securitydomain/upload/pending`).
    pub fn status(&self) -> Result<OperationStatus> {
        self.operation_status("/securitydomain/upload/pending")
    }

    fn key_info(path: &str, text: &str) -> Result<KeyInfo> {
        let v: serde_json::Value =
            crate::format::json::from_str(text).map_err(|e| bad_answer(path, "the answer is not a key bundle", e))?;
        let kid = v["key"]["kid"]
            .as_str()
            .ok_or_else(|| bad_answer(path, "the key bundle", "it has no kid"))?
            .to_string();
        let mut parts = kid.rsplit('/');
        let version = parts.next().unwrap_or_default().to_string();
        let name = parts.next().unwrap_or_default().to_string();
        Ok(KeyInfo { name, kid, version })
    }

    /// Creates an RSA-HSM 2048 key (a canary).
    pub fn create_rsa_key(&self, name: &str) -> Result<KeyInfo> {
        let path = format!("/keys/{name}/create", name = key_name(name)?);
        let (_, text) = self.request(
            "POST",
            &path,
            Some(json!({"kty": "RSA-HSM", "key_size": 2048}).to_string()),
        )?;
        Self::key_info(&path, &text)
    }

    pub fn get_key(&self, name: &str) -> Result<KeyInfo> {
        let path = format!("/keys/{name}", name = key_name(name)?);
        let (_, text) = self.request("GET", &path, None)?;
        Self::key_info(&path, &text)
    }

    /// The opaque backup of `name` (base64url), restorable only on an
    /// instance with the same security domain.
    pub fn backup_key(&self, name: &str) -> Result<String> {
        let path = format!("/keys/{name}/backup", name = key_name(name)?);
        let (_, text) = self.request("POST", &path, Some(String::new()))?;
        #[derive(Deserialize)]
        struct Value {
            value: String,
        }
        let v: Value =
            crate::format::json::from_str(&text).map_err(|e| bad_answer(path, "the answer carries no backup", e))?;
        Ok(v.value)
    }

    pub fn restore_key(&self, backup: &str) -> Result<KeyInfo> {
        let (_, text) = self.request("POST", "/keys/restore", Some(json!({"value": backup}).to_string()))?;
        Self::key_info("/keys/restore", &text)
    }
}

/// A key to create: its type (`RSA-HSM`, `EC-HSM`, `oct-HSM`), size or
/// curve, permitted operations and tags.
#[derive(Clone, Debug)]
pub struct NewKey {
    pub kty: String,
    pub key_size: Option<u32>,
    pub crv: Option<String>,
    pub key_ops: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// One key version as a listing shows it (no key material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedVersion {
    pub name: String,
    pub version: String,
    pub enabled: bool,
    pub tags: BTreeMap<String, String>,
}

/// Where a full backup went: the storage container's URL (without its SAS)
/// and the backup's folder in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupDone {
    pub folder_url: String,
    pub folder: String,
}

/// A full backup or restore job's status (camelCase, unlike the security
/// domain's pending statuses).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobStatus {
    status: String,
    #[serde(default)]
    status_details: Option<String>,
    #[serde(default)]
    error: Option<ErrorInner>,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    azure_storage_blob_container_uri: Option<String>,
}

impl JobStatus {
    fn why(&self) -> String {
        match &self.error {
            Some(e) if !e.message.is_empty() => format!("{} ({})", e.message, e.code),
            _ => self.status_details.clone().unwrap_or_default(),
        }
    }
}

/// Most pages a listing follows: 25 items a page, far beyond any HSM's
/// 5,000-key limit, so a server that keeps answering `nextLink` cannot
/// hold the client forever.
const MAX_PAGES: usize = 1_000;

#[derive(Deserialize)]
struct Page {
    value: Vec<serde_json::Value>,
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
}

/// The `$skiptoken` of a `nextLink`, taken alone so the next request goes to
/// our base URL whatever host the link names.
fn skiptoken(request: &str, link: &str) -> Result<String> {
    let token = link
        .split_once("$skiptoken=")
        .or_else(|| link.split_once("%24skiptoken="))
        .map(|(_, t)| t.split('&').next().unwrap_or(""))
        .unwrap_or("");
    if token.is_empty()
        || token.len() > 4096
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!*'()+=".contains(&b))
    {
        return Err(bad_answer(
            request,
            "the nextLink carries no usable $skiptoken",
            link.chars().take(200).collect::<String>(),
        ));
    }
    Ok(token.to_string())
}

impl InstanceClient {
    /// Every item of a paged list, following `nextLink` (rebuilt on our base URL).
    fn list_all(&self, path: &str) -> Result<Vec<serde_json::Value>> {
        let mut items = Vec::new();
        let mut next = path.to_string();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let (_, text) = self.request("GET", &next, None)?;
            let page: Page = crate::format::json::from_str(&text)
                .map_err(|e| bad_answer(format!("GET {path}"), "the answer is not a list page", e))?;
            items.extend(page.value);
            match page.next_link {
                None => return Ok(items),
                Some(link) => {
                    let token = skiptoken(&format!("GET {path}"), &link)?;
                    if !seen.insert(token.clone()) {
                        return Err(bad_answer(format!("GET {path}"), "the nextLink repeats a page", link));
                    }
                    next = format!("{path}?maxresults=25&$skiptoken={token}");
                }
            }
        }
        Err(bad_answer(
            format!("GET {path}"),
            "the list does not end",
            format!("more than {MAX_PAGES} pages"),
        ))
    }

    /// Creates a key (a new version if the name exists).
    pub fn create_key(&self, name: &str, key: &NewKey) -> Result<KeyInfo> {
        let path = format!("/keys/{name}/create", name = key_name(name)?);
        let mut body = json!({"kty": key.kty, "key_ops": key.key_ops, "tags": key.tags});
        if let Some(size) = key.key_size {
            body["key_size"] = json!(size);
        }
        if let Some(crv) = &key.crv {
            body["crv"] = json!(crv);
        }
        let (_, text) = self.request("POST", &path, Some(body.to_string()))?;
        Self::key_info(&path, &text)
    }

    /// One key operation (`wrapkey`, `unwrapkey`, `sign`) on a key version;
    /// returns the `value` of the answer, decoded.
    fn key_operation(&self, name: &str, version: &str, op: &str, body: serde_json::Value) -> Result<Vec<u8>> {
        let path = format!(
            "/keys/{name}/{version}/{op}",
            name = key_name(name)?,
            version = key_name(version)?
        );
        let (_, text) = self.request("POST", &path, Some(body.to_string()))?;
        #[derive(Deserialize)]
        struct Value {
            value: String,
        }
        let v: Value =
            crate::format::json::from_str(&text).map_err(|e| bad_answer(&*path, "the answer carries no value", e))?;
        crate::crypto::b64::b64u_decode(&v.value, "value")
            .map_err(|e| bad_answer(path, "the value is not base64url", e))
    }

    /// Wraps `key` under the key version (the HSM encrypts with the public part).
    pub fn wrap_key(&self, name: &str, version: &str, alg: &str, key: &[u8]) -> Result<Vec<u8>> {
        let body = json!({"alg": alg, "value": crate::crypto::b64::b64u(key)});
        self.key_operation(name, version, "wrapkey", body)
    }

    /// Unwraps `wrapped` inside the HSM; the result is secret.
    pub fn unwrap_key(
        &self,
        name: &str,
        version: &str,
        alg: &str,
        wrapped: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        let body = json!({"alg": alg, "value": crate::crypto::b64::b64u(wrapped)});
        self.key_operation(name, version, "unwrapkey", body)
            .map(zeroize::Zeroizing::new)
    }

    /// Signs `digest` inside the HSM.
    pub fn sign(&self, name: &str, version: &str, alg: &str, digest: &[u8]) -> Result<Vec<u8>> {
        let body = json!({"alg": alg, "value": crate::crypto::b64::b64u(digest)});
        self.key_operation(name, version, "sign", body)
    }

    /// Whether the HSM finds `signature` a valid signature of `digest`.
    pub fn verify(&self, name: &str, version: &str, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool> {
        let path = format!(
            "/keys/{name}/{version}/verify",
            name = key_name(name)?,
            version = key_name(version)?
        );
        let body = json!({"alg": alg, "digest": crate::crypto::b64::b64u(digest), "value": crate::crypto::b64::b64u(signature)});
        let (_, text) = self.request("POST", &path, Some(body.to_string()))?;
        #[derive(Deserialize)]
        struct Value {
            value: bool,
        }
        let v: Value = crate::format::json::from_str(&text)
            .map_err(|e| bad_answer(path, "the answer carries no verification result", e))?;
        Ok(v.value)
    }

    /// Every version of every key (not deleted ones), sorted by name, then version.
    pub fn list_key_versions(&self) -> Result<Vec<ListedVersion>> {
        let mut out = Vec::new();
        for item in self.list_all("/keys")? {
            let kid = item["kid"]
                .as_str()
                .ok_or_else(|| bad_answer("GET /keys", "a key item", "it has no kid"))?;
            let name = kid.rsplit('/').next().unwrap_or_default().to_string();
            let path = format!("/keys/{}/versions", key_name(&name)?);
            for v in self.list_all(&path)? {
                let kid = v["kid"]
                    .as_str()
                    .ok_or_else(|| bad_answer(&*path, "a key version item", "it has no kid"))?;
                let mut parts = kid.rsplit('/');
                let version = parts.next().unwrap_or_default().to_string();
                let tags = match v.get("tags") {
                    None | Some(serde_json::Value::Null) => BTreeMap::new(),
                    Some(t) => serde_json::from_value(t.clone())
                        .map_err(|e| bad_answer(&*path, "the tags are not a map of strings", e))?,
                };
                out.push(ListedVersion {
                    name: name.clone(),
                    version,
                    enabled: v["attributes"]["enabled"].as_bool().unwrap_or(true),
                    tags,
                });
            }
        }
        out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(out)
    }

    fn sas_body(storage: &str, sas: Option<&str>) -> serde_json::Value {
        let mut body = json!({"storageResourceUri": storage, "useManagedIdentity": false});
        if let Some(token) = sas {
            body["token"] = json!(token);
        }
        body
    }

    /// Starts a backup or restore job and polls it to its end.
    fn run_job(&self, method: &str, path: &str, body: serde_json::Value, what: &'static str) -> Result<JobStatus> {
        let (_, text) = self.request(method, path, Some(body.to_string()))?;
        let started: JobStatus = crate::format::json::from_str(&text)
            .map_err(|e| bad_answer(format!("{method} {path}"), "the answer is not a job status", e))?;
        let id = started
            .job_id
            .clone()
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .ok_or_else(|| {
                bad_answer(
                    format!("{method} {path}"),
                    "the answer names no usable jobId",
                    text.chars().take(200).collect::<String>(),
                )
            })?;
        let pending = format!("{path}/{id}/pending");
        let mut wait = Wait::new(self, what);
        let mut last = started;
        loop {
            if last.status.eq_ignore_ascii_case("succeeded") || last.status.eq_ignore_ascii_case("success") {
                return Ok(last);
            }
            if last.status.eq_ignore_ascii_case("failed") {
                return Err(InstanceError::OperationFailed {
                    what,
                    details: last.why(),
                }
                .into());
            }
            wait.pause(last.status)?;
            let (_, text) = self.request("GET", &pending, None)?;
            last = crate::format::json::from_str(&text)
                .map_err(|e| bad_answer(format!("GET {pending}"), "the answer is not a job status", e))?;
        }
    }

    /// A full backup of the instance to the container `storage` (with its
    /// SAS; none for a `file:///` folder), waited for.
    pub fn full_backup(&self, storage: &str, sas: Option<&str>) -> Result<BackupDone> {
        let done = self.run_job("POST", "/backup", Self::sas_body(storage, sas), "full backup")?;
        let folder_url = done
            .azure_storage_blob_container_uri
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                bad_answer(
                    "POST /backup",
                    "the finished backup",
                    "it names no folder (azureStorageBlobContainerUri)",
                )
            })?;
        let folder = folder_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        if folder.is_empty() {
            return Err(bad_answer(
                "POST /backup",
                "the backup's folder URL has no folder",
                folder_url,
            ));
        }
        Ok(BackupDone { folder_url, folder })
    }

    /// A full restore of `folder` from the container `storage`, waited for:
    /// it replaces every key the instance holds.
    pub fn full_restore(&self, storage: &str, sas: Option<&str>, folder: &str) -> Result<()> {
        let body = json!({"sasTokenParameters": Self::sas_body(storage, sas), "folderToRestore": folder});
        self.run_job("PUT", "/restore", body, "full restore").map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key name that would change the request path is refused before any
    /// request is made (port 9 would refuse the connection otherwise).
    #[test]
    fn only_local_and_loopback_urls_are_emulators() {
        for url in [
            "local:a",
            "https://127.0.0.1:8443",
            "http://localhost:1",
            "https://[::1]:2",
        ] {
            assert!(is_emulator_url(url), "{url}");
        }
        for url in [
            "https://contoso.managedhsm.azure.net",
            "https://127.0.0.1.example.com",
            "https://10.0.0.1",
            "not a url",
        ] {
            assert!(!is_emulator_url(url), "{url}");
        }
    }

    #[test]
    fn activation_follows_the_pending_statuses() {
        let st = |status: &str| OperationStatus {
            status: status.into(),
            status_details: String::new(),
        };
        let table = [
            (None, None, Activation::NotActivated),
            (Some(st("InProgress")), None, Activation::NotActivated),
            (Some(st("Success")), None, Activation::Active),
            (None, Some(st("Succeeded")), Activation::Active),
            (None, Some(st("Failed")), Activation::Failed),
            (Some(st("Failed")), None, Activation::Failed),
            (Some(st("Success")), Some(st("Failed")), Activation::Active),
            (None, Some(st("InProgress")), Activation::NotActivated),
        ];
        for (d, u, want) in table {
            assert_eq!(Activation::from_statuses(d.as_ref(), u.as_ref()), want, "{d:?} {u:?}");
        }
    }

    #[test]
    fn key_names_outside_the_rule_are_refused_before_any_request() {
        let client = InstanceClient::new("http://127.0.0.1:9", BearerToken::new("t".to_string()), None).unwrap();
        for name in ["a/b", "a?api-version=1", "a%2fb", "", "../restore", &"a".repeat(128)] {
            for result in [
                client.create_rsa_key(name).map(|_| ()),
                client.get_key(name).map(|_| ()),
                client.backup_key(name).map(|_| ()),
            ] {
                assert!(
                    matches!(result, Err(Error::Instance(InstanceError::KeyName { .. }))),
                    "{name}: {result:?}"
                );
            }
        }
        assert!(matches!(
            client.get_key("canary-1"),
            Err(Error::Instance(InstanceError::Unreachable { .. }))
        ));
    }
}
