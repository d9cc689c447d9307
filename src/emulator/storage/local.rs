//! The emulator's local-folder storage target, `file:///ABSOLUTE/FOLDER`:
//! the container is an existing folder, each backup a new subfolder (0700)
//! holding the sealed blob (0600), written atomically and never over an
//! existing one. For the embedded default (`local`, demo, drill) where no
//! storage account exists.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{check_folder, storage_error, MAX_BLOB_BYTES};
use crate::emulator::error::ApiError;
use crate::files::{self, Mode};

pub(crate) struct LocalFolder {
    dir: PathBuf,
}

/// `path` is what follows `file://`: the container folder, then the backup
/// folder when `with_folder`.
pub(crate) fn split(path: &str, with_folder: bool) -> Result<(LocalFolder, Option<String>), ApiError> {
    if !path.starts_with('/') {
        return Err(ApiError::bad_request(format!(
            "file://{path} is not an absolute folder: write file:///ABSOLUTE/FOLDER"
        )));
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(ApiError::bad_request(format!(
            "file://{path} has an empty, '.' or '..' segment: name the folder plainly"
        )));
    }
    let (container, folder) = match (with_folder, segments.split_last()) {
        (true, Some((last, init))) if !init.is_empty() => {
            check_folder(last)?;
            (format!("/{}", init.join("/")), Some(last.to_string()))
        }
        (true, _) => {
            return Err(ApiError::bad_request(
                "a file:// backup folder needs a container folder above it",
            ))
        }
        (false, _) => (path.to_string(), None),
    };
    Ok((
        LocalFolder {
            dir: PathBuf::from(container),
        },
        folder,
    ))
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> ApiError {
    storage_error(format!("{what} {}: {e}", path.display()))
}

impl LocalFolder {
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    pub fn folder(&self, folder: &str) -> PathBuf {
        self.dir.join(folder)
    }

    pub fn check_access(&self) -> Result<(), ApiError> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(storage_error(format!("{} is not a folder", self.dir.display()))),
            Err(e) => Err(io_error(&self.dir, "the storage folder cannot be used:", e)),
        }
    }

    pub fn put(&self, folder: &str, name: &str, bytes: &[u8]) -> Result<(), ApiError> {
        if bytes.len() as u64 > MAX_BLOB_BYTES {
            return Err(storage_error(format!(
                "the backup is {} bytes, more than this emulator's limit of {MAX_BLOB_BYTES}",
                bytes.len()
            )));
        }
        self.check_access()?;
        let dir = self.folder(folder);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        // Not recursive, and never an existing folder: a backup is not written over another.
        builder
            .create(&dir)
            .map_err(|e| io_error(&dir, "the backup folder could not be created:", e))?;
        files::write_new(&dir.join(name), bytes, Mode::Private)
            .map_err(|e| io_error(&dir.join(name), "the backup could not be written:", e))
    }

    pub fn get(&self, folder: &str, name: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        let path = self.folder(folder).join(name);
        if !path.exists() {
            return Err(storage_error(format!(
                "no backup at {}: name a folder a full backup wrote",
                path.display()
            )));
        }
        files::read_limited(&path, MAX_BLOB_BYTES, "backup blob")
            .map(Zeroizing::new)
            .map_err(|e| storage_error(e.to_string()))
    }
}
