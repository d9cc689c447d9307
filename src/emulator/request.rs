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
use super::keys::spec::{
    self, CreateKeyRequest, ImportKeyRequest, KeyOperation, KeyOperationRequest, PolicySpec, RngRequest,
    RotationPolicyRequest, SignRequest, Update, UpdateKeyRequest, VerifyRequest,
};
use super::keys::{self, KeySpec, Material, Page};
use super::rbac::api::{self as admin, AdminOp, AdminRoute};
use super::rbac::DataAction;
use crate::crypto::b64::{b64u, b64u_decode};

use crate::custodian::cert::Certificate;
use crate::format::transfer_key::Jwk;

/// The api-versions the Azure CLI and the SDKs send (az 2.91's
/// `keyvault backup start` / `restore start` send 7.5-preview.1).
pub const API_VERSIONS: [&str; 8] = [
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.5-preview.1",
    "7.6",
    "7.6-preview.2",
    "2025-07-01",
];

/// A cryptographic operation on a key version (`POST /keys/{name}/{version}/{op}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CryptoOp {
    Encrypt,
    Decrypt,
    Wrap,
    Unwrap,
    Sign,
    Verify,
}

impl CryptoOp {
    fn from_segment(s: &str) -> Option<CryptoOp> {
        Some(match s {
            "encrypt" => CryptoOp::Encrypt,
            "decrypt" => CryptoOp::Decrypt,
            "wrapkey" => CryptoOp::Wrap,
            "unwrapkey" => CryptoOp::Unwrap,
            "sign" => CryptoOp::Sign,
            "verify" => CryptoOp::Verify,
            _ => return None,
        })
    }
    /// The `key_ops` entry that permits it.
    pub fn key_op(self) -> &'static str {
        match self {
            CryptoOp::Encrypt => "encrypt",
            CryptoOp::Decrypt => "decrypt",
            CryptoOp::Wrap => "wrapKey",
            CryptoOp::Unwrap => "unwrapKey",
            CryptoOp::Sign => "sign",
            CryptoOp::Verify => "verify",
        }
    }
}

/// Which page of a list the query asks for (`maxresults`, `$skiptoken`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PageQuery {
    pub max: usize,
    pub after: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Page {
        Page {
            max: self.max,
            after: self.after.clone(),
        }
    }
}

/// What the request line names: known before the body is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Download,
    DownloadPending,
    TransferKey,
    Upload,
    UploadPending,
    CreateKey(String),
    ImportKey(String),
    GetKey(String, Option<String>),
    UpdateKey(String, Option<String>),
    DeleteKey(String),
    ListKeys(PageQuery),
    ListVersions(String, PageQuery),
    RotateKey(String),
    GetRotationPolicy(String),
    SetRotationPolicy(String),
    KeyOp(String, Option<String>, CryptoOp),
    BackupKey(String),
    RestoreKey,
    ListDeletedKeys(PageQuery),
    GetDeletedKey(String),
    RecoverDeletedKey(String),
    PurgeDeletedKey(String),
    Rng,
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
    ImportKey {
        name: String,
        material: Material,
        spec: KeySpec,
    },
    GetKey {
        name: String,
        version: Option<String>,
    },
    UpdateKey {
        name: String,
        version: Option<String>,
        update: Update,
    },
    DeleteKey {
        name: String,
    },
    ListKeys {
        page: PageQuery,
    },
    ListVersions {
        name: String,
        page: PageQuery,
    },
    RotateKey {
        name: String,
    },
    GetRotationPolicy {
        name: String,
    },
    SetRotationPolicy {
        name: String,
        policy: PolicySpec,
    },
    /// encrypt, decrypt, wrapkey, unwrapkey.
    Crypt {
        name: String,
        version: Option<String>,
        op: CryptoOp,
        req: KeyOperation,
    },
    Sign {
        name: String,
        version: Option<String>,
        alg: String,
        digest: Vec<u8>,
    },
    Verify {
        name: String,
        version: Option<String>,
        alg: String,
        digest: Vec<u8>,
        signature: Vec<u8>,
    },
    BackupKey {
        name: String,
    },
    RestoreKey {
        backup: String,
    },
    ListDeletedKeys {
        page: PageQuery,
    },
    GetDeletedKey {
        name: String,
    },
    RecoverDeletedKey {
        name: String,
    },
    PurgeDeletedKey {
        name: String,
    },
    Rng {
        count: usize,
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
            // Microsoft's role table lists keys/rotate/action (the 7.5 spec's enum does not).
            Route::RotateKey(_) => DataAction::KeyRotate,
            Route::ImportKey(_) => DataAction::KeyImport,
            Route::GetKey(..) | Route::ListKeys(_) | Route::ListVersions(..) | Route::GetRotationPolicy(_) => {
                DataAction::KeyRead
            }
            Route::UpdateKey(..) | Route::SetRotationPolicy(_) => DataAction::KeyWrite,
            Route::DeleteKey(_) => DataAction::KeyDelete,
            Route::KeyOp(_, _, op) => match op {
                CryptoOp::Encrypt => DataAction::KeyEncrypt,
                CryptoOp::Decrypt => DataAction::KeyDecrypt,
                CryptoOp::Wrap => DataAction::KeyWrap,
                CryptoOp::Unwrap => DataAction::KeyUnwrap,
                CryptoOp::Sign => DataAction::KeySign,
                CryptoOp::Verify => DataAction::KeyVerify,
            },
            Route::BackupKey(_) => DataAction::KeyBackup,
            Route::RestoreKey => DataAction::KeyRestore,
            Route::ListDeletedKeys(_) | Route::GetDeletedKey(_) => DataAction::DeletedKeyRead,
            Route::RecoverDeletedKey(_) => DataAction::DeletedKeyRecover,
            Route::PurgeDeletedKey(_) => DataAction::DeletedKeyPurge,
            Route::Rng => DataAction::Rng,
            Route::Backup(r) => r.action(),
            Route::Admin(r) => r.action(),
        }
    }

    /// The scope [`Route::action`] is checked at: `/keys/{name}` for an
    /// operation on one key, `/keys` for one on the key collection, `/`
    /// for the rest (security domain, and role definitions and settings).
    pub fn scope(&self) -> String {
        match self {
            Route::CreateKey(name)
            | Route::ImportKey(name)
            | Route::GetKey(name, _)
            | Route::UpdateKey(name, _)
            | Route::DeleteKey(name)
            | Route::ListVersions(name, _)
            | Route::RotateKey(name)
            | Route::GetRotationPolicy(name)
            | Route::SetRotationPolicy(name)
            | Route::KeyOp(name, _, _)
            | Route::BackupKey(name)
            | Route::GetDeletedKey(name)
            | Route::RecoverDeletedKey(name)
            | Route::PurgeDeletedKey(name) => format!("/keys/{name}"),
            Route::RestoreKey | Route::ListKeys(_) | Route::ListDeletedKeys(_) => "/keys".to_string(),
            Route::Rng => "/".to_string(),
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
            Route::Backup(r) => r.takes_body(),
            Route::Admin(r) => r.takes_body(),
            Route::Download
            | Route::Upload
            | Route::CreateKey(_)
            | Route::ImportKey(_)
            | Route::UpdateKey(..)
            | Route::SetRotationPolicy(_)
            | Route::KeyOp(..)
            | Route::RestoreKey
            | Route::Rng => true,
            Route::DownloadPending
            | Route::TransferKey
            | Route::UploadPending
            | Route::GetKey(..)
            | Route::DeleteKey(_)
            | Route::ListKeys(_)
            | Route::ListVersions(..)
            | Route::RotateKey(_)
            | Route::GetRotationPolicy(_)
            | Route::BackupKey(_)
            | Route::ListDeletedKeys(_)
            | Route::GetDeletedKey(_)
            | Route::RecoverDeletedKey(_)
            | Route::PurgeDeletedKey(_) => false,
        }
    }

    /// Whether the operation needs an activated instance (a security
    /// domain): refused before the body is read when there is none.
    pub fn needs_security_domain(&self) -> bool {
        match self {
            Route::Backup(r) => r.needs_security_domain(),
            Route::Admin(_) => false,
            _ => !matches!(
                self,
                Route::Download | Route::DownloadPending | Route::TransferKey | Route::Upload | Route::UploadPending
            ),
        }
    }

    /// Step 2: the path's parameters.
    pub fn check_path(&self) -> Result<(), ApiError> {
        match self {
            Route::Backup(r) => r.check_path(),
            Route::Admin(r) => r.check_path(),
            Route::CreateKey(name)
            | Route::ImportKey(name)
            | Route::GetKey(name, _)
            | Route::UpdateKey(name, _)
            | Route::DeleteKey(name)
            | Route::ListVersions(name, _)
            | Route::RotateKey(name)
            | Route::GetRotationPolicy(name)
            | Route::SetRotationPolicy(name)
            | Route::KeyOp(name, _, _)
            | Route::BackupKey(name)
            | Route::GetDeletedKey(name)
            | Route::RecoverDeletedKey(name)
            | Route::PurgeDeletedKey(name) => keys::check_name(name),
            Route::Download
            | Route::DownloadPending
            | Route::TransferKey
            | Route::Upload
            | Route::UploadPending
            | Route::ListKeys(_)
            | Route::ListDeletedKeys(_)
            | Route::RestoreKey
            | Route::Rng => Ok(()),
        }
    }
}

/// Step 1: method, path and query to the route and api-version.
pub(crate) fn head(method: &Method, path: &str, query: Option<&str>) -> Result<Head, ApiError> {
    let route = route(method, path, query)?;
    let api_version = api_version(query)?;
    Ok(Head { route, api_version })
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// `maxresults` (1 to 25, default 25) and the `$skiptoken` a `nextLink` carries.
fn page_query(query: Option<&str>) -> Result<PageQuery, ApiError> {
    let max = match query_param(query, "maxresults") {
        None => keys::MAX_RESULTS,
        Some(v) => match v.parse::<usize>() {
            Ok(n @ 1..=keys::MAX_RESULTS) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "maxresults '{v}' is not a number from 1 to {}",
                    keys::MAX_RESULTS
                )))
            }
        },
    };
    let after = match query_param(query, "$skiptoken").or_else(|| query_param(query, "%24skiptoken")) {
        None => None,
        Some(t) => Some(
            b64u_decode(t, "$skiptoken")
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| s.len() <= 127)
                .ok_or_else(|| {
                    ApiError::bad_request("$skiptoken is not one this instance issued; follow nextLink as given")
                })?,
        ),
    };
    Ok(PageQuery { max, after })
}

/// The `$skiptoken` for continuing after `position`.
pub(crate) fn skiptoken(position: &str) -> String {
    b64u(position.as_bytes())
}

fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let m = method.as_str();
    let s = |x: &str| x.to_string();
    // The SDK asks for `/keys/{name}/` when no version is given.
    let ver = |v: &str| (!v.is_empty()).then(|| v.to_string());
    if let Some(found) = admin::route(method, path, &segments, query) {
        return found.map(Route::Admin);
    }
    if let Some(r) = backup::route(method, &segments) {
        return r.map(Route::Backup);
    }
    let found = match (segments.as_slice(), m) {
        (["securitydomain", "download"], "POST") => Some(Route::Download),
        (["securitydomain", "download", "pending"], "GET") => Some(Route::DownloadPending),
        (["securitydomain", "upload"], "GET") => Some(Route::TransferKey),
        (["securitydomain", "upload"], "POST") => Some(Route::Upload),
        (["securitydomain", "upload", "pending"], "GET") => Some(Route::UploadPending),
        (["rng"], "POST") => Some(Route::Rng),
        (["keys"], "GET") => Some(Route::ListKeys(page_query(query)?)),
        (["keys", "restore"], "POST") => Some(Route::RestoreKey),
        (["keys", name, "create"], "POST") => Some(Route::CreateKey(s(name))),
        (["keys", name, "backup"], "POST") => Some(Route::BackupKey(s(name))),
        (["keys", name, "rotate"], "POST") => Some(Route::RotateKey(s(name))),
        (["keys", name, "versions"], "GET") => Some(Route::ListVersions(s(name), page_query(query)?)),
        (["keys", name, "rotationpolicy"], "GET") => Some(Route::GetRotationPolicy(s(name))),
        (["keys", name, "rotationpolicy"], "PUT") => Some(Route::SetRotationPolicy(s(name))),
        (["keys", name], "GET") => Some(Route::GetKey(s(name), None)),
        (["keys", name], "PUT") => Some(Route::ImportKey(s(name))),
        (["keys", name], "DELETE") => Some(Route::DeleteKey(s(name))),
        (["keys", name], "PATCH") => Some(Route::UpdateKey(s(name), None)),
        (["keys", name, version], "GET") => Some(Route::GetKey(s(name), ver(version))),
        (["keys", name, version], "PATCH") => Some(Route::UpdateKey(s(name), ver(version))),
        (["keys", name, version, op], "POST") => {
            CryptoOp::from_segment(op).map(|op| Route::KeyOp(s(name), ver(version), op))
        }
        (["deletedkeys"], "GET") => Some(Route::ListDeletedKeys(page_query(query)?)),
        (["deletedkeys", name], "GET") => Some(Route::GetDeletedKey(s(name))),
        (["deletedkeys", name], "DELETE") => Some(Route::PurgeDeletedKey(s(name))),
        (["deletedkeys", name, "recover"], "POST") => Some(Route::RecoverDeletedKey(s(name))),
        _ => None,
    };
    let trimmed = path.trim_matches('/');
    match found {
        Some(r) => Ok(r),
        None if ["securitydomain", "keys", "deletedkeys", "rng"]
            .iter()
            .any(|p| trimmed == *p || trimmed.starts_with(&format!("{p}/"))) =>
        {
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
    match query_param(query, "api-version").map(str::to_string) {
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
        Route::ImportKey(name) => {
            let req: ImportKeyRequest = json(body, "key import request ({\"key\": JWK, ...})")?;
            let (material, spec) = req.check()?;
            Operation::ImportKey { name, material, spec }
        }
        Route::GetKey(name, version) => Operation::GetKey { name, version },
        Route::UpdateKey(name, version) => {
            let req: UpdateKeyRequest = json(body, "key update request")?;
            Operation::UpdateKey {
                name,
                version,
                update: req.check()?,
            }
        }
        Route::DeleteKey(name) => Operation::DeleteKey { name },
        Route::ListKeys(page) => Operation::ListKeys { page },
        Route::ListVersions(name, page) => Operation::ListVersions { name, page },
        Route::RotateKey(name) => Operation::RotateKey { name },
        Route::GetRotationPolicy(name) => Operation::GetRotationPolicy { name },
        Route::SetRotationPolicy(name) => {
            let req: RotationPolicyRequest = json(body, "rotation policy")?;
            Operation::SetRotationPolicy {
                name,
                policy: req.check()?,
            }
        }
        Route::KeyOp(name, version, op) => match op {
            CryptoOp::Sign => {
                let req: SignRequest = json(body, "sign request ({\"alg\", \"value\": <digest>})")?;
                Operation::Sign {
                    name,
                    version,
                    digest: spec::b64("value", &req.value)?,
                    alg: req.alg,
                }
            }
            CryptoOp::Verify => {
                let req: VerifyRequest = json(body, "verify request ({\"alg\", \"digest\", \"value\": <signature>})")?;
                Operation::Verify {
                    name,
                    version,
                    digest: spec::b64("digest", &req.digest)?,
                    signature: spec::b64("value", &req.value)?,
                    alg: req.alg,
                }
            }
            _ => {
                let req: KeyOperationRequest = json(body, "key operation request ({\"alg\", \"value\", ...})")?;
                Operation::Crypt {
                    name,
                    version,
                    op,
                    req: req.check()?,
                }
            }
        },
        Route::BackupKey(name) => Operation::BackupKey { name },
        Route::RestoreKey => {
            let req: ValueBody = json(body, "key restore request ({\"value\": \"<backup>\"})")?;
            Operation::RestoreKey { backup: req.value }
        }
        Route::ListDeletedKeys(page) => Operation::ListDeletedKeys { page },
        Route::GetDeletedKey(name) => Operation::GetDeletedKey { name },
        Route::RecoverDeletedKey(name) => Operation::RecoverDeletedKey { name },
        Route::PurgeDeletedKey(name) => Operation::PurgeDeletedKey { name },
        Route::Rng => {
            let req: RngRequest = json(body, "random bytes request ({\"count\": 1..128})")?;
            Operation::Rng { count: req.check()? }
        }
        Route::Backup(r) => Operation::Backup(backup::parse(r, body)?),
        Route::Admin(r) => Operation::Admin(admin::parse(r, body)?),
    })
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
            ("POST", "/keys/canary/v1/fly", 405),
            ("PUT", "/deletedkeys/x", 405),
            ("GET", "/rng", 405),
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
            (ImportKey(s()), "keys/import/action"),
            (UpdateKey(s(), None), "keys/write/action"),
            (SetRotationPolicy(s()), "keys/write/action"),
            (RotateKey(s()), "keys/rotate/action"),
            (DeleteKey(s()), "keys/delete"),
            (KeyOp(s(), None, CryptoOp::Encrypt), "keys/encrypt/action"),
            (KeyOp(s(), None, CryptoOp::Decrypt), "keys/decrypt/action"),
            (KeyOp(s(), None, CryptoOp::Wrap), "keys/wrap/action"),
            (KeyOp(s(), None, CryptoOp::Unwrap), "keys/unwrap/action"),
            (KeyOp(s(), None, CryptoOp::Sign), "keys/sign/action"),
            (KeyOp(s(), None, CryptoOp::Verify), "keys/verify/action"),
            (GetDeletedKey(s()), "keys/deletedKeys/read/action"),
            (RecoverDeletedKey(s()), "keys/deletedKeys/recover/action"),
            (PurgeDeletedKey(s()), "keys/deletedKeys/delete"),
            (Rng, "rng/action"),
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
                "create {name} {} {} bits, ops {}, enabled {}, {} tags",
                spec.kty.name(),
                spec.bits,
                spec.key_ops.join("+"),
                spec.enabled,
                spec.tags.len()
            ),
            Operation::GetKey { name, version } => format!("get {name} {version:?}"),
            Operation::BackupKey { name } => format!("backup {name}"),
            Operation::RestoreKey { backup } => format!("restore {backup}"),
            Operation::ImportKey { name, spec, .. } => format!("import {name} {} {} bits", spec.kty.name(), spec.bits),
            Operation::UpdateKey { name, version, update } => {
                format!("update {name} {version:?} enabled {:?}", update.enabled)
            }
            Operation::DeleteKey { name } => format!("delete {name}"),
            Operation::ListKeys { page } => format!("list {} after {:?}", page.max, page.after),
            Operation::ListVersions { name, page } => format!("versions {name} {}", page.max),
            Operation::RotateKey { name } => format!("rotate {name}"),
            Operation::GetRotationPolicy { name } => format!("policy {name}"),
            Operation::SetRotationPolicy { name, policy } => format!("set policy {name} {}", policy.actions.len()),
            Operation::Crypt { name, version, op, req } => {
                format!("{op:?} {name} {version:?} {} {} bytes", req.alg, req.value.len())
            }
            Operation::Sign { name, alg, digest, .. } => format!("sign {name} {alg} {} bytes", digest.len()),
            Operation::Verify {
                name, alg, signature, ..
            } => {
                format!("verify {name} {alg} {} bytes", signature.len())
            }
            Operation::ListDeletedKeys { page } => format!("deleted {}", page.max),
            Operation::GetDeletedKey { name } => format!("deleted {name}"),
            Operation::RecoverDeletedKey { name } => format!("recover {name}"),
            Operation::PurgeDeletedKey { name } => format!("purge {name}"),
            Operation::Rng { count } => format!("rng {count}"),
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
                "create canary RSA-HSM 2048 bits, ops encrypt+decrypt+sign+verify+wrapKey+unwrapKey, enabled true, 0 tags",
            ),
            (
                "POST",
                "/keys/canary/create",
                r#"{"kty":"RSA","key_size":3072,"key_ops":["sign"],"attributes":{"enabled":false},"tags":{"a":"b"}}"#,
                "create canary RSA-HSM 3072 bits, ops sign, enabled false, 1 tags",
            ),
            (
                "POST",
                "/keys/ec/create",
                r#"{"kty":"EC-HSM","crv":"P-521"}"#,
                "create ec EC-HSM 0 bits, ops sign+verify, enabled true, 0 tags",
            ),
            (
                "PUT",
                "/keys/aes",
                r#"{"key":{"kty":"oct-HSM","k":"AAECAwQFBgcICQoLDA0ODw"}}"#,
                "import aes oct-HSM 128 bits",
            ),
            ("PATCH", "/keys/k/", r#"{"attributes":{"enabled":false}}"#, "update k None enabled Some(false)"),
            ("DELETE", "/keys/k", "", "delete k"),
            ("POST", "/keys/k/rotate", "", "rotate k"),
            ("GET", "/keys/k/rotationpolicy", "", "policy k"),
            (
                "PUT",
                "/keys/k/rotationpolicy",
                r#"{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P30D"},"action":{"type":"Rotate"}}]}"#,
                "set policy k 1",
            ),
            ("POST", "/keys/k//wrapkey", r#"{"alg":"A256KW","value":"AAAA"}"#, "Wrap k None A256KW 3 bytes"),
            ("POST", "/keys/k/v1/decrypt", r#"{"alg":"A128GCM","value":"AAAA","iv":"AAAA","tag":"AAAA"}"#, "Decrypt k Some(\"v1\") A128GCM 3 bytes"),
            ("POST", "/keys/k/v1/sign", r#"{"alg":"ES256","value":"AAAA"}"#, "sign k ES256 3 bytes"),
            ("POST", "/keys/k/v1/verify", r#"{"alg":"ES256","digest":"AAAA","value":"AAAA"}"#, "verify k ES256 3 bytes"),
            ("GET", "/deletedkeys/k", "", "deleted k"),
            ("POST", "/deletedkeys/k/recover", "", "recover k"),
            ("DELETE", "/deletedkeys/k", "", "purge k"),
            ("POST", "/rng", r#"{"count":128}"#, "rng 128"),
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
                r#"{"kty":"DSA"}"#,
                "kty 'DSA' is not a key type",
            ),
            ("POST", "/rng", r#"{"count":129}"#, "count 129 is out of range"),
            ("POST", "/rng", r#"{"count":0}"#, "count 0 is out of range"),
            (
                "POST",
                "/keys/k/v/sign",
                r#"{"alg":"RS256","value":"not base64!"}"#,
                "value is not base64url",
            ),
            (
                "PUT",
                "/keys/k",
                r#"{"key":{"kty":"oct-HSM","k":"AAEC"}}"#,
                "an oct-HSM key is 128, 192 or 256 bits",
            ),
            (
                "PUT",
                "/keys/k",
                r#"{"key":{"kty":"EC-HSM","crv":"P-256","x":"AA","y":"AA"}}"#,
                "key.d is required",
            ),
            (
                "PUT",
                "/keys/k",
                r#"{"key":{"kty":"oct-HSM","k":"AAECAwQFBgcICQoLDA0ODw"},"release_policy":{}}"#,
                "release_policy is not implemented",
            ),
            (
                "PATCH",
                "/keys/k/v",
                r#"{"attributes":{"exportable":true}}"#,
                "attributes.exportable is not implemented",
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
                "public_exponent: only 65537",
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
    fn list_queries_page_as_the_service_does() {
        let page = |q: &str| match head(&Method::GET, "/keys", Some(q)).map(|h| h.route) {
            Ok(Route::ListKeys(p)) => Ok(p),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.message),
        };
        assert_eq!(page("api-version=7.5").unwrap().max, 25);
        assert_eq!(page("api-version=7.5&maxresults=3").unwrap().max, 3);
        for q in ["maxresults=0", "maxresults=26", "maxresults=x"] {
            assert!(
                page(&format!("api-version=7.5&{q}"))
                    .unwrap_err()
                    .contains("maxresults"),
                "{q}"
            );
        }
        let token = skiptoken("k3");
        assert_eq!(
            page(&format!("api-version=7.5&$skiptoken={token}"))
                .unwrap()
                .after
                .as_deref(),
            Some("k3")
        );
        assert!(page("api-version=7.5&$skiptoken=!!")
            .unwrap_err()
            .contains("$skiptoken"));
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
            preflight("POST", "/keys/x/create?api-version=7.5", b"{\"kty\":\"DSA\"}")
                .unwrap_err()
                .0,
            400
        );
    }
}
