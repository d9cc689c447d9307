//! Local RBAC as Microsoft documents it: each built-in role is allowed
//! exactly the data actions of the "Permitted operations" table of "Local
//! RBAC built-in roles for Managed HSM" (transcribed below, independently of
//! the emulator's role code), at the decision level for every action and
//! through real HTTPS requests for every served route; assignments at
//! `/`, `/keys` and `/keys/{name}`; custom roles; settings; `emulator token --role`.

use crate::common::{self, raw, Emu};
use crate::util::Dir;

use hsm_ceremony::emulator::{self, DataAction, Decision, Role};
use serde_json::{json, Value};

/// The table's columns, in its order.
const COLUMNS: [Role; 9] = [
    Role::Administrator,
    Role::CryptoOfficer,
    Role::CryptoUser,
    Role::PolicyAdministrator,
    Role::CryptoServiceEncryptionUser,
    Role::Backup,
    Role::CryptoAuditor,
    Role::CryptoServiceReleaseUser,
    Role::Restore,
];

/// Data action (without `Microsoft.KeyVault/managedHsm/`) and an X per
/// column that allows it. Rows after the table's are marked: the table is
/// silent on them and the emulator decides (hsm-ceremony-emulator(7)).
const TABLE: [(&str, &str); 37] = [
    // Security domain management
    ("securitydomain/download/action", "X........"),
    ("securitydomain/upload/action", "X........"),
    ("securitydomain/upload/read", "X........"),
    ("securitydomain/transferkey/read", "X........"),
    // Key management
    ("keys/read/action", "..X.X.X.."),
    ("keys/write/action", "..X......"),
    ("keys/rotate/action", "..X......"),
    ("keys/create", "..X......"),
    ("keys/delete", "..X......"),
    ("keys/deletedKeys/read/action", ".X......."),
    ("keys/deletedKeys/recover/action", ".X......."),
    ("keys/deletedKeys/delete", ".X....X.."),
    ("keys/backup/action", "..X..X..."),
    ("keys/restore/action", "..X.....X"),
    ("keys/release/action", "..X....X."),
    ("keys/import/action", "..X......"),
    // Key cryptographic operations
    ("keys/encrypt/action", "..X......"),
    ("keys/decrypt/action", "..X......"),
    ("keys/wrap/action", "..X.X...."),
    ("keys/unwrap/action", "..X.X...."),
    ("keys/sign/action", "..X......"),
    ("keys/verify/action", "..X......"),
    // Role management
    ("roleAssignments/read/action", "XXXX..X.."),
    ("roleAssignments/write/action", "XX.X....."),
    ("roleAssignments/delete/action", "XX.X....."),
    ("roleDefinitions/read/action", "XXXX..X.."),
    ("roleDefinitions/write/action", "XX.X....."),
    ("roleDefinitions/delete/action", "XX.X....."),
    // Backup and restore management
    ("backup/start/action", "X....X..."),
    ("backup/status/action", "X....X..."),
    ("restore/start/action", "X.......X"),
    ("restore/status/action", "X.......X"),
    // Not in the table: the emulator's decisions.
    ("securitydomain/download/read", "X........"),
    ("keys/export/action", ".X......."),
    ("rng/action", "..X......"),
    ("settings/read/action", "X........"),
    ("settings/write/action", "X........"),
];

const PREFIX: &str = "Microsoft.KeyVault/managedHsm/";

fn allowed_by_table(action: DataAction, role: Role) -> bool {
    let (_, marks) = TABLE
        .iter()
        .find(|(name, _)| format!("{PREFIX}{name}") == action.name())
        .unwrap_or_else(|| panic!("{action:?} ({}) has no row in the table", action.name()));
    let column = COLUMNS.iter().position(|r| *r == role).unwrap();
    marks.as_bytes()[column] == b'X'
}

/// Where an action is asked: on a key for key actions, else at `/`.
fn scope_of(action: DataAction) -> &'static str {
    if action.name().starts_with(&format!("{PREFIX}keys/")) {
        "/keys/k"
    } else {
        "/"
    }
}

#[test]
fn the_table_covers_every_action_once_and_names_real_actions() {
    for (name, marks) in TABLE {
        assert_eq!(marks.len(), COLUMNS.len(), "{name}");
        assert!(
            DataAction::parse(&format!("{PREFIX}{name}")).is_some(),
            "{name} is not an action of the emulator"
        );
    }
    let mut names: Vec<&str> = TABLE.iter().map(|(n, _)| *n).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), TABLE.len(), "a row twice");
    assert_eq!(TABLE.len(), DataAction::ALL.len(), "every action has its row");
}

#[test]
fn each_built_in_role_is_allowed_exactly_its_table_row_at_the_decision_level() {
    let dir = tempfile::tempdir().unwrap();
    for role in Role::ALL {
        let token = emulator::issue_token(dir.path(), &role.cli_name(), &[role])
            .unwrap()
            .reveal();
        for action in DataAction::ALL {
            let scope = scope_of(action);
            let decision = emulator::decide_in(dir.path(), &token, action, scope).unwrap();
            let want = allowed_by_table(action, role);
            assert_eq!(
                matches!(decision, Decision::Allowed { .. }),
                want,
                "{} on {} at {scope}: {decision:?}",
                role.name(),
                action.name()
            );
            // The role's own definition says the same as the table.
            assert_eq!(role.grants(action), want, "{role:?} {action:?}");
        }
    }
    let none = emulator::issue_token(dir.path(), "nobody", &[]).unwrap().reveal();
    for action in DataAction::ALL {
        let d = emulator::decide_in(dir.path(), &none, action, scope_of(action)).unwrap();
        assert!(matches!(d, Decision::Forbidden { .. }), "{action:?}: {d:?}");
    }
}

const API: &str = "?api-version=7.5";
const RA: &str = "/providers/Microsoft.Authorization/roleAssignments";
const RD: &str = "/providers/Microsoft.Authorization/roleDefinitions";
const GUID: &str = "0b0b0b0b-1111-4222-8333-444444444444";

/// Every served route with a request that, once authorized, changes
/// nothing for the next role (a bad body, an unknown name, an inactive
/// instance), and the data action and scope it needs.
fn served_routes() -> Vec<(&'static str, String, String, DataAction, &'static str)> {
    use DataAction::*;
    let s = |x: &str| x.to_string();
    vec![
        (
            "POST",
            s("/securitydomain/download"),
            s(r#"{"certificates":[],"required":2}"#),
            SecurityDomainDownload,
            "/",
        ),
        (
            "GET",
            s("/securitydomain/download/pending"),
            s(""),
            SecurityDomainDownloadStatus,
            "/",
        ),
        (
            "GET",
            s("/securitydomain/upload/pending"),
            s(""),
            SecurityDomainUploadStatus,
            "/",
        ),
        ("POST", s("/securitydomain/upload"), s("[[["), SecurityDomainUpload, "/"),
        ("POST", s("/keys/k/create"), s(r#"{"kty":"RSA"}"#), KeyCreate, "/keys/k"),
        ("GET", s("/keys/k"), s(""), KeyRead, "/keys/k"),
        ("POST", s("/keys/k/backup"), s(""), KeyBackup, "/keys/k"),
        (
            "POST",
            s("/keys/restore"),
            s(r#"{"value":"AAAA"}"#),
            KeyRestore,
            "/keys",
        ),
        ("GET", format!("/{RA}"), s(""), RoleAssignmentRead, "/"),
        ("GET", format!("/keys{RA}/{GUID}"), s(""), RoleAssignmentRead, "/keys"),
        (
            "PUT",
            format!("/keys/k{RA}/{GUID}"),
            s("{}"),
            RoleAssignmentWrite,
            "/keys/k",
        ),
        ("DELETE", format!("/{RA}/{GUID}"), s(""), RoleAssignmentDelete, "/"),
        ("GET", format!("/{RD}"), s(""), RoleDefinitionRead, "/"),
        (
            "GET",
            format!("/{RD}/{}", Role::Backup.id()),
            s(""),
            RoleDefinitionRead,
            "/",
        ),
        ("PUT", format!("/{RD}/{GUID}"), s("{}"), RoleDefinitionWrite, "/"),
        ("DELETE", format!("/{RD}/{GUID}"), s(""), RoleDefinitionDelete, "/"),
        ("GET", s("/settings"), s(""), SettingsRead, "/"),
        (
            "GET",
            s("/settings/AllowKeyManagementOperationsThroughARM"),
            s(""),
            SettingsRead,
            "/",
        ),
        (
            "PATCH",
            s("/settings/AllowKeyManagementOperationsThroughARM"),
            s(r#"{"value":"maybe"}"#),
            SettingsWrite,
            "/",
        ),
        // Last: it turns the instance to recovering.
        (
            "GET",
            s("/securitydomain/upload"),
            s(""),
            SecurityDomainTransferKey,
            "/",
        ),
    ]
}

fn call(emu: &Emu, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let r = raw(
        emu,
        method,
        &format!("{path}{API}"),
        Some(token),
        (!body.is_empty()).then_some(body),
    );
    (r.status, r.body)
}

#[test]
fn each_built_in_role_is_allowed_exactly_its_table_row_over_https() {
    for role in Role::ALL {
        let emu = common::start();
        let token = emu.token(&role.cli_name(), &[role]);
        for (method, path, body, action, scope) in served_routes() {
            let (status, answer) = call(&emu, method, &path, &token, &body);
            let what = format!("{} {method} {path}: {status} {answer}", role.name());
            if allowed_by_table(action, role) {
                assert!(status != 403 && status != 401, "{what}");
            } else {
                assert_eq!(status, 403, "{what}");
                let v: Value = serde_json::from_str(&answer).unwrap();
                assert_eq!(v["error"]["code"], "AccessDenied", "{what}");
                let m = v["error"]["message"].as_str().unwrap();
                assert!(
                    m.starts_with(&format!("Not authorized to access {} on {scope}", action.name())),
                    "{what}"
                );
                assert!(m.contains(&format!("'{}'", role.cli_name())), "{what}");
            }
        }
    }
}

#[test]
fn a_crypto_officer_alone_neither_creates_nor_reads_keys() {
    let emu = common::start();
    let officer = emu.token("officer", &[Role::CryptoOfficer]);
    let (status, body) = call(&emu, "POST", "/keys/k/create", &officer, r#"{"kty":"RSA"}"#);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Managed HSM Crypto User"), "{body}");
    let (status, _) = call(&emu, "GET", "/keys/k", &officer, "");
    assert_eq!(status, 403);
}

fn assign(emu: &Emu, admin: &str, scope: &str, name: &str, role: &str, principal: &str) -> (u16, Value) {
    let body = json!({"properties": {
        "roleDefinitionId": format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{role}"),
        "principalId": principal,
    }})
    .to_string();
    let prefix = if scope == "/" { "" } else { scope };
    let (status, answer) = call(emu, "PUT", &format!("{prefix}{RA}/{name}"), admin, &body);
    (status, serde_json::from_str(&answer).unwrap())
}

#[test]
fn an_assignment_at_a_key_allows_that_key_only_and_at_keys_all_keys() {
    let emu = common::start();
    let admin = emu.token("admin", &[Role::Administrator]);
    let app = emu.token("app", &[]);
    let a = "1a1a1a1a-0000-4000-8000-00000000000a";
    let (status, created) = assign(&emu, &admin, "/keys/a", a, Role::CryptoUser.id(), "app");
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created,
        json!({
            "id": format!("/keys/a{RA}/{a}"),
            "name": a,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "scope": "/keys/a",
                "roleDefinitionId": format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{}", Role::CryptoUser.id()),
                "principalId": "app",
            }
        })
    );
    // Allowed on key a (then refused only because the instance is not activated), refused on b.
    let (status, body) = call(&emu, "GET", "/keys/a", &app, "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not activated"), "{body}");
    let (status, body) = call(&emu, "GET", "/keys/b", &app, "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("on /keys/b"), "{body}");
    // The key collection's restore is at /keys: above key a, so not covered.
    assert_eq!(call(&emu, "POST", "/keys/restore", &app, r#"{"value":"AAAA"}"#).0, 403);

    // Listing: at and above a scope with atScope(), for one principal with principalId.
    let list = |scope: &str, filter: &str| {
        let prefix = if scope == "/" { "" } else { scope };
        let path = format!(
            "{prefix}{RA}{API}&$filter={}",
            filter.replace(' ', "%20").replace('\'', "%27")
        );
        let r = raw(&emu, "GET", &path, Some(&admin), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let mut names: Vec<String> = v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                format!(
                    "{}@{}",
                    x["properties"]["principalId"].as_str().unwrap(),
                    x["properties"]["scope"].as_str().unwrap()
                )
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(list("/keys/a", "principalId eq 'app'"), ["app@/keys/a"]);
    assert_eq!(
        list("/keys/b", "atScope() and principalId eq 'app'"),
        Vec::<String>::new()
    );
    assert_eq!(list("/", "principalId eq 'app'"), ["app@/keys/a"]);
    assert_eq!(list("/", "atScope()"), ["admin@/"]);

    // Deleting the assignment takes the permission away; a second delete is 404.
    let (status, body) = call(&emu, "DELETE", &format!("/keys/a{RA}/{a}"), &admin, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(call(&emu, "GET", "/keys/a", &app, "").0, 403);
    assert_eq!(call(&emu, "DELETE", &format!("/keys/a{RA}/{a}"), &admin, "").0, 404);

    // At /keys: every key, and the collection.
    let k = "2b2b2b2b-0000-4000-8000-00000000000b";
    assert_eq!(assign(&emu, &admin, "/keys", k, Role::CryptoUser.id(), "app").0, 201);
    assert_eq!(call(&emu, "GET", "/keys/a", &app, "").0, 400);
    assert_eq!(call(&emu, "GET", "/keys/b", &app, "").0, 400);
    assert_eq!(call(&emu, "POST", "/keys/restore", &app, r#"{"value":"AAAA"}"#).0, 400);
    // ... but not the security domain, which is at /.
    assert_eq!(call(&emu, "GET", "/securitydomain/upload/pending", &app, "").0, 403);
    // The same name twice, or the same role again under another name: 409.
    assert_eq!(assign(&emu, &admin, "/keys", k, Role::Backup.id(), "app").0, 409);
    let again = "3c3c3c3c-0000-4000-8000-00000000000c";
    assert_eq!(
        assign(&emu, &admin, "/keys", again, Role::CryptoUser.id(), "app").0,
        409
    );
    // An unknown role definition or a bad scope: 400 naming it.
    let (status, v) = assign(&emu, &admin, "/keys", again, GUID, "app");
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("does not exist"),
        "{v}"
    );
    let (status, v) = assign(&emu, &admin, "/secrets", again, Role::Backup.id(), "app");
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'/secrets' is not a Managed HSM role scope"),
        "{v}"
    );
}

#[test]
fn a_policy_administrator_of_a_key_manages_that_keys_assignments_only() {
    let emu = common::start();
    let admin = emu.token("admin", &[Role::Administrator]);
    let keeper = emu.token("keeper", &[]);
    let p = "4d4d4d4d-0000-4000-8000-00000000000d";
    assert_eq!(
        assign(&emu, &admin, "/keys/a", p, Role::PolicyAdministrator.id(), "keeper").0,
        201
    );
    let q = "5e5e5e5e-0000-4000-8000-00000000000e";
    assert_eq!(assign(&emu, &keeper, "/keys/a", q, Role::CryptoUser.id(), "app").0, 201);
    let (status, v) = assign(&emu, &keeper, "/keys/b", q, Role::CryptoUser.id(), "app");
    assert_eq!(status, 403, "{v}");
    // Listing at / needs read at /, as the service answers `az keyvault role assignment create`.
    let (status, body) = call(&emu, "GET", &format!("/{RA}"), &keeper, "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("roleAssignments/read/action on /"), "{body}");
}

#[test]
fn custom_roles_grant_their_data_actions_minus_their_not_data_actions_and_built_ins_stay() {
    let emu = common::start();
    let admin = emu.token("admin", &[Role::Administrator]);
    let app = emu.token("app", &[]);
    let def = "6f6f6f6f-0000-4000-8000-00000000000f";
    let body = json!({"properties": {
        "roleName": "reader without create",
        "description": "rehearsal",
        "permissions": [{
            "dataActions": ["Microsoft.KeyVault/managedHsm/keys/*"],
            "notDataActions": ["Microsoft.KeyVault/managedHsm/keys/create"],
        }],
        "assignableScopes": ["/"],
    }})
    .to_string();
    let (status, answer) = call(&emu, "PUT", &format!("/{RD}/{def}"), &admin, &body);
    assert_eq!(status, 201, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        v["id"],
        format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{def}")
    );
    assert_eq!(v["properties"]["type"], "CustomRole");
    let a = "7a7a7a7a-0000-4000-8000-00000000000a";
    assert_eq!(assign(&emu, &admin, "/", a, def, "app").0, 201);
    assert_eq!(
        call(&emu, "GET", "/keys/x", &app, "").0,
        400,
        "read allowed, instance inactive"
    );
    assert_eq!(call(&emu, "POST", "/keys/x/create", &app, r#"{"kty":"RSA"}"#).0, 403);
    // A definition in use is not deleted; an unused one is.
    assert_eq!(call(&emu, "DELETE", &format!("/{RD}/{def}"), &admin, "").0, 409);
    assert_eq!(call(&emu, "DELETE", &format!("{RA}/{a}"), &admin, "").0, 200);
    assert_eq!(call(&emu, "DELETE", &format!("/{RD}/{def}"), &admin, "").0, 200);
    assert_eq!(call(&emu, "GET", &format!("/{RD}/{def}"), &admin, "").0, 404);
    // Built-ins are listed with their real names and ids, and cannot be changed or deleted.
    let (status, list) = call(&emu, "GET", &format!("/{RD}"), &admin, "");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&list).unwrap();
    for role in Role::ALL {
        let d = v["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == role.id())
            .unwrap();
        assert_eq!(d["properties"]["roleName"], role.name());
        assert_eq!(d["properties"]["type"], "AKVBuiltInRole");
    }
    let path = format!("/{RD}/{}", Role::CryptoUser.id());
    let (status, body) = call(&emu, "PUT", &path, &admin, r#"{"properties":{"roleName":"mine"}}"#);
    assert_eq!(status, 400);
    assert!(body.contains("built-in role definitions cannot be changed"), "{body}");
    let (status, body) = call(&emu, "DELETE", &path, &admin, "");
    assert_eq!(status, 400);
    assert!(body.contains("cannot be deleted"), "{body}");
    // Filtered by name, as `az keyvault role definition list --name` asks.
    let filter = "%24filter=roleName%20eq%20%27Managed%20HSM%20Backup%27";
    let r = raw(&emu, "GET", &format!("/{RD}{API}&{filter}"), Some(&admin), None);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 1, "{}", r.body);
    assert_eq!(v["value"][0]["name"], Role::Backup.id());
}

#[test]
fn assignments_and_settings_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instance");
    let a = "8b8b8b8b-0000-4000-8000-00000000000b";
    let setting = "/settings/AllowKeyManagementOperationsThroughARM";
    let admin = {
        let emu = Emu::start_in(&dir);
        let admin = emu.token("admin", &[Role::Administrator]);
        assert_eq!(assign(&emu, &admin, "/keys/a", a, Role::CryptoUser.id(), "app").0, 201);
        let (status, body) = call(&emu, "PATCH", setting, &admin, r#"{"value":"true"}"#);
        assert_eq!(status, 200, "{body}");
        admin
    };
    let emu = Emu::start_in(&dir);
    let (status, body) = call(&emu, "GET", &format!("/keys/a{RA}/{a}"), &admin, "");
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(&emu, "GET", setting, &admin, "");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"name": "AllowKeyManagementOperationsThroughARM", "value": "true", "type": "boolean"})
    );
    assert_eq!(hsm_ceremony_mode(&dir.join("rbac.json")), 0o600);
    assert_eq!(hsm_ceremony_mode(&dir.join("settings.json")), 0o600);
}

fn hsm_ceremony_mode(path: &std::path::Path) -> u32 {
    crate::util::mode_of(path)
}

#[test]
fn emulator_token_takes_real_role_names_and_assigns_them_at_the_root() {
    let d = Dir::new("rbac-token-names");
    let out = d.run(&[
        "emulator",
        "token",
        "--state",
        "s",
        "--principal",
        "app",
        "--role",
        "Managed HSM Crypto User",
        "--role",
        "crypto service release user",
        "--role",
        "Backup",
    ]);
    out.ok();
    let token = out.stdout.trim().to_string();
    let state = d.join("s");
    for (action, want) in [
        (DataAction::KeyCreate, true),
        (DataAction::KeyRelease, true),
        (DataAction::BackupStart, true),
        (DataAction::SecurityDomainDownload, false),
    ] {
        let decision = emulator::decide_in(&state, &token, action, scope_of(action)).unwrap();
        assert_eq!(matches!(decision, Decision::Allowed { .. }), want, "{action:?}");
    }
    let rbac = d.read_string("s/rbac.json");
    assert_eq!(rbac.matches("\"scope\": \"/\"").count(), 3, "{rbac}");
    d.run(&[
        "emulator",
        "token",
        "--state",
        "s",
        "--principal",
        "x",
        "--role",
        "owner",
    ])
    .fails(
        2,
        &[
            "'owner' is not a Managed HSM built-in role",
            "crypto-user",
            "Managed HSM Crypto User",
        ],
    );
}

/// Role lists page as the service's do: a `nextLink` (absolute, carrying the
/// `$filter`) until the last page, `null` there, every item exactly once,
/// keyed so that a deletion between pages moves nothing across a boundary.
#[test]
fn role_lists_page_with_next_link_and_keep_their_filter() {
    let emu = common::start();
    let admin = emu.token("admin", &[Role::Administrator]);
    let list_once = |path: &str| -> Value {
        let r = common::raw(&emu, "GET", path, Some(&admin), None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    };
    let seeded = list_once(&format!("{RA}{API}"))["value"].as_array().unwrap().len();
    // Even ones at "/", odd ones at a key: atScope() at "/" keeps the even ones only.
    let names: Vec<String> = (0..45).map(|i| format!("2b2b2b2b-0000-4000-8000-{i:012}")).collect();
    for (i, name) in names.iter().enumerate() {
        let scope = if i % 2 == 0 {
            "/".to_string()
        } else {
            format!("/keys/k{i}")
        };
        let (status, body) = assign(&emu, &admin, &scope, name, Role::CryptoUser.id(), &format!("p-{i}"));
        assert_eq!(status, 201, "{body}");
    }
    let follow = |first: &str, delete_after_first_page: Option<&str>| -> (Vec<String>, usize) {
        let (mut seen, mut pages) = (Vec::new(), 0);
        let mut next = Some(format!("{}{first}", emu.url()));
        while let Some(url) = next {
            let path = url.strip_prefix(emu.url()).expect("nextLink names this instance");
            let v = list_once(path);
            let page = v["value"].as_array().unwrap();
            assert!(page.len() <= 20, "{path}");
            seen.extend(page.iter().map(|a| a["name"].as_str().unwrap().to_string()));
            assert!(
                v.get("nextLink").is_some(),
                "nextLink is always there, null on the last page"
            );
            next = v["nextLink"].as_str().map(String::from);
            if let (0, Some(gone)) = (pages, delete_after_first_page) {
                assert_eq!(call(&emu, "DELETE", &format!("{RA}/{gone}"), &admin, "").0, 200);
            }
            pages += 1;
        }
        (seen, pages)
    };
    let (all, pages) = follow(&format!("{RA}{API}"), None);
    assert_eq!((all.len(), pages), (45 + seeded, (45 + seeded).div_ceil(20)));
    let unique: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no item twice");
    assert!(names.iter().all(|n| unique.contains(n)), "every assignment listed");

    let filter = "%24filter=atScope%28%29";
    let (here, pages) = follow(&format!("{RA}{API}&{filter}"), None);
    assert_eq!(
        (here.len(), pages),
        (23 + seeded, (23 + seeded).div_ceil(20)),
        "the filter holds on every page"
    );
    assert!(here
        .iter()
        .all(|n| !names.contains(n) || names.iter().position(|m| m == n).unwrap() % 2 == 0));
    let next = list_once(&format!("{RA}{API}&{filter}"))["nextLink"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        next.starts_with(&format!(
            "{}{RA}?api-version=7.5&$filter=atScope%28%29&$skiptoken=",
            emu.url()
        )),
        "{next}"
    );

    // An item of the first page deleted before the second is fetched: the rest arrive all the same.
    let first_page: Vec<String> = list_once(&format!("{RA}{API}&{filter}"))["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    let gone = first_page.iter().find(|n| names.contains(n)).unwrap().clone();
    let (after_delete, _) = follow(&format!("{RA}{API}&{filter}"), Some(&gone));
    assert_eq!(after_delete.len(), 23 + seeded);
    assert_eq!(follow(&format!("{RA}{API}&{filter}"), None).0.len(), 22 + seeded);
    // The deleted one answers as the service's recorded 404 does.
    let (status, body) = call(&emu, "GET", &format!("{RA}/{gone}"), &admin, "");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("RoleAssignmentNotFound"))
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Requested role assignment not found"));

    let bad = common::raw(&emu, "GET", &format!("{RA}{API}&%24skiptoken=!!"), Some(&admin), None);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("follow nextLink"), "{}", bad.body);
    let defs = list_once(&format!("{RD}{API}"));
    assert_eq!(defs["nextLink"], Value::Null, "the built-ins fit one page");
    assert_eq!(defs["value"].as_array().unwrap().len(), 9);
}
