//! The emulator's Entra-compatible authority over real HTTPS (discovery,
//! the client-credentials token endpoint and its refusals), and the shell
//! lines of `emulator az-setup`, evaluated by a real `sh` with a stub `az`
//! that records what it was given.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use hsm_ceremony::emulator::{self, Role};
use serde_json::Value;

use crate::common::{self, agent_for};
use crate::util::BIN;

const TENANT: &str = "00000000-0000-0000-0000-000000000000";

fn post_form(emu: &common::Emu, path: &str, body: &str) -> (u16, Value) {
    let mut resp = agent_for(emu.ca())
        .post(&format!("{}{path}", emu.url()))
        .content_type("application/x-www-form-urlencoded")
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

fn get_json(emu: &common::Emu, path: &str) -> (u16, Value) {
    let mut resp = agent_for(emu.ca()).get(&format!("{}{path}", emu.url())).call().unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap(),
    )
}

fn token_path() -> String {
    format!("/{TENANT}/oauth2/v2.0/token")
}

fn form(client_id: &str, secret: &str, grant: &str) -> String {
    format!(
        "client_id={client_id}&grant_type={grant}&client_secret={}&scope=https%3A%2F%2F127.0.0.1%2F%2F.default",
        secret.replace('~', "%7E")
    )
}

/// An Entra refusal: the OAuth error, the AADSTS code first in the text and
/// in `error_codes`, and the trace fields MSAL reads.
fn assert_entra_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
    assert_eq!(body["error_codes"][0], code, "{body}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
}

#[test]
fn discovery_names_the_token_endpoint_on_the_emulators_own_origin() {
    let emu = common::start();
    let (status, doc) = get_json(&emu, &format!("/{TENANT}/v2.0/.well-known/openid-configuration"));
    assert_eq!(status, 200);
    assert_eq!(doc["token_endpoint"], format!("{}{}", emu.url(), token_path()));
    assert_eq!(doc["issuer"], format!("{}/{TENANT}/v2.0", emu.url()));
    let (status, inst) = get_json(&emu, "/common/discovery/instance?api-version=1.1");
    assert_eq!(status, 200);
    assert!(inst["tenant_discovery_endpoint"]
        .as_str()
        .unwrap()
        .starts_with(emu.url()));
    // Another tenant is not this authority's.
    let (status, _) = get_json(
        &emu,
        "/11111111-1111-1111-1111-111111111111/v2.0/.well-known/openid-configuration",
    );
    assert_eq!(status, 404);
}

#[test]
fn the_token_endpoint_grants_the_principals_roles_for_the_right_secret_only() {
    let emu = common::start();
    let sp = emulator::register_client(emu.dir(), "ops", &[Role::Administrator]).unwrap();
    let (status, body) = post_form(
        &emu,
        &token_path(),
        &form(&sp.client_id, sp.secret(), "client_credentials"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], emulator::EXPIRES_IN);
    let token = body["access_token"].as_str().unwrap();
    // The token is the emulator's: it carries the principal's role and no other.
    let sd = common::raw(&emu, "GET", "/securitydomain/upload?api-version=7.5", Some(token), None);
    assert_eq!(sd.status, 200, "{}", sd.body);
    let key = common::raw(&emu, "GET", "/keys/nope?api-version=7.5", Some(token), None);
    assert_eq!(key.status, 403, "{}", key.body);
    // The secret is on disk only as a hash.
    let stored = std::fs::read_to_string(emu.dir().join(emulator::CLIENTS_FILE)).unwrap();
    assert!(!stored.contains(sp.secret()));

    let wrong = format!("{}x", &sp.secret()[..sp.secret().len() - 1]);
    let (status, body) = post_form(&emu, &token_path(), &form(&sp.client_id, &wrong, "client_credentials"));
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 7000215);
    assert!(!body.to_string().contains(&wrong), "the presented secret is not echoed");

    let unknown = "0b0b0b0b-0b0b-4b0b-8b0b-0b0b0b0b0b0b";
    let (status, body) = post_form(&emu, &token_path(), &form(unknown, sp.secret(), "client_credentials"));
    assert_eq!(status, 400);
    assert_entra_error(&body, "unauthorized_client", 700016);

    for grant in ["password", "authorization_code", "refresh_token"] {
        let (status, body) = post_form(&emu, &token_path(), &form(&sp.client_id, sp.secret(), grant));
        assert_eq!(status, 400, "{grant}");
        assert_entra_error(&body, "unsupported_grant_type", 70003);
    }
    // A parameter given twice leaves it open which counts: refused.
    let twice = format!(
        "{}&client_id={unknown}",
        form(&sp.client_id, sp.secret(), "client_credentials")
    );
    let (status, body) = post_form(&emu, &token_path(), &twice);
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_request", 900144);
    let no_scope = format!(
        "client_id={}&grant_type=client_credentials&client_secret=x",
        sp.client_id
    );
    let (status, body) = post_form(&emu, &token_path(), &no_scope);
    assert_eq!(status, 400);
    assert!(
        body["error_description"].as_str().unwrap().contains("'scope'"),
        "{body}"
    );
}

/// One raw HTTP/1.1 exchange (plain HTTP: the server may answer and close
/// before the body is sent, which a TLS client reports as a broken pipe).
fn raw_http(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let _ = s.write_all(head.replace('\n', "\r\n").as_bytes());
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn an_oversized_or_misencoded_token_request_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = emulator::Config::new(tmp.path().join("instance"));
    config.tls = false;
    let running = emulator::spawn(config).unwrap();
    let sp = emulator::register_client(&tmp.path().join("instance"), "ops", &[Role::Administrator]).unwrap();
    let body = format!(
        "{}&pad={}",
        form(&sp.client_id, sp.secret(), "client_credentials"),
        "a".repeat(emulator::MAX_TOKEN_BODY)
    );
    let head = |ct: &str, len: usize| {
        format!(
            "POST {} HTTP/1.1\nHost: x\nContent-Type: {ct}\nContent-Length: {len}\nConnection: close\n\n",
            token_path()
        )
    };
    let (status, text) = raw_http(
        running.local_addr(),
        &head("application/x-www-form-urlencoded", body.len()),
        body.as_bytes(),
    );
    assert_eq!(status, 413, "{text}");
    assert_entra_error(&serde_json::from_str(&text).unwrap(), "invalid_request", 90014);
    // Not form-encoded at all.
    let (status, text) = raw_http(running.local_addr(), &head("application/json", 2), b"{}");
    assert_eq!(status, 400, "{text}");
    assert_entra_error(&serde_json::from_str(&text).unwrap(), "invalid_request", 900144);
    // The server still grants a proper request afterwards.
    let good = form(&sp.client_id, sp.secret(), "client_credentials");
    let (status, text) = raw_http(
        running.local_addr(),
        &head("application/x-www-form-urlencoded", good.len()),
        good.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
}

/// A stub `az` that appends each argument (NUL-terminated) and then the
/// environment it saw to `log`, one invocation after the other.
fn stub_az(bin_dir: &Path, log: &Path) {
    std::fs::create_dir_all(bin_dir).unwrap();
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\" >> '{log}'; done\n\
         printf 'CFG=%s\\0CA=%s\\0\\n' \"$AZURE_CONFIG_DIR\" \"$REQUESTS_CA_BUNDLE\" >> '{log}'\n",
        log = log.display()
    );
    let az = bin_dir.join("az");
    std::fs::write(&az, script).unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn az_setup_lines_survive_a_state_folder_with_spaces_and_quotes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("it's a \"state\" $(folder)");
    let emu = common::Emu::start_in(&dir);
    let out = Command::new(BIN)
        .args(["emulator", "az-setup", "--state"])
        .arg(&dir)
        .args(["--principal", "ops"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8(out.stdout).unwrap();
    let config_dir = dir.join(emulator::AZ_CONFIG_DIR);
    let secret = std::fs::read_to_string(config_dir.join(emulator::SECRET_FILE)).unwrap();
    assert!(!lines.contains(&secret), "the secret is never printed");
    assert_eq!(
        std::fs::metadata(&config_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(config_dir.join(emulator::SECRET_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let bin_dir = tmp.path().join("bin");
    let log = tmp.path().join("az.log");
    stub_az(&bin_dir, &log);
    let status = Command::new("sh")
        .arg("-c")
        .arg("eval \"$1\"")
        .arg("sh")
        .arg(&lines)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env_remove("AZURE_CONFIG_DIR")
        .status()
        .unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<Vec<&str>> = log
        .split_terminator('\n')
        .map(|call| call.split_terminator('\0').collect())
        .collect();
    assert!(calls.len() >= 4, "{calls:?}");
    let env_of = |call: &[&str], key: &str| {
        call.iter()
            .find_map(|a| a.strip_prefix(&format!("{key}=")))
            .unwrap()
            .to_string()
    };
    for call in &calls {
        assert_eq!(env_of(call, "CFG"), config_dir.to_str().unwrap());
        assert_eq!(env_of(call, "CA"), dir.join(emulator::CA_FILE).to_str().unwrap());
    }
    let register = calls.iter().find(|c| c[..2] == ["cloud", "register"]).unwrap();
    let aad = register
        .iter()
        .position(|a| *a == "--endpoint-active-directory")
        .unwrap();
    assert_eq!(register[aad + 1], emu.url());
    let graph = register
        .iter()
        .position(|a| *a == "--endpoint-microsoft-graph-resource-id")
        .unwrap();
    assert_eq!(register[graph + 1], format!("{}/{TENANT}/graph/", emu.url()));
    // `--hsm-name localhost` reaches this emulator: az appends the cloud's mhsmDns suffix.
    let update = calls.iter().find(|c| c[..2] == ["cloud", "update"]).unwrap();
    let config = update[update.iter().position(|a| *a == "--cloud-config").unwrap() + 1];
    let port = emu.url().rsplit_once(':').unwrap().1.to_string();
    assert_eq!(
        serde_json::from_str::<Value>(config).unwrap(),
        serde_json::json!({"suffixes": {"mhsmDns": format!(":{port}")}})
    );
    let login = calls.last().unwrap();
    assert_eq!(login[0], "login");
    let arg = |name: &str| login[login.iter().position(|a| *a == name).unwrap() + 1];
    assert_eq!(arg("--password"), secret, "the login line reads the secret file");
    assert_eq!(arg("--tenant"), TENANT);
    // The client id it signs in with is the one registered, for that principal.
    let clients = std::fs::read_to_string(dir.join(emulator::CLIENTS_FILE)).unwrap();
    assert!(clients.contains(arg("--username")));
}

#[test]
fn az_setup_refuses_a_folder_no_emulator_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["emulator", "az-setup", "--state"])
        .arg(tmp.path())
        .args(["--principal", "ops"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no emulator is serving") && err.contains("emulator serve"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no line to eval on failure");
    assert!(!tmp.path().join(emulator::AZ_CONFIG_DIR).exists());
}

#[test]
fn az_setup_refuses_a_url_that_is_not_the_emulators_form() {
    let emu = common::start();
    for url in [
        "http://127.0.0.1:1",
        "https://login.microsoftonline.com:443",
        "https://127.0.0.1:1/x",
    ] {
        let out = Command::new(BIN)
            .args(["emulator", "az-setup", "--state"])
            .arg(emu.dir())
            .args(["--principal", "ops", "--url", url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is not an emulator URL"),
            "{url}"
        );
    }
}

/// `az keyvault role assignment create/list` ask Microsoft Graph (which az-setup
/// places on the emulator) for the assignees' names: an empty answer, which az
/// shows as no display name; before, an Entra-shaped 404 made az fail with a
/// TypeError after the assignment was made.
#[test]
fn the_graph_lookup_of_az_role_assignments_is_an_empty_list() {
    let emu = common::start();
    let path = format!("/{TENANT}/graph/v1.0/directoryObjects/getByIds");
    let mut resp = agent_for(emu.ca())
        .post(&format!("{}{path}", emu.url()))
        .content_type("application/json")
        .send(r#"{"ids":["7f6e5d4c-3b2a-4190-8877-665544332211"],"types":["servicePrincipal"]}"#)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["value"], serde_json::json!([]), "{v}");
    let r = common::raw(&emu, "GET", &path, None, None);
    assert_eq!(r.status, 405, "{}", r.body);
}

/// az 2.91's `keyvault backup start` / `restore start` send api-version
/// 7.5-preview.1: it reaches the backup route (which then wants an
/// activated instance) instead of being refused as an unknown version.
#[test]
fn the_api_version_of_az_backup_start_is_served() {
    let emu = common::start();
    let token = emu.token("ops", &[Role::Administrator]);
    let r = common::raw(
        &emu,
        "POST",
        "/backup?api-version=7.5-preview.1",
        Some(&token),
        Some(r#"{"storageResourceUri":"file:///nowhere","token":"x"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.body.contains("api-version"), "{}", r.body);
}
