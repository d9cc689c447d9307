//! The JSON the key routes answer with, in the data-plane API's shapes:
//! `KeyBundle` (`key` as a public JSON Web Key, `attributes`, `tags`),
//! `KeyItem` lists with `nextLink`, `DeletedKeyBundle`/`DeletedKeyItem`
//! (`recoveryId`, `deletedDate`, `scheduledPurgeDate`) and the rotation policy.

use serde_json::{json, Map, Value};

use super::crypto::{Material, Public};
use super::store::{DeletedKey, KeyVersion, RotationPolicy};
use crate::crypto::b64::b64u;

/// Soft-delete retention: the Managed HSM default (and maximum) of 90 days.
pub const RECOVERABLE_DAYS: u64 = 90;

/// What every answer needs to know about the instance it comes from.
pub struct View<'a> {
    pub origin: &'a str,
    pub purge_protection: bool,
}

impl View<'_> {
    pub fn recovery_level(&self) -> &'static str {
        if self.purge_protection {
            "Recoverable"
        } else {
            "Recoverable+Purgeable"
        }
    }
    pub fn kid(&self, name: &str, version: &str) -> String {
        format!("{}/keys/{name}/{version}", self.origin)
    }
}

pub fn attributes(view: &View, v: &KeyVersion) -> Value {
    let mut a = json!({
        "enabled": v.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": view.recovery_level(),
        "recoverableDays": RECOVERABLE_DAYS,
        "exportable": false,
    });
    if let Some(nbf) = v.nbf {
        a["nbf"] = json!(nbf);
    }
    if let Some(exp) = v.exp {
        a["exp"] = json!(exp);
    }
    a
}

pub fn jwk(kid: String, v: &KeyVersion, material: &Material) -> Value {
    let mut key = Map::new();
    key.insert("kid".into(), json!(kid));
    key.insert("kty".into(), json!(v.kty.name()));
    key.insert("key_ops".into(), json!(v.key_ops));
    match material.public() {
        Public::Rsa { n, e } => {
            key.insert("n".into(), json!(b64u(&n)));
            key.insert("e".into(), json!(b64u(&e)));
        }
        Public::Ec { crv, x, y } => {
            key.insert("crv".into(), json!(crv.name()));
            key.insert("x".into(), json!(b64u(&x)));
            key.insert("y".into(), json!(b64u(&y)));
        }
        Public::Oct => {}
    }
    Value::Object(key)
}

fn with_tags(mut out: Value, v: &KeyVersion) -> Value {
    if !v.tags.is_empty() {
        out["tags"] = json!(v.tags);
    }
    out
}

pub fn key_bundle(view: &View, name: &str, v: &KeyVersion, material: &Material) -> Value {
    with_tags(
        json!({
            "key": jwk(view.kid(name, &v.version), v, material),
            "attributes": attributes(view, v),
        }),
        v,
    )
}

/// A `KeyItem`: the key's id without a version when `versioned` is false (list of keys).
pub fn key_item(view: &View, name: &str, v: &KeyVersion, versioned: bool) -> Value {
    let kid = if versioned {
        view.kid(name, &v.version)
    } else {
        format!("{}/keys/{name}", view.origin)
    };
    with_tags(json!({"kid": kid, "attributes": attributes(view, v)}), v)
}

fn deleted_fields(view: &View, name: &str, d: &DeletedKey, mut out: Value) -> Value {
    out["recoveryId"] = json!(format!("{}/deletedkeys/{name}", view.origin));
    out["deletedDate"] = json!(d.deleted);
    out["scheduledPurgeDate"] = json!(d.scheduled_purge);
    out
}

pub fn deleted_bundle(view: &View, name: &str, d: &DeletedKey, v: &KeyVersion, material: &Material) -> Value {
    deleted_fields(view, name, d, key_bundle(view, name, v, material))
}

pub fn deleted_item(view: &View, name: &str, d: &DeletedKey, v: &KeyVersion) -> Value {
    deleted_fields(view, name, d, key_item(view, name, v, false))
}

/// `{"value": [...], "nextLink": ...}`; `nextLink` is null on the last page, as the service sends it.
pub fn page(items: Vec<Value>, next: Option<String>) -> Value {
    json!({"value": items, "nextLink": next})
}

pub fn rotation_policy(view: &View, name: &str, p: Option<&RotationPolicy>) -> Value {
    let id = format!("{}/keys/{name}/rotationpolicy", view.origin);
    let Some(p) = p else {
        return json!({"id": id, "lifetimeActions": [], "attributes": {}});
    };
    let actions: Vec<Value> = p
        .actions
        .iter()
        .map(|a| json!({"trigger": {a.trigger.as_str(): a.duration}, "action": {"type": a.action}}))
        .collect();
    let mut attributes = json!({"created": p.created, "updated": p.updated});
    if let Some(e) = &p.expiry_time {
        attributes["expiryTime"] = json!(e);
    }
    json!({"id": id, "lifetimeActions": actions, "attributes": attributes})
}
