//! Recording ceremony steps in the log: where the log is (`--log`, else
//! beside the step's main file), and one line per step, failures included.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hsm_ceremony::ceremony::log::{self, Entry, FileRef, Outcome};
use hsm_ceremony::error::Result;

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

/// Sets `path`'s fingerprint in `refs` to the SHA-256 of the bytes the step
/// parsed, so a file replaced between two reads cannot be recorded as the
/// one checked. Until then the entry carries the file as it was before the
/// step, which is what a step failing before the parse records.
pub fn parsed(refs: &mut Vec<FileRef>, path: &Path, sha256: String) {
    let parsed = FileRef::parsed(path, sha256);
    match refs.iter_mut().find(|f| f.path == parsed.path) {
        Some(f) => *f = parsed,
        None => refs.insert(0, parsed),
    }
}

/// Fails unless the step's log can take a line now (not a link, not a
/// device, an intact chain, a writable folder with room): checked before the
/// step does any work or asks any passphrase, so a step that could not be
/// recorded leaves nothing behind.
pub fn preflight(anchor: &Path) -> Result<()> {
    match log_path(anchor) {
        Some(path) => log::check_appendable(&path),
        None => Ok(()),
    }
}

/// Appends `entry` to the step's log. A step that cannot be recorded fails:
/// the record is part of the ceremony.
pub fn step(anchor: &Path, entry: Entry) -> Result<()> {
    if let Some(path) = log_path(anchor) {
        log::append(&path, entry)?;
    }
    Ok(())
}

/// Runs a step and records its outcome, success or failure. The error
/// message is recorded; it never carries secret material.
pub fn logged<T>(anchor: &Path, mut entry: Entry, body: impl FnOnce(&mut Entry) -> Result<T>) -> Result<T> {
    preflight(anchor)?;
    let result = body(&mut entry);
    entry.outcome = Outcome::of(&result);
    // A failure to record never hides the step's own error.
    let recorded = step(anchor, entry);
    let value = result?;
    recorded?;
    Ok(value)
}
