//! Request handling: route, api-version, challenge auth (before the body is
//! read), then the operation. Every answer is JSON; every refusal is Key
//! Vault's error shape.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Authenticator, Decision, Need};
use super::error::ApiError;
use super::keys::{self, CreateKeyRequest, KeyStore};
use super::state::{Instance, Operation};
use crate::crypto::rng::os_rng;
use crate::custodian::cert::Certificate;
use crate::format::transfer_key::{Jwk, TransferKeyResponse};

/// The api-versions the Azure CLI and the SDKs send.
pub const API_VERSIONS: [&str; 7] = ["7.2", "7.3", "7.4", "7.5", "7.6", "7.6-preview.2", "2025-07-01"];
/// Largest request body read: a download request with 10 certificates is ~25 KB.
const MAX_BODY: usize = 1024 * 1024;

pub(crate) struct App {
    pub instance: Mutex<Instance>,
    pub keys: Mutex<KeyStore>,
    pub auth: Authenticator,
    /// `https://127.0.0.1:PORT`, for requests whose Host is not a loopback name.
    pub bound_origin: String,
    pub scheme: &'static str,
    pub port: u16,
    pub tenant: String,
    /// How long a request body may take to arrive once its headers are in.
    pub body_timeout: std::time::Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Download,
    DownloadPending,
    TransferKey,
    Upload,
    UploadPending,
    CreateKey(&'a str),
    GetKey(&'a str, Option<&'a str>),
    BackupKey(&'a str),
    RestoreKey,
}

impl Route<'_> {
    fn need(self) -> Need {
        match self {
            Route::Download | Route::DownloadPending | Route::TransferKey | Route::Upload | Route::UploadPending => {
                Need::Administrator
            }
            _ => Need::Crypto,
        }
    }
}

fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let found = match (segments.as_slice(), get, post) {
        (["securitydomain", "download"], _, true) => Some(Route::Download),
        (["securitydomain", "download", "pending"], true, _) => Some(Route::DownloadPending),
        (["securitydomain", "upload"], true, _) => Some(Route::TransferKey),
        (["securitydomain", "upload"], _, true) => Some(Route::Upload),
        (["securitydomain", "upload", "pending"], true, _) => Some(Route::UploadPending),
        (["keys", "restore"], _, true) => Some(Route::RestoreKey),
        (["keys", name, "create"], _, true) => Some(Route::CreateKey(name)),
        (["keys", name, "backup"], _, true) => Some(Route::BackupKey(name)),
        (["keys", name], true, _) => Some(Route::GetKey(name, None)),
        // The SDK asks for `/keys/{name}/` when no version is given.
        (["keys", name, version], true, _) => Some(Route::GetKey(name, (!version.is_empty()).then_some(*version))),
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

/// The origin clients used: their Host when it names this loopback server.
fn origin(app: &App, host: Option<&HeaderValue>) -> String {
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        let port = format!(":{}", app.port);
        if let Some(name) = host.strip_suffix(&port) {
            if ["127.0.0.1", "localhost", "[::1]"].contains(&name) {
                return format!("{}://{host}", app.scheme);
            }
        }
    }
    app.bound_origin.clone()
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn error_response(err: &ApiError, challenge: Option<&str>) -> Response<Full<Bytes>> {
    let mut resp = json_response(err.status, err.body());
    if err.status == StatusCode::REQUEST_TIMEOUT {
        // The rest of a trickled body is not waited for.
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(c) = challenge {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
    }
    resp
}

pub(crate) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match handle_inner(&app, req).await {
        Ok(resp) => resp,
        Err((err, challenge)) => error_response(&err, challenge.as_deref()),
    }
}

type Failure = (ApiError, Option<String>);

fn plain(err: ApiError) -> Failure {
    (err, None)
}

async fn read_body(body: Incoming, timeout: std::time::Duration) -> Result<Bytes, ApiError> {
    use hyper::body::Body as _;
    // A declared Content-Length over the limit is refused before waiting for
    // a body that may never come.
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(ApiError::bad_request(format!(
            "the request body is declared as {} bytes, larger than {MAX_BODY}",
            body.size_hint().lower()
        )));
    }
    // A client trickling its body would otherwise hold the connection (and,
    // for uploads, the instance's attention) for as long as it likes.
    match tokio::time::timeout(timeout, Limited::new(body, MAX_BODY).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(_)) => Err(ApiError::bad_request(format!(
            "the request body could not be read or is larger than {MAX_BODY} bytes"
        ))),
        Err(_) => Err(ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "RequestTimeout",
            message: format!(
                "the request body did not arrive within {} s; send it at once",
                timeout.as_secs_f64()
            ),
        }),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    crate::format::json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid {what}: {e}")))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic mid-operation never leaves a half-written state (writes are atomic), so the data is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn status_json(op: &Operation) -> String {
    json!({"status": op.status, "status_details": op.status_details}).to_string()
}

fn async_header(resp: &mut Response<Full<Bytes>>, origin: &str, path: &str, api_version: &str) {
    let url = format!("{origin}{path}?api-version={api_version}");
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert("azure-asyncoperation", v);
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

async fn handle_inner(app: &Arc<App>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Failure> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let route = route(&parts.method, &path).map_err(plain)?;
    let api_version = api_version(parts.uri.query()).map_err(plain)?;
    let origin = origin(app, parts.headers.get(HOST));

    // Challenge auth first: the SDK's first attempt carries no body and no token.
    let challenge = format!(
        "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"{origin}\"",
        app.tenant
    );
    match app
        .auth
        .decide(parts.headers.get(AUTHORIZATION).map(|h| h.as_bytes()), route.need())
    {
        Decision::Allowed { .. } => {}
        Decision::Challenge => {
            return Err((
                ApiError::unauthorized("a bearer token is required; this answer carries the challenge"),
                Some(challenge),
            ))
        }
        Decision::Unauthorized(why) => return Err((ApiError::unauthorized(why), Some(challenge))),
        Decision::Forbidden { principal } => {
            let role = match route.need() {
                Need::Administrator => "the Administrator local role",
                Need::Crypto => "a Crypto Officer or Crypto User local role",
            };
            return Err(plain(ApiError::forbidden(format!(
                "the principal '{principal}' does not hold {role}"
            ))));
        }
    }

    let app = app.clone();
    let result = match route {
        Route::Download => {
            let body = read_body(body, app.body_timeout).await.map_err(plain)?;
            let req: DownloadRequest = parse(
                &body,
                "download request ({\"certificates\": [JWK...], \"required\": M})",
            )
            .map_err(plain)?;
            let a = app.clone();
            let sd = blocking(move || {
                let mut certs = Vec::with_capacity(req.certificates.len());
                for (i, jwk) in req.certificates.iter().enumerate() {
                    let label = format!("certificate {}", i + 1);
                    let cert =
                        Certificate::from_jwk(jwk).map_err(|e| ApiError::bad_request(format!("{label}: {e}")))?;
                    certs.push((label, cert));
                }
                let quorum = usize::try_from(req.required).unwrap_or(usize::MAX);
                lock(&a.instance).download(&mut os_rng(), &certs, quorum)
            })
            .await
            .map_err(plain)?;
            let mut resp = json_response(StatusCode::ACCEPTED, json!({"value": sd.to_json()}).to_string());
            async_header(&mut resp, &origin, "/securitydomain/download/pending", &api_version);
            Ok(resp)
        }
        Route::DownloadPending => match lock(&app.instance).download_status() {
            Some(op) => Ok(json_response(StatusCode::OK, status_json(op))),
            None => Err(ApiError::not_found(
                "NotFound",
                "no security-domain download was made on this instance",
            )),
        },
        Route::UploadPending => match lock(&app.instance).upload_status() {
            Some(op) => Ok(json_response(StatusCode::OK, status_json(op))),
            None => Err(ApiError::not_found(
                "NotFound",
                "no security-domain upload was made on this instance",
            )),
        },
        Route::TransferKey => {
            let a = app.clone();
            let cert = blocking(move || lock(&a.instance).transfer_key(&mut os_rng()))
                .await
                .map_err(plain)?;
            let mut jwk = cert.to_jwk().map_err(|e| plain(ApiError::internal(e)))?;
            jwk.kid = Some(format!("{origin}/keys/sdexchangekey"));
            let body = serde_json::to_string(&TransferKeyResponse::for_jwk(&jwk)).expect("plain data serialises");
            Ok(json_response(StatusCode::OK, body))
        }
        Route::Upload => {
            let body = read_body(body, app.body_timeout).await.map_err(plain)?;
            let req: ValueBody = parse(&body, "upload request ({\"value\": \"<restore blob>\"})").map_err(plain)?;
            lock(&app.instance).begin_upload().map_err(plain)?;
            let a = app.clone();
            // Processed in the background, as the service does; the pending endpoint reports the outcome.
            tokio::task::spawn_blocking(move || {
                let _ = lock(&a.instance).finish_upload(&mut os_rng(), &req.value);
            });
            let mut resp = json_response(
                StatusCode::ACCEPTED,
                json!({"status": "InProgress", "status_details": ""}).to_string(),
            );
            async_header(&mut resp, &origin, "/securitydomain/upload/pending", &api_version);
            Ok(resp)
        }
        Route::CreateKey(name) => {
            keys::check_name(name).map_err(plain)?;
            let (_, persist) = require_activated(&app).map_err(plain)?;
            let body = read_body(body, app.body_timeout).await.map_err(plain)?;
            let req: CreateKeyRequest = parse(&body, "key creation request").map_err(plain)?;
            let spec = req.check().map_err(plain)?;
            let (a, name, origin) = (app.clone(), name.to_string(), origin.clone());
            blocking(move || {
                let pkcs8 = keys::generate(&mut os_rng(), &spec)?;
                lock(&a.keys).create(&mut os_rng(), &origin, &name, spec, &pkcs8, super::now_unix(), persist)
            })
            .await
            .map(|v| json_response(StatusCode::OK, v.to_string()))
        }
        Route::GetKey(name, version) => {
            keys::check_name(name).map_err(plain)?;
            require_activated(&app).map_err(plain)?;
            lock(&app.keys)
                .get(&origin, name, version)
                .map(|v| json_response(StatusCode::OK, v.to_string()))
        }
        Route::BackupKey(name) => {
            keys::check_name(name).map_err(plain)?;
            let (sealing, _) = require_activated(&app).map_err(plain)?;
            lock(&app.keys)
                .backup(&mut os_rng(), name, &sealing)
                .map(|b| json_response(StatusCode::OK, json!({"value": b}).to_string()))
        }
        Route::RestoreKey => {
            let (sealing, persist) = require_activated(&app).map_err(plain)?;
            let body = read_body(body, app.body_timeout).await.map_err(plain)?;
            let req: ValueBody = parse(&body, "key restore request ({\"value\": \"<backup>\"})").map_err(plain)?;
            lock(&app.keys)
                .restore(&origin, &req.value, &sealing, persist)
                .map(|v| json_response(StatusCode::OK, v.to_string()))
        }
    };
    result.map_err(plain)
}

/// The stateless part of handling one request: route, api-version, key name
/// and body parsing, exactly as `handle` does them, without auth or state.
/// Returns the status and Key Vault error body a refusal would carry. Used by
/// the fuzz target `emulator_request` (hostile input must never panic here).
pub fn preflight(method: &str, path_and_query: &str, body: &[u8]) -> Result<(), (u16, String)> {
    let fail = |e: ApiError| (e.status.as_u16(), e.body());
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| fail(ApiError::bad_request("the request method is not valid")))?;
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let route = route(&method, path).map_err(fail)?;
    api_version(query).map_err(fail)?;
    match route {
        Route::Download => {
            let req: DownloadRequest = parse(body, "download request").map_err(fail)?;
            for jwk in &req.certificates {
                Certificate::from_jwk(jwk).map_err(|e| fail(ApiError::bad_request(e.to_string())))?;
            }
        }
        Route::Upload | Route::RestoreKey => {
            parse::<ValueBody>(body, "request").map_err(fail)?;
        }
        Route::CreateKey(name) => {
            keys::check_name(name).map_err(fail)?;
            let req: CreateKeyRequest = parse(body, "key creation request").map_err(fail)?;
            req.check().map_err(fail)?;
        }
        Route::GetKey(name, _) | Route::BackupKey(name) => keys::check_name(name).map_err(fail)?,
        Route::DownloadPending | Route::UploadPending | Route::TransferKey => {}
    }
    Ok(())
}

/// Key operations need a security domain; returns the backup sealing key
/// and whether the key store may be written.
fn require_activated(app: &App) -> Result<(zeroize::Zeroizing<[u8; 32]>, bool), ApiError> {
    let instance = lock(&app.instance);
    let sealing = instance.backup_key().ok_or_else(|| {
        ApiError::bad_request("the instance is not activated: download or upload a security domain before using keys")
    })?;
    Ok((sealing, instance.persists_keys()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_versions() {
        assert!(route(&Method::POST, "/securitydomain/download").is_ok());
        assert!(matches!(
            route(&Method::GET, "/keys/canary/"),
            Ok(Route::GetKey("canary", None))
        ));
        assert!(matches!(
            route(&Method::GET, "/keys/canary/abc"),
            Ok(Route::GetKey("canary", Some("abc")))
        ));
        assert!(matches!(route(&Method::POST, "/keys/restore"), Ok(Route::RestoreKey)));
        assert_eq!(
            route(&Method::DELETE, "/securitydomain/upload").err().unwrap().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&Method::GET, "/secrets/x").err().unwrap().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(api_version(Some("api-version=7.5")).unwrap(), "7.5");
        assert_eq!(api_version(Some("x=1&api-version=2025-07-01")).unwrap(), "2025-07-01");
        assert!(api_version(None).is_err());
        assert!(api_version(Some("api-version=9.9")).is_err());
    }
}
