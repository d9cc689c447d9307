//! The RBAC and settings endpoints of the data plane (specs' `rbac.json`
//! and `settings.json`), as `KeyVaultAccessControlClient` and
//! `KeyVaultSettingsClient` call them:
//!
//! - `GET /{scope}/providers/Microsoft.Authorization/roleAssignments[?$filter=]`,
//!   `GET|PUT|DELETE .../roleAssignments/{name}`, at scope `/`, `/keys` or `/keys/{key}`;
//! - `GET /{scope}/providers/Microsoft.Authorization/roleDefinitions[?$filter=]`,
//!   `GET|PUT|DELETE .../roleDefinitions/{name}` (scope `/` only, as the service);
//! - `GET /settings`, `GET|PATCH /settings/{name}`.
//!
//! Routing, the path check and body parsing are pure, like `request`'s.

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::actions::{check_pattern, DataAction};
use super::assignments::{covers, is_guid, Assignment, CustomRole, RbacFile, DEFINITION_PREFIX};
use super::roles::Role;
use super::Authenticator;
use crate::emulator::error::ApiError;
use crate::emulator::keys;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AdminRoute {
    ListAssignments {
        scope: String,
        filter: Option<String>,
        after: Option<String>,
    },
    GetAssignment {
        scope: String,
        name: String,
    },
    PutAssignment {
        scope: String,
        name: String,
    },
    DeleteAssignment {
        scope: String,
        name: String,
    },
    ListDefinitions {
        scope: String,
        filter: Option<String>,
        after: Option<String>,
    },
    GetDefinition {
        scope: String,
        name: String,
    },
    PutDefinition {
        scope: String,
        name: String,
    },
    DeleteDefinition {
        scope: String,
        name: String,
    },
    ListSettings,
    GetSetting(String),
    UpdateSetting(String),
}

/// A parsed RBAC or settings request.
pub(crate) enum AdminOp {
    /// A request without a body, run as routed.
    Plain(AdminRoute),
    PutAssignment {
        scope: String,
        name: String,
        role: String,
        principal: String,
    },
    PutDefinition {
        role: CustomRole,
    },
    UpdateSetting {
        name: String,
        value: String,
    },
}

fn not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "MethodNotAllowed",
        message: format!("{method} {path} is not supported"),
    }
}

/// Routes `segments` (the path split at `/`, outer slashes trimmed) if it
/// is an RBAC or settings path; `None` for any other path.
pub(crate) fn route(
    method: &Method,
    path: &str,
    segments: &[&str],
    query: Option<&str>,
) -> Option<Result<AdminRoute, ApiError>> {
    use AdminRoute::*;
    if segments.first() == Some(&"settings") {
        return Some(match (segments, method.clone()) {
            (["settings"], Method::GET) => Ok(ListSettings),
            (["settings", name], Method::GET) => Ok(GetSetting(name.to_string())),
            (["settings", name], Method::PATCH) => Ok(UpdateSetting(name.to_string())),
            _ => Err(not_allowed(method, path)),
        });
    }
    let at = segments
        .windows(2)
        .position(|w| w[0].eq_ignore_ascii_case("providers") && w[1].eq_ignore_ascii_case("Microsoft.Authorization"))?;
    let scope = format!("/{}", segments[..at].join("/"));
    let rest = &segments[at + 2..];
    let filter = || query_value(query, "$filter");
    let after = || query_value(query, "$skiptoken");
    let found = match (rest, method.clone()) {
        ([kind], Method::GET) if kind.eq_ignore_ascii_case("roleAssignments") => Some(ListAssignments {
            scope,
            filter: filter(),
            after: after(),
        }),
        ([kind], Method::GET) if kind.eq_ignore_ascii_case("roleDefinitions") => Some(ListDefinitions {
            scope,
            filter: filter(),
            after: after(),
        }),
        ([kind, name], m) if kind.eq_ignore_ascii_case("roleAssignments") => {
            let name = name.to_string();
            match m {
                Method::GET => Some(GetAssignment { scope, name }),
                Method::PUT => Some(PutAssignment { scope, name }),
                Method::DELETE => Some(DeleteAssignment { scope, name }),
                _ => None,
            }
        }
        ([kind, name], m) if kind.eq_ignore_ascii_case("roleDefinitions") => {
            let name = name.to_string();
            match m {
                Method::GET => Some(GetDefinition { scope, name }),
                Method::PUT => Some(PutDefinition { scope, name }),
                Method::DELETE => Some(DeleteDefinition { scope, name }),
                _ => None,
            }
        }
        _ => None,
    };
    Some(found.ok_or_else(|| not_allowed(method, path)))
}

/// A query parameter's value, percent-decoded (`$filter` arrives as
/// `%24filter=principalId%20eq%20%27...%27`).
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| percent_decode(k).as_deref() == Some(key))
        .map(|(_, v)| percent_decode(v).unwrap_or_else(|| v.to_string()))
}

/// `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

impl AdminRoute {
    pub fn action(&self) -> DataAction {
        use AdminRoute::*;
        match self {
            ListAssignments { .. } | GetAssignment { .. } => DataAction::RoleAssignmentRead,
            PutAssignment { .. } => DataAction::RoleAssignmentWrite,
            DeleteAssignment { .. } => DataAction::RoleAssignmentDelete,
            ListDefinitions { .. } | GetDefinition { .. } => DataAction::RoleDefinitionRead,
            PutDefinition { .. } => DataAction::RoleDefinitionWrite,
            DeleteDefinition { .. } => DataAction::RoleDefinitionDelete,
            ListSettings | GetSetting(_) => DataAction::SettingsRead,
            UpdateSetting(_) => DataAction::SettingsWrite,
        }
    }

    /// The scope the action is checked at: an assignment's own scope (a
    /// key's Policy Administrator manages that key's assignments), `/` for
    /// definitions and settings, and `/` for a scope that is not one.
    pub fn scope(&self) -> String {
        use AdminRoute::*;
        match self {
            ListAssignments { scope, .. }
            | GetAssignment { scope, .. }
            | PutAssignment { scope, .. }
            | DeleteAssignment { scope, .. }
                if check_scope(scope).is_ok() =>
            {
                scope.clone()
            }
            _ => "/".to_string(),
        }
    }

    pub fn takes_body(&self) -> bool {
        matches!(
            self,
            AdminRoute::PutAssignment { .. } | AdminRoute::PutDefinition { .. } | AdminRoute::UpdateSetting(_)
        )
    }

    /// The path's (and the filter's) parameters.
    pub fn check_path(&self) -> Result<(), ApiError> {
        use AdminRoute::*;
        match self {
            ListAssignments { scope, filter, after } => {
                check_scope(scope)?;
                position(after.as_deref())?;
                AssignmentFilter::parse(filter.as_deref()).map(drop)
            }
            GetAssignment { scope, name } | PutAssignment { scope, name } | DeleteAssignment { scope, name } => {
                check_scope(scope)?;
                check_guid(name, "role assignment name")
            }
            ListDefinitions { scope, filter, after } => {
                check_scope(scope)?;
                position(after.as_deref())?;
                DefinitionFilter::parse(filter.as_deref()).map(drop)
            }
            GetDefinition { scope, name } | PutDefinition { scope, name } | DeleteDefinition { scope, name } => {
                if scope != "/" {
                    return Err(ApiError::bad_request(format!(
                        "role definitions live at scope '/' only on a Managed HSM, not '{scope}'"
                    )));
                }
                check_guid(name, "role definition name")
            }
            ListSettings | GetSetting(_) | UpdateSetting(_) => Ok(()),
        }
    }
}

/// `/`, `/keys` or `/keys/{a valid key name}`.
pub(crate) fn check_scope(scope: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "'{scope}' is not a Managed HSM role scope: use /, /keys or /keys/{{key name}}"
        ))
    };
    match scope
        .strip_prefix('/')
        .unwrap_or(scope)
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        [""] | ["keys"] => Ok(()),
        ["keys", name] => keys::check_name(name).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn check_guid(name: &str, what: &str) -> Result<(), ApiError> {
    if is_guid(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "'{name}' is not a valid {what}: use a GUID such as {}",
            Role::CryptoUser.id()
        )))
    }
}

/// `$filter` of an assignment list: `atScope()`, `principalId eq '{id}'`, or both joined by `and`.
#[derive(Default, Debug, PartialEq, Eq)]
struct AssignmentFilter {
    at_scope: bool,
    principal: Option<String>,
}

/// `$filter` of a definition list: `roleName eq '{name}'`, `atScopeAndBelow()`, or both.
#[derive(Default, Debug, PartialEq, Eq)]
struct DefinitionFilter {
    role_name: Option<String>,
}

fn filter_terms(filter: &str) -> Vec<&str> {
    // Split on " and " in any case, the only connective the service documents.
    let lower = filter.to_ascii_lowercase();
    let mut terms = Vec::new();
    let mut start = 0;
    while let Some(i) = lower[start..].find(" and ") {
        terms.push(filter[start..start + i].trim());
        start += i + 5;
    }
    terms.push(filter[start..].trim());
    terms
}

/// `{field} eq '{value}'` (or with double quotes).
fn equality<'a>(term: &'a str, field: &str) -> Option<&'a str> {
    let (left, right) = term.split_once(' ')?;
    if !left.eq_ignore_ascii_case(field) {
        return None;
    }
    let right = right.trim_start();
    let value = right.strip_prefix("eq ").or_else(|| right.strip_prefix("EQ "))?.trim();
    let quoted = value.len() >= 2
        && ((value.starts_with('\'') && value.ends_with('\'')) || (value.starts_with('"') && value.ends_with('"')));
    quoted.then(|| &value[1..value.len() - 1])
}

fn bad_filter(filter: &str, allowed: &str) -> ApiError {
    ApiError::bad_request(format!("the $filter '{filter}' is not understood; use {allowed}"))
}

impl AssignmentFilter {
    fn parse(filter: Option<&str>) -> Result<AssignmentFilter, ApiError> {
        let mut f = AssignmentFilter::default();
        let Some(filter) = filter.filter(|s| !s.trim().is_empty()) else {
            return Ok(f);
        };
        for term in filter_terms(filter) {
            if term.eq_ignore_ascii_case("atScope()") {
                f.at_scope = true;
            } else if let Some(id) = equality(term, "principalId") {
                f.principal = Some(id.to_string());
            } else {
                return Err(bad_filter(filter, "atScope() or principalId eq '{id}'"));
            }
        }
        Ok(f)
    }

    fn keeps(&self, a: &Assignment, scope: &str) -> bool {
        let place = if self.at_scope {
            covers(&a.scope, scope)
        } else {
            covers(&a.scope, scope) || covers(scope, &a.scope)
        };
        place && self.principal.as_ref().is_none_or(|p| *p == a.principal)
    }
}

impl DefinitionFilter {
    fn parse(filter: Option<&str>) -> Result<DefinitionFilter, ApiError> {
        let mut f = DefinitionFilter::default();
        let Some(filter) = filter.filter(|s| !s.trim().is_empty()) else {
            return Ok(f);
        };
        for term in filter_terms(filter) {
            if term.eq_ignore_ascii_case("atScopeAndBelow()") {
                // Definitions are all at `/`: every one is at and below any scope asked.
            } else if let Some(name) = equality(term, "roleName") {
                f.role_name = Some(name.to_string());
            } else {
                return Err(bad_filter(filter, "roleName eq '{name}' or atScopeAndBelow()"));
            }
        }
        Ok(f)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentBody {
    properties: AssignmentProperties,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AssignmentProperties {
    role_definition_id: String,
    principal_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionBody {
    properties: DefinitionProperties,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DefinitionProperties {
    role_name: Option<String>,
    description: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    permissions: Option<Vec<PermissionBody>>,
    assignable_scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PermissionBody {
    actions: Option<Vec<String>>,
    not_actions: Option<Vec<String>>,
    data_actions: Option<Vec<String>>,
    not_data_actions: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingBody {
    value: String,
}

fn json_body<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    crate::format::json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid {what}: {e}")))
}

/// The definition GUID a `roleDefinitionId` names: the service's
/// `Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{id}`,
/// with or without a leading `/`, a scope-prefixed `/providers/...` form, or the bare GUID.
fn definition_name(id: &str) -> Result<String, ApiError> {
    const TAIL: &str = "microsoft.authorization/roledefinitions/";
    let lower = id.to_ascii_lowercase();
    let name = match lower.rfind(TAIL) {
        Some(i) => &id[i + TAIL.len()..],
        None => id,
    };
    if is_guid(name) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(ApiError::bad_request(format!(
            "'{id}' is not a role definition id: use {DEFINITION_PREFIX}{{GUID}}, for example \
             {DEFINITION_PREFIX}{}",
            Role::CryptoUser.id()
        )))
    }
}

fn check_principal_id(id: &str) -> Result<(), ApiError> {
    super::tokens::check_principal(id).map_err(|_| {
        ApiError::bad_request(format!(
            "'{id}' is not a principal id this emulator issues tokens to: use 1 to 64 letters, digits, \
             '.', '_', '@' or '-' (an object id GUID fits)"
        ))
    })
}

/// The request's body to the operation (the path check included).
pub(crate) fn parse(route: AdminRoute, body: &[u8]) -> Result<AdminOp, ApiError> {
    route.check_path()?;
    Ok(match route {
        AdminRoute::PutAssignment { scope, name } => {
            let req: AssignmentBody = json_body(
                body,
                "role assignment ({\"properties\": {\"roleDefinitionId\": \"...\", \"principalId\": \"...\"}})",
            )?;
            check_principal_id(&req.properties.principal_id)?;
            AdminOp::PutAssignment {
                scope: normal_scope(&scope),
                name: name.to_ascii_lowercase(),
                role: definition_name(&req.properties.role_definition_id)?,
                principal: req.properties.principal_id,
            }
        }
        AdminRoute::PutDefinition { name, .. } => {
            let req: DefinitionBody = json_body(body, "role definition ({\"properties\": {...}})")?;
            AdminOp::PutDefinition {
                role: custom_role(name.to_ascii_lowercase(), req.properties)?,
            }
        }
        AdminRoute::UpdateSetting(name) => {
            let req: SettingBody = json_body(body, "setting update ({\"value\": \"...\"})")?;
            AdminOp::UpdateSetting { name, value: req.value }
        }
        other => AdminOp::Plain(other),
    })
}

/// `/keys/` and `/keys` are one scope; so are `` and `/`.
fn normal_scope(scope: &str) -> String {
    let trimmed = scope.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

fn custom_role(name: String, p: DefinitionProperties) -> Result<CustomRole, ApiError> {
    if let Some(r) = Role::by_id(&name) {
        return Err(built_in_refusal(r, "changed"));
    }
    if let Some(kind) = p.kind.as_deref().filter(|k| *k != "CustomRole") {
        return Err(ApiError::bad_request(format!(
            "properties.type '{kind}' cannot be set: a role definition made here is a CustomRole"
        )));
    }
    let role_name = p.role_name.unwrap_or_default().trim().to_string();
    if role_name.is_empty() || role_name.len() > 256 {
        return Err(ApiError::bad_request(
            "properties.roleName must name the role (1 to 256 characters)",
        ));
    }
    let (mut data_actions, mut not_data_actions) = (Vec::new(), Vec::new());
    for (i, perm) in p.permissions.unwrap_or_default().into_iter().enumerate() {
        for (field, list) in [("actions", &perm.actions), ("notActions", &perm.not_actions)] {
            if list.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(ApiError::bad_request(format!(
                    "permissions[{i}].{field}: a Managed HSM role takes no control-plane actions; \
                     list data actions in dataActions and notDataActions"
                )));
            }
        }
        for (field, list, out) in [
            ("dataActions", perm.data_actions, &mut data_actions),
            ("notDataActions", perm.not_data_actions, &mut not_data_actions),
        ] {
            for entry in list.unwrap_or_default() {
                check_pattern(&entry)
                    .map_err(|why| ApiError::bad_request(format!("permissions[{i}].{field}: {why}")))?;
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
    }
    let assignable_scopes = p.assignable_scopes.unwrap_or_else(|| vec!["/".into()]);
    if let Some(bad) = assignable_scopes.iter().find(|s| !["/", "/keys"].contains(&s.as_str())) {
        return Err(ApiError::bad_request(format!(
            "assignableScopes: '{bad}' is not one; a role definition is assignable at / or /keys"
        )));
    }
    Ok(CustomRole {
        name,
        role_name,
        description: p.description.unwrap_or_default(),
        data_actions,
        not_data_actions,
        assignable_scopes,
    })
}

fn built_in_refusal(role: Role, verb: &str) -> ApiError {
    ApiError::bad_request(format!(
        "'{}' is the built-in role '{}'; built-in role definitions cannot be {verb}",
        role.id(),
        role.name()
    ))
}

fn assignment_not_found(scope: &str, name: &str) -> ApiError {
    ApiError::not_found(
        "RoleAssignmentNotFound",
        // The service's words (its recorded 404s), then which one.
        format!("Requested role assignment not found: no role assignment named '{name}' at scope '{scope}'"),
    )
}

fn definition_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "RoleDefinitionNotFound",
        format!("no role definition named '{name}' on this HSM"),
    )
}

/// Items per list page. The service pages these lists with `nextLink` and
/// takes no `$top`; its page size is not documented, this one is the emulator's.
pub(crate) const PAGE: usize = 20;

/// The item a `$skiptoken` continues after; the token is opaque to clients.
fn position(after: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(t) = after else { return Ok(None) };
    crate::crypto::b64::b64u_decode(t, "$skiptoken")
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|p| p.len() <= 300)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("$skiptoken is not one this instance issued; follow nextLink as given"))
}

/// For a query string: everything but the unreserved characters escaped.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where a list's answers are reached, for its `nextLink`.
pub(crate) struct Link<'a> {
    pub origin: &'a str,
    pub api_version: &'a str,
}

/// One page of `items` (each with its sort key, in order) after `after`,
/// with the `nextLink` to the rest, or null on the last page.
fn page(
    items: Vec<(String, Value)>,
    after: Option<&str>,
    link: &Link,
    scope: &str,
    kind: &str,
    filter: Option<&str>,
) -> Value {
    // Keyed, not counted: an item added or deleted between pages moves no other across the boundary.
    let mut rest = items.into_iter().filter(|(k, _)| after.is_none_or(|a| k.as_str() > a));
    let chunk: Vec<(String, Value)> = rest.by_ref().take(PAGE).collect();
    let next = match (rest.next(), chunk.last()) {
        (Some(_), Some((last, _))) => {
            let base = if scope == "/" { String::new() } else { scope.to_string() };
            let filter = filter
                .map(|f| format!("&$filter={}", percent_encode(f)))
                .unwrap_or_default();
            Value::String(format!(
                "{}{base}/providers/Microsoft.Authorization/{kind}?api-version={}{filter}&$skiptoken={}",
                link.origin,
                link.api_version,
                crate::emulator::request::skiptoken(last)
            ))
        }
        _ => Value::Null,
    };
    json!({"value": chunk.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), "nextLink": next})
}

fn stored<R>(r: crate::error::Result<Result<R, ApiError>>) -> Result<R, ApiError> {
    r.map_err(ApiError::internal)?
}

/// Runs one parsed request; the status and JSON body of the answer.
pub(crate) fn execute(auth: &Authenticator, op: AdminOp, link: &Link) -> Result<(StatusCode, Value), ApiError> {
    let ok = |v: Value| (StatusCode::OK, v);
    match op {
        AdminOp::Plain(route) => match route {
            AdminRoute::ListAssignments { scope, filter, after } => {
                let scope = normal_scope(&scope);
                let after = position(after.as_deref())?;
                let parsed = AssignmentFilter::parse(filter.as_deref())?;
                let mut items: Vec<(String, Value)> = auth.rbac.read(|f| {
                    f.assignments
                        .iter()
                        .filter(|a| parsed.keeps(a, &scope))
                        .map(|a| (format!("{} {}", a.scope, a.name.to_ascii_lowercase()), a.to_json()))
                        .collect()
                });
                items.sort_by(|a, b| a.0.cmp(&b.0));
                let body = page(
                    items,
                    after.as_deref(),
                    link,
                    &scope,
                    "roleAssignments",
                    filter.as_deref(),
                );
                Ok(ok(body))
            }
            AdminRoute::GetAssignment { scope, name } => {
                let scope = normal_scope(&scope);
                auth.rbac
                    .read(|f| find_assignment(f, &scope, &name).map(|a| a.to_json()))
                    .map(ok)
                    .ok_or_else(|| assignment_not_found(&scope, &name))
            }
            AdminRoute::DeleteAssignment { scope, name } => {
                let scope = normal_scope(&scope);
                stored(auth.rbac.update(|f| {
                    let i = f
                        .assignments
                        .iter()
                        .position(|a| a.scope == scope && a.name.eq_ignore_ascii_case(&name))
                        .ok_or_else(|| assignment_not_found(&scope, &name))?;
                    Ok(f.assignments.remove(i).to_json())
                }))
                .map(ok)
            }
            AdminRoute::ListDefinitions { scope, filter, after } => {
                let after = position(after.as_deref())?;
                let parsed = DefinitionFilter::parse(filter.as_deref())?;
                let mut items: Vec<(String, Value)> = auth.rbac.read(|f| {
                    f.definitions()
                        .iter()
                        .filter(|d| {
                            parsed
                                .role_name
                                .as_ref()
                                .is_none_or(|n| d.role_name().eq_ignore_ascii_case(n))
                        })
                        .map(|d| (d.name().to_ascii_lowercase(), d.to_json()))
                        .collect()
                });
                items.sort_by(|a, b| a.0.cmp(&b.0));
                let scope = normal_scope(&scope);
                let body = page(
                    items,
                    after.as_deref(),
                    link,
                    &scope,
                    "roleDefinitions",
                    filter.as_deref(),
                );
                Ok(ok(body))
            }
            AdminRoute::GetDefinition { name, .. } => auth
                .rbac
                .read(|f| f.definition(&name).map(|d| d.to_json()))
                .map(ok)
                .ok_or_else(|| definition_not_found(&name)),
            AdminRoute::DeleteDefinition { name, .. } => {
                if let Some(r) = Role::by_id(&name) {
                    return Err(built_in_refusal(r, "deleted"));
                }
                stored(auth.rbac.update(|f| {
                    let i = f
                        .custom_roles
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(&name))
                        .ok_or_else(|| definition_not_found(&name))?;
                    let used = f
                        .assignments
                        .iter()
                        .filter(|a| a.role == f.custom_roles[i].name)
                        .count();
                    if used > 0 {
                        return Err(ApiError::conflict(format!(
                            "the role definition '{name}' is used by {used} role assignment(s); delete them first"
                        )));
                    }
                    let gone = f.custom_roles.remove(i);
                    Ok(super::assignments::Definition::Custom(&gone).to_json())
                }))
                .map(ok)
            }
            AdminRoute::ListSettings => Ok(ok(auth.settings.read(|s| s.list()))),
            AdminRoute::GetSetting(name) => auth.settings.read(|s| s.get(&name)).map(ok),
            AdminRoute::PutAssignment { .. } | AdminRoute::PutDefinition { .. } | AdminRoute::UpdateSetting(_) => {
                Err(ApiError::internal("a request with a body was run without it"))
            }
        },
        AdminOp::PutAssignment {
            scope,
            name,
            role,
            principal,
        } => stored(auth.rbac.update(|f| {
            let definition = f.definition(&role).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the role definition '{DEFINITION_PREFIX}{role}' does not exist on this HSM \
                     (list them with GET /providers/Microsoft.Authorization/roleDefinitions)"
                ))
            })?;
            if !definition.assignable_at(&scope) {
                return Err(ApiError::bad_request(format!(
                    "the role '{}' is not assignable at scope '{scope}' (see its assignableScopes)",
                    definition.role_name()
                )));
            }
            if let Some(a) = f.assignments.iter().find(|a| a.name == name) {
                return Err(ApiError::conflict(format!(
                    "a role assignment named '{name}' exists already (at scope '{}'); delete it first or \
                     choose another name",
                    a.scope
                )));
            }
            if let Some(a) = f
                .assignments
                .iter()
                .find(|a| a.principal == principal && a.scope == scope && a.role == role)
            {
                return Err(ApiError::conflict(format!(
                    "'{principal}' holds this role at scope '{scope}' already (assignment '{}')",
                    a.name
                )));
            }
            let new = Assignment {
                name,
                scope,
                role,
                principal,
            };
            let answer = new.to_json();
            f.assignments.push(new);
            Ok(answer)
        }))
        .map(|v| (StatusCode::CREATED, v)),
        AdminOp::PutDefinition { role } => stored(auth.rbac.update(|f| {
            if let Some(same) = f.definitions().iter().find(|d| {
                d.role_name().eq_ignore_ascii_case(&role.role_name) && !d.name().eq_ignore_ascii_case(&role.name)
            }) {
                return Err(ApiError::conflict(format!(
                    "a role named '{}' exists already (definition '{}'); role names are unique",
                    role.role_name,
                    same.name()
                )));
            }
            let answer = super::assignments::Definition::Custom(&role).to_json();
            match f.custom_roles.iter_mut().find(|c| c.name == role.name) {
                Some(existing) => *existing = role,
                None => f.custom_roles.push(role),
            }
            Ok(answer)
        }))
        .map(|v| (StatusCode::CREATED, v)),
        AdminOp::UpdateSetting { name, value } => stored(auth.settings.update(|s| s.set(&name, &value))).map(ok),
    }
}

fn find_assignment<'a>(f: &'a RbacFile, scope: &str, name: &str) -> Option<&'a Assignment> {
    f.assignments
        .iter()
        .find(|a| a.scope == scope && a.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(method: Method, path: &str, query: Option<&str>) -> Option<Result<AdminRoute, u16>> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        route(&method, path, &segments, query).map(|r| r.map_err(|e| e.status.as_u16()))
    }

    #[test]
    fn paths_route_as_the_sdk_sends_them() {
        use AdminRoute::*;
        let g = Role::Backup.id().to_string();
        let s = |x: &str| x.to_string();
        assert_eq!(
            routed(Method::GET, "//providers/Microsoft.Authorization/roleAssignments", None),
            Some(Ok(ListAssignments {
                scope: s("/"),
                filter: None,
                after: None
            }))
        );
        assert_eq!(
            routed(
                Method::GET,
                "/keys/providers/Microsoft.Authorization/roleAssignments",
                Some("api-version=7.5&%24filter=principalId%20eq%20%27ops%27")
            ),
            Some(Ok(ListAssignments {
                scope: s("/keys"),
                filter: Some(s("principalId eq 'ops'")),
                after: None
            }))
        );
        assert_eq!(
            routed(
                Method::PUT,
                &format!("/keys/a/providers/Microsoft.Authorization/roleAssignments/{g}"),
                None
            ),
            Some(Ok(PutAssignment {
                scope: s("/keys/a"),
                name: g.clone()
            }))
        );
        assert_eq!(
            routed(
                Method::DELETE,
                &format!("//providers/Microsoft.Authorization/roleDefinitions/{g}"),
                None
            ),
            Some(Ok(DeleteDefinition {
                scope: s("/"),
                name: g.clone()
            }))
        );
        assert_eq!(
            routed(Method::PATCH, "/settings/x", None),
            Some(Ok(UpdateSetting(s("x"))))
        );
        assert_eq!(routed(Method::GET, "/settings", None), Some(Ok(ListSettings)));
        assert_eq!(routed(Method::DELETE, "/settings/x", None), Some(Err(405)));
        assert_eq!(
            routed(Method::POST, "/providers/Microsoft.Authorization/roleAssignments", None),
            Some(Err(405))
        );
        assert_eq!(
            routed(
                Method::GET,
                "/providers/Microsoft.Authorization/roleAssignments/a/b",
                None
            ),
            Some(Err(405))
        );
        assert_eq!(routed(Method::GET, "/keys/a", None), None);
    }

    #[test]
    fn scopes_names_and_filters_are_checked() {
        let g = Role::Backup.id().to_string();
        let check = |r: AdminRoute| r.check_path().map_err(|e| e.message);
        let list = |scope: &str, filter: Option<&str>| AdminRoute::ListAssignments {
            scope: scope.into(),
            filter: filter.map(String::from),
            after: None,
        };
        assert!(check(list("/", None)).is_ok());
        assert!(check(list("/keys/a-1", Some("atScope() and principalId eq \"x\""))).is_ok());
        assert!(check(list("/secrets", None))
            .unwrap_err()
            .contains("'/secrets' is not a Managed HSM role scope"));
        assert!(check(list("/keys/a!b", None))
            .unwrap_err()
            .contains("not a Managed HSM role scope"));
        assert!(check(list("/keys/a/b", None)).is_err());
        assert!(check(list("/", Some("principalId ne 'x'")))
            .unwrap_err()
            .contains("$filter"));
        assert!(check(list("/", Some("atScope() or 1"))).is_err());
        let get = |scope: &str, name: &str| AdminRoute::GetDefinition {
            scope: scope.into(),
            name: name.into(),
        };
        assert!(check(get("/", &g)).is_ok());
        assert!(check(get("/keys", &g)).unwrap_err().contains("scope '/' only"));
        assert!(check(get("/", "backup"))
            .unwrap_err()
            .contains("'backup' is not a valid role definition name"));
        // A bad scope is authorized at `/`, the most demanding place.
        assert_eq!(list("/secrets", None).scope(), "/");
        assert_eq!(list("/keys/a", None).scope(), "/keys/a");
    }

    #[test]
    fn definition_ids_in_every_form_the_clients_send() {
        let g = Role::CryptoUser.id();
        for id in [
            format!("{DEFINITION_PREFIX}{g}"),
            format!("/{DEFINITION_PREFIX}{g}"),
            format!("/keys/providers/Microsoft.Authorization/roleDefinitions/{g}"),
            g.to_uppercase(),
        ] {
            assert_eq!(definition_name(&id).unwrap(), g, "{id}");
        }
        assert!(definition_name("Managed HSM Crypto User")
            .unwrap_err()
            .message
            .contains("not a role definition id"));
    }

    #[test]
    fn custom_roles_are_checked_field_by_field() {
        let parse = |body: &str| {
            parse(
                AdminRoute::PutDefinition {
                    scope: "/".into(),
                    name: "11111111-2222-4333-8444-555555555555".into(),
                },
                body.as_bytes(),
            )
            .map(|op| match op {
                AdminOp::PutDefinition { role } => role,
                _ => unreachable!(),
            })
            .map_err(|e| e.message)
        };
        let ok = parse(
            r#"{"properties":{"roleName":"wrapper","permissions":[{"dataActions":["Microsoft.KeyVault/managedHsm/keys/*"],
               "notDataActions":["Microsoft.KeyVault/managedHsm/keys/delete"]}],"assignableScopes":["/keys"]}}"#,
        )
        .unwrap();
        assert_eq!(ok.assignable_scopes, ["/keys"]);
        assert_eq!(ok.not_data_actions, ["Microsoft.KeyVault/managedHsm/keys/delete"]);
        let refused = [
            (r#"{"properties":{}}"#, "roleName must name the role"),
            (
                r#"{"properties":{"roleName":"x","type":"AKVBuiltInRole"}}"#,
                "'AKVBuiltInRole' cannot be set",
            ),
            (
                r#"{"properties":{"roleName":"x","permissions":[{"actions":["get"]}]}}"#,
                "permissions[0].actions",
            ),
            (
                r#"{"properties":{"roleName":"x","permissions":[{"dataActions":["Microsoft.KeyVault/managedHsm/keys/fly"]}]}}"#,
                "permissions[0].dataActions: 'Microsoft.KeyVault/managedHsm/keys/fly' is not",
            ),
            (
                r#"{"properties":{"roleName":"x","assignableScopes":["/keys/a"]}}"#,
                "'/keys/a' is not one",
            ),
            (r#"{"properties":{"roleName":"x","evil":1}}"#, "evil"),
        ];
        for (body, why) in refused {
            let m = parse(body).unwrap_err();
            assert!(m.contains(why), "{body}: {m}");
        }
        let built_in = super::parse(
            AdminRoute::PutDefinition {
                scope: "/".into(),
                name: Role::Administrator.id().into(),
            },
            br#"{"properties":{"roleName":"mine"}}"#,
        )
        .err()
        .unwrap();
        assert!(built_in.message.contains("built-in role 'Managed HSM Administrator'"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%27").as_deref(), Some("a b c'"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
