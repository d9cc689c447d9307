//! Keys of the emulated Managed HSM over HTTPS, as a client sees them:
//! the life cycle (create, versions with nextLink paging, update, delete,
//! recover, purge protection), HSM-side cryptography with the private key,
//! and the enforcement of disabled keys and key_ops.

use crate::common;

use hsm_ceremony::emulator::{self, Role};
use serde_json::{json, Value};

use common::{custodians, raw, raw_at, start, Emu};

fn activated() -> (Emu, String) {
    let emu = start();
    let certs: Vec<_> = custodians()[0..3].iter().map(|c| c.cert.clone()).collect();
    emu.client(&[Role::Administrator]).download(&certs, 2).unwrap();
    let token = emu.token("app", &[Role::CryptoUser, Role::CryptoOfficer]);
    (emu, token)
}

fn call(emu: &Emu, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let body = body.map(|b| b.to_string());
    let r = raw(
        emu,
        method,
        &format!("{path}{sep}api-version=7.5"),
        Some(token),
        body.as_deref(),
    );
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {}", r.body))
    };
    (r.status, v)
}

fn b64u(bytes: &[u8]) -> String {
    crate::util::b64u(bytes)
}

fn unb64u(text: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.as_str().unwrap())
        .unwrap()
}

#[test]
fn key_life_cycle_with_paging_soft_delete_and_purge_protection() {
    let (emu, t) = activated();
    for i in 0..5 {
        let (s, b) = call(
            &emu,
            &t,
            "POST",
            &format!("/keys/aes{i}/create"),
            Some(json!({"kty": "oct-HSM", "key_size": 256})),
        );
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["key"]["kty"], "oct-HSM");
        assert!(b["key"].get("k").is_none(), "the secret never leaves");
    }
    // A second version on an existing name, and EC keys on every curve.
    call(
        &emu,
        &t,
        "POST",
        "/keys/aes0/create",
        Some(json!({"kty": "oct-HSM", "key_size": 128})),
    );
    for crv in ["P-256", "P-384", "P-521", "P-256K"] {
        let (s, b) = call(
            &emu,
            &t,
            "POST",
            "/keys/ec/create",
            Some(json!({"kty": "EC-HSM", "crv": crv})),
        );
        assert_eq!((s, b["key"]["crv"].as_str()), (200, Some(crv)), "{b}");
    }
    // Paging: follow nextLink until it is null; every key once.
    let mut names = Vec::new();
    let mut next = format!("{}/keys?api-version=7.5&maxresults=2", emu.url());
    loop {
        let path = next.strip_prefix(emu.url()).unwrap().to_string();
        let r = raw(&emu, "GET", &path, Some(&t), None);
        let page: Value = serde_json::from_str(&r.body).unwrap();
        assert!(page["value"].as_array().unwrap().len() <= 2);
        names.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["kid"].as_str().unwrap().to_string()),
        );
        match page["nextLink"].as_str() {
            Some(n) => next = n.to_string(),
            None => break,
        }
    }
    let want: Vec<String> = ["aes0", "aes1", "aes2", "aes3", "aes4", "ec"]
        .iter()
        .map(|n| format!("{}/keys/{n}", emu.url()))
        .collect();
    assert_eq!(names, want);
    let (_, versions) = call(&emu, &t, "GET", "/keys/ec/versions", None);
    assert_eq!(versions["value"].as_array().unwrap().len(), 4);
    assert!(versions["nextLink"].is_null());

    // Update: tags and enabled; the latest version changes, `updated` is set.
    let (s, b) = call(
        &emu,
        &t,
        "PATCH",
        "/keys/aes1/",
        Some(json!({"tags": {"app": "billing"}, "attributes": {"enabled": false}})),
    );
    assert_eq!(
        (s, &b["tags"]["app"], &b["attributes"]["enabled"]),
        (200, &json!("billing"), &json!(false)),
        "{b}"
    );

    // Soft delete, the name is held, purge is refused under protection, recover.
    let (s, d) = call(&emu, &t, "DELETE", "/keys/aes2", None);
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["recoveryId"], format!("{}/deletedkeys/aes2", emu.url()));
    assert!(d["scheduledPurgeDate"].as_u64().unwrap() > d["deletedDate"].as_u64().unwrap());
    assert_eq!(d["attributes"]["recoveryLevel"], "Recoverable");
    assert_eq!(call(&emu, &t, "GET", "/keys/aes2", None).0, 404);
    let (s, b) = call(&emu, &t, "POST", "/keys/aes2/create", Some(json!({"kty": "oct-HSM"})));
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("Conflict")), "{b}");
    let (_, listed) = call(&emu, &t, "GET", "/deletedkeys", None);
    assert_eq!(listed["value"][0]["recoveryId"], d["recoveryId"]);
    let (s, b) = call(&emu, &t, "DELETE", "/deletedkeys/aes2", None);
    assert_eq!(s, 403, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("purge protection"));
    let (s, r) = call(&emu, &t, "POST", "/deletedkeys/aes2/recover", None);
    assert_eq!((s, &r["key"]["kid"]), (200, &d["key"]["kid"]), "{r}");
    assert_eq!(call(&emu, &t, "GET", "/deletedkeys/aes2", None).0, 404);

    // Rotation: a new version of the same type; the policy round-trips.
    let policy = json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
                        "attributes": {"expiryTime": "P90D"}});
    let (s, p) = call(&emu, &t, "PUT", "/keys/ec/rotationpolicy", Some(policy));
    assert_eq!((s, &p["attributes"]["expiryTime"]), (200, &json!("P90D")), "{p}");
    let (s, rotated) = call(&emu, &t, "POST", "/keys/ec/rotate", None);
    assert_eq!((s, &rotated["key"]["crv"]), (200, &json!("P-256K")), "{rotated}");
    assert!(
        rotated["attributes"]["exp"].as_u64().is_some(),
        "exp from the policy's expiryTime"
    );

    // Random bytes.
    let (s, r) = call(&emu, &t, "POST", "/rng", Some(json!({"count": 128})));
    assert_eq!((s, unb64u(&r["value"]).len()), (200, 128));
    assert_eq!(call(&emu, &t, "POST", "/rng", Some(json!({"count": 129}))).0, 400);
}

#[test]
fn the_hsm_does_the_private_key_half_and_enforces_state_and_key_ops() {
    let (emu, t) = activated();
    // RSA: encrypted here with the public key, decrypted by the HSM.
    let (_, k) = call(
        &emu,
        &t,
        "POST",
        "/keys/rsa/create",
        Some(json!({"kty": "RSA-HSM", "key_size": 2048})),
    );
    let kid = k["key"]["kid"]
        .as_str()
        .unwrap()
        .strip_prefix(emu.url())
        .unwrap()
        .to_string();
    let n = rsa::BoxedUint::from_be_slice(&unb64u(&k["key"]["n"]), 2048).unwrap();
    let e = rsa::BoxedUint::from_be_slice(&unb64u(&k["key"]["e"]), 32).unwrap();
    let public = rsa::PublicKey::new(n, e).unwrap();
    let dek = [42u8; 32];
    let wrapped = public
        .oaep_encrypt_with_rng::<sha2::Sha256, _>(&mut common::rng(1), &dek)
        .unwrap();
    let (s, u) = call(
        &emu,
        &t,
        "POST",
        &format!("{kid}/unwrapkey"),
        Some(json!({"alg": "RSA-OAEP-256", "value": b64u(&wrapped)})),
    );
    assert_eq!((s, unb64u(&u["value"])), (200, dek.to_vec()), "{u}");
    // Signed by the HSM, verified here and by the HSM.
    let digest = crate::util::sha256(b"firmware image");
    let (_, sig) = call(
        &emu,
        &t,
        "POST",
        &format!("{kid}/sign"),
        Some(json!({"alg": "PS256", "value": b64u(&digest)})),
    );
    let sig = unb64u(&sig["value"]);
    public.pss_verify_prehash::<sha2::Sha256>(&digest, &sig).unwrap();
    let verify = |d: &[u8]| {
        call(
            &emu,
            &t,
            "POST",
            &format!("{kid}/verify"),
            Some(json!({"alg": "PS256", "digest": b64u(d), "value": b64u(&sig)})),
        )
        .1["value"]
            .clone()
    };
    assert_eq!(verify(&digest), json!(true));
    assert_eq!(verify(&crate::util::sha256(b"other")), json!(false));

    // AES: GCM with aad, and key wrap.
    call(
        &emu,
        &t,
        "POST",
        "/keys/aes/create",
        Some(json!({"kty": "oct-HSM", "key_size": 256})),
    );
    let (s, c) = call(
        &emu,
        &t,
        "POST",
        "/keys/aes//encrypt",
        Some(json!({"alg": "A256GCM", "value": b64u(b"secret"), "aad": b64u(b"ctx")})),
    );
    assert_eq!(s, 200, "{c}");
    let (s, p) = call(
        &emu,
        &t,
        "POST",
        "/keys/aes//decrypt",
        Some(json!({"alg": "A256GCM", "value": c["value"], "iv": c["iv"], "tag": c["tag"], "aad": b64u(b"ctx")})),
    );
    assert_eq!((s, unb64u(&p["value"])), (200, b"secret".to_vec()), "{p}");
    let (_, w) = call(
        &emu,
        &t,
        "POST",
        "/keys/aes//wrapkey",
        Some(json!({"alg": "A256KW", "value": b64u(&dek)})),
    );
    let (_, u) = call(
        &emu,
        &t,
        "POST",
        "/keys/aes//unwrapkey",
        Some(json!({"alg": "A256KW", "value": w["value"]})),
    );
    assert_eq!(unb64u(&u["value"]), dek.to_vec());

    // Disabled: the private-key operations are refused with the service's codes.
    call(
        &emu,
        &t,
        "PATCH",
        "/keys/rsa/",
        Some(json!({"attributes": {"enabled": false}})),
    );
    let (s, b) = call(
        &emu,
        &t,
        "POST",
        &format!("{kid}/sign"),
        Some(json!({"alg": "PS256", "value": b64u(&digest)})),
    );
    assert_eq!(
        (s, &b["error"]["innererror"]["code"]),
        (403, &json!("KeyDisabled")),
        "{b}"
    );
    assert_eq!(
        b["error"]["message"],
        "Operation sign is not allowed on a disabled key."
    );
    assert_eq!(verify(&digest), json!(true), "verify stays allowed on a disabled key");
    // key_ops: an operation the key does not list is refused.
    call(
        &emu,
        &t,
        "PATCH",
        "/keys/rsa/",
        Some(json!({"key_ops": ["verify"], "attributes": {"enabled": true}})),
    );
    let (s, b) = call(
        &emu,
        &t,
        "POST",
        &format!("{kid}/unwrapkey"),
        Some(json!({"alg": "RSA-OAEP-256", "value": b64u(&wrapped)})),
    );
    assert_eq!(
        (s, &b["error"]["innererror"]["code"]),
        (403, &json!("KeyOperationForbidden")),
        "{b}"
    );
    // A Crypto Officer alone does not use keys.
    let officer = emu.token("officer", &[Role::CryptoOfficer]);
    assert_eq!(
        call(
            &emu,
            &officer,
            "POST",
            "/keys/aes//wrapkey",
            Some(json!({"alg": "A256KW", "value": b64u(&dek)}))
        )
        .0,
        403
    );
}

#[test]
fn purge_protection_off_is_an_instance_setting_chosen_before_activation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("instance");
    let mut config = emulator::Config::new(&dir);
    config.purge_protection = Some(false);
    let running = emulator::spawn(config).unwrap();
    let admin = emulator::issue_token(&dir, "admin", &[Role::Administrator]).unwrap();
    let client =
        hsm_ceremony::instance::InstanceClient::new(running.url(), admin, Some(running.ca_pem_path().unwrap()))
            .unwrap();
    let certs: Vec<_> = custodians()[0..3].iter().map(|c| c.cert.clone()).collect();
    client.download(&certs, 2).unwrap();
    let t = emulator::issue_token(&dir, "app", &[Role::CryptoUser, Role::CryptoOfficer])
        .unwrap()
        .reveal();
    let ca = running.ca_pem_path().unwrap().to_path_buf();
    let go =
        |m: &str, p: &str, b: Option<&str>| raw_at(running.url(), &ca, m, &format!("{p}?api-version=7.5"), Some(&t), b);
    let created = go("POST", "/keys/k/create", Some(r#"{"kty":"EC-HSM"}"#));
    assert!(created.body.contains("Recoverable+Purgeable"), "{}", created.body);
    go("DELETE", "/keys/k", None);
    assert_eq!(go("DELETE", "/deletedkeys/k", None).status, 204);
    assert_eq!(go("GET", "/deletedkeys/k", None).status, 404);
    drop(running);
    // Once activated, protection cannot be lifted; it can be turned on.
    let mut again = emulator::Config::new(&dir);
    again.purge_protection = Some(true);
    drop(emulator::spawn(again).unwrap());
    let mut off = emulator::Config::new(&dir);
    off.purge_protection = Some(false);
    let err = emulator::spawn(off).err().expect("refused");
    assert!(err.to_string().contains("cannot be turned off"), "{err}");
}
