//! One small JSON document in the state directory (`rbac.json`,
//! `settings.json`): read at start, reread when another process (`emulator
//! token`) replaced it, and changed only under a lock file by rereading,
//! changing and atomically replacing it (0600), so that a server and a
//! token issuer never lose each other's writes and a `kill -9` leaves the
//! old or the new document, never a torn one.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{EmulatorError, Error, Result};
use crate::files::{self, Mode};

/// The largest document read or written: far beyond any rehearsal's roles.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The file's identity, so a rewrite (a rename) is noticed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    ino: u64,
}

pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        ino: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

/// A document's format check, done on every read.
pub(crate) trait Document: Default + Serialize + DeserializeOwned + Clone {
    /// What the document is, for error messages ("role file").
    const WHAT: &'static str;
    /// The largest file read back.
    const MAX_BYTES: u64 = MAX_BYTES;
    fn format(&self) -> u32;
}

/// The document at `path` (the default when absent), size-limited and
/// format-checked: the one reader of the emulator's small JSON files.
pub(crate) fn read<T: Document>(path: &Path) -> Result<T> {
    if !path.exists() {
        return Ok(T::default());
    }
    let bytes = files::read_limited(path, T::MAX_BYTES, T::WHAT)?;
    let doc: T = crate::format::json::from_slice(&bytes).map_err(|why| EmulatorError::Corrupt {
        path: path.to_path_buf(),
        what: T::WHAT,
        why,
    })?;
    if doc.format() != 1 {
        return Err(EmulatorError::UnknownFormat {
            path: path.to_path_buf(),
            format: u64::from(doc.format()),
        }
        .into());
    }
    Ok(doc)
}

/// Takes the exclusive advisory lock on `lock_path` (created if absent), held
/// until the returned file is dropped: what serialises the emulator with an
/// `emulator token` or `az-setup` run beside it.
pub(crate) fn lock_file(lock_path: &Path) -> Result<fs::File> {
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(|source| Error::Write {
            path: lock_path.to_path_buf(),
            source,
        })?;
    lock.lock().map_err(|source| Error::Write {
        path: lock_path.to_path_buf(),
        source,
    })?;
    Ok(lock)
}

pub(crate) struct Persisted<T> {
    /// The file and its lock; `None` for an in-memory instance.
    path: Option<(PathBuf, PathBuf)>,
    cache: Mutex<(Option<Stamp>, T)>,
}

impl<T: Document> Persisted<T> {
    /// The document `file` in `dir` (empty if absent).
    ///
    /// Errors: the file is unreadable, too large or not such a document.
    pub fn open(dir: &Path, file: &str) -> Result<Persisted<T>> {
        let path = dir.join(file);
        let doc = read(&path)?;
        Ok(Persisted {
            cache: Mutex::new((stamp(&path), doc)),
            path: Some((path, dir.join(format!(".{file}.lock")))),
        })
    }

    pub fn in_memory(doc: T) -> Persisted<T> {
        Persisted {
            path: None,
            cache: Mutex::new((None, doc)),
        }
    }

    /// Whether the document exists on disk (always true in memory).
    pub fn exists(&self) -> bool {
        self.path.as_ref().is_none_or(|(p, _)| p.exists())
    }

    /// Looks at the current document.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((path, _)) = &self.path {
            let now = stamp(path);
            if now != cache.0 {
                // A file being replaced may be unreadable for an instant; keep the old view then.
                if let Ok(doc) = read(path) {
                    *cache = (now, doc);
                }
            }
        }
        f(&cache.1)
    }

    /// Changes the document: `f` sees the file's current content and may
    /// refuse (`Ok(Err(..))`, nothing written); `Err` is a failure to read
    /// or write the file.
    pub fn update<R, E>(
        &self,
        f: impl FnOnce(&mut T) -> std::result::Result<R, E>,
    ) -> Result<std::result::Result<R, E>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let Some((path, lock_path)) = &self.path else {
            let mut doc = cache.1.clone();
            let answer = f(&mut doc);
            if answer.is_ok() {
                cache.1 = doc;
            }
            return Ok(answer);
        };
        // Serialises this process with `emulator token` run alongside it.
        let _lock = lock_file(lock_path)?;
        let mut doc: T = read(path)?;
        let answer = match f(&mut doc) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let text = serde_json::to_vec_pretty(&doc).expect("plain data serialises");
        // Never write what the next start would refuse to read.
        if text.len() as u64 > T::MAX_BYTES {
            return Err(EmulatorError::WouldGrow {
                what: path.display().to_string(),
                size: text.len() as u64,
                limit: T::MAX_BYTES,
            }
            .into());
        }
        files::replace(path, &text, Mode::Private)?;
        *cache = (stamp(path), doc);
        Ok(Ok(answer))
    }
}
