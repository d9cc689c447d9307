//! The backup and restore jobs an instance has run (`jobs.json`, 0600), the
//! last [`KEPT`] only, so that a client polling a job across a restart gets
//! its outcome rather than a 404. Each start and each end is one atomic
//! replace of the document ([`Persisted`]); a job recorded as running when
//! the server starts was cut off by the previous process's end and is
//! reported `Failed` with [`INTERRUPTED`]. One job runs at a time: a second
//! start is a 409 while one is in progress.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::emulator::error::ApiError;
use crate::emulator::rbac::persist::{Document, Persisted};
use crate::error::Result;

const KEPT: usize = 100;
pub const JOBS_FILE: &str = "jobs.json";
/// Longest status detail or error message recorded: a storage answer can be long.
const MAX_MESSAGE: usize = 1024;
/// The outcome of a job the server was running when it stopped.
pub const INTERRUPTED: &str = "the emulator stopped while this job ran, so its outcome is unknown and nothing \
     after the stop was done: check the storage container or the keys, and start the job again";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Backup,
    Restore,
    SelectiveRestore,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobError {
    code: String,
    message: String,
}

/// A job's status as a poll answers it.
#[derive(Debug)]
pub(crate) struct Polled {
    pub body: String,
    /// The job still runs: the answer asks for `Retry-After`, as the 202 did.
    pub in_progress: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Job {
    id: String,
    kind: Kind,
    /// `InProgress`, `Succeeded` or `Failed`, as the service spells them.
    status: String,
    /// Null but for a failure, as the service answers.
    details: Option<String>,
    error: Option<JobError>,
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
            "error": self.error.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
            "jobId": self.id,
            "startTime": self.start,
            "endTime": self.end,
        });
        if self.kind == Kind::Backup {
            // The service names the folder once it is written, null before.
            let done = self.status == "Succeeded";
            v["azureStorageBlobContainerUri"] = json!(self.folder_url.as_ref().filter(|_| done));
        }
        v.to_string()
    }

    fn fail(&mut self, code: &str, message: &str, end: u64) {
        let message = clip(message);
        self.end = Some(end);
        self.status = "Failed".into();
        self.details = Some(message.clone());
        self.error = Some(JobError {
            code: code.into(),
            message,
        });
    }
}

fn clip(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}...", &message[..at]),
        None => message.to_string(),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsFile {
    format: u32,
    jobs: VecDeque<Job>,
}

impl Default for JobsFile {
    fn default() -> Self {
        JobsFile {
            format: 1,
            jobs: VecDeque::new(),
        }
    }
}

impl Document for JobsFile {
    const WHAT: &'static str = "backup job file";
    // 100 jobs of at most two 1 KiB messages each, with room to spare.
    const MAX_BYTES: u64 = 1024 * 1024;
    fn format(&self) -> u32 {
        self.format
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

pub(crate) struct Jobs {
    doc: Persisted<JobsFile>,
    /// Outcomes that could not be written (disk full): still answered, so a
    /// poller is not left waiting on `InProgress` until the next restart.
    unrecorded: Mutex<Vec<Job>>,
    /// The last backup folder's time stamp, in hundredths of a second.
    last_stamp: Mutex<i128>,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs::in_memory()
    }
}

fn write_failed(e: crate::error::Error) -> ApiError {
    ApiError::internal(format!("the job record could not be written: {e}"))
}

impl Jobs {
    pub fn in_memory() -> Jobs {
        Jobs {
            doc: Persisted::in_memory(JobsFile::default()),
            unrecorded: Mutex::new(Vec::new()),
            last_stamp: Mutex::new(0),
        }
    }

    /// The jobs recorded in `state_dir`; any still marked running was cut
    /// off by the previous server's end and is recorded `Failed`.
    ///
    /// Errors: the file is unreadable, too large or not a job file.
    pub fn open(state_dir: &Path) -> Result<Jobs> {
        let doc: Persisted<JobsFile> = Persisted::open(state_dir, JOBS_FILE)?;
        if doc.read(|f| f.jobs.iter().any(|j| j.status == "InProgress")) {
            let now = crate::emulator::now_unix();
            doc.update(|f| {
                for j in f.jobs.iter_mut().filter(|j| j.status == "InProgress") {
                    j.fail("Interrupted", INTERRUPTED, now);
                }
                Ok::<(), std::convert::Infallible>(())
            })?
            .unwrap_or_else(|never| match never {});
        }
        Ok(Jobs {
            doc,
            unrecorded: Mutex::new(Vec::new()),
            last_stamp: Mutex::new(0),
        })
    }

    /// The time stamp of a new backup folder, in hundredths of a second: now,
    /// or one past the last one when two backups start within the same
    /// hundredth, so every folder name is new (the service's names have
    /// this resolution; a backup never overwrites another).
    pub fn folder_stamp(&self) -> i128 {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 10_000_000;
        let mut last = self.last_stamp.lock().unwrap_or_else(|e| e.into_inner());
        *last = now.max(*last + 1);
        *last
    }

    fn unrecorded(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.unrecorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new job in progress and returns its id; refused while another runs.
    pub fn start(&self, kind: Kind, folder_url: Option<String>) -> Result<String, ApiError> {
        let mut raw = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut crate::crypto::rng::os_rng(), &mut raw);
        let id = hex::encode(raw);
        let job = Job {
            id: id.clone(),
            kind,
            status: "InProgress".into(),
            details: None,
            error: None,
            start: crate::emulator::now_unix(),
            end: None,
            folder_url,
        };
        self.doc
            .update(|f| {
                if let Some(busy) = f.jobs.iter().find(|j| j.status == "InProgress") {
                    return Err(ApiError::conflict(format!(
                        "another backup or restore operation (job {}) is in progress; wait for it to finish",
                        busy.id
                    )));
                }
                while f.jobs.len() >= KEPT {
                    f.jobs.pop_front();
                }
                f.jobs.push_back(job);
                Ok(())
            })
            .map_err(write_failed)??;
        Ok(id)
    }

    /// The 202 answer's body and status path for a job just started.
    pub fn started(&self, id: &str) -> Result<super::Started, ApiError> {
        let job = self
            .find(id)
            .ok_or_else(|| ApiError::internal("the job just started is not recorded"))?;
        let what = if job.kind == Kind::Backup { "backup" } else { "restore" };
        Ok(super::Started {
            body: job.to_json(),
            status_path: format!("/{what}/{id}/pending"),
        })
    }

    fn find(&self, id: &str) -> Option<Job> {
        if let Some(j) = self.unrecorded().iter().find(|j| j.id == id) {
            return Some(j.clone());
        }
        self.doc.read(|f| f.jobs.iter().find(|j| j.id == id).cloned())
    }

    pub fn finish(&self, id: &str, outcome: Result<(), ApiError>) {
        let end = crate::emulator::now_unix();
        let settle = |job: &mut Job| match &outcome {
            Ok(()) => {
                job.end = Some(end);
                job.status = "Succeeded".into();
                job.details = None;
            }
            Err(e) => job.fail(e.code, &e.message, end),
        };
        let written = self.doc.update(|f| match f.jobs.iter_mut().find(|j| j.id == id) {
            Some(job) => {
                settle(job);
                Ok(())
            }
            None => Err(()),
        });
        if let Err(e) = written {
            if let Some(mut job) = self.find(id) {
                settle(&mut job);
                if job.status == "Succeeded" {
                    // Its success is real, but a restart will report it interrupted.
                    job.details = Some(format!("the job succeeded but its record could not be written: {e}"));
                }
                self.unrecorded().push(job);
            }
        }
    }

    /// `GET /backup/{id}/pending` (or `/restore/...`): the job's body, and
    /// whether it still runs (read together, so they cannot disagree).
    pub fn status(&self, id: &str, restore: bool) -> Result<Polled, ApiError> {
        self.find(id)
            .filter(|j| (j.kind != Kind::Backup) == restore)
            .map(|j| Polled {
                body: j.to_json(),
                in_progress: j.status == "InProgress",
            })
            .ok_or_else(|| {
                ApiError::not_found(
                    "NotFound",
                    format!(
                        "no {} job '{id}' is known to this instance (the last {KEPT} jobs are kept)",
                        if restore { "restore" } else { "backup" }
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(jobs: &Jobs, id: &str, restore: bool) -> serde_json::Value {
        serde_json::from_str(&jobs.status(id, restore).unwrap().body).unwrap()
    }

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
        let b0 = body(&jobs, &a, false);
        assert_eq!(b0["status"], "InProgress");
        assert_eq!(b0["endTime"], serde_json::Value::Null);
        // As the service: no details and no folder until the backup is written.
        assert_eq!(b0["statusDetails"], serde_json::Value::Null);
        assert_eq!(b0["azureStorageBlobContainerUri"], serde_json::Value::Null);
        assert!(jobs.status(&a, true).is_err(), "a backup job is not a restore job");
        assert!(
            jobs.status(&a, false).unwrap().in_progress,
            "a running job asks for Retry-After"
        );
        jobs.finish(&a, Ok(()));
        assert!(!jobs.status(&a, false).unwrap().in_progress, "a finished job does not");
        let b1 = body(&jobs, &a, false);
        assert_eq!(b1["status"], "Succeeded");
        assert_eq!(b1["statusDetails"], serde_json::Value::Null);
        assert_eq!(b1["azureStorageBlobContainerUri"], "https://x/c/mhsm-emulator-1");
        assert!(b1["endTime"].is_u64());
        let b = jobs.start(Kind::Restore, None).unwrap();
        jobs.finish(&b, Err(ApiError::bad_request("nope")));
        assert!(!jobs.status(&b, true).unwrap().in_progress);
        let b2 = body(&jobs, &b, true);
        assert_eq!(
            (b2["status"].as_str(), b2["error"]["code"].as_str()),
            (Some("Failed"), Some("BadParameter"))
        );
        assert!(b2.get("azureStorageBlobContainerUri").is_none());
        assert_eq!(
            jobs.status("0123", true).unwrap_err().status,
            hyper::StatusCode::NOT_FOUND
        );
        assert!(check_id("abc123").is_ok() && check_id("a/b").is_err() && check_id("").is_err());
        let stamps: Vec<i128> = (0..50).map(|_| jobs.folder_stamp()).collect();
        assert!(stamps.windows(2).all(|w| w[1] > w[0]), "folder names never repeat");
    }

    #[test]
    fn records_survive_a_restart_and_a_running_job_ends_failed() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(dir.path()).unwrap();
        let done = jobs.start(Kind::Backup, Some("https://x/c/f".into())).unwrap();
        jobs.finish(&done, Ok(()));
        let failed = jobs.start(Kind::SelectiveRestore, None).unwrap();
        jobs.finish(&failed, Err(ApiError::bad_request("x".repeat(5000))));
        let running = jobs.start(Kind::Restore, None).unwrap();
        let before = (body(&jobs, &done, false), body(&jobs, &failed, true));
        drop(jobs);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(JOBS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let jobs = Jobs::open(dir.path()).unwrap();
        assert_eq!((body(&jobs, &done, false), body(&jobs, &failed, true)), before);
        assert!(
            before.1["error"]["message"].as_str().unwrap().len() < 1100,
            "long messages are clipped"
        );
        let cut = body(&jobs, &running, true);
        assert_eq!(
            (cut["status"].as_str(), cut["error"]["code"].as_str()),
            (Some("Failed"), Some("Interrupted"))
        );
        assert_eq!(cut["statusDetails"], INTERRUPTED);
        assert!(cut["endTime"].is_u64());
        // The interrupted job no longer blocks a new one.
        jobs.start(Kind::Backup, None).unwrap();
    }

    #[test]
    fn only_the_last_jobs_are_kept_and_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = Jobs::open(dir.path()).unwrap();
        let ids: Vec<String> = (0..KEPT + 3)
            .map(|_| {
                let id = jobs.start(Kind::Backup, None).unwrap();
                jobs.finish(&id, Ok(()));
                id
            })
            .collect();
        assert!(jobs.status(&ids[2], false).is_err(), "the oldest are dropped");
        assert!(jobs.status(&ids[3], false).is_ok());
        drop(jobs);
        std::fs::write(dir.path().join(JOBS_FILE), b"{\"format\":1,").unwrap();
        assert!(Jobs::open(dir.path()).is_err(), "refused, not reset");
    }
}
