//! Reading inputs with a size limit, and writing outputs so that a path holds
//! either nothing or the complete new file: temporary file in the same
//! folder, fsync, rename without replacing, fsync of the folder.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Reads `path` whole, refusing directories and anything over `limit` bytes
/// before reading it.
pub fn read_limited(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    if meta.is_dir() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > limit {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
            what,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow between stat and read; never take more than the limit.
    fs::File::open(path)
        .map_err(read_err)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
            what,
        });
    }
    Ok(bytes)
}

/// Fails early, before any slow or secret work, when an output is taken.
pub fn ensure_absent(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(Error::NotAFile {
            path: path.to_path_buf(),
        }),
        Ok(_) => Err(Error::OutputExists {
            path: path.to_path_buf(),
        }),
        Err(_) => Ok(()),
    }
}

/// Fails early, before any secret is asked, unless `folder` (where `output`
/// goes) exists and takes new files: an anonymous temporary is created there
/// and vanishes at once, so nothing is left behind.
pub fn ensure_writable_folder(folder: &Path, output: &Path) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::OutputFolder {
            folder: folder.to_path_buf(),
            output: output.to_path_buf(),
            reason,
        })
    };
    match fs::metadata(folder) {
        Err(e) => return refuse(format!("it does not exist ({e})")),
        Ok(m) if !m.is_dir() => return refuse("it is not a folder".into()),
        Ok(_) => {}
    }
    match tempfile::tempfile_in(folder) {
        Ok(_) => Ok(()),
        Err(e) => refuse(format!("no file can be created in it ({e})")),
    }
}

/// The folder where `path` goes (`.` for a bare name).
pub fn folder_of(path: &Path) -> PathBuf {
    parent_dir(path)
}

/// Fails unless the file system holding `folder` has `need` bytes free for
/// `output` (checked first so a full disk stops a step before it starts).
#[cfg(unix)]
pub fn ensure_free_space(folder: &Path, need: u64, output: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(folder.as_os_str().as_bytes()) else {
        return Ok(());
    };
    // SAFETY: statvfs fills the struct we own from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(()); // the write itself will say what is wrong
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    if free < need {
        return Err(Error::Write {
            path: output.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("only {free} bytes are free on its disk, {need} are needed; nothing was done"),
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn ensure_free_space(_folder: &Path, _need: u64, _output: &Path) -> Result<()> {
    Ok(())
}

/// How a new file is to be readable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 0644: certificates, security domains, reports.
    Public,
    /// 0600: private keys.
    Private,
}

/// Writes `bytes` to `path`, which must not exist. Atomic: on any failure
/// nothing is left at `path` and the temporary file is removed.
pub fn write_new(path: &Path, bytes: &[u8], mode: Mode) -> Result<()> {
    ensure_absent(path)?;
    let tmp = synced_temp(path, bytes, mode)?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            Error::OutputExists {
                path: path.to_path_buf(),
            }
        } else {
            Error::Write {
                path: path.to_path_buf(),
                source: e.error,
            }
        }
    })?;
    sync_dir(&parent_dir(path));
    Ok(())
}

/// Replaces `path` atomically (state files of the emulator and the log's
/// companions, never a ceremony output).
pub fn replace(path: &Path, bytes: &[u8], mode: Mode) -> Result<()> {
    let tmp = synced_temp(path, bytes, mode)?;
    tmp.persist(path).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(&parent_dir(path));
    Ok(())
}

/// `bytes` in a temporary file beside `path`, synced to disk; removed on
/// drop unless persisted.
fn synced_temp(path: &Path, bytes: &[u8], mode: Mode) -> Result<tempfile::NamedTempFile> {
    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".hsm-ceremony-")
        .suffix(".tmp")
        .permissions(permissions(mode))
        .tempfile_in(parent_dir(path))
        .map_err(write_err)?;
    tmp.write_all(bytes).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    Ok(tmp)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(unix)]
fn permissions(mode: Mode) -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(match mode {
        Mode::Public => 0o644,
        Mode::Private => 0o600,
    })
}

#[cfg(not(unix))]
fn permissions(_mode: Mode) -> fs::Permissions {
    fs::metadata(".").map(|m| m.permissions()).expect("current directory")
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; not every file system allows it, and the data
    // itself is already synced.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_new_never_overwrites_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_new(&p, b"one", Mode::Public).unwrap();
        assert!(matches!(
            write_new(&p, b"two", Mode::Public),
            Err(Error::OutputExists { .. })
        ));
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left behind");
        assert!(matches!(
            write_new(dir.path(), b"x", Mode::Public),
            Err(Error::NotAFile { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_new(&p, b"k", Mode::Private).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn read_limited_refuses_large_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        fs::write(&p, vec![b'x'; 100]).unwrap();
        assert!(matches!(read_limited(&p, 99, "test file"), Err(Error::TooLarge { .. })));
        assert_eq!(read_limited(&p, 100, "test file").unwrap().len(), 100);
        assert!(matches!(
            read_limited(dir.path(), 100, "test file"),
            Err(Error::NotAFile { .. })
        ));
    }
}
