//! A minimal Microsoft Entra-compatible authority, so the unmodified Azure
//! CLI (MSAL underneath) can sign in to an emulated instance.
//!
//! It is served on the emulator's own port, under paths whose first segment
//! is the emulator's tenant id (a GUID), `common` or `organizations`: no
//! data-plane route starts with those, and one port means one URL and one
//! CA for the operator (MSAL insists on an https authority, which the
//! emulator's TLS gives for free). It answers:
//!
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration` (OIDC discovery);
//! - `GET /common/discovery/instance` (instance discovery, in case a client
//!   does not turn it off);
//! - `POST /{tenant}/oauth2/v2.0/token`, the client-credentials grant only:
//!   a service principal's client id and secret (registered with
//!   [`register_client`], kept in `clients.json` as SHA-256 hashes) buy an
//!   emulator bearer token for its principal and roles, recorded like any
//!   other in `tokens.json`;
//! - `GET /{tenant}/arm/subscriptions`, an empty list: `az login
//!   --allow-no-subscriptions` asks the resource manager (whose endpoint the
//!   registered cloud places here) for subscriptions, and the emulator has none;
//! - `POST /{tenant}/graph/v1.0/directoryObjects/getByIds`, an empty list:
//!   `az keyvault role assignment create/list` look the assignees up in
//!   Microsoft Graph (whose endpoint the cloud places here) for display
//!   names, and the emulator's principals are no directory objects.
//!
//! Refusals have Entra's shape (`error`, `error_description` starting with
//! the AADSTS code, `error_codes`, `timestamp`, `trace_id`,
//! `correlation_id`), so MSAL and az report them as they would Entra's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::rbac::tokens::sha256_hex;
use super::rbac::Role;
use crate::crypto::b64::b64u;
use crate::crypto::rng::os_rng;
use crate::error::{EmulatorError, Result};
use crate::files::{self, Mode};

pub const CLIENTS_FILE: &str = "clients.json";
const MAX_CLIENTS_BYTES: u64 = 1024 * 1024;
/// Largest token request read: MSAL's client-credentials request is ~300 bytes.
pub const MAX_TOKEN_BODY: usize = 16 * 1024;
/// How long an authority token is admitted, as the token response says:
/// MSAL asks anew before then, and the expired records are pruned.
pub const EXPIRES_IN: u64 = 3599;
const SECRET_PREFIX: &str = "hsmemusp_";

/// A service principal as registered: the client id is public, the secret
/// is shown once (no `Debug`, wiped on drop).
pub struct ServicePrincipal {
    pub client_id: String,
    secret: Zeroizing<String>,
}

impl ServicePrincipal {
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientRecord {
    client_id: String,
    principal: String,
    roles: Vec<Role>,
    /// Hex SHA-256 of the secret; secrets carry 256 random bits.
    secret_sha256: String,
    created: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    format: u32,
    clients: Vec<ClientRecord>,
}

impl Default for ClientFile {
    fn default() -> Self {
        ClientFile {
            format: 1,
            clients: Vec::new(),
        }
    }
}

impl super::rbac::persist::Document for ClientFile {
    const WHAT: &'static str = "service-principal file";
    const MAX_BYTES: u64 = MAX_CLIENTS_BYTES;
    fn format(&self) -> u32 {
        self.format
    }
}

fn read_clients(path: &Path) -> Result<ClientFile> {
    super::rbac::persist::read(path)
}

/// A random version-4 UUID, the form Entra's client ids have (az checks it).
fn new_uuid() -> String {
    let mut b = [0u8; 16];
    rand_core::Rng::fill_bytes(&mut os_rng(), &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Registers a new service principal for `principal` with `roles` in
/// `state_dir` and returns its client id and secret (the secret is stored
/// only as a hash). Works while an emulator serves the directory: the
/// token endpoint reads the file on each request.
///
/// Errors: a bad principal name, or the state directory cannot be written.
pub fn register_client(state_dir: &Path, principal: &str, roles: &[Role]) -> Result<ServicePrincipal> {
    // The token endpoint issues through `issue_token_for`, which checks the name
    // the same way: a name it would refuse is refused now, not at sign-in.
    super::rbac::tokens::check_principal(principal)?;
    super::state::ensure_dir(state_dir)?;
    let lock_path = state_dir.join(".clients.lock");
    let _lock = super::rbac::persist::lock_file(&lock_path)?;
    let path = state_dir.join(CLIENTS_FILE);
    let mut file = read_clients(&path)?;
    let mut raw = Zeroizing::new([0u8; 32]);
    rand_core::Rng::fill_bytes(&mut os_rng(), &mut raw[..]);
    let mut secret = Zeroizing::new(String::with_capacity(SECRET_PREFIX.len() + 43));
    secret.push_str(SECRET_PREFIX);
    secret.push_str(&Zeroizing::new(b64u(&raw[..])));
    let client_id = new_uuid();
    let mut roles = roles.to_vec();
    roles.dedup();
    file.clients.push(ClientRecord {
        client_id: client_id.clone(),
        principal: principal.to_string(),
        roles,
        secret_sha256: sha256_hex(&secret),
        created: super::now_unix(),
    });
    let text = serde_json::to_vec_pretty(&file).expect("plain data serialises");
    if text.len() as u64 > MAX_CLIENTS_BYTES {
        return Err(EmulatorError::WouldGrow {
            what: path.display().to_string(),
            size: text.len() as u64,
            limit: MAX_CLIENTS_BYTES,
        }
        .into());
    }
    files::replace(&path, &text, Mode::Private)?;
    Ok(ServicePrincipal { client_id, secret })
}

/// The authority of one served instance.
pub(crate) struct Authority {
    /// `None` for an in-memory instance: it has no service principals.
    state_dir: Option<PathBuf>,
    tenant: String,
    bound_origin: String,
    scheme: &'static str,
    port: u16,
    body_timeout: Duration,
}

type Resp = Response<Full<Bytes>>;

/// An Entra-style refusal: status, OAuth error, AADSTS code and text.
#[derive(Debug)]
struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl EntraError {
    fn new(status: StatusCode, error: &'static str, code: u32, description: impl Into<String>) -> EntraError {
        EntraError {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    fn invalid_request(code: u32, description: impl Into<String>) -> EntraError {
        EntraError::new(StatusCode::BAD_REQUEST, "invalid_request", code, description)
    }

    fn response(&self) -> Resp {
        let trace = new_uuid();
        let correlation = new_uuid();
        let timestamp = timestamp();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        let mut resp = json_response(self.status, body.to_string());
        if self.status == StatusCode::REQUEST_TIMEOUT || self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not waited for.
            resp.headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// `2026-12-02 00:35:44Z`, Entra's error timestamp form (UTC).
fn timestamp() -> String {
    let secs = super::now_unix();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn json_response(status: StatusCode, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    // Entra's token answers are never cached.
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    resp
}

/// What a path under the authority asks for.
enum Endpoint {
    OpenIdConfiguration,
    InstanceDiscovery,
    Token,
    Subscriptions,
    GraphGetByIds,
}

impl Authority {
    pub fn new(
        state_dir: Option<PathBuf>,
        tenant: String,
        bound_origin: String,
        scheme: &'static str,
        port: u16,
        body_timeout: Duration,
    ) -> Authority {
        Authority {
            state_dir,
            tenant,
            bound_origin,
            scheme,
            port,
            body_timeout,
        }
    }

    /// Whether `path` belongs to the authority rather than the data plane.
    pub fn claims(&self, path: &str) -> bool {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        first.eq_ignore_ascii_case(&self.tenant) || first == "common" || first == "organizations"
    }

    fn endpoint(&self, path: &str) -> Option<Endpoint> {
        let (first, rest) = path.trim_start_matches('/').split_once('/')?;
        let ours = first.eq_ignore_ascii_case(&self.tenant);
        match rest {
            "v2.0/.well-known/openid-configuration" if ours => Some(Endpoint::OpenIdConfiguration),
            "discovery/instance" => Some(Endpoint::InstanceDiscovery),
            "oauth2/v2.0/token" if ours => Some(Endpoint::Token),
            "arm/subscriptions" if ours => Some(Endpoint::Subscriptions),
            "graph/v1.0/directoryObjects/getByIds" if ours => Some(Endpoint::GraphGetByIds),
            _ => None,
        }
    }

    /// The origin clients used: their Host when it names this loopback server.
    fn origin(&self, host: Option<&HeaderValue>) -> String {
        if let Some(host) = host.and_then(|h| h.to_str().ok()) {
            if let Some(name) = host.strip_suffix(&format!(":{}", self.port)) {
                if ["127.0.0.1", "localhost", "[::1]"].contains(&name) {
                    return format!("{}://{host}", self.scheme);
                }
            }
        }
        self.bound_origin.clone()
    }

    pub async fn serve(&self, req: Request<Incoming>) -> Resp {
        let (parts, body) = req.into_parts();
        let origin = self.origin(parts.headers.get(HOST));
        let path = parts.uri.path();
        let Some(endpoint) = self.endpoint(path) else {
            let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
            return if first.eq_ignore_ascii_case(&self.tenant) || first == "common" || first == "organizations" {
                EntraError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request",
                    90002,
                    format!(
                        "this emulator's authority serves only tenant '{}': \
                         /{0}/v2.0/.well-known/openid-configuration, /{0}/oauth2/v2.0/token \
                         and /common/discovery/instance",
                        self.tenant
                    ),
                )
                .response()
            } else {
                EntraError::new(StatusCode::NOT_FOUND, "invalid_request", 90002, "no such endpoint").response()
            };
        };
        let method_ok = match endpoint {
            Endpoint::Token | Endpoint::GraphGetByIds => parts.method == Method::POST,
            _ => parts.method == Method::GET,
        };
        if !method_ok {
            return EntraError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                900561,
                format!("the endpoint {path} does not accept {}", parts.method),
            )
            .response();
        }
        let t = &self.tenant;
        match endpoint {
            Endpoint::OpenIdConfiguration => json_response(
                StatusCode::OK,
                json!({
                    "token_endpoint": format!("{origin}/{t}/oauth2/v2.0/token"),
                    "token_endpoint_auth_methods_supported": ["client_secret_post"],
                    "jwks_uri": format!("{origin}/{t}/discovery/v2.0/keys"),
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": format!("{origin}/{t}/v2.0"),
                    "request_uri_parameter_supported": false,
                    "authorization_endpoint": format!("{origin}/{t}/oauth2/v2.0/authorize"),
                    "device_authorization_endpoint": format!("{origin}/{t}/oauth2/v2.0/devicecode"),
                    "end_session_endpoint": format!("{origin}/{t}/oauth2/v2.0/logout"),
                    "tenant_region_scope": null,
                    "cloud_instance_name": "hsm-ceremony-emulator",
                })
                .to_string(),
            ),
            Endpoint::InstanceDiscovery => {
                let host = origin.split_once("://").map(|(_, h)| h).unwrap_or(&origin).to_string();
                json_response(
                    StatusCode::OK,
                    json!({
                        "tenant_discovery_endpoint":
                            format!("{origin}/{t}/v2.0/.well-known/openid-configuration"),
                        "api-version": "1.1",
                        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
                    })
                    .to_string(),
                )
            }
            Endpoint::Subscriptions => json_response(StatusCode::OK, json!({"value": []}).to_string()),
            // Read (bounded) only so the connection stays usable: no id is a directory object here.
            Endpoint::GraphGetByIds => match self.read_body(body).await {
                Ok(_) => json_response(
                    StatusCode::OK,
                    json!({"@odata.context": format!("{origin}/{t}/graph/v1.0/$metadata#directoryObjects"), "value": []})
                        .to_string(),
                ),
                Err(e) => e.response(),
            },
            Endpoint::Token => {
                let form = parts
                    .headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
                if !form {
                    return EntraError::invalid_request(
                        900144,
                        "the token request must be application/x-www-form-urlencoded",
                    )
                    .response();
                }
                match self.read_body(body).await {
                    Ok(bytes) => self.token(&bytes).unwrap_or_else(|e| e.response()),
                    Err(e) => e.response(),
                }
            }
        }
    }

    async fn read_body(&self, body: Incoming) -> std::result::Result<Bytes, EntraError> {
        use hyper::body::Body as _;
        let too_large = || {
            EntraError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                90014,
                format!("the token request is larger than {MAX_TOKEN_BODY} bytes"),
            )
        };
        // Refused before waiting for a body that may never come.
        if body.size_hint().lower() > MAX_TOKEN_BODY as u64 {
            return Err(too_large());
        }
        match tokio::time::timeout(self.body_timeout, Limited::new(body, MAX_TOKEN_BODY).collect()).await {
            Ok(Ok(c)) => Ok(c.to_bytes()),
            Ok(Err(_)) => Err(too_large()),
            Err(_) => Err(EntraError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                90014,
                format!(
                    "the token request did not arrive within {} s",
                    self.body_timeout.as_secs_f64()
                ),
            )),
        }
    }

    /// The client-credentials grant.
    fn token(&self, body: &[u8]) -> std::result::Result<Resp, EntraError> {
        let params = parse_form(body)?;
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let grant = get("grant_type").ok_or_else(|| missing("grant_type"))?;
        if grant != "client_credentials" {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!(
                    "The app requested an unsupported grant type '{grant}'; this emulator's authority grants \
                     only client_credentials (az login --service-principal)"
                ),
            ));
        }
        let client_id = get("client_id").ok_or_else(|| missing("client_id"))?;
        let scope = get("scope").ok_or_else(|| missing("scope"))?;
        if !scope.split(' ').any(|s| s.ends_with("/.default")) {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a \
                     scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        }
        let secret = get("client_secret").ok_or_else(|| {
            EntraError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        })?;
        let Some(dir) = &self.state_dir else {
            return Err(unknown_client(client_id, &self.tenant));
        };
        let file = read_clients(&dir.join(CLIENTS_FILE))
            .map_err(|e| EntraError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 90033, e.to_string()))?;
        let Some(record) = file
            .clients
            .iter()
            .find(|c| c.client_id.eq_ignore_ascii_case(client_id))
        else {
            return Err(unknown_client(client_id, &self.tenant));
        };
        let presented = sha256_hex(secret);
        if !bool::from(presented.as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            return Err(EntraError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client \
                     secret value, not the client secret ID, for a secret added to app '{}'.",
                    record.client_id
                ),
            ));
        }
        let token = super::rbac::issue_token_for(dir, &record.principal, &record.roles, Some(EXPIRES_IN))
            .map_err(|e| EntraError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 90033, e.to_string()))?;
        let body = Zeroizing::new(
            json!({
                "token_type": "Bearer",
                "expires_in": EXPIRES_IN,
                "ext_expires_in": EXPIRES_IN,
                "access_token": token.expose(),
            })
            .to_string(),
        );
        Ok(json_response(StatusCode::OK, body.to_string()))
    }
}

fn missing(name: &str) -> EntraError {
    EntraError::invalid_request(
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

fn unknown_client(client_id: &str, tenant: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant}'. Register it \
             with `hsm-ceremony emulator az-setup` on this emulator's state folder."
        ),
    )
}

/// `application/x-www-form-urlencoded`, strictly: every pair `name=value`,
/// valid UTF-8 after decoding, no parameter given twice (which would leave
/// it open which one counts).
fn parse_form(body: &[u8]) -> std::result::Result<Vec<(String, Zeroizing<String>)>, EntraError> {
    let bad = |why: String| EntraError::invalid_request(900144, why);
    let text = std::str::from_utf8(body).map_err(|_| bad("the token request body is not UTF-8 text".into()))?;
    let mut out: Vec<(String, Zeroizing<String>)> = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            bad(format!(
                "the form field '{}' has no '='",
                pair.chars().take(40).collect::<String>()
            ))
        })?;
        let decode = |s: &str| {
            let plus = s.replace('+', " ");
            percent_encoding::percent_decode_str(&plus)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad("a form field is not UTF-8 once decoded".into()))
        };
        let key = decode(k)?;
        let value = Zeroizing::new(decode(v)?);
        if out.iter().any(|(existing, _)| *existing == key) {
            return Err(bad(format!("the parameter '{key}' is given more than once")));
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn form_parsing_is_strict() {
        let p = parse_form(b"grant_type=client_credentials&scope=a%2F.default+b").unwrap();
        assert_eq!(p[1].0, "scope");
        assert_eq!(p[1].1.as_str(), "a/.default b");
        assert!(parse_form(b"a=1&a=2").is_err());
        assert!(parse_form(b"novalue").is_err());
        assert!(parse_form(b"a=%ff").is_err());
    }

    #[test]
    fn client_ids_are_uuid_v4() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(new_uuid(), id);
    }

    #[test]
    fn timestamps_are_civil_utc() {
        let t = timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.starts_with("20"), "{t}");
    }

    #[test]
    fn secrets_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let sp = register_client(dir.path(), "ops", &[Role::Administrator]).unwrap();
        assert!(sp.secret().starts_with(SECRET_PREFIX));
        let text = fs::read_to_string(dir.path().join(CLIENTS_FILE)).unwrap();
        assert!(!text.contains(sp.secret()) && text.contains(&sha256_hex(sp.secret())));
        assert!(register_client(dir.path(), "bad name", &[]).is_err());
    }
}
