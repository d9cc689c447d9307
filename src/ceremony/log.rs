//! The ceremony log: one JSON line per ceremony step, each carrying the
//! SHA-256 of the line before it, so that removing, reordering or editing a
//! line is detected. A companion `<log>.head` records the count and last
//! hash, so truncation is detected too. Never holds a secret.
//!
//! Appends take an exclusive `flock` on the log, so two processes appending
//! at once still leave one valid chain. A write that fails part-way (a full
//! disk) is cut back under the lock, so the log never ends in a partial
//! line; the head may lag by one append (a kill between the two writes),
//! never more.
//!
//! What the chain proves: no line was removed, moved or edited *unless the
//! whole chain after it was rewritten consistently*. Anyone who can write
//! the file can compute a new chain and head, and it verifies; only the last
//! line's hash, written on paper (or countersigned), catches that.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub use super::step::{Outcome, Step};
use crate::error::{Error, LogBreak, LogError, Result};
use crate::files::{self, Mode};

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The log's default file name, beside the security domain.
pub const DEFAULT_NAME: &str = "ceremony-log.jsonl";
const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;
/// Free space a step needs on the log's file system before it starts: a line
/// and the head's temporary, with a wide margin.
pub const MIN_FREE_BYTES: u64 = 64 * 1024;

/// A file the step read or wrote, by fingerprint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileRef {
    pub path: String,
    pub sha256: String,
}

impl FileRef {
    /// `path` fingerprinted by the SHA-256 (hex) of the bytes a step parsed,
    /// so the log names what was checked, not a later read of the file.
    pub fn parsed(path: &Path, sha256: String) -> FileRef {
        FileRef {
            path: path.display().to_string(),
            sha256,
        }
    }

    /// Fingerprints `path` as it is now; `None` if it cannot be read.
    pub fn of(path: &Path) -> Option<FileRef> {
        let bytes = files::read_limited(path, MAX_LOG_BYTES, "file").ok()?;
        Some(FileRef {
            path: path.display().to_string(),
            sha256: hex::encode(Sha256::digest(&bytes)),
        })
    }
}

/// What a step records. `details` is free-form but must never carry a secret.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub command: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<FileRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<FileRef>,
    /// Certificate thumbprints (x5t#S256) of the custodians concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thumbprints: Vec<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

/// One line as stored: the entry with its place in the chain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Line {
    pub seq: u64,
    pub time: String,
    pub prev: String,
    #[serde(flatten)]
    pub entry: Entry,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Head {
    lines: u64,
    last: String,
}

fn head_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".head");
    log.with_file_name(name)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The default log for a step whose main file is `anchor`: beside it.
pub fn default_beside(anchor: &Path) -> PathBuf {
    match anchor.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(DEFAULT_NAME),
        _ => PathBuf::from(DEFAULT_NAME),
    }
}

struct Locked(File);

/// A log or its head that is a symbolic link is refused, as outputs are: the
/// link could send the record anywhere.
fn refuse_symlinks(log: &Path) -> Result<()> {
    for p in [log.to_path_buf(), head_path(log)] {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::SymlinkRefused { path: p });
        }
    }
    Ok(())
}

impl Locked {
    fn open(path: &Path, create: bool) -> Result<Locked> {
        refuse_symlinks(path)?;
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(create);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // A link made after the check above is not followed either.
            options.custom_flags(libc::O_NOFOLLOW);
        }
        let file = options.open(path).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor we own; released when the file closes.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(Error::Write {
                    path: path.to_path_buf(),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        // A device (/dev/zero, /dev/full) or FIFO is not a log: reading it would never end.
        if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
            return Err(Error::Write {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        Ok(Locked(file))
    }
}

/// The whole log, refused when too large or ending in a partial line.
fn read_all(file: &mut File, path: &Path) -> Result<Vec<u8>> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = file.seek(SeekFrom::End(0)).map_err(read_err)?;
    if len > MAX_LOG_BYTES {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size: len,
            limit: MAX_LOG_BYTES,
            what: "ceremony log",
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut all = Vec::with_capacity(len as usize);
    // The file may grow under us; never take more than the limit.
    file.take(MAX_LOG_BYTES + 1).read_to_end(&mut all).map_err(read_err)?;
    if all.len() as u64 > MAX_LOG_BYTES {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            size: all.len() as u64,
            limit: MAX_LOG_BYTES,
            what: "ceremony log",
        });
    }
    if !all.is_empty() && !all.ends_with(b"\n") {
        return Err(LogError::PartialLine {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(all)
}

fn read_head(log: &Path) -> Option<Head> {
    files::read_limited(&head_path(log), 4096, "log head")
        .ok()
        .and_then(|b| crate::format::json::from_slice(&b).ok())
}

/// How many lines the log has and the hash of the last, after checking the
/// log against its head: a line is never appended where the new head would
/// hide lines removed from the end, or lines added after the head. (Only
/// the head's end is checked, so an append stays fast on a long log; `log
/// verify` checks every line, and an append does not hide an edit there.)
fn checked_tail(file: &mut File, path: &Path) -> Result<(u64, Option<String>)> {
    let all = read_all(file, path)?;
    let lines: Vec<&[u8]> = all.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let count = lines.len() as u64;
    let broken = |line: u64, reason: LogBreak| LogError::Broken {
        path: path.to_path_buf(),
        line,
        reason,
    };
    match read_head(path) {
        None if count > 1 => return Err(broken(count + 1, LogBreak::HeadMissing).into()),
        None => {}
        Some(h) if h.lines > count => {
            let reason = LogBreak::LinesRemovedFromEnd {
                lines: count,
                head: h.lines,
            };
            return Err(broken(count + 1, reason).into());
        }
        Some(h) if count > h.lines + 1 => {
            let reason = LogBreak::LinesAdded {
                lines: count,
                head: h.lines,
            };
            return Err(broken(h.lines + 2, reason).into());
        }
        Some(h) if h.lines > 0 && sha256_hex(lines[h.lines as usize - 1]) != h.last => {
            let reason = LogBreak::HeadLineEdited {
                line: h.lines,
                last: h.lines == count,
            };
            return Err(broken(h.lines, reason).into());
        }
        Some(_) => {}
    }
    Ok((count, lines.last().map(|l| sha256_hex(l))))
}

/// Fails, without writing anything, unless a line could be appended to the
/// log at `path` now: called before a step does its work, so a step whose
/// record would fail leaves no output behind.
pub fn check_appendable(path: &Path) -> Result<()> {
    refuse_symlinks(path)?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if std::fs::symlink_metadata(path).is_ok() {
        let mut locked = Locked::open(path, false)?;
        checked_tail(&mut locked.0, path)?;
    }
    // The head is replaced through a temporary beside it: the folder must take new files.
    files::ensure_writable_folder(&folder, path)?;
    files::ensure_free_space(&folder, MIN_FREE_BYTES, path)
}

/// Appends `entry` to the log at `path` (created if absent); returns the line.
pub fn append(path: &Path, entry: Entry) -> Result<Line> {
    append_at(path, entry, OffsetDateTime::now_utc())
}

pub fn append_at(path: &Path, entry: Entry, now: OffsetDateTime) -> Result<Line> {
    let mut locked = Locked::open(path, true)?;
    let (count, last) = checked_tail(&mut locked.0, path)?;
    let prev = last.unwrap_or_else(|| GENESIS.to_string());
    let line = Line {
        seq: count + 1,
        time: now
            .format(&time::format_description::well_known::Rfc3339)
            .expect("UTC times format"),
        prev,
        entry,
    };
    let mut text = serde_json::to_string(&line).expect("plain data serialises");
    let hash = sha256_hex(text.as_bytes());
    text.push('\n');
    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let before = locked.0.metadata().map_err(write_err)?.len();
    // One write of the whole line: O_APPEND keeps it in one piece. A short
    // write (full disk, file-size limit) is cut back while the lock is held,
    // so no partial line is ever left for the next append to trip on.
    if let Err(e) = locked.0.write_all(text.as_bytes()).and_then(|_| locked.0.sync_all()) {
        let _ = locked.0.set_len(before);
        let _ = locked.0.sync_all();
        return Err(write_err(e));
    }
    super::kill::kill_point("log:line-written");
    let head = serde_json::to_vec(&Head {
        lines: line.seq,
        last: hash,
    })
    .expect("plain data serialises");
    files::replace(&head_path(path), &head, Mode::Public)?;
    Ok(line)
}

/// Why a log fails verification: the first broken line (1-based) and why.
#[derive(Debug, PartialEq)]
pub struct Broken {
    pub line: u64,
    pub reason: LogBreak,
}

/// The lines of a log that must verify to be used (for proofs, epochs,
/// nonces, health): a break is an error naming the log and line.
pub fn verified(path: &Path) -> Result<Vec<Line>> {
    verify(path)?.map_err(|b| {
        LogError::Broken {
            path: path.to_path_buf(),
            line: b.line,
            reason: b.reason,
        }
        .into()
    })
}

/// The epoch of the custodian set a rotation makes: one above the highest
/// any line of `log` records (the first set is epoch 1, so 2 with no log).
/// A log that does not verify is an error, never a silent 2: its epochs
/// cannot be trusted, and a reused epoch would let an old manifest replay.
pub fn next_epoch(log: Option<&Path>) -> Result<u64> {
    let lines = match log.filter(|p| p.exists()) {
        None => Vec::new(),
        Some(p) => verified(p)?,
    };
    let highest = lines
        .iter()
        .filter_map(|l| l.entry.details.get("epoch").and_then(|e| e.as_u64()))
        .max();
    Ok(highest.unwrap_or(1) + 1)
}

/// Reads and checks the whole chain; returns its lines or the first break.
pub fn verify(path: &Path) -> Result<std::result::Result<Vec<Line>, Broken>> {
    refuse_symlinks(path)?;
    let bytes = files::read_limited(path, MAX_LOG_BYTES, "ceremony log")?;
    Ok(check_chain(&bytes, read_head(path).as_ref()))
}

fn check_chain(bytes: &[u8], head: Option<&Head>) -> std::result::Result<Vec<Line>, Broken> {
    let mut lines = Vec::new();
    let mut hashes: Vec<String> = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut raw_lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let complete = bytes.is_empty() || bytes.ends_with(b"\n");
    if raw_lines.last().map(|l| l.is_empty()).unwrap_or(false) {
        raw_lines.pop();
    }
    for (i, raw) in raw_lines.iter().enumerate() {
        let n = i as u64 + 1;
        let broken = |reason: LogBreak| Broken { line: n, reason };
        if i + 1 == raw_lines.len() && !complete {
            return Err(broken(LogBreak::CutShort));
        }
        let line: Line =
            crate::format::json::from_slice(raw).map_err(|detail| broken(LogBreak::NotALine { detail }))?;
        if line.prev != prev {
            return Err(broken(if n == 1 {
                LogBreak::NotFirst
            } else {
                LogBreak::PrevMismatch { previous: n - 1 }
            }));
        }
        if line.seq != n {
            return Err(broken(LogBreak::WrongNumber { says: line.seq, is: n }));
        }
        if !serde_json::to_string(&line)
            .map(|t| t.as_bytes() == *raw)
            .unwrap_or(false)
        {
            return Err(broken(LogBreak::NotCanonical));
        }
        prev = sha256_hex(raw);
        hashes.push(prev.clone());
        lines.push(line);
    }
    let count = lines.len() as u64;
    match head {
        Some(h) if h.lines > count => Err(Broken {
            line: count + 1,
            reason: LogBreak::LinesRemovedFromEnd {
                lines: count,
                head: h.lines,
            },
        }),
        // The head lags by one when an append was killed between writing its
        // line and the head; more than one is lines added by other means.
        Some(h) if count > h.lines + 1 => Err(Broken {
            line: h.lines + 2,
            reason: LogBreak::LinesAdded {
                lines: count,
                head: h.lines,
            },
        }),
        Some(h) if h.lines > 0 && hashes[h.lines as usize - 1] != h.last => Err(Broken {
            line: h.lines,
            reason: LogBreak::HeadLineEdited {
                line: h.lines,
                last: h.lines == count,
            },
        }),
        // The appender tolerates a first line without its head (a kill
        // between the two); `log verify` does not vouch for such a log.
        None if count > 0 => Err(Broken {
            line: count + 1,
            reason: LogBreak::HeadMissing,
        }),
        _ => Ok(lines),
    }
}

/// The hash of a line as the next line's `prev` names it (for countersigning).
pub fn line_hash(line: &Line) -> String {
    sha256_hex(serde_json::to_string(line).expect("plain data serialises").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> Entry {
        Entry {
            command: Step::Other(format!("step {i}")),
            outcome: Outcome::Ok,
            thumbprints: vec![format!("t{i}")],
            ..Default::default()
        }
    }

    #[test]
    fn next_epoch_is_above_the_log_and_refuses_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_NAME);
        assert_eq!(next_epoch(None).unwrap(), 2);
        assert_eq!(next_epoch(Some(&path)).unwrap(), 2, "no log yet");
        let mut e = entry(0);
        e.details = serde_json::json!({"epoch": 5});
        append(&path, e).unwrap();
        append(&path, entry(1)).unwrap();
        assert_eq!(next_epoch(Some(&path)).unwrap(), 6);
        let text = std::fs::read_to_string(&path).unwrap().replacen("step 1", "step 9", 1);
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            next_epoch(Some(&path)),
            Err(Error::Log(LogError::Broken { .. }))
        ));
    }

    /// A log written to the format (not by this code) verifies, reads into
    /// typed steps, and writes back byte for byte: the types changed nothing
    /// on disk, and a step this version does not know stays readable.
    #[test]
    fn a_log_with_every_step_reads_and_writes_back_identical() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/log/ceremony-log.jsonl");
        let bytes = std::fs::read(&path).unwrap();
        let lines = verify(&path).unwrap().unwrap();
        let written: String = lines.iter().map(|l| serde_json::to_string(l).unwrap() + "\n").collect();
        assert_eq!(written.as_bytes(), &bytes[..]);
        let steps: Vec<&Step> = lines.iter().map(|l| &l.entry.command).collect();
        for known in Step::KNOWN {
            assert!(steps.contains(&known), "the fixture has no {known} line");
        }
        assert_eq!(lines[13].entry.command, Step::Other("sd retire".into()));
        assert_eq!(lines[13].entry.outcome, Outcome::Other("withdrawn".into()));
        assert_eq!(
            lines[4].entry.outcome,
            Outcome::Failed("wrong passphrase for c1.key".into())
        );
        assert_eq!(lines.iter().filter(|l| l.entry.outcome.is_ok()).count(), 13);
    }

    fn log_with(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_NAME);
        for i in 0..n {
            append(&path, entry(i)).unwrap();
        }
        (dir, path)
    }

    /// The lock, without process start-up in the way: each append opens the
    /// file anew, so `flock` serialises threads as it does processes.
    #[test]
    fn threads_appending_at_once_leave_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_NAME);
        let (writers, each) = (4, 100);
        std::thread::scope(|s| {
            for w in 0..writers {
                let path = &path;
                s.spawn(move || {
                    for i in 0..each {
                        append(path, entry(w * 1000 + i)).unwrap();
                    }
                });
            }
        });
        let lines = verify(&path).unwrap().unwrap();
        assert_eq!(lines.len(), writers * each);
        assert_eq!(head_of(&path).lines as usize, writers * each);
        let writer = |l: &Line| {
            l.entry
                .command
                .as_str()
                .trim_start_matches("step ")
                .parse::<usize>()
                .unwrap()
                / 1000
        };
        let switches = lines.windows(2).filter(|w| writer(&w[0]) != writer(&w[1])).count();
        assert!(switches > 10, "the writers hardly overlapped ({switches} switches)");
    }

    fn head_of(path: &Path) -> Head {
        serde_json::from_slice(&std::fs::read(head_path(path)).unwrap()).unwrap()
    }

    #[test]
    fn a_fresh_chain_verifies() {
        let (_d, path) = log_with(5);
        let lines = verify(&path).unwrap().unwrap();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0].prev, GENESIS);
        assert_eq!(lines[4].entry.command.as_str(), "step 4");
    }

    /// Every single-byte change of every line is caught.
    #[test]
    fn every_mutation_is_caught() {
        let (_d, path) = log_with(3);
        let bytes = std::fs::read(&path).unwrap();
        let head = head_of(&path);
        for i in 0..bytes.len() {
            if bytes[i] == b'\n' {
                continue;
            }
            let mut bad = bytes.clone();
            bad[i] = if bad[i] == b'x' { b'y' } else { b'x' };
            assert!(
                check_chain(&bad, Some(&head)).is_err(),
                "change at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn deletion_reordering_and_truncation_are_caught() {
        let (_d, path) = log_with(4);
        let text = std::fs::read_to_string(&path).unwrap();
        let head = head_of(&path);
        let lines: Vec<&str> = text.lines().collect();
        let join = |v: Vec<&str>| v.iter().map(|l| format!("{l}\n")).collect::<String>();
        let deleted = join(vec![lines[0], lines[2], lines[3]]);
        assert_eq!(check_chain(deleted.as_bytes(), Some(&head)).unwrap_err().line, 2);
        let swapped = join(vec![lines[0], lines[2], lines[1], lines[3]]);
        assert_eq!(check_chain(swapped.as_bytes(), Some(&head)).unwrap_err().line, 2);
        let truncated = join(vec![lines[0], lines[1], lines[2]]);
        assert_eq!(
            check_chain(truncated.as_bytes(), Some(&head)).unwrap_err().reason,
            LogBreak::LinesRemovedFromEnd { lines: 3, head: 4 }
        );
        let cut = &text[..text.len() - 10];
        assert!(check_chain(cut.as_bytes(), Some(&head)).is_err());
        assert!(check_chain(b"", Some(&head)).is_err(), "emptied log");
        assert!(check_chain(text.as_bytes(), None).is_err(), "missing head");
    }

    /// An append killed between its line and the head leaves a head one line
    /// behind: still a valid log, and the next append catches the head up.
    #[test]
    fn a_lagging_head_is_accepted_but_must_match_its_line() {
        let (_d, path) = log_with(3);
        let old_head = std::fs::read(head_path(&path)).unwrap();
        append(&path, entry(3)).unwrap();
        std::fs::write(head_path(&path), &old_head).unwrap();
        assert_eq!(verify(&path).unwrap().unwrap().len(), 4);
        append(&path, entry(4)).unwrap();
        assert_eq!(head_of(&path).lines, 5);
        assert_eq!(verify(&path).unwrap().unwrap().len(), 5);
        // A lagging head must name its line exactly.
        let text = std::fs::read_to_string(&path).unwrap();
        let hash_of = |i: usize| sha256_hex(text.lines().nth(i).unwrap().as_bytes());
        let good = Head {
            lines: 4,
            last: hash_of(3),
        };
        assert!(check_chain(text.as_bytes(), Some(&good)).is_ok());
        let wrong = Head {
            lines: 4,
            last: hash_of(2),
        };
        assert_eq!(check_chain(text.as_bytes(), Some(&wrong)).unwrap_err().line, 4);
    }

    /// Regression: a head any number of lines behind was accepted, so lines
    /// added by hand after the head verified. It may lag by one append only.
    #[test]
    fn a_head_more_than_one_line_behind_is_refused() {
        let (_d, path) = log_with(2);
        let old_head = std::fs::read(head_path(&path)).unwrap();
        append(&path, entry(2)).unwrap();
        append(&path, entry(3)).unwrap();
        std::fs::write(head_path(&path), &old_head).unwrap();
        let broken = verify(&path).unwrap().unwrap_err();
        assert_eq!(broken.line, 4, "{broken:?}");
        assert_eq!(broken.reason, LogBreak::LinesAdded { lines: 4, head: 2 });
        assert!(
            broken
                .reason
                .to_string()
                .ends_with("so line 4 was not appended by this tool"),
            "{broken:?}"
        );
        assert!(matches!(
            append(&path, entry(4)),
            Err(Error::Log(LogError::Broken { .. }))
        ));
        assert!(check_appendable(&path).is_err());
    }

    /// Regression: appending to a truncated log rewrote its head to match, so
    /// the removed lines were no longer detected. A broken chain takes no line.
    #[test]
    fn a_truncated_log_takes_no_line_that_would_hide_it() {
        let (_d, path) = log_with(4);
        let text = std::fs::read_to_string(&path).unwrap();
        let first_two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, first_two).unwrap();
        assert!(matches!(
            append(&path, entry(9)),
            Err(Error::Log(LogError::Broken { .. }))
        ));
        assert!(matches!(
            check_appendable(&path),
            Err(Error::Log(LogError::Broken { .. }))
        ));
        assert_eq!(
            verify(&path).unwrap().unwrap_err().reason,
            LogBreak::LinesRemovedFromEnd { lines: 2, head: 4 }
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_log_or_head_is_refused() {
        let (d, path) = log_with(1);
        let link = d.path().join("link.jsonl");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(append(&link, entry(1)), Err(Error::SymlinkRefused { .. })));
        assert!(matches!(check_appendable(&link), Err(Error::SymlinkRefused { .. })));
        assert!(matches!(verify(&link), Err(Error::SymlinkRefused { .. })));
        assert_eq!(
            verify(&path).unwrap().unwrap().len(),
            1,
            "the target was not appended to"
        );
        // A head that is a link (to a file the attacker controls) is refused too.
        let real_head = head_path(&path);
        let elsewhere = d.path().join("elsewhere.head");
        std::fs::rename(&real_head, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &real_head).unwrap();
        assert!(matches!(append(&path, entry(1)), Err(Error::SymlinkRefused { .. })));
        assert!(matches!(verify(&path), Err(Error::SymlinkRefused { .. })));
    }

    #[test]
    fn appending_to_a_partial_line_is_refused() {
        let (_d, path) = log_with(2);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3").unwrap();
        assert!(append(&path, entry(9)).is_err());
    }

    #[test]
    fn concurrent_appends_leave_one_chain() {
        let (_d, path) = log_with(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = path.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        append(&path, entry(t * 1000 + i)).unwrap();
                    }
                });
            }
        });
        assert_eq!(verify(&path).unwrap().unwrap().len(), 200);
    }
}
