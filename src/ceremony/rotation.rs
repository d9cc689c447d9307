//! Two-phase custodian rotation. `rotate` writes the new security domain as
//! `<out>.pending` with a record `<out>.rotation.json`; new custodians prove
//! possession with `custodian verify` (recorded in the log); `finalize`
//! refuses until enough have, then makes the new file current and retires
//! the old one; `cancel` discards the pending file. Every step is an atomic
//! rename, and finalize can be run again after a crash to complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::log::{self, FileRef};
use crate::error::{Error, Result};
use crate::files::{self, Mode};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Finalized,
    Cancelled,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub state: State,
    pub old: FileRef,
    /// The pending file and its fingerprint.
    pub pending: FileRef,
    /// Where the new file goes at finalize.
    pub target: String,
    pub quorum: usize,
    /// x5t#S256 of the new custodians, in share order.
    pub custodians: Vec<String>,
    /// How many distinct new custodians must prove possession.
    pub required_proofs: usize,
    pub epoch: u64,
    pub log: String,
}

pub fn pending_path(out: &Path) -> PathBuf {
    suffixed(out, ".pending")
}

pub fn record_path(out: &Path) -> PathBuf {
    suffixed(out, ".rotation.json")
}

pub fn retired_path(old: &Path) -> PathBuf {
    suffixed(old, ".retired")
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    p.with_file_name(name)
}

/// Where the crash tests stop a rotation (see [`kill_point`]); the log's own
/// point, `log:line-written`, falls between an appended line and its head.
pub const KILL_POINTS: [&str; 6] = [
    "start:pending-written",
    "start:recorded",
    "finalize:new-linked",
    "finalize:retired-linked",
    "finalize:old-removed",
    "finalize:pending-removed",
];

/// Where the crash tests stop a drill: with the exchange key fetched, the
/// quorum open (the recovered contents in memory), the upload done and the
/// canary restored.
pub const DRILL_KILL_POINTS: [&str; 4] = [
    "drill:exchange-key",
    "drill:quorum-open",
    "drill:uploaded",
    "drill:canary-restored",
];

/// Test hook: with `HSM_CEREMONY_KILL_AT=<point>` in the environment the
/// process kills itself at that point, so the integration tests can crash a
/// rotation or a drill between any two of its steps. The signal is SIGKILL,
/// or `HSM_CEREMONY_KILL_SIGNAL` (`TERM`, `HUP`, `INT`): what an operator's
/// Ctrl-C or a closed terminal does. Never set them otherwise.
pub fn kill_point(point: &str) {
    if std::env::var_os("HSM_CEREMONY_KILL_AT").is_some_and(|v| v == point) {
        #[cfg(unix)]
        {
            let signal = match std::env::var("HSM_CEREMONY_KILL_SIGNAL").as_deref() {
                Ok("TERM") => libc::SIGTERM,
                Ok("HUP") => libc::SIGHUP,
                Ok("INT") => libc::SIGINT,
                _ => libc::SIGKILL,
            };
            // SAFETY: signals this very process; with the default
            // dispositions (this program installs no handler) it ends it.
            unsafe {
                libc::kill(libc::getpid(), signal);
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        std::process::abort();
    }
}

impl Record {
    pub fn load(path: &Path) -> Result<Record> {
        let bytes = files::read_limited(path, 1024 * 1024, "rotation record")?;
        crate::format::json::from_slice(&bytes)
            .map_err(|e| Error::Usage(format!("{} is not a rotation record: {e}", path.display())))
    }

    pub fn save_new(&self, path: &Path) -> Result<()> {
        files::write_new(path, self.to_json().as_bytes(), Mode::Public)
    }

    fn save(&self, path: &Path) -> Result<()> {
        files::replace(path, self.to_json().as_bytes(), Mode::Public)
    }

    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }

    /// The new custodians who proved possession of the pending file, from the log.
    pub fn proofs(&self) -> Result<Vec<String>> {
        let log_path = Path::new(&self.log);
        if !log_path.exists() {
            return Ok(Vec::new());
        }
        // Proofs from a broken log cannot be trusted.
        let lines = log::verify(log_path)?.map_err(|b| Error::LogBroken {
            path: log_path.to_path_buf(),
            line: b.line,
            reason: b.reason,
        })?;
        let mut proved: Vec<String> = Vec::new();
        for line in lines {
            let e = &line.entry;
            let about_pending = e.inputs.iter().any(|f| f.sha256 == self.pending.sha256);
            if e.command == "custodian verify" && e.outcome == "ok" && about_pending {
                for t in &e.thumbprints {
                    if self.custodians.contains(t) && !proved.contains(t) {
                        proved.push(t.clone());
                    }
                }
            }
        }
        Ok(proved)
    }

    /// Completes a pending rotation (again, if a crash interrupted it).
    pub fn finalize(&mut self, record_path: &Path) -> Result<()> {
        match self.state {
            State::Finalized => return Ok(()),
            State::Cancelled => return Err(Error::Usage("this rotation was cancelled".into())),
            State::Pending => {}
        }
        let proved = self.proofs()?;
        if proved.len() < self.required_proofs {
            return Err(Error::NotEnoughProofs {
                proved,
                needed: self.required_proofs,
                pending: self.pending.path.clone(),
                log: self.log.clone(),
            });
        }
        let pending = Path::new(&self.pending.path);
        let target = Path::new(&self.target);
        let old = Path::new(&self.old.path);
        // 1. The new file appears at its final path (a link, never replacing).
        if !target.exists() {
            self.check_fingerprint(pending)?;
            std::fs::hard_link(pending, target).map_err(|source| Error::Write {
                path: target.to_path_buf(),
                source,
            })?;
            kill_point("finalize:new-linked");
        }
        self.check_fingerprint(target)?;
        // 2. The old file is retired under a new name, never lost.
        let retired = retired_path(old);
        if old.exists() {
            if !retired.exists() {
                std::fs::hard_link(old, &retired).map_err(|source| Error::Write {
                    path: retired.clone(),
                    source,
                })?;
                kill_point("finalize:retired-linked");
            }
            std::fs::remove_file(old).map_err(|source| Error::Write {
                path: old.to_path_buf(),
                source,
            })?;
            kill_point("finalize:old-removed");
        }
        if pending.exists() {
            std::fs::remove_file(pending).map_err(|source| Error::Write {
                path: pending.to_path_buf(),
                source,
            })?;
            kill_point("finalize:pending-removed");
        }
        self.state = State::Finalized;
        self.save(record_path)
    }

    pub fn cancel(&mut self, record_path: &Path) -> Result<()> {
        if self.state != State::Pending {
            return Err(Error::Usage(
                format!("this rotation is {:?}, not pending", self.state).to_lowercase(),
            ));
        }
        let pending = Path::new(&self.pending.path);
        if pending.exists() {
            std::fs::remove_file(pending).map_err(|source| Error::Write {
                path: pending.to_path_buf(),
                source,
            })?;
        }
        self.state = State::Cancelled;
        self.save(record_path)
    }

    fn check_fingerprint(&self, path: &Path) -> Result<()> {
        match FileRef::of(path) {
            Some(f) if f.sha256 == self.pending.sha256 => Ok(()),
            _ => Err(Error::SharesInconsistent {
                reason: format!(
                    "{} is not the file the rotation wrote (its SHA-256 differs); do not finalize",
                    path.display()
                ),
            }),
        }
    }
}
