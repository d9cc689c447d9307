//! Executing a request against the instance: route and authorization before the body is read, then the parsed [`Operation`] run on the state.
//!
//! The order, which clients see in which refusal comes first: route and
//! api-version ([`request::head`]), authorization of the route's data
//! action (the challenge carries no body), the path check, for key
//! operations an activated instance, then the body read and parsed
//! ([`request::parse`]), then [`execute`]. Every answer is JSON; every
//! refusal is Key Vault's error shape.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::backup::Answer;
use super::error::ApiError;
use super::keys::{self, KeyStore, Material, View};
use super::rbac::{self, Authenticator, Credentials, Decision};
use super::request::{self, CryptoOp, Operation};
use super::state::{Instance, OperationStatus};
use crate::crypto::b64::b64u;
use crate::crypto::rng::os_rng;
use crate::format::transfer_key::TransferKeyResponse;

/// Largest request body read: a download request with 10 certificates is ~25 KB.
const MAX_BODY: usize = 1024 * 1024;

/// One served instance.
///
/// Lock order: `instance` before `keys`, always, so two requests never
/// wait on each other crosswise. `keys` is reachable only through
/// [`App::state`], which takes both in that order; `instance` alone through
/// [`App::instance`].
pub(crate) struct App {
    instance: Mutex<Instance>,
    keys: Mutex<KeyStore>,
    pub auth: Authenticator,
    /// Full backup and restore jobs (`jobs.json`, or in memory).
    pub jobs: super::backup::Jobs,
    site: Site,
}

/// Instance and key store, locked in the one order (see [`App`]).
pub(crate) struct State<'a> {
    pub instance: MutexGuard<'a, Instance>,
    pub keys: MutexGuard<'a, KeyStore>,
}

/// Where an [`App`] is reached and how long it waits for bodies.
pub(crate) struct Site {
    /// `https://127.0.0.1:PORT`, for requests whose Host is not a loopback name.
    pub bound_origin: String,
    pub scheme: &'static str,
    pub port: u16,
    /// Tenant named in the challenge.
    pub tenant: String,
    /// How long a request body may take to arrive once its headers are in.
    pub body_timeout: std::time::Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic mid-operation never leaves a half-written state (writes are atomic), so the data is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl App {
    pub fn new(instance: Instance, keys: KeyStore, auth: Authenticator, jobs: super::backup::Jobs, site: Site) -> App {
        App {
            instance: Mutex::new(instance),
            keys: Mutex::new(keys),
            auth,
            jobs,
            site,
        }
    }

    pub fn instance(&self) -> MutexGuard<'_, Instance> {
        lock(&self.instance)
    }

    /// Both locks, instance first: the only way to the key store.
    pub fn state(&self) -> State<'_> {
        let instance = lock(&self.instance);
        let keys = lock(&self.keys);
        State { instance, keys }
    }
}

/// The origin clients used: their Host when it names this loopback server.
fn origin(site: &Site, host: Option<&HeaderValue>) -> String {
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        let port = format!(":{}", site.port);
        if let Some(name) = host.strip_suffix(&port) {
            if ["127.0.0.1", "localhost", "[::1]"].contains(&name) {
                return format!("{}://{host}", site.scheme);
            }
        }
    }
    site.bound_origin.clone()
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

/// The service's answer to a request with no Authorization header: 401, the
/// challenge and an empty body (its recorded answers have content-length 0;
/// the SDKs read only the header).
fn challenge_response(challenge: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    if let Ok(v) = HeaderValue::from_str(challenge) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

pub(crate) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut resp = match handle_inner(&app, req).await {
        Ok(resp) => resp,
        Err(Failure::Refused(err, challenge)) => error_response(&err, challenge.as_deref()),
        Err(Failure::Challenge(challenge)) => challenge_response(&challenge),
    };
    service_headers(&mut resp);
    resp
}

/// Seconds a client is asked to wait before polling a started operation.
pub(crate) const RETRY_AFTER_SECONDS: &str = "1";

/// What the service puts on every answer: `x-ms-request-id` (a fresh id
/// a support case can name), and on every 202 `Retry-After`.
fn service_headers(resp: &mut Response<Full<Bytes>>) {
    let mut raw = [0u8; 16];
    rand_core::Rng::fill_bytes(&mut os_rng(), &mut raw);
    let h = hex::encode(raw);
    let id = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-ms-request-id", v);
    }
    if resp.status() == StatusCode::ACCEPTED {
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
}

/// Why a request was not served.
enum Failure {
    /// Key Vault's error body; a 401 for a token that was sent but is not
    /// valid also carries the challenge.
    Refused(ApiError, Option<String>),
    /// No token at all: the bare challenge.
    Challenge(String),
}

fn plain(err: ApiError) -> Failure {
    Failure::Refused(err, None)
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

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

fn status_json(op: &OperationStatus) -> String {
    json!({"status": op.status, "status_details": op.status_details}).to_string()
}

/// A security-domain pending status.
fn pending_response(op: &OperationStatus) -> Response<Full<Bytes>> {
    status_response(status_json(op), op.status == super::state::OpStatus::InProgress)
}

/// A pending status (security domain, backup or restore); while the work
/// runs it carries `Retry-After`, which the SDK's poller waits instead of
/// its own (much longer) default interval.
fn status_response(body: String, in_progress: bool) -> Response<Full<Bytes>> {
    let mut resp = json_response(StatusCode::OK, body);
    if in_progress {
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    resp
}

fn async_header(resp: &mut Response<Full<Bytes>>, origin: &str, path: &str, api_version: &str) {
    let url = format!("{origin}{path}?api-version={api_version}");
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert("azure-asyncoperation", v);
    }
}

async fn handle_inner(app: &Arc<App>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Failure> {
    let (mut parts, body) = req.into_parts();
    let head = request::head(&parts.method, parts.uri.path(), parts.uri.query()).map_err(plain)?;
    let origin = origin(&app.site, parts.headers.get(HOST));
    // The token leaves the header map as soon as the request is taken apart.
    let credentials = parts
        .headers
        .remove(AUTHORIZATION)
        .map(|h| Credentials::from_header(h.as_bytes()));

    // Challenge auth first: the SDK's first attempt carries no body and no token.
    let challenge = format!(
        "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"{origin}\"",
        app.site.tenant
    );
    let (action, scope) = (head.route.action(), head.route.scope());
    match app.auth.decide(credentials.as_ref(), action, &scope) {
        Decision::Allowed { .. } => {}
        Decision::Challenge => return Err(Failure::Challenge(challenge)),
        Decision::Unauthorized(why) => return Err(Failure::Refused(ApiError::unauthorized(why), Some(challenge))),
        Decision::Forbidden { principal } => return Err(plain(rbac::refusal(&principal, action, &scope))),
    }

    head.route.check_path().map_err(plain)?;
    if head.route.needs_security_domain() {
        // Refused before the body is read; checked again under the lock when run.
        activated(&app.instance()).map_err(plain)?;
    }
    let op = if head.route.takes_body() {
        let body = read_body(body, app.site.body_timeout).await.map_err(plain)?;
        let route = head.route;
        // Certificates in a download request take real work to parse.
        blocking(move || request::parse(route, &body)).await.map_err(plain)?
    } else {
        request::parse(head.route, &[]).map_err(plain)?
    };
    execute(app, op, &origin, &head.api_version).await.map_err(plain)
}

/// What key operations need from the instance: the sealing key for backups
/// and whether the key store may be written.
pub(crate) struct Active {
    pub sealing: super::state::SealingKey,
    pub persist: bool,
}

pub(crate) fn active(instance: &Instance) -> Result<Active, ApiError> {
    let sealing = instance.backup_key().ok_or_else(not_activated)?;
    Ok(Active {
        sealing,
        persist: instance.persists_keys(),
    })
}

fn not_activated() -> ApiError {
    ApiError::bad_request("the instance is not activated: download or upload a security domain before using keys")
}

/// The instance is activated: the check of an operation that needs no sealing key.
fn activated(instance: &Instance) -> Result<(), ApiError> {
    if instance.is_activated() {
        Ok(())
    } else {
        Err(not_activated())
    }
}

/// How key answers name this instance: its origin and purge protection.
fn view<'a>(instance: &Instance, origin: &'a str) -> View<'a> {
    View {
        origin,
        purge_protection: instance.purge_protection(),
    }
}

/// For a key operation: the instance is activated; whether the store may be written, and the view.
fn key_context<'a>(instance: &Instance, origin: &'a str) -> Result<(bool, View<'a>), ApiError> {
    activated(instance)?;
    Ok((instance.persists_keys(), view(instance, origin)))
}

/// For a cryptographic operation `op` (a `key_ops` name): the key's id and
/// its decoded material, refused as the service refuses the key's use.
/// The locks are held only for the lookup, not for the private-key work.
fn key_for(
    app: &App,
    origin: &str,
    name: &str,
    version: Option<&str>,
    op: &str,
) -> Result<(String, Arc<Material>), ApiError> {
    let state = app.state();
    let (_, view) = key_context(&state.instance, origin)?;
    state.keys.for_operation(&view, name, version, op, super::now_unix())
}

/// wrapkey and unwrapkey carry no iv, aad or tag: refused rather than ignored.
fn no_extra(req: &keys::spec::KeyOperation) -> Result<(), ApiError> {
    match (&req.extra.iv, &req.extra.aad, &req.extra.tag) {
        (None, None, None) => Ok(()),
        _ => Err(ApiError::bad_request(
            "wrapkey and unwrapkey take alg and value only; iv, aad and tag belong to encrypt and decrypt",
        )),
    }
}

/// A list page with its `nextLink` (null on the last page).
fn paged(listed: keys::store::Listed, origin: &str, path: &str, api_version: &str, max: usize) -> serde_json::Value {
    let next = listed.next.map(|pos| {
        format!(
            "{origin}{path}?api-version={api_version}&maxresults={max}&$skiptoken={}",
            request::skiptoken(&pos)
        )
    });
    keys::bundle::page(listed.items, next)
}

/// Runs one parsed operation against the state.
async fn execute(
    app: &Arc<App>,
    op: Operation,
    origin: &str,
    api_version: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let ok = |v: serde_json::Value| json_response(StatusCode::OK, v.to_string());
    match op {
        Operation::Download { certs, quorum } => {
            let a = app.clone();
            let sd = blocking(move || a.instance().download(&mut os_rng(), &certs, quorum)).await?;
            let mut resp = json_response(StatusCode::ACCEPTED, json!({"value": sd.to_json()}).to_string());
            async_header(&mut resp, origin, "/securitydomain/download/pending", api_version);
            Ok(resp)
        }
        Operation::DownloadStatus => match app.instance().poll_download_status() {
            Some(op) => Ok(pending_response(&op)),
            None => Err(ApiError::not_found(
                "NotFound",
                "no security-domain download was made on this instance",
            )),
        },
        Operation::UploadStatus => match app.instance().upload_status() {
            Some(op) => Ok(pending_response(op)),
            None => Err(ApiError::not_found(
                "NotFound",
                "no security-domain upload was made on this instance",
            )),
        },
        Operation::TransferKey => {
            let a = app.clone();
            let cert = blocking(move || a.instance().transfer_key(&mut os_rng())).await?;
            let mut jwk = cert.to_jwk().map_err(ApiError::internal)?;
            jwk.kid = Some(format!("{origin}/keys/sdexchangekey"));
            let body = serde_json::to_string(&TransferKeyResponse::for_jwk(&jwk)).expect("plain data serialises");
            Ok(json_response(StatusCode::OK, body))
        }
        Operation::Upload { blob } => {
            app.instance().begin_upload()?;
            let a = app.clone();
            // Processed in the background, as the service does; the pending endpoint reports the outcome.
            tokio::task::spawn_blocking(move || {
                let _ = a.instance().finish_upload(&mut os_rng(), &blob);
            });
            let mut resp = json_response(
                StatusCode::ACCEPTED,
                json!({"status": "InProgress", "status_details": ""}).to_string(),
            );
            async_header(&mut resp, origin, "/securitydomain/upload/pending", api_version);
            Ok(resp)
        }
        Operation::CreateKey { name, spec } => {
            let (a, origin) = (app.clone(), origin.to_string());
            blocking(move || {
                // Drawn before any lock is taken: RSA generation is slow.
                let material = Material::generate(&mut os_rng(), spec.kty, spec.bits, spec.crv)?;
                let mut state = a.state();
                let (persist, view) = key_context(&state.instance, &origin)?;
                state.keys.add_version(
                    &mut os_rng(),
                    &view,
                    &name,
                    spec,
                    material,
                    false,
                    super::now_unix(),
                    persist,
                )
            })
            .await
            .map(ok)
        }
        Operation::ImportKey { name, material, spec } => {
            let mut state = app.state();
            let (persist, view) = key_context(&state.instance, origin)?;
            state
                .keys
                .add_version(
                    &mut os_rng(),
                    &view,
                    &name,
                    spec,
                    material,
                    false,
                    super::now_unix(),
                    persist,
                )
                .map(ok)
        }
        Operation::RotateKey { name } => {
            let (a, origin) = (app.clone(), origin.to_string());
            blocking(move || {
                let spec = {
                    let state = a.state();
                    key_context(&state.instance, &origin)?;
                    state.keys.rotation_spec(&name, super::now_unix())?
                };
                let material = Material::generate(&mut os_rng(), spec.kty, spec.bits, spec.crv)?;
                let mut state = a.state();
                let (persist, view) = key_context(&state.instance, &origin)?;
                state.keys.add_version(
                    &mut os_rng(),
                    &view,
                    &name,
                    spec,
                    material,
                    true,
                    super::now_unix(),
                    persist,
                )
            })
            .await
            .map(ok)
        }
        Operation::GetKey { name, version } => {
            let state = app.state();
            let (_, view) = key_context(&state.instance, origin)?;
            state.keys.get(&view, &name, version.as_deref()).map(ok)
        }
        Operation::UpdateKey { name, version, update } => {
            let mut state = app.state();
            let (persist, view) = key_context(&state.instance, origin)?;
            state
                .keys
                .update(&view, &name, version.as_deref(), update, super::now_unix(), persist)
                .map(ok)
        }
        Operation::DeleteKey { name } => {
            let mut state = app.state();
            let (persist, view) = key_context(&state.instance, origin)?;
            state.keys.delete(&view, &name, super::now_unix(), persist).map(ok)
        }
        Operation::ListKeys { page } => {
            let state = app.state();
            let (_, view) = key_context(&state.instance, origin)?;
            let listed = state.keys.list(&view, &page.page());
            Ok(ok(paged(listed, origin, "/keys", api_version, page.max)))
        }
        Operation::ListVersions { name, page } => {
            let state = app.state();
            let (_, view) = key_context(&state.instance, origin)?;
            let listed = state.keys.versions(&view, &name, &page.page())?;
            Ok(ok(paged(
                listed,
                origin,
                &format!("/keys/{name}/versions"),
                api_version,
                page.max,
            )))
        }
        Operation::GetRotationPolicy { name } => {
            let state = app.state();
            let (_, view) = key_context(&state.instance, origin)?;
            state.keys.policy(&view, &name).map(ok)
        }
        Operation::SetRotationPolicy { name, policy } => {
            let mut state = app.state();
            let (persist, view) = key_context(&state.instance, origin)?;
            state
                .keys
                .set_policy(&view, &name, policy, super::now_unix(), persist)
                .map(ok)
        }
        Operation::Crypt { name, version, op, req } => {
            let (kid, material) = key_for(app, origin, &name, version.as_deref(), op.key_op())?;
            // The private-key work runs off the async threads and outside the locks.
            blocking(move || {
                let mut rng = os_rng();
                let mut out = json!({"kid": kid});
                match op {
                    CryptoOp::Encrypt => {
                        let sealed = material.encrypt(&mut rng, &req.alg, &req.value, &req.extra)?;
                        out["value"] = json!(b64u(&sealed.value));
                        for (field, v) in [("iv", sealed.iv), ("tag", sealed.tag), ("aad", sealed.aad)] {
                            if let Some(v) = v {
                                out[field] = json!(b64u(&v));
                            }
                        }
                    }
                    CryptoOp::Decrypt => {
                        let plain = material.decrypt(&mut rng, &req.alg, &req.value, &req.extra)?;
                        out["value"] = json!(b64u(&plain));
                    }
                    CryptoOp::Wrap => {
                        no_extra(&req)?;
                        out["value"] = json!(b64u(&material.wrap(&mut rng, &req.alg, &req.value)?));
                    }
                    CryptoOp::Sign | CryptoOp::Verify => {
                        return Err(ApiError::internal("sign and verify are parsed as their own operations"))
                    }
                    CryptoOp::Unwrap => {
                        no_extra(&req)?;
                        let plain = material.unwrap(&mut rng, &req.alg, &req.value)?;
                        out["value"] = json!(b64u(&plain));
                    }
                }
                Ok(out)
            })
            .await
            .map(ok)
        }
        Operation::Sign {
            name,
            version,
            alg,
            digest,
        } => {
            let (kid, material) = key_for(app, origin, &name, version.as_deref(), "sign")?;
            blocking(move || {
                let sig = material.sign(&mut os_rng(), &alg, &digest)?;
                Ok(json!({"kid": kid, "value": b64u(&sig)}))
            })
            .await
            .map(ok)
        }
        Operation::Verify {
            name,
            version,
            alg,
            digest,
            signature,
        } => {
            let (_, material) = key_for(app, origin, &name, version.as_deref(), "verify")?;
            blocking(move || Ok(json!({"value": material.verify(&alg, &digest, &signature)?})))
                .await
                .map(ok)
        }
        Operation::BackupKey { name } => {
            let state = app.state();
            let Active { sealing, .. } = active(&state.instance)?;
            state
                .keys
                .backup(&mut os_rng(), &name, sealing.expose())
                .map(|b| ok(json!({"value": b})))
        }
        Operation::Backup(op) => {
            let a = app.clone();
            match blocking(move || super::backup::execute(&a, op)).await? {
                Answer::Started(started) => {
                    let mut resp = json_response(StatusCode::ACCEPTED, started.body);
                    async_header(&mut resp, origin, &started.status_path, api_version);
                    Ok(resp)
                }
                Answer::Status(polled) => Ok(status_response(polled.body, polled.in_progress)),
            }
        }
        Operation::RestoreKey { backup } => {
            let mut state = app.state();
            let Active { sealing, persist } = active(&state.instance)?;
            let view = view(&state.instance, origin);
            state.keys.restore(&view, &backup, sealing.expose(), persist).map(ok)
        }
        Operation::ListDeletedKeys { page } => {
            let state = app.state();
            let (_, view) = key_context(&state.instance, origin)?;
            let listed = state.keys.list_deleted(&view, &page.page(), super::now_unix());
            Ok(ok(paged(listed, origin, "/deletedkeys", api_version, page.max)))
        }
        Operation::GetDeletedKey { name } => {
            let state = app.state();
            let (_, view) = key_context(&state.instance, origin)?;
            state.keys.get_deleted(&view, &name, super::now_unix()).map(ok)
        }
        Operation::RecoverDeletedKey { name } => {
            let mut state = app.state();
            let (persist, view) = key_context(&state.instance, origin)?;
            state.keys.recover(&view, &name, super::now_unix(), persist).map(ok)
        }
        Operation::PurgeDeletedKey { name } => {
            let mut state = app.state();
            let (persist, view) = key_context(&state.instance, origin)?;
            state.keys.purge(&view, &name, super::now_unix(), persist)?;
            Ok(json_response(StatusCode::NO_CONTENT, String::new()))
        }
        Operation::Rng { count } => {
            activated(&app.instance())?;
            let mut bytes = zeroize::Zeroizing::new(vec![0u8; count]);
            rand_core::Rng::fill_bytes(&mut os_rng(), &mut bytes);
            Ok(ok(json!({"value": b64u(&bytes)})))
        }
        Operation::Admin(op) => {
            let (a, origin, api_version) = (app.clone(), origin.to_string(), api_version.to_string());
            let (status, body) = blocking(move || {
                let link = rbac::api::Link {
                    origin: &origin,
                    api_version: &api_version,
                };
                rbac::api::execute(&a.auth, op, &link)
            })
            .await?;
            Ok(json_response(status, body.to_string()))
        }
    }
}
