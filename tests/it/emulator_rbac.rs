//! Who may do what on the emulator, end to end through the request
//! handler (an in-process instance: no socket), and in which order a
//! request's faults are reported: route, api-version, authorization (before
//! any body), path, instance state, body.

use hsm_ceremony::emulator::{InProcess, Role};

const SD_ROLE: &str = "built-in roles that grant it: Managed HSM Administrator)";
const KEY_ROLE: &str = "built-in roles that grant it: Managed HSM Crypto User";

/// Every operation the emulator serves, with a body that parses.
const OPERATIONS: [(&str, &str, &str, bool); 9] = [
    (
        "POST",
        "/securitydomain/download",
        r#"{"certificates":[],"required":2}"#,
        true,
    ),
    ("GET", "/securitydomain/download/pending", "", true),
    ("GET", "/securitydomain/upload/pending", "", true),
    ("POST", "/securitydomain/upload", r#"{"value":"{}"}"#, true),
    ("POST", "/keys/canary/create", r#"{"kty":"RSA"}"#, false),
    ("GET", "/keys/canary/", "", false),
    ("POST", "/keys/canary/backup", "", false),
    ("POST", "/keys/restore", r#"{"value":"AAAA"}"#, false),
    // Last: it turns the instance to recovering.
    ("GET", "/securitydomain/upload", "", true),
];

fn call(emu: &InProcess, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Bearer {token}")
    };
    emu.call(
        method,
        &format!("{path}?api-version=7.5"),
        &auth,
        (!body.is_empty()).then(|| body.to_string()),
    )
    .unwrap()
}

#[test]
fn each_role_is_allowed_exactly_its_operations_and_a_refusal_names_the_role() {
    let roles: [(&str, &[Role], bool, bool); 5] = [
        ("admin", &[Role::Administrator], true, false),
        // The real Crypto Officer manages roles and deleted keys, but neither creates nor uses keys.
        ("officer", &[Role::CryptoOfficer], false, false),
        ("user", &[Role::CryptoUser], false, true),
        ("both", &[Role::Administrator, Role::CryptoUser], true, true),
        ("owner", &[], false, false),
    ];
    for (principal, held, sd_allowed, keys_allowed) in roles {
        let emu = InProcess::in_memory().unwrap();
        let token = emu.issue_token(principal, held).unwrap().reveal();
        for (method, path, body, security_domain) in OPERATIONS {
            let (status, answer) = call(&emu, method, path, &token, body);
            let allowed = if security_domain { sd_allowed } else { keys_allowed };
            if allowed {
                assert_ne!(status, 403, "{principal}: {method} {path}: {answer}");
                assert_ne!(status, 401, "{principal}: {method} {path}: {answer}");
            } else {
                assert_eq!(status, 403, "{principal}: {method} {path}: {answer}");
                let role = if security_domain { SD_ROLE } else { KEY_ROLE };
                assert!(
                    answer.contains(&format!("'{principal}' holds no role assignment")) && answer.contains(role),
                    "{principal}: {method} {path}: {answer}"
                );
            }
        }
    }
}

#[test]
fn faults_are_reported_in_the_order_the_server_checks_them() {
    let emu = InProcess::in_memory().unwrap();
    let both = emu
        .issue_token("both", &[Role::Administrator, Role::CryptoOfficer])
        .unwrap()
        .reveal();
    let officer = emu.issue_token("user", &[Role::CryptoUser]).unwrap().reveal();
    let message = |(status, body): (u16, String)| {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (status, v["error"]["message"].as_str().unwrap().to_string())
    };
    let bad_name = "/keys/bad!name/create";

    // Authorization before the path and the body: a bad name or body without a token is challenged.
    let (status, _) = message(call(&emu, "POST", bad_name, "", "{not json"));
    assert_eq!(status, 401);
    let (status, _) = message(call(&emu, "POST", "/securitydomain/download", "", "{not json"));
    assert_eq!(status, 401);
    // ... and a principal without the role is refused before its name is looked at.
    let admin = emu.issue_token("admin", &[Role::Administrator]).unwrap().reveal();
    let (status, m) = message(call(&emu, "POST", bad_name, &admin, "{not json"));
    assert_eq!(status, 403, "{m}");

    // The path before the instance's state: a bad name on a provisioned instance is about the name.
    let (status, m) = message(call(&emu, "POST", bad_name, &officer, "{not json"));
    assert_eq!(status, 400);
    assert!(m.contains("'bad!name' is not a valid key name"), "{m}");
    let (status, m) = message(call(&emu, "GET", "/keys/a.b", &officer, ""));
    assert_eq!(status, 400);
    assert!(m.contains("not a valid key name"), "{m}");

    // The state before the body: a good name with a bad body on a provisioned instance is about the state.
    let (status, m) = message(call(&emu, "POST", "/keys/canary/create", &officer, "{not json"));
    assert_eq!(status, 400);
    assert!(m.contains("not activated"), "{m}");
    let (status, m) = message(call(&emu, "POST", "/keys/restore", &officer, "[[["));
    assert_eq!(status, 400);
    assert!(m.contains("not activated"), "{m}");

    // Security-domain bodies are parsed before the state is consulted.
    let (status, m) = message(call(&emu, "POST", "/securitydomain/upload", &both, "[[["));
    assert_eq!(status, 400);
    assert!(m.contains("not a valid upload request"), "{m}");
    let (status, m) = message(call(&emu, "POST", "/securitydomain/upload", &both, r#"{"value":"{}"}"#));
    assert_eq!(status, 400);
    assert!(m.contains("no transfer key yet"), "{m}");

    // The route and api-version come before everything, token or not.
    // (DELETE /keys/{name} is served now; PUT on create is not.)
    let (status, _) = emu
        .call("PUT", "/keys/canary/create?api-version=7.5", "", None)
        .unwrap();
    assert_eq!(status, 405);
    let (status, _) = emu.call("GET", "/keys/canary", "", None).unwrap();
    assert_eq!(status, 400);
}
