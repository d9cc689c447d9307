//! What a full backup takes from the RBAC state: the role assignments (at
//! their scopes) and the role definitions, built in and custom. Behind a
//! trait so the store behind it can change.

use super::format::{RoleAssignment, RoleDefinition};
use crate::emulator::rbac::Authenticator;

pub(crate) trait RbacBackup {
    fn role_assignments(&self) -> Vec<RoleAssignment>;
    fn role_definitions(&self) -> Vec<RoleDefinition>;
}

impl RbacBackup for Authenticator {
    fn role_assignments(&self) -> Vec<RoleAssignment> {
        let mut out: Vec<RoleAssignment> = self.rbac.read(|f| {
            f.assignments
                .iter()
                .map(|a| RoleAssignment {
                    principal_id: a.principal.clone(),
                    // A definition deleted under its assignment keeps its id as the name.
                    role_name: f
                        .definition(&a.role)
                        .map(|d| d.role_name())
                        .unwrap_or_else(|| a.role.clone()),
                    scope: a.scope.clone(),
                })
                .collect()
        });
        out.sort_by(|a, b| (&a.principal_id, &a.role_name, &a.scope).cmp(&(&b.principal_id, &b.role_name, &b.scope)));
        out.dedup();
        out
    }

    fn role_definitions(&self) -> Vec<RoleDefinition> {
        self.rbac.read(|f| {
            f.definitions()
                .iter()
                .map(|d| RoleDefinition {
                    role_name: d.role_name(),
                    data_actions: d.data_action_names(),
                })
                .collect()
        })
    }
}
