//! Recording that an old copy of a security domain was destroyed. After a
//! rotation, any old copy plus a quorum of the old keys still recovers the
//! HSM, so each copy's destruction is a log line (its SHA-256, read before
//! it is destroyed) that the witness countersigns with `log sign`.

use std::path::Path;

use serde_json::json;

use super::log::{Entry, FileRef, Line, Outcome, Step};
use crate::error::{LogError, Result};
use crate::format::sdfile::SecurityDomain;

/// The copy to be destroyed, as the operator has it.
pub enum Copy<'a> {
    /// A file at hand, fingerprinted by the bytes parsed (`sha256`); `sd`
    /// names its custodians.
    File {
        path: &'a Path,
        sd: &'a SecurityDomain,
        sha256: &'a str,
    },
    /// A copy not at hand (a stick in a safe destroyed elsewhere), named by
    /// the operator and by its SHA-256 from the paper record.
    Declared { name: &'a str, sha256: &'a str },
}

/// The log line for `copy`'s destruction, refused when `lines` (the log's,
/// verified) show it is the current security domain: destroying that one
/// is not the end of a rotation but the loss of the HSM's recovery.
pub fn entry(copy: &Copy<'_>, lines: &[Line]) -> Result<Entry> {
    let (file, thumbprints, declared) = match copy {
        Copy::File { path, sd, sha256 } => (
            FileRef::parsed(path, sha256.to_string()),
            sd.shared_keys.enc_shares.iter().map(|s| s.x5t_256.clone()).collect(),
            false,
        ),
        Copy::Declared { name, sha256 } => (
            FileRef {
                path: name.to_string(),
                sha256: sha256.to_string(),
            },
            Vec::new(),
            true,
        ),
    };
    if let Some(line) = current(lines).filter(|l| l.entry.outputs.iter().any(|f| f.sha256 == file.sha256)) {
        return Err(LogError::DestroyingCurrent {
            copy: file.path,
            line: line.seq,
            step: line.entry.command.to_string(),
        }
        .into());
    }
    Ok(Entry {
        command: Step::LogDestroyed,
        inputs: vec![file],
        thumbprints,
        outcome: Outcome::Ok,
        details: json!({ "declared": declared }),
        ..Default::default()
    })
}

/// The line that made the current security domain: of the steps that make
/// one, the successful one of the highest custodian-set epoch (the latest
/// of equals).
fn current(lines: &[Line]) -> Option<&Line> {
    let makes = [Step::SdSplit, Step::InstanceDownload, Step::RotateFinalize];
    let epoch = |l: &Line| l.entry.details.get("epoch").and_then(|e| e.as_u64()).unwrap_or(1);
    lines
        .iter()
        .filter(|l| l.entry.outcome.is_ok() && makes.contains(&l.entry.command))
        .max_by_key(|l| (epoch(l), l.seq))
}

/// Whether `text` is a SHA-256 as the log writes it: 64 lowercase hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, command: Step, epoch: u64, output_sha: &str) -> Line {
        Line {
            seq,
            time: String::new(),
            prev: String::new(),
            entry: Entry {
                command,
                outputs: vec![FileRef {
                    path: format!("sd-{epoch}.json"),
                    sha256: output_sha.into(),
                }],
                outcome: Outcome::Ok,
                details: json!({ "epoch": epoch }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_retired_copy_is_recorded_and_the_current_one_refused() {
        let (old, new) = ("a".repeat(64), "b".repeat(64));
        let lines = [
            line(1, Step::InstanceDownload, 1, &old),
            line(2, Step::RotateFinalize, 2, &new),
        ];
        let copy = Copy::Declared {
            name: "safe B stick",
            sha256: &old,
        };
        let e = entry(&copy, &lines).unwrap();
        assert_eq!(e.command, Step::LogDestroyed);
        assert_eq!(
            (e.inputs[0].path.as_str(), e.inputs[0].sha256.as_str()),
            ("safe B stick", old.as_str())
        );
        assert_eq!(e.details["declared"], true);
        let current = Copy::Declared {
            name: "sd-epoch2.json",
            sha256: &new,
        };
        let err = entry(&current, &lines).unwrap_err().to_string();
        assert!(err.contains("line 2 of the ceremony log, rotate finalize"), "{err}");
        // Before any rotation the downloaded file is the current one.
        assert!(entry(&copy, &lines[..1]).is_err());
    }

    #[test]
    fn only_a_log_style_sha256_is_one() {
        assert!(is_sha256(&"0f".repeat(32)));
        for bad in ["", "0f", &"0F".repeat(32), &"0g".repeat(32), &"0f".repeat(33)] {
            assert!(!is_sha256(bad), "{bad}");
        }
    }
}
