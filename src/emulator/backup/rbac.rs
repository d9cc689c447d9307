//! What a full backup takes from the RBAC state and gives back: the role
//! assignments (at their scopes) and the custom role definitions, whole.

use crate::emulator::error::ApiError;
use crate::emulator::rbac::assignments::RbacFile;
use crate::emulator::rbac::Authenticator;

/// The instance's assignments and custom roles as they stand.
pub(crate) fn export(auth: &Authenticator) -> RbacFile {
    auth.rbac.read(|f| f.clone())
}

/// Brings a backup's assignments and custom roles back. The recovered
/// instance keeps its own assignments (whoever runs the restore must not
/// lock themselves out); the backup's are added beside them, and a custom
/// role of the same id is replaced by the backup's.
pub(crate) fn import(auth: &Authenticator, backup: RbacFile) -> Result<(), ApiError> {
    let merged = auth
        .rbac
        .update(|f| {
            for role in backup.custom_roles {
                f.custom_roles.retain(|r| r.name != role.name);
                f.custom_roles.push(role);
            }
            for a in backup.assignments {
                let same = |b: &crate::emulator::rbac::assignments::Assignment| {
                    b.name == a.name || (b.principal == a.principal && b.role == a.role && b.scope == a.scope)
                };
                if !f.assignments.iter().any(same) {
                    f.assignments.push(a);
                }
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(ApiError::internal)?;
    let Ok(()) = merged;
    Ok(())
}
