//! What a full backup takes from the RBAC state: the role assignments and
//! definitions. Behind a trait so the store behind it can change (today the
//! roles recorded with each token, at scope `/`).

use super::format::{RoleAssignment, RoleDefinition};
use crate::emulator::auth::{Authenticator, Role};

pub(crate) trait RbacBackup {
    fn role_assignments(&self) -> Vec<RoleAssignment>;
    fn role_definitions(&self) -> Vec<RoleDefinition>;
}

impl RbacBackup for Authenticator {
    fn role_assignments(&self) -> Vec<RoleAssignment> {
        let mut out: Vec<RoleAssignment> = self
            .principal_roles()
            .into_iter()
            .flat_map(|(principal, roles)| {
                roles.into_iter().map(move |r| RoleAssignment {
                    principal_id: principal.clone(),
                    role_name: r.name().to_string(),
                    scope: "/".into(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.principal_id, &a.role_name).cmp(&(&b.principal_id, &b.role_name)));
        out.dedup();
        out
    }

    fn role_definitions(&self) -> Vec<RoleDefinition> {
        Role::ALL
            .iter()
            .map(|r| RoleDefinition {
                role_name: r.name().to_string(),
                data_actions: r.data_actions().iter().map(|a| a.name().to_string()).collect(),
            })
            .collect()
    }
}
