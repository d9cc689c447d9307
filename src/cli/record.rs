//! Recording ceremony steps in the log: where the log is (`--log`, else
//! beside the step's main file), and one line per step, failures included.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::ceremony::log::{self, Entry, FileRef};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct LogChoice {
    pub log: Option<PathBuf>,
    pub no_log: bool,
}

static CHOICE: OnceLock<LogChoice> = OnceLock::new();

pub fn set(choice: LogChoice) {
    let _ = CHOICE.set(choice);
}

/// The log a reader of the log (`sd health`) should read for a file at
/// `anchor`: `--log`, else the default beside it if that exists; none with
/// `--no-log`.
pub fn log_to_read(anchor: &Path) -> Option<PathBuf> {
    let choice = CHOICE.get().cloned().unwrap_or_default();
    if choice.no_log {
        return None;
    }
    match choice.log {
        Some(p) => Some(p),
        None => Some(log::default_beside(anchor)).filter(|p| p.exists()),
    }
}

/// The log a step anchored at `anchor` writes to, unless logging is off.
pub fn log_path(anchor: &Path) -> Option<PathBuf> {
    let choice = CHOICE.get().cloned().unwrap_or_default();
    if choice.no_log {
        return None;
    }
    Some(choice.log.unwrap_or_else(|| log::default_beside(anchor)))
}

/// Fingerprints of files, skipping any that cannot be read.
pub fn refs(paths: &[&Path]) -> Vec<FileRef> {
    paths.iter().filter_map(|p| FileRef::of(p)).collect()
}

/// Appends `entry` to the step's log. A step that cannot be recorded fails:
/// the record is part of the ceremony.
pub fn step(anchor: &Path, entry: Entry) -> Result<()> {
    if let Some(path) = log_path(anchor) {
        log::append(&path, entry).map_err(|e| match e {
            Error::Write { path, source } => Error::Write { path, source },
            other => Error::Usage(format!(
                "the step succeeded but could not be recorded in the ceremony log: {other}"
            )),
        })?;
    }
    Ok(())
}

/// Runs a step and records its outcome, success or failure. The error
/// message is recorded; it never carries secret material.
pub fn logged<T>(anchor: &Path, mut entry: Entry, body: impl FnOnce(&mut Entry) -> Result<T>) -> Result<T> {
    // A log that cannot be one (a folder, a device) is refused before the step runs.
    if let Some(path) = log_path(anchor) {
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(Error::Write {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
    }
    let result = body(&mut entry);
    entry.outcome = match &result {
        Ok(_) => "ok".into(),
        Err(e) => format!("failed: {e}"),
    };
    // A failure to record never hides the step's own error.
    let recorded = step(anchor, entry);
    let value = result?;
    recorded?;
    Ok(value)
}
