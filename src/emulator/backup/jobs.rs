//! The backup and restore jobs an instance has run, in memory (a restart
//! forgets them, as it ends any job under way), the last [`KEPT`] only.
//! One job runs at a time: a second start is a 409 while one is in progress.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::json;

use crate::emulator::error::ApiError;

const KEPT: usize = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Backup,
    Restore,
    SelectiveRestore,
}

struct Job {
    id: String,
    kind: Kind,
    /// `InProgress`, `Succeeded` or `Failed`, as the service spells them.
    status: &'static str,
    details: String,
    error: Option<(&'static str, String)>,
    start: u64,
    end: Option<u64>,
    /// Backups: the folder's URL, which the SDK returns as `folder_url`.
    folder_url: Option<String>,
}

impl Job {
    fn to_json(&self) -> String {
        let mut v = json!({
            "status": self.status,
            "statusDetails": self.details,
            "error": self.error.as_ref().map(|(code, message)| json!({"code": code, "message": message})),
            "jobId": self.id,
            "startTime": self.start,
            "endTime": self.end,
        });
        if self.kind == Kind::Backup {
            v["azureStorageBlobContainerUri"] = json!(self.folder_url);
        }
        v.to_string()
    }
}

/// Job ids as this emulator makes them (32 hex digits), and nothing a path could abuse.
pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "'{id}' is not a job id (letters and digits, as the 202 answer gave it)"
        )))
    }
}

#[derive(Default)]
pub(crate) struct Jobs(Mutex<VecDeque<Job>>);

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new job in progress and returns its id; refused while another runs.
    pub fn start(&self, kind: Kind, folder_url: Option<String>) -> Result<String, ApiError> {
        let mut jobs = self.lock();
        if let Some(busy) = jobs.iter().find(|j| j.status == "InProgress") {
            return Err(ApiError::conflict(format!(
                "another backup or restore operation (job {}) is in progress; wait for it to finish",
                busy.id
            )));
        }
        let mut raw = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut crate::crypto::rng::os_rng(), &mut raw);
        let id = hex::encode(raw);
        let details = match kind {
            Kind::Backup => "Full backup is in progress",
            Kind::Restore => "Full restore is in progress",
            Kind::SelectiveRestore => "Selective key restore is in progress",
        };
        if jobs.len() >= KEPT {
            jobs.pop_front();
        }
        jobs.push_back(Job {
            id: id.clone(),
            kind,
            status: "InProgress",
            details: details.into(),
            error: None,
            start: crate::emulator::now_unix(),
            end: None,
            folder_url,
        });
        Ok(id)
    }

    /// The 202 answer's body and status path for a job just started.
    pub fn started(&self, id: &str) -> Result<super::Started, ApiError> {
        let jobs = self.lock();
        let job = jobs
            .iter()
            .find(|j| j.id == id)
            .ok_or_else(|| ApiError::internal("the job just started is not recorded"))?;
        let what = if job.kind == Kind::Backup { "backup" } else { "restore" };
        Ok(super::Started {
            body: job.to_json(),
            status_path: format!("/{what}/{id}/pending"),
        })
    }

    pub fn finish(&self, id: &str, outcome: Result<(), ApiError>) {
        let mut jobs = self.lock();
        if let Some(job) = jobs.iter_mut().find(|j| j.id == id) {
            job.end = Some(crate::emulator::now_unix());
            match outcome {
                Ok(()) => {
                    job.status = "Succeeded";
                    job.details = String::new();
                }
                Err(e) => {
                    job.status = "Failed";
                    job.details = e.message.clone();
                    job.error = Some((e.code, e.message));
                }
            }
        }
    }

    /// `GET /backup/{id}/pending` (or `/restore/...`): the job's body.
    pub fn status_json(&self, id: &str, restore: bool) -> Result<String, ApiError> {
        let jobs = self.lock();
        jobs.iter()
            .find(|j| j.id == id && (j.kind != Kind::Backup) == restore)
            .map(Job::to_json)
            .ok_or_else(|| {
                ApiError::not_found(
                    "NotFound",
                    format!(
                        "no {} job '{id}' is known to this instance (jobs are kept in memory until the server restarts)",
                        if restore { "restore" } else { "backup" }
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_at_a_time_and_statuses_as_the_service_spells_them() {
        let jobs = Jobs::default();
        let a = jobs
            .start(Kind::Backup, Some("https://x/c/mhsm-emulator-1".into()))
            .unwrap();
        assert_eq!(
            jobs.start(Kind::Restore, None).unwrap_err().status,
            hyper::StatusCode::CONFLICT
        );
        let body: serde_json::Value = serde_json::from_str(&jobs.status_json(&a, false).unwrap()).unwrap();
        assert_eq!(body["status"], "InProgress");
        assert_eq!(body["endTime"], serde_json::Value::Null);
        assert_eq!(body["azureStorageBlobContainerUri"], "https://x/c/mhsm-emulator-1");
        assert!(jobs.status_json(&a, true).is_err(), "a backup job is not a restore job");
        jobs.finish(&a, Ok(()));
        let body: serde_json::Value = serde_json::from_str(&jobs.status_json(&a, false).unwrap()).unwrap();
        assert_eq!(body["status"], "Succeeded");
        assert!(body["endTime"].is_u64());
        let b = jobs.start(Kind::Restore, None).unwrap();
        jobs.finish(&b, Err(ApiError::bad_request("nope")));
        let body: serde_json::Value = serde_json::from_str(&jobs.status_json(&b, true).unwrap()).unwrap();
        assert_eq!(
            (body["status"].as_str(), body["error"]["code"].as_str()),
            (Some("Failed"), Some("BadParameter"))
        );
        assert!(body.get("azureStorageBlobContainerUri").is_none());
        assert_eq!(
            jobs.status_json("0123", true).unwrap_err().status,
            hyper::StatusCode::NOT_FOUND
        );
        assert!(check_id("abc123").is_ok() && check_id("a/b").is_err() && check_id("").is_err());
    }
}
