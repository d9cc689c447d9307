//! Two-phase custodian rotation. `rotate` writes the new security domain as
//! `<out>.pending` with a record `<out>.rotation.json`; new custodians prove
//! possession with `custodian verify` (recorded in the log); `finalize`
//! refuses until enough have, then makes the new file current and retires
//! the old one; `cancel` discards the pending file. Every step is an atomic
//! rename, and finalize can be run again after a crash to complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::kill::kill_point;
use super::log::{self, FileRef, Step};
use crate::crypto::rng::CryptoRng;
use crate::custodian::cert::Certificate;
use crate::error::{Error, LogError, RecoveryError, Result};
use crate::files::{self, Mode};
use crate::format::limits::Profile;
use crate::format::sdfile::SecurityDomain;
use crate::recovery::{self, Recovered};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Finalized,
    Cancelled,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Pending => "pending",
            State::Finalized => "finalized",
            State::Cancelled => "cancelled",
        })
    }
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

/// The new file a record at `record_path` is for: the record's own name
/// without `.rotation.json` (what `rotate` wrote it as).
pub fn target_of(record_path: &Path) -> Option<PathBuf> {
    record_path
        .to_str()
        .and_then(|s| s.strip_suffix(".rotation.json"))
        .filter(|t| !t.is_empty() && !t.ends_with('/'))
        .map(PathBuf::from)
}

/// The pending file and record a rotation to `out` writes, refused before
/// anything is read if either exists, or if a crash left a pending file
/// without its record.
pub fn start_paths(out: &Path) -> Result<(PathBuf, PathBuf)> {
    let pending = pending_path(out);
    let record = record_path(out);
    // A kill between writing the pending file and its record leaves an orphan.
    if pending.is_file() && !record.exists() {
        return Err(LogError::InterruptedRotation { pending, record }.into());
    }
    for p in [out, &pending, &record] {
        files::ensure_absent(p)?;
    }
    files::ensure_writable_folder(&files::folder_of(out), out)?;
    Ok((pending, record))
}

/// Everything the first phase of a rotation needs, decided by the caller:
/// the manifest checked and the epoch chosen.
pub struct Start<'a> {
    pub old_path: &'a Path,
    pub old: &'a SecurityDomain,
    /// The SHA-256 (hex) of the bytes `old` was parsed from: the record names
    /// the file that was split, not a later read of the path.
    pub old_sha256: &'a str,
    pub new_certs: &'a [(String, Certificate)],
    pub quorum: usize,
    pub profile: Profile,
    pub required_proofs: usize,
    pub epoch: u64,
    /// Where the new file goes at finalize.
    pub out: &'a Path,
    pub log: Option<&'a Path>,
}

/// What the first phase wrote.
pub struct Started {
    pub pending: PathBuf,
    pub record: PathBuf,
    pub pending_ref: FileRef,
}

/// The first phase: refuses a new set that cannot be split before anyone is
/// asked (`open_quorum` does the asking), re-splits the recovered master key
/// to the new set, and writes `<out>.pending` and then its record.
/// `written` hears of the pending file as soon as it exists, so a failure
/// after it can still name it.
pub fn start_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    plan: &Start<'_>,
    open_quorum: impl FnOnce() -> Result<Recovered>,
    written: impl FnOnce(&FileRef),
) -> Result<Started> {
    let (pending, record_path) = (pending_path(plan.out), record_path(plan.out));
    recovery::check_custodian_set(plan.new_certs, plan.quorum, plan.profile)?;
    let recovered = open_quorum()?;
    let new = recovery::rotate_with_rng(rng, plan.old, &recovered, plan.new_certs, plan.quorum, plan.profile)?;
    drop(recovered);
    files::write_new(&pending, new.to_json().as_bytes(), Mode::Public)?;
    kill_point("start:pending-written");
    let pending_ref = FileRef::of(&pending).ok_or_else(|| Error::Read {
        path: pending.clone(),
        source: std::io::Error::other("the file just written cannot be read back"),
    })?;
    written(&pending_ref);
    let rec = Record {
        version: 1,
        state: State::Pending,
        old: FileRef::parsed(plan.old_path, plan.old_sha256.to_string()),
        pending: pending_ref.clone(),
        target: plan.out.display().to_string(),
        quorum: plan.quorum,
        custodians: plan.new_certs.iter().map(|(_, c)| c.x5t_256()).collect(),
        required_proofs: plan.required_proofs,
        epoch: plan.epoch,
        log: plan.log.map(|p| p.display().to_string()).unwrap_or_default(),
    };
    rec.save_new(&record_path)?;
    kill_point("start:recorded");
    Ok(Started {
        pending,
        record: record_path,
        pending_ref,
    })
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

/// Whether two paths name the same place: equal, or the same name in the same
/// (resolved) folder, so a record written from another working folder still matches.
fn same_place(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let folder = |p: &Path| std::fs::canonicalize(files::folder_of(p)).ok();
    a.file_name() == b.file_name() && folder(a).is_some() && folder(a) == folder(b)
}

/// A log read for proofs or records: a broken one cannot be trusted.
fn verified_log(path: &Path) -> Result<Vec<log::Line>> {
    log::verified(path)
}

impl Record {
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
        let lines = verified_log(log_path)?;
        let mut proved: Vec<String> = Vec::new();
        for line in lines {
            let e = &line.entry;
            let about_pending = e.inputs.iter().any(|f| f.sha256 == self.pending.sha256);
            if e.command == Step::CustodianVerify && e.outcome.is_ok() && about_pending {
                for t in &e.thumbprints {
                    if self.custodians.contains(t) && !proved.contains(t) {
                        proved.push(t.clone());
                    }
                }
            }
        }
        Ok(proved)
    }

    /// Checks the record against the files themselves, so that an edited
    /// record cannot consent to anything: the pending and target paths follow
    /// from the record's own path, the quorum and custodians from the pending
    /// file, the proofs come from the log this finalize reads (`log`), and the
    /// `rotate` line of that log (when the start was recorded) must name the
    /// same old file, epoch and proofs required.
    pub fn check_against_files(&self, record_path: &Path, log: Option<&Path>) -> Result<()> {
        let refuse = |reason: String| {
            Err(LogError::RecordRefused {
                path: record_path.to_path_buf(),
                reason,
            }
            .into())
        };
        let Some(target) = target_of(record_path) else {
            return refuse("its name does not end in .rotation.json, so the file it finalizes is not known".into());
        };
        if !same_place(Path::new(&self.target), &target) {
            return refuse(format!(
                "it names {} as the new file, but a record at this path is for {}",
                self.target,
                target.display()
            ));
        }
        if !same_place(Path::new(&self.pending.path), &pending_path(&target)) {
            return refuse(format!(
                "it names {} as the pending file, not {}",
                self.pending.path,
                pending_path(&target).display()
            ));
        }
        let log_here = log.map(|p| p.display().to_string()).unwrap_or_default();
        let same_log = match log {
            Some(p) => !self.log.is_empty() && same_place(Path::new(&self.log), p),
            None => self.log.is_empty(),
        };
        if !same_log {
            return refuse(format!(
                "it names the log '{}', but this command reads '{log_here}'; give --log with the rotation's log",
                self.log
            ));
        }
        // What the pending file itself says (or the new file, once linked).
        let new_file = [pending_path(&target), target.clone()]
            .into_iter()
            .find(|p| p.exists())
            .ok_or_else(|| LogError::RecordRefused {
                path: record_path.to_path_buf(),
                reason: format!("neither {} nor {} exists", self.pending.path, target.display()),
            })?;
        // The file checked against the record is the one parsed: one read.
        let (sd, sha256) = crate::inputs::security_domain_hashed(&new_file)?;
        self.check_sha256(&new_file, Some(&sha256))?;
        let custodians: Vec<String> = sd.shared_keys.enc_shares.iter().map(|s| s.x5t_256.clone()).collect();
        if self.quorum != sd.required() || self.custodians != custodians {
            return refuse(format!(
                "it says {} of {} custodians, but {} is {} of {} (or names other certificates): it was edited",
                self.quorum,
                self.custodians.len(),
                new_file.display(),
                sd.required(),
                custodians.len()
            ));
        }
        if self.required_proofs != sd.required() && self.required_proofs != custodians.len() {
            return refuse(format!(
                "it requires {} proofs; a rotation requires {} (the quorum) or {} (all, --require-all)",
                self.required_proofs,
                sd.required(),
                custodians.len()
            ));
        }
        // The start's own record in the log, when it got that far, must agree.
        if let Some(log_path) = log.filter(|p| p.exists()) {
            let lines = verified_log(log_path)?;
            let started = lines.iter().rev().find(|l| {
                l.entry.command == Step::Rotate
                    && l.entry.outcome.is_ok()
                    && l.entry.outputs.iter().any(|f| f.sha256 == self.pending.sha256)
            });
            if let Some(l) = started {
                let d = &l.entry.details;
                if l.entry.inputs.first() != Some(&self.old) {
                    return refuse(format!(
                        "it names {} as the current file, but the log's line {} says the rotation started from {}",
                        self.old.path,
                        l.seq,
                        l.entry.inputs.first().map_or("nothing", |f| f.path.as_str())
                    ));
                }
                if d.get("epoch").and_then(|v| v.as_u64()).is_some_and(|e| e != self.epoch) {
                    return refuse(format!(
                        "it says epoch {}, but the log's line {} says {}",
                        self.epoch, l.seq, d["epoch"]
                    ));
                }
                if d.get("required_proofs")
                    .and_then(|v| v.as_u64())
                    .is_some_and(|r| r as usize != self.required_proofs)
                {
                    return refuse(format!(
                        "it requires {} proofs, but the log's line {} says {}",
                        self.required_proofs, l.seq, d["required_proofs"]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Completes a pending rotation (again, if a crash interrupted it). The
    /// record is checked against the files first ([`Record::check_against_files`]).
    pub fn finalize(&mut self, record_path: &Path, log: Option<&Path>) -> Result<()> {
        match self.state {
            State::Finalized => return Ok(()),
            State::Cancelled => return Err(LogError::RotationCancelled.into()),
            State::Pending => {}
        }
        self.check_against_files(record_path, log)?;
        let proved = self.proofs()?;
        if proved.len() < self.required_proofs {
            return Err(LogError::NotEnoughProofs {
                proved,
                needed: self.required_proofs,
                pending: self.pending.path.clone(),
                log: self.log.clone(),
            }
            .into());
        }
        let pending = Path::new(&self.pending.path);
        let target = Path::new(&self.target);
        let old = Path::new(&self.old.path);
        let retired = retired_path(old);
        // The file to retire must be the one the rotation started from, and a
        // .retired already there must be that same file: nothing current is
        // removed unless it is kept.
        if old.exists() {
            self.check_old(old, record_path)?;
        }
        if retired.exists() {
            self.check_old(&retired, record_path)?;
        }
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
        if old.exists() {
            if !retired.exists() {
                std::fs::hard_link(old, &retired).map_err(|source| Error::Write {
                    path: retired.clone(),
                    source,
                })?;
                kill_point("finalize:retired-linked");
            }
            self.check_old(&retired, record_path)?;
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

    pub fn cancel(&mut self, record_path: &Path, log: Option<&Path>) -> Result<()> {
        if self.state != State::Pending {
            return Err(LogError::RotationNotPending {
                state: self.state.to_string(),
            }
            .into());
        }
        // Only the pending file this record wrote is ever deleted, whatever path the record names.
        self.check_against_files(record_path, log)?;
        let pending = Path::new(&self.pending.path);
        if pending.exists() {
            self.check_fingerprint(pending)?;
            std::fs::remove_file(pending).map_err(|source| Error::Write {
                path: pending.to_path_buf(),
                source,
            })?;
        }
        self.state = State::Cancelled;
        self.save(record_path)
    }

    /// `path` must hold the file the rotation started from, measured now.
    fn check_old(&self, path: &Path, record_path: &Path) -> Result<()> {
        match FileRef::of(path) {
            Some(f) if f.sha256 == self.old.sha256 => Ok(()),
            _ => Err(LogError::RecordRefused {
                path: record_path.to_path_buf(),
                reason: format!(
                    "{} is not the file the rotation started from (its SHA-256 differs from {}); \
                     nothing was moved or removed",
                    path.display(),
                    self.old.sha256
                ),
            }
            .into()),
        }
    }

    fn check_fingerprint(&self, path: &Path) -> Result<()> {
        self.check_sha256(path, FileRef::of(path).map(|f| f.sha256).as_deref())
    }

    fn check_sha256(&self, path: &Path, sha256: Option<&str>) -> Result<()> {
        match sha256 {
            Some(s) if s == self.pending.sha256 => Ok(()),
            _ => Err(RecoveryError::SharesInconsistent {
                reason: format!(
                    "{} is not the file the rotation wrote (its SHA-256 differs); do not finalize",
                    path.display()
                ),
            }
            .into()),
        }
    }
}
