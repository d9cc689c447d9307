//! Role assignments and custom role definitions (`rbac.json`), and the
//! decision they make: action A on scope S is allowed iff some assignment
//! of the principal at S or at a scope above it names a role definition
//! whose `dataActions` cover A and whose `notDataActions` do not. As in
//! Azure RBAC, `notDataActions` only narrow their own role; another role
//! may still grant the action, and nothing denies.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::actions::{pattern_covers, DataAction};
use super::persist::Document;
use super::roles::Role;
use crate::crypto::rng::os_rng;

pub const RBAC_FILE: &str = "rbac.json";

/// The prefix of a role definition id as the service writes it.
pub const DEFINITION_PREFIX: &str = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The assignment's name, a GUID.
    pub name: String,
    /// `/`, `/keys` or `/keys/{name}`.
    pub scope: String,
    /// The role definition's name (its GUID).
    pub role: String,
    pub principal: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRole {
    pub name: String,
    pub role_name: String,
    pub description: String,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
    pub assignable_scopes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacFile {
    pub format: u32,
    pub assignments: Vec<Assignment>,
    pub custom_roles: Vec<CustomRole>,
}

impl Default for RbacFile {
    fn default() -> Self {
        RbacFile {
            format: 1,
            assignments: Vec::new(),
            custom_roles: Vec::new(),
        }
    }
}

impl Document for RbacFile {
    const WHAT: &'static str = "role file";
    fn format(&self) -> u32 {
        self.format
    }
}

/// A role definition, built in or custom.
#[derive(Clone, Copy)]
pub enum Definition<'a> {
    BuiltIn(Role),
    Custom(&'a CustomRole),
}

impl Definition<'_> {
    pub fn name(&self) -> &str {
        match self {
            Definition::BuiltIn(r) => r.id(),
            Definition::Custom(c) => &c.name,
        }
    }

    pub fn role_name(&self) -> String {
        match self {
            Definition::BuiltIn(r) => r.name(),
            Definition::Custom(c) => c.role_name.clone(),
        }
    }

    /// The `dataActions` as listed.
    pub fn data_action_names(&self) -> Vec<String> {
        match self {
            Definition::BuiltIn(r) => r.data_actions().iter().map(|a| a.name().to_string()).collect(),
            Definition::Custom(c) => c.data_actions.clone(),
        }
    }

    pub fn allows(&self, action: DataAction) -> bool {
        match self {
            Definition::BuiltIn(r) => r.grants(action),
            Definition::Custom(c) => {
                c.data_actions.iter().any(|p| pattern_covers(p, action))
                    && !c.not_data_actions.iter().any(|p| pattern_covers(p, action))
            }
        }
    }

    pub fn assignable_at(&self, scope: &str) -> bool {
        match self {
            Definition::BuiltIn(_) => true,
            Definition::Custom(c) => c.assignable_scopes.iter().any(|s| covers(s, scope)),
        }
    }

    /// The service's JSON shape of a role definition.
    pub fn to_json(&self) -> Value {
        let (description, kind, data, not_data, scopes) = match self {
            Definition::BuiltIn(r) => (
                r.description().to_string(),
                "AKVBuiltInRole",
                r.data_actions().iter().map(|a| a.name().to_string()).collect(),
                Vec::new(),
                vec!["/".to_string()],
            ),
            Definition::Custom(c) => (
                c.description.clone(),
                "CustomRole",
                c.data_actions.clone(),
                c.not_data_actions.clone(),
                c.assignable_scopes.clone(),
            ),
        };
        json!({
            "id": format!("{DEFINITION_PREFIX}{}", self.name()),
            "name": self.name(),
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.role_name(),
                "description": description,
                "type": kind,
                "permissions": [{
                    "actions": [],
                    "notActions": [],
                    "dataActions": data,
                    "notDataActions": not_data,
                }],
                "assignableScopes": scopes,
            }
        })
    }
}

/// Whether an assignment at `outer` applies to a request on `inner`:
/// the same scope or one above it (`/` above all, `/keys` above each key).
pub fn covers(outer: &str, inner: &str) -> bool {
    outer == "/" || outer == inner || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
}

impl Assignment {
    /// The service's JSON shape of a role assignment.
    pub fn to_json(&self) -> Value {
        let prefix = if self.scope == "/" { "" } else { self.scope.as_str() };
        json!({
            "id": format!("{prefix}/providers/Microsoft.Authorization/roleAssignments/{}", self.name),
            "name": self.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "scope": self.scope,
                "roleDefinitionId": format!("{DEFINITION_PREFIX}{}", self.role),
                "principalId": self.principal,
            }
        })
    }
}

impl RbacFile {
    /// The definition named `name` (a GUID), built in or custom.
    pub fn definition(&self, name: &str) -> Option<Definition<'_>> {
        if let Some(r) = Role::by_id(name) {
            return Some(Definition::BuiltIn(r));
        }
        self.custom_roles
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .map(Definition::Custom)
    }

    /// Every definition: the built-ins in the table's order, then the custom ones.
    pub fn definitions(&self) -> Vec<Definition<'_>> {
        let mut all: Vec<Definition<'_>> = Role::ALL.into_iter().map(Definition::BuiltIn).collect();
        all.extend(self.custom_roles.iter().map(Definition::Custom));
        all
    }

    /// The decision itself (see the module comment).
    pub fn allows(&self, principal: &str, action: DataAction, scope: &str) -> bool {
        self.assignments
            .iter()
            .filter(|a| a.principal == principal && covers(&a.scope, scope))
            .filter_map(|a| self.definition(&a.role))
            .any(|d| d.allows(action))
    }

    /// Assigns each of `roles` to `principal` at `/`, unless it already holds it there.
    pub fn grant_at_root(&mut self, principal: &str, roles: &[Role]) {
        for role in roles {
            let held = self
                .assignments
                .iter()
                .any(|a| a.principal == principal && a.scope == "/" && a.role == role.id());
            if !held {
                self.assignments.push(Assignment {
                    name: new_guid(),
                    scope: "/".into(),
                    role: role.id().into(),
                    principal: principal.into(),
                });
            }
        }
    }
}

/// A fresh random (version 4) GUID, as the SDKs name new assignments.
pub fn new_guid() -> String {
    let mut b = [0u8; 16];
    rand_core::Rng::fill_bytes(&mut os_rng(), &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Whether `s` is a GUID in its 8-4-4-4-12 hex form.
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(principal: &str, scope: &str, role: &str) -> Assignment {
        Assignment {
            name: new_guid(),
            scope: scope.into(),
            role: role.into(),
            principal: principal.into(),
        }
    }

    #[test]
    fn scopes_cover_themselves_and_below() {
        assert!(covers("/", "/"));
        assert!(covers("/", "/keys/a"));
        assert!(covers("/keys", "/keys"));
        assert!(covers("/keys", "/keys/a"));
        assert!(covers("/keys/a", "/keys/a"));
        assert!(!covers("/keys/a", "/keys/ab"));
        assert!(!covers("/keys/a", "/keys"));
        assert!(!covers("/keys", "/"));
        assert!(!covers("/keys/a", "/"));
    }

    #[test]
    fn a_custom_role_grants_its_actions_minus_its_not_actions() {
        let mut file = RbacFile::default();
        let custom = CustomRole {
            name: new_guid(),
            role_name: "key user, no decrypt".into(),
            description: String::new(),
            data_actions: vec!["Microsoft.KeyVault/managedHsm/keys/*".into()],
            not_data_actions: vec![DataAction::KeyDecrypt.name().into()],
            assignable_scopes: vec!["/keys".into()],
        };
        file.assignments.push(assign("p", "/keys", &custom.name));
        file.custom_roles.push(custom);
        assert!(file.allows("p", DataAction::KeyEncrypt, "/keys/a"));
        assert!(file.allows("p", DataAction::DeletedKeyPurge, "/keys/a"));
        assert!(!file.allows("p", DataAction::KeyDecrypt, "/keys/a"));
        assert!(!file.allows("p", DataAction::Rng, "/"));
        assert!(!file.allows("q", DataAction::KeyEncrypt, "/keys/a"));
        // Another role of the same principal may still grant what the first excludes.
        file.assignments.push(assign("p", "/keys/a", Role::CryptoUser.id()));
        assert!(file.allows("p", DataAction::KeyDecrypt, "/keys/a"));
        assert!(!file.allows("p", DataAction::KeyDecrypt, "/keys/b"));
    }

    #[test]
    fn an_assignment_to_a_vanished_definition_grants_nothing() {
        let mut file = RbacFile::default();
        file.assignments.push(assign("p", "/", &new_guid()));
        assert!(DataAction::ALL.iter().all(|a| !file.allows("p", *a, "/")));
    }

    #[test]
    fn root_grants_are_not_repeated() {
        let mut file = RbacFile::default();
        file.grant_at_root("p", &[Role::CryptoUser, Role::Administrator]);
        file.grant_at_root("p", &[Role::CryptoUser]);
        assert_eq!(file.assignments.len(), 2);
        assert!(file.assignments.iter().all(|a| is_guid(&a.name) && a.scope == "/"));
    }

    #[test]
    fn guids() {
        assert!(is_guid(&new_guid()));
        assert!(is_guid(Role::Backup.id()));
        assert!(!is_guid("a290e904-7015-4bba-90c8-60543313cdb"));
        assert!(!is_guid("a290e904x7015-4bba-90c8-60543313cdb4"));
        assert!(!is_guid("g290e904-7015-4bba-90c8-60543313cdb4"));
        assert_ne!(new_guid(), new_guid());
    }
}
