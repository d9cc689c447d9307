//! What a request asks for: method, path, query and body parsed into an [`Operation`], purely (no state, no I/O).
//!
//! The parse runs in three steps, each refusing with the status and Key
//! Vault error a client sees, in the order the server applies them:
//!
//! 1. [`head`]: method and path to a [`Route`], and the api-version. The
//!    route alone decides what authorization the request needs
//!    ([`Route::action`]), so the challenge is answered before any body is
//!    read.
//! 2. [`Route::check_path`]: the path's parameters (key names), refused
//!    before the instance's state is consulted.
//! 3. [`parse`]: the route and the body bytes to the [`Operation`] to run.
//!    It repeats step 2 itself, so [`preflight`] (and the fuzz target) drive
//!    exactly what the server does.
//!
//! Adding an operation: a [`Route`] variant and its arm in `route`; its
//! [`DataAction`] in [`Route::action`] (a new action also goes into
//! `DataAction`, with the service's string, and into the roles that grant
//! it, `Role::data_actions`); its arms in `takes_body`,
//! `needs_security_domain` and `check_path`; an [`Operation`] variant and
//! its arm in [`parse`]; then its arm in `handle::execute`. The compiler
//! points at every match that lacks it; add its rows to the tables below.

use hyper::{Method, StatusCode};
use serde::Deserialize;

use super::backup::{self, BackupOp, BackupRoute};
use super::error::ApiError;
use super::keys::{self, KeySpec};
use super::rbac::api::{self as admin, AdminOp, AdminRoute};
use super::rbac::DataAction;
use crate::custodian::cert::Certificate;
use crate::format::transfer_key::Jwk;

/// The api-versions the Azure CLI and the SDKs send.
pub const API_VERSIONS: [&str; 7] = ["7.2", "7.3", "7.4", "7.5", "7.6", "7.6-preview.2", "2025-07-01"];

/// What the request line names: known before the body is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Download,
    DownloadPending,
    TransferKey,
    Upload,
    UploadPending,
    CreateKey(String),
    GetKey(String, Option<String>),
    BackupKey(String),
    RestoreKey,
    /// Full backup and restore, their checks and statuses ([`backup`]).
    Backup(BackupRoute),
    /// Role assignments, role definitions and settings.
    Admin(AdminRoute),
}

/// A routed request: its route and the api-version it asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub route: Route,
    pub api_version: String,
}

/// A request, fully parsed and checked: what the instance is asked to do.
pub(crate) enum Operation {
    /// Certificates labelled `certificate N` (1-based), and the quorum.
    Download {
        certs: Vec<(String, Certificate)>,
        quorum: usize,
    },
    DownloadStatus,
    TransferKey,
    /// The restore blob (JSON), opened later with the exchange key.
    Upload {
        blob: String,
    },
    UploadStatus,
    CreateKey {
        name: String,
        spec: KeySpec,
    },
    GetKey {
        name: String,
        version: Option<String>,
    },
    BackupKey {
        name: String,
    },
    RestoreKey {
        backup: String,
    },
    Backup(BackupOp),
    Admin(AdminOp),
}

impl Route {
    /// The one data action this route needs; the single place authorization is declared.
    pub fn action(&self) -> DataAction {
        match self {
            Route::Download => DataAction::SecurityDomainDownload,
            Route::DownloadPending => DataAction::SecurityDomainDownloadStatus,
            Route::TransferKey => DataAction::SecurityDomainTransferKey,
            Route::Upload => DataAction::SecurityDomainUpload,
            Route::UploadPending => DataAction::SecurityDomainUploadStatus,
            Route::CreateKey(_) => DataAction::KeyCreate,
            Route::GetKey(..) => DataAction::KeyRead,
            Route::BackupKey(_) => DataAction::KeyBackup,
            Route::RestoreKey => DataAction::KeyRestore,
            Route::Backup(r) => r.action(),
            Route::Admin(r) => r.action(),
        }
    }

    /// The scope [`Route::action`] is checked at: `/keys/{name}` for an
    /// operation on one key, `/keys` for one on the key collection, `/`
    /// for the rest (security domain, and role definitions and settings).
    pub fn scope(&self) -> String {
        match self {
            Route::CreateKey(name) | Route::GetKey(name, _) | Route::BackupKey(name) => format!("/keys/{name}"),
            Route::RestoreKey => "/keys".to_string(),
            Route::Admin(r) => r.scope(),
            // A selective restore writes one key; full backups and restores are the HSM's.
            Route::Backup(super::backup::BackupRoute::SelectiveRestore(name)) => format!("/keys/{name}"),
            Route::Backup(_) => "/".to_string(),
            Route::Download | Route::DownloadPending | Route::TransferKey | Route::Upload | Route::UploadPending => {
                "/".to_string()
            }
        }
    }

    /// Whether the request carries a body to read.
    pub fn takes_body(&self) -> bool {
        match self {
            Route::Download | Route::Upload | Route::CreateKey(_) | Route::RestoreKey => true,
            Route::Backup(r) => r.takes_body(),
            Route::Admin(r) => r.takes_body(),
            Route::DownloadPending
            | Route::TransferKey
            | Route::UploadPending
            | Route::GetKey(..)
            | Route::BackupKey(_) => false,
        }
    }

    /// Whether the operation needs an activated instance (a security
    /// domain): refused before the body is read when there is none.
    pub fn needs_security_domain(&self) -> bool {
        match self {
            Route::CreateKey(_) | Route::GetKey(..) | Route::BackupKey(_) | Route::RestoreKey => true,
            Route::Backup(r) => r.needs_security_domain(),
            Route::Admin(_)
            | Route::Download
            | Route::DownloadPending
            | Route::TransferKey
            | Route::Upload
            | Route::UploadPending => false,
        }
    }

    /// Step 2: the path's parameters.
    pub fn check_path(&self) -> Result<(), ApiError> {
        match self {
            Route::CreateKey(name) | Route::GetKey(name, _) | Route::BackupKey(name) => keys::check_name(name),
            Route::Backup(r) => r.check_path(),
            Route::Admin(r) => r.check_path(),
            Route::Download
            | Route::DownloadPending
            | Route::TransferKey
            | Route::Upload
            | Route::UploadPending
            | Route::RestoreKey => Ok(()),
        }
    }
}

/// Step 1: method, path and query to the route and api-version.
pub(crate) fn head(method: &Method, path: &str, query: Option<&str>) -> Result<Head, ApiError> {
    let route = route(method, path, query)?;
    let api_version = api_version(query)?;
    Ok(Head { route, api_version })
}

fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(found) = admin::route(method, path, &segments, query) {
        return found.map(Route::Admin);
    }
    let get = method == Method::GET;
    let post = method == Method::POST;
    if let Some(r) = backup::route(method, &segments) {
        return r.map(Route::Backup);
    }
    let found = match (segments.as_slice(), get, post) {
        (["securitydomain", "download"], _, true) => Some(Route::Download),
        (["securitydomain", "download", "pending"], true, _) => Some(Route::DownloadPending),
        (["securitydomain", "upload"], true, _) => Some(Route::TransferKey),
        (["securitydomain", "upload"], _, true) => Some(Route::Upload),
        (["securitydomain", "upload", "pending"], true, _) => Some(Route::UploadPending),
        (["keys", "restore"], _, true) => Some(Route::RestoreKey),
        (["keys", name, "create"], _, true) => Some(Route::CreateKey(name.to_string())),
        (["keys", name, "backup"], _, true) => Some(Route::BackupKey(name.to_string())),
        (["keys", name], true, _) => Some(Route::GetKey(name.to_string(), None)),
        // The SDK asks for `/keys/{name}/` when no version is given.
        (["keys", name, version], true, _) => Some(Route::GetKey(
            name.to_string(),
            (!version.is_empty()).then(|| version.to_string()),
        )),
        _ => None,
    };
    match found {
        Some(r) => Ok(r),
        None if path.trim_matches('/').starts_with("securitydomain") || path.trim_matches('/').starts_with("keys") => {
            Err(ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "MethodNotAllowed",
                message: format!("{method} {path} is not supported"),
            })
        }
        None => Err(ApiError::not_found(
            "NotFound",
            format!("{path} is not an endpoint of this instance"),
        )),
    }
}

fn api_version(query: Option<&str>) -> Result<String, ApiError> {
    let found = query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "api-version")
        .map(|(_, v)| v.to_string());
    match found {
        None => Err(ApiError::bad_request(
            "the api-version query parameter is required (for example ?api-version=7.5)",
        )),
        Some(v) if API_VERSIONS.contains(&v.as_str()) => Ok(v),
        Some(v) => Err(ApiError::bad_request(format!(
            "the api-version '{v}' is not supported; supported versions: {}",
            API_VERSIONS.join(", ")
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadRequest {
    certificates: Vec<Jwk>,
    required: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueBody {
    value: String,
}

fn json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    crate::format::json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid {what}: {e}")))
}

/// Step 3: the route and its body to the operation (step 2 included).
/// A route that takes no body ignores `body`, as the server never reads it.
pub(crate) fn parse(route: Route, body: &[u8]) -> Result<Operation, ApiError> {
    route.check_path()?;
    Ok(match route {
        Route::Download => {
            let req: DownloadRequest = json(body, "download request ({\"certificates\": [JWK...], \"required\": M})")?;
            let mut certs = Vec::with_capacity(req.certificates.len());
            for (i, jwk) in req.certificates.iter().enumerate() {
                let label = format!("certificate {}", i + 1);
                let cert = Certificate::from_jwk(jwk).map_err(|e| ApiError::bad_request(format!("{label}: {e}")))?;
                certs.push((label, cert));
            }
            Operation::Download {
                certs,
                // Past usize is past any certificate count: refused by the split as too large.
                quorum: usize::try_from(req.required).unwrap_or(usize::MAX),
            }
        }
        Route::DownloadPending => Operation::DownloadStatus,
        Route::TransferKey => Operation::TransferKey,
        Route::Upload => {
            let req: ValueBody = json(body, "upload request ({\"value\": \"<restore blob>\"})")?;
            Operation::Upload { blob: req.value }
        }
        Route::UploadPending => Operation::UploadStatus,
        Route::CreateKey(name) => {
            let req: CreateKeyRequest = json(body, "key creation request")?;
            Operation::CreateKey {
                name,
                spec: req.check()?,
            }
        }
        Route::GetKey(name, version) => Operation::GetKey { name, version },
        Route::BackupKey(name) => Operation::BackupKey { name },
        Route::RestoreKey => {
            let req: ValueBody = json(body, "key restore request ({\"value\": \"<backup>\"})")?;
            Operation::RestoreKey { backup: req.value }
        }
        Route::Backup(r) => Operation::Backup(backup::parse(r, body)?),
        Route::Admin(r) => Operation::Admin(admin::parse(r, body)?),
    })
}

/// The body of `POST /keys/{name}/create`, as the SDK and the CLI send it.
#[derive(Deserialize)]
struct CreateKeyRequest {
    kty: String,
    key_size: Option<u32>,
    public_exponent: Option<u64>,
    key_ops: Option<Vec<String>>,
    attributes: Option<CreateAttributes>,
    tags: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct CreateAttributes {
    enabled: Option<bool>,
}

impl CreateKeyRequest {
    fn check(self) -> Result<KeySpec, ApiError> {
        if !matches!(self.kty.as_str(), "RSA" | "RSA-HSM") {
            return Err(ApiError::bad_request(format!(
                "kty '{}' is not supported by this emulator; use RSA or RSA-HSM",
                self.kty
            )));
        }
        let bits = self.key_size.unwrap_or(2048) as usize;
        if ![2048, 3072, 4096].contains(&bits) {
            return Err(ApiError::bad_request(format!(
                "key_size {bits} is not supported; use 2048, 3072 or 4096"
            )));
        }
        if self.public_exponent.is_some_and(|e| e != 65537) {
            return Err(ApiError::bad_request("only the public exponent 65537 is supported"));
        }
        let key_ops = match self.key_ops {
            Some(ops) => {
                if let Some(bad) = ops.iter().find(|o| !keys::KNOWN_KEY_OPS.contains(&o.as_str())) {
                    return Err(ApiError::bad_request(format!("'{bad}' is not a key operation")));
                }
                ops
            }
            None => keys::DEFAULT_KEY_OPS.iter().map(|s| s.to_string()).collect(),
        };
        Ok(KeySpec {
            bits,
            key_ops,
            enabled: self.attributes.and_then(|a| a.enabled).unwrap_or(true),
            tags: self.tags.unwrap_or_default(),
        })
    }
}

/// The whole stateless part of handling one request, exactly as the server
/// does it (the same `head` and `parse`), without authorization or
/// state. Returns the status and Key Vault error body a refusal would
/// carry. Driven by the fuzz target `emulator_request`: hostile input must
/// never panic here.
pub fn preflight(method: &str, path_and_query: &str, body: &[u8]) -> Result<(), (u16, String)> {
    let fail = |e: ApiError| (e.status.as_u16(), e.body());
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| fail(ApiError::bad_request("the request method is not valid")))?;
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let head = head(&method, path, query).map_err(fail)?;
    parse(head.route, body).map(drop).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::custodians;

    const V: Option<&str> = Some("api-version=7.5");

    fn route_of(method: &str, path: &str) -> Result<Route, (u16, String)> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        head(&method, path, V)
            .map(|h| h.route)
            .map_err(|e| (e.status.as_u16(), e.message))
    }

    #[test]
    fn request_lines_route_as_the_service_does() {
        use Route::*;
        let s = |x: &str| x.to_string();
        let table: Vec<(&str, &str, Route)> = vec![
            ("POST", "/securitydomain/download", Download),
            ("GET", "/securitydomain/download/pending", DownloadPending),
            ("GET", "/securitydomain/upload", TransferKey),
            ("POST", "/securitydomain/upload", Upload),
            ("GET", "/securitydomain/upload/pending", UploadPending),
            // Azure's own examples carry a doubled slash.
            ("GET", "//securitydomain/upload", TransferKey),
            ("POST", "/keys/restore", RestoreKey),
            ("POST", "/keys/canary/create", CreateKey(s("canary"))),
            ("POST", "/keys/canary/backup", BackupKey(s("canary"))),
            ("GET", "/keys/canary", GetKey(s("canary"), None)),
            ("GET", "/keys/canary/", GetKey(s("canary"), None)),
            ("GET", "/keys/canary/abc", GetKey(s("canary"), Some(s("abc")))),
            // Routed first, refused by the path check (after authorization).
            ("POST", "/keys/bad!name/create", CreateKey(s("bad!name"))),
        ];
        for (method, path, want) in table {
            assert_eq!(route_of(method, path), Ok(want), "{method} {path}");
        }
        let refused: Vec<(&str, &str, u16)> = vec![
            ("DELETE", "/securitydomain/upload", 405),
            ("GET", "/securitydomain/download", 405),
            ("PUT", "/keys/canary/create", 405),
            ("GET", "/keys/canary/create/x", 405),
            ("GET", "/secrets/x", 404),
            ("GET", "/", 404),
        ];
        for (method, path, status) in refused {
            assert_eq!(route_of(method, path).unwrap_err().0, status, "{method} {path}");
        }
    }

    #[test]
    fn api_versions() {
        let at = |q: Option<&str>| head(&Method::GET, "/securitydomain/upload", q).map(|h| h.api_version);
        assert_eq!(at(Some("api-version=7.5")).unwrap(), "7.5");
        assert_eq!(at(Some("x=1&api-version=2025-07-01")).unwrap(), "2025-07-01");
        assert!(at(None).unwrap_err().message.contains("is required"));
        assert!(at(Some("api-version=9.9"))
            .unwrap_err()
            .message
            .contains("'9.9' is not supported"));
        assert!(at(Some("api-version")).is_err(), "a key without a value");
        // The route is refused before the version.
        let e = head(&Method::GET, "/secrets", None).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn each_route_declares_the_data_action_the_service_checks() {
        use Route::*;
        let s = || "k".to_string();
        let table = [
            (Download, "securitydomain/download/action"),
            (DownloadPending, "securitydomain/download/read"),
            (TransferKey, "securitydomain/transferkey/read"),
            (Upload, "securitydomain/upload/action"),
            (UploadPending, "securitydomain/upload/read"),
            (CreateKey(s()), "keys/create"),
            (GetKey(s(), None), "keys/read/action"),
            (BackupKey(s()), "keys/backup/action"),
            (RestoreKey, "keys/restore/action"),
        ];
        for (route, action) in table {
            assert_eq!(
                route.action().name(),
                format!("Microsoft.KeyVault/managedHsm/{action}"),
                "{route:?}"
            );
        }
        // The scope each is checked at: the key, the key collection, or the HSM.
        let scopes = [
            (CreateKey(s()), "/keys/k"),
            (GetKey(s(), Some(s())), "/keys/k"),
            (BackupKey(s()), "/keys/k"),
            (RestoreKey, "/keys"),
            (Download, "/"),
            (TransferKey, "/"),
        ];
        for (route, scope) in scopes {
            assert_eq!(route.scope(), scope, "{route:?}");
        }
        let assignment = route_of("PUT", "/keys/k/providers/Microsoft.Authorization/roleAssignments/x").unwrap();
        assert_eq!(
            (assignment.action().name(), assignment.scope().as_str()),
            (DataAction::RoleAssignmentWrite.name(), "/keys/k")
        );
        let settings = route_of("PATCH", "/settings/x").unwrap();
        assert_eq!(
            (settings.action(), settings.scope().as_str()),
            (DataAction::SettingsWrite, "/")
        );
    }

    /// What `parse` made of a request, in words a table can compare.
    fn parsed(method: &str, path: &str, body: &str) -> Result<String, (u16, String)> {
        let route = route_of(method, path)?;
        let op = parse(route, body.as_bytes()).map_err(|e| (e.status.as_u16(), e.message))?;
        Ok(match op {
            Operation::Download { certs, quorum } => {
                let labels: Vec<&str> = certs.iter().map(|(l, _)| l.as_str()).collect();
                format!("download {} of [{}]", quorum, labels.join(", "))
            }
            Operation::DownloadStatus => "download status".into(),
            Operation::TransferKey => "transfer key".into(),
            Operation::Upload { blob } => format!("upload {blob}"),
            Operation::UploadStatus => "upload status".into(),
            Operation::CreateKey { name, spec } => format!(
                "create {name} {} bits, ops {}, enabled {}, {} tags",
                spec.bits,
                spec.key_ops.join("+"),
                spec.enabled,
                spec.tags.len()
            ),
            Operation::GetKey { name, version } => format!("get {name} {version:?}"),
            Operation::BackupKey { name } => format!("backup {name}"),
            Operation::RestoreKey { backup } => format!("restore {backup}"),
            Operation::Backup(_) => "backup operation".into(),
            Operation::Admin(_) => "admin".into(),
        })
    }

    #[test]
    fn bodies_parse_to_the_operation_or_a_precise_400() {
        let jwk = serde_json::to_string(&custodians()[0].cert.to_jwk().unwrap()).unwrap();
        let download = format!("{{\"certificates\":[{jwk},{jwk},{jwk}],\"required\":2}}");
        let ok: Vec<(&str, &str, &str, &str)> = vec![
            (
                "POST",
                "/securitydomain/download",
                &download,
                "download 2 of [certificate 1, certificate 2, certificate 3]",
            ),
            ("GET", "/securitydomain/download/pending", "", "download status"),
            // A body on a route that takes none is never read.
            ("GET", "/securitydomain/upload", "{not json", "transfer key"),
            ("POST", "/securitydomain/upload", r#"{"value":"{}"}"#, "upload {}"),
            ("GET", "/securitydomain/upload/pending", "", "upload status"),
            (
                "POST",
                "/keys/canary/create",
                r#"{"kty":"RSA-HSM"}"#,
                "create canary 2048 bits, ops encrypt+decrypt+sign+verify+wrapKey+unwrapKey, enabled true, 0 tags",
            ),
            (
                "POST",
                "/keys/canary/create",
                r#"{"kty":"RSA","key_size":3072,"key_ops":["sign"],"attributes":{"enabled":false},"tags":{"a":"b"}}"#,
                "create canary 3072 bits, ops sign, enabled false, 1 tags",
            ),
            ("GET", "/keys/canary/", "", "get canary None"),
            ("GET", "/keys/canary/v1", "", "get canary Some(\"v1\")"),
            ("POST", "/keys/canary/backup", "", "backup canary"),
            ("POST", "/keys/restore", r#"{"value":"AAAA"}"#, "restore AAAA"),
        ];
        for (method, path, body, want) in ok {
            assert_eq!(
                parsed(method, path, body).as_deref(),
                Ok(want),
                "{method} {path} {body}"
            );
        }

        let bad_jwk = r#"{"certificates":[{"kty":"RSA","n":"AQAB","e":"AQAB","x5c":["MAA="]}],"required":2}"#;
        let long = format!("/keys/{}/create", "a".repeat(128));
        let refused: Vec<(&str, &str, &str, &str)> = vec![
            ("POST", "/securitydomain/download", "", "not a valid download request"),
            (
                "POST",
                "/securitydomain/download",
                "{not json",
                "not a valid download request",
            ),
            (
                "POST",
                "/securitydomain/download",
                r#"{"certificates":[],"required":2,"evil":true}"#,
                "evil",
            ),
            (
                "POST",
                "/securitydomain/download",
                r#"{"certificates":[],"required":-1}"#,
                "not a valid download request",
            ),
            ("POST", "/securitydomain/download", bad_jwk, "certificate 1: "),
            (
                "POST",
                "/securitydomain/upload",
                r#"{"value":5}"#,
                "not a valid upload request",
            ),
            (
                "POST",
                "/keys/canary/create",
                r#"{"kty":"EC"}"#,
                "kty 'EC' is not supported",
            ),
            (
                "POST",
                "/keys/canary/create",
                r#"{"kty":"RSA","key_size":1024}"#,
                "key_size 1024 is not supported",
            ),
            (
                "POST",
                "/keys/canary/create",
                r#"{"kty":"RSA","public_exponent":3}"#,
                "public exponent 65537",
            ),
            (
                "POST",
                "/keys/canary/create",
                r#"{"kty":"RSA","key_ops":["fly"]}"#,
                "'fly' is not a key operation",
            ),
            ("POST", "/keys/canary/create", "", "not a valid key creation request"),
            // The name is refused before the body is looked at.
            (
                "POST",
                "/keys/bad!name/create",
                r#"{"kty":"RSA"}"#,
                "'bad!name' is not a valid key name",
            ),
            ("POST", &long, r#"{"kty":"RSA"}"#, "is not a valid key name"),
            ("GET", "/keys/..%2fetc", "", "is not a valid key name"),
            ("POST", "/keys/a.b/backup", "", "is not a valid key name"),
            (
                "POST",
                "/keys/restore",
                r#"{"value":"AAAA","x":1}"#,
                "not a valid key restore request",
            ),
        ];
        for (method, path, body, why) in refused {
            let (status, message) = parsed(method, path, body).unwrap_err();
            assert_eq!(status, 400, "{method} {path} {body}: {message}");
            assert!(message.contains(why), "{method} {path} {body}: {message}");
        }
    }

    #[test]
    fn the_path_check_alone_refuses_bad_names() {
        let route = route_of("POST", "/keys/bad!name/create").unwrap();
        assert!(route.check_path().is_err());
        assert!(route_of("POST", "/keys/good-name/create").unwrap().check_path().is_ok());
        assert!(route_of("POST", "/keys/restore").unwrap().check_path().is_ok());
    }

    #[test]
    fn preflight_answers_as_the_server_would() {
        assert_eq!(preflight("GET", "/securitydomain/upload?api-version=7.5", b""), Ok(()));
        let (status, body) = preflight("GET", "/securitydomain/upload", b"").unwrap_err();
        assert_eq!(status, 400);
        assert!(body.starts_with("{\"error\"") && body.contains("api-version"));
        assert_eq!(preflight("BR EW", "/", b"").unwrap_err().0, 400);
        assert_eq!(preflight("GET", "/nope?api-version=7.5", b"").unwrap_err().0, 404);
        assert_eq!(
            preflight("POST", "/keys/x/create?api-version=7.5", b"{\"kty\":\"EC\"}")
                .unwrap_err()
                .0,
            400
        );
    }
}
