//! Full backup and restore (`/backup`, `/prebackup`, `/restore`,
//! `/prerestore`, `/keys/{name}/restore` and their `/{jobId}/pending`
//! status), as the Managed HSM data plane serves them: a 202 with the
//! operation body, `Azure-AsyncOperation` naming the status URL and
//! `Retry-After`; the work runs in the background; one operation at a time.
//!
//! A backup is one folder `mhsm-{name}-{yyyyMMddHHmmss}` in the container,
//! holding one blob sealed under the security domain ([`format`]): every
//! key with all its versions, attributes and tags (the key store's whole
//! state), and the role assignments and definitions.

pub(crate) mod format;
mod jobs;
mod rbac;

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::ApiError;
use super::handle::App;
use super::rbac::DataAction;
use super::storage::{Container, SasParameter, BACKUP_BLOB};
use jobs::Kind;
pub(crate) use jobs::{Jobs, Polled};

/// The backup and restore request lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BackupRoute {
    Backup,
    PreBackup,
    BackupPending(String),
    Restore,
    PreRestore,
    RestorePending(String),
    SelectiveRestore(String),
}

/// Routes `segments`, or `None` when the path is not one of these.
pub(crate) fn route(method: &Method, segments: &[&str]) -> Option<Result<BackupRoute, ApiError>> {
    use BackupRoute::*;
    let (route, wanted) = match segments {
        ["backup"] => (Backup, Method::POST),
        ["prebackup"] => (PreBackup, Method::POST),
        ["backup", id, "pending"] => (BackupPending(id.to_string()), Method::GET),
        ["restore"] => (Restore, Method::PUT),
        ["prerestore"] => (PreRestore, Method::PUT),
        ["restore", id, "pending"] => (RestorePending(id.to_string()), Method::GET),
        // Only PUT: GET /keys/{name}/{version} is a key read, whatever the version says.
        ["keys", name, "restore"] if method == Method::PUT => (SelectiveRestore(name.to_string()), Method::PUT),
        _ => return None,
    };
    if *method == wanted {
        Some(Ok(route))
    } else {
        Some(Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "MethodNotAllowed",
            message: format!("{method} /{} is not supported; use {wanted}", segments.join("/")),
        }))
    }
}

impl BackupRoute {
    pub fn action(&self) -> DataAction {
        match self {
            BackupRoute::Backup | BackupRoute::PreBackup => DataAction::BackupStart,
            BackupRoute::BackupPending(_) => DataAction::BackupStatus,
            BackupRoute::Restore | BackupRoute::PreRestore | BackupRoute::SelectiveRestore(_) => {
                DataAction::RestoreStart
            }
            BackupRoute::RestorePending(_) => DataAction::RestoreStatus,
        }
    }

    pub fn takes_body(&self) -> bool {
        !matches!(self, BackupRoute::BackupPending(_) | BackupRoute::RestorePending(_))
    }

    /// Starting needs an activated instance; a status query does not (a job
    /// exists only on one, and a refusal there would hide its outcome).
    pub fn needs_security_domain(&self) -> bool {
        self.takes_body()
    }

    pub fn check_path(&self) -> Result<(), ApiError> {
        match self {
            BackupRoute::BackupPending(id) | BackupRoute::RestorePending(id) => jobs::check_id(id),
            BackupRoute::SelectiveRestore(name) => super::keys::check_name(name),
            _ => Ok(()),
        }
    }
}

/// A parsed backup or restore request.
pub(crate) enum BackupOp {
    Backup {
        container: Container,
        pre: bool,
    },
    Restore {
        container: Container,
        folder: String,
        pre: bool,
        key: Option<String>,
    },
    Status {
        job_id: String,
        restore: bool,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SasBody {
    storage_resource_uri: String,
    token: Option<String>,
    use_managed_identity: Option<bool>,
}

impl SasBody {
    fn into_param(self) -> SasParameter {
        SasParameter {
            storage_resource_uri: self.storage_resource_uri,
            token: self.token.map(Zeroizing::new),
            use_managed_identity: self.use_managed_identity.unwrap_or(false),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RestoreBody {
    sas_token_parameters: SasBody,
    folder_to_restore: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SelectiveBody {
    sas_token_parameters: SasBody,
    folder: String,
}

fn json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    crate::format::json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid {what}: {e}")))
}

/// The route and its body to the operation; the storage target is checked here, before any job starts.
pub(crate) fn parse(route: BackupRoute, body: &[u8]) -> Result<BackupOp, ApiError> {
    route.check_path()?;
    const SAS: &str = "SASTokenParameter ({\"storageResourceUri\": ..., \"token\": ...})";
    const RESTORE: &str = "restore request ({\"sasTokenParameters\": {...}, \"folderToRestore\": ...})";
    Ok(match route {
        BackupRoute::Backup | BackupRoute::PreBackup => {
            let pre = route == BackupRoute::PreBackup;
            let container = json::<SasBody>(body, SAS)?.into_param().container()?;
            BackupOp::Backup { container, pre }
        }
        BackupRoute::Restore | BackupRoute::PreRestore => {
            let pre = route == BackupRoute::PreRestore;
            let b: RestoreBody = json(body, RESTORE)?;
            let (container, folder) = b
                .sas_token_parameters
                .into_param()
                .container_and_folder(&b.folder_to_restore)?;
            BackupOp::Restore {
                container,
                folder,
                pre,
                key: None,
            }
        }
        BackupRoute::SelectiveRestore(name) => {
            let b: SelectiveBody = json(
                body,
                "selective key restore request ({\"sasTokenParameters\": {...}, \"folder\": ...})",
            )?;
            let (container, folder) = b.sas_token_parameters.into_param().container_and_folder(&b.folder)?;
            BackupOp::Restore {
                container,
                folder,
                pre: false,
                key: Some(name),
            }
        }
        BackupRoute::BackupPending(job_id) => BackupOp::Status { job_id, restore: false },
        BackupRoute::RestorePending(job_id) => BackupOp::Status { job_id, restore: true },
    })
}

/// `mhsm-{name}-{yyyyMMddHHmmssff}` (UTC, `ff` hundredths of a second), as
/// the service names a backup's folder (its answers show e.g.
/// `mhsm-contoso-2022110918313775` for a job started at 18:31:37.75).
/// `centis` counts hundredths of a second since the epoch.
fn folder_name(centis: i128) -> String {
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(centis * 10_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "mhsm-emulator-{:04}{:02}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond() / 10
    )
}

/// The 202 a started operation answers with.
pub(crate) struct Started {
    pub body: String,
    pub status_path: String,
}

/// What a backup operation answers.
pub(crate) enum Answer {
    /// A job started: 202.
    Started(Started),
    /// A job's status: 200.
    Status(Polled),
}

/// Runs one backup operation: starts a job (answered at once) or reports one.
pub(crate) fn execute(app: &Arc<App>, op: BackupOp) -> Result<Answer, ApiError> {
    match op {
        BackupOp::Status { job_id, restore } => app.jobs.status(&job_id, restore).map(Answer::Status),
        BackupOp::Backup { container, pre } => {
            let (sealing, keys) = {
                let state = app.state();
                let active = super::handle::active(&state.instance)?;
                (active.sealing, state.keys.export())
            };
            let rbac_state = rbac::export(&app.auth);
            let folder = folder_name(app.jobs.folder_stamp());
            let folder_url = if pre {
                None
            } else {
                Some(format!("{}/{folder}", container.url()))
            };
            let job = app.jobs.start(Kind::Backup, folder_url)?;
            // The 202 shows the job as started: a fast job must not answer its own end.
            let started = app.jobs.started(&job)?;
            let a = app.clone();
            let id = job.clone();
            tokio::task::spawn_blocking(move || {
                let outcome = (|| {
                    if pre {
                        return container.check_access();
                    }
                    let contents = format::Contents {
                        format: 1,
                        created: super::now_unix(),
                        keys: super::SecretText::new(String::from_utf8(keys.to_vec()).map_err(ApiError::internal)?),
                        rbac: rbac_state,
                    };
                    let blob = format::seal(&mut crate::crypto::rng::os_rng(), &contents, sealing.expose())?;
                    if container.folder_exists(&folder)? {
                        return Err(ApiError::conflict(format!(
                            "the folder {folder} already exists in {}: something else wrote it; start the backup again",
                            container.url()
                        )));
                    }
                    container.put(&folder, BACKUP_BLOB, &blob)
                })();
                a.jobs.finish(&id, outcome);
            });
            Ok(Answer::Started(started))
        }
        BackupOp::Restore {
            container,
            folder,
            pre,
            key,
        } => {
            let sealing = super::handle::active(&app.instance())?.sealing;
            let kind = if key.is_some() {
                Kind::SelectiveRestore
            } else {
                Kind::Restore
            };
            let job = app.jobs.start(kind, None)?;
            // The 202 shows the job as started: a fast job must not answer its own end.
            let started = app.jobs.started(&job)?;
            let a = app.clone();
            let id = job.clone();
            tokio::task::spawn_blocking(move || {
                let outcome = (|| {
                    let blob = container.get(&folder, BACKUP_BLOB)?;
                    let contents = format::open(&blob, sealing.expose())?;
                    if pre {
                        return Ok(());
                    }
                    let mut state = a.state();
                    // The instance's domain could have changed while the blob was fetched.
                    let active = super::handle::active(&state.instance)?;
                    if active.sealing.expose() != sealing.expose() {
                        return Err(ApiError::conflict(
                            "the instance's security domain changed during the restore",
                        ));
                    }
                    let keys = contents.keys.expose().as_bytes();
                    match &key {
                        Some(name) => state.keys.import_key(keys, name, active.persist),
                        None => {
                            state.keys.import(keys, active.persist)?;
                            // Role assignments are no secret: they persist like any others.
                            rbac::import(&a.auth, contents.rbac)
                        }
                    }
                })();
                a.jobs.finish(&id, outcome);
            });
            Ok(Answer::Started(started))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_of(method: Method, path: &str) -> Option<Result<BackupRoute, u16>> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        route(&method, &segments).map(|r| r.map_err(|e| e.status.as_u16()))
    }

    #[test]
    fn routes_methods_and_actions_are_the_services() {
        use BackupRoute::*;
        let table = [
            (Method::POST, "/backup", Backup, "backup/start/action"),
            (Method::POST, "/prebackup", PreBackup, "backup/start/action"),
            (
                Method::GET,
                "/backup/abc/pending",
                BackupPending("abc".into()),
                "backup/status/action",
            ),
            (Method::PUT, "/restore", Restore, "restore/start/action"),
            (Method::PUT, "/prerestore", PreRestore, "restore/start/action"),
            (
                Method::GET,
                "/restore/abc/pending",
                RestorePending("abc".into()),
                "restore/status/action",
            ),
            (
                Method::PUT,
                "/keys/k1/restore",
                SelectiveRestore("k1".into()),
                "restore/start/action",
            ),
        ];
        for (m, path, want, action) in table {
            let got = route_of(m.clone(), path).unwrap().unwrap();
            assert_eq!(got, want, "{m} {path}");
            assert_eq!(got.action().name(), format!("Microsoft.KeyVault/managedHsm/{action}"));
        }
        assert_eq!(route_of(Method::GET, "/backup"), Some(Err(405)));
        assert_eq!(route_of(Method::POST, "/restore"), Some(Err(405)));
        assert_eq!(route_of(Method::GET, "/keys/k1/restore"), None, "a key version read");
        assert_eq!(route_of(Method::GET, "/keys/k1"), None);
    }

    #[test]
    fn bodies_are_refused_precisely() {
        let refused = [
            (BackupRoute::Backup, "", "not a valid SASTokenParameter"),
            (BackupRoute::Backup, r#"{"token":"sig=x"}"#, "storageResourceUri"),
            (
                BackupRoute::Backup,
                r#"{"storageResourceUri":"https://a.blob.core.windows.net/cont","token":"sig=x","evil":1}"#,
                "evil",
            ),
            (
                BackupRoute::Backup,
                r#"{"storageResourceUri":"https://a.blob.core.windows.net/cont","useManagedIdentity":true}"#,
                "no managed identity",
            ),
            (
                BackupRoute::Restore,
                r#"{"sasTokenParameters":{"storageResourceUri":"https://a.blob.core.windows.net/cont","token":"sig=x"}}"#,
                "folderToRestore",
            ),
            (
                BackupRoute::Restore,
                r#"{"sasTokenParameters":{"storageResourceUri":"https://a.blob.core.windows.net/cont","token":"sig=x"},"folderToRestore":".x"}"#,
                "not a backup folder name",
            ),
            (
                BackupRoute::Restore,
                r#"{"sasTokenParameters":{"storageResourceUri":"https://a.blob.core.windows.net/cont","token":"sig=x"},"folderToRestore":"../x"}"#,
                "'..' segment",
            ),
            (
                BackupRoute::SelectiveRestore("k".into()),
                r#"{"sasTokenParameters":{"storageResourceUri":"https://a.blob.core.windows.net/cont","token":"sig=x"},"folderToRestore":"f"}"#,
                "folderToRestore",
            ),
            (
                BackupRoute::SelectiveRestore("bad!".into()),
                "{}",
                "not a valid key name",
            ),
            (BackupRoute::BackupPending("x/../y".into()), "", "job id"),
        ];
        for (route, body, why) in refused {
            let e = match parse(route.clone(), body.as_bytes()) {
                Ok(_) => panic!("{route:?} {body} accepted"),
                Err(e) => e,
            };
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{route:?} {body}");
            assert!(e.message.contains(why), "{route:?} {body}: {}", e.message);
        }
        let ok = parse(
            BackupRoute::Restore,
            br#"{"sasTokenParameters":{"storageResourceUri":"file:///tmp"},"folderToRestore":"mhsm-emulator-20250101000000"}"#,
        );
        assert!(matches!(ok, Ok(BackupOp::Restore { ref folder, .. }) if folder == "mhsm-emulator-20250101000000"));
    }

    #[test]
    fn folders_are_named_like_the_services() {
        assert_eq!(folder_name(158321696675), "mhsm-emulator-2020030306292675");
        assert_eq!(folder_name(158321696600), "mhsm-emulator-2020030306292600");
    }
}
