//! Printing for people and scripts: results to stdout, progress and
//! warnings to stderr, `--quiet` to keep only results and errors.
//!
//! Every byte the program prints goes through this file (tests/it/layers.rs
//! forbids print macros elsewhere in src/): paths, subjects, tags and log
//! fields come from files and command lines, and a control character in one
//! (`ESC[1A ESC[2K` in a certificate's CN) must not drive the terminal. A
//! stdout or stderr that cannot be written (a full disk, a closed pipe) ends
//! the command with the file-system exit code, never a panic.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A result line on stdout, kept under `--quiet`; control characters escaped.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::stdout_line(&format!($($arg)*))
    };
}

/// Narrative output, dropped by `--quiet`.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::cli::output::is_quiet() {
            $crate::cli::output::stdout_line(&format!($($arg)*));
        }
    };
}

/// A line on stderr (prompts' companions, retries); control characters escaped.
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr_line(&format!($($arg)*))
    };
}
// Path-exported so `crate::out!` works anywhere in the binary.
pub(crate) use {note, out, say};

pub fn warn(message: &str) {
    stderr_line(&format!("warning: {message}"));
}

/// Prints `text` and a newline to stdout, escaped.
pub fn stdout_line(text: &str) {
    stdout_bytes(format!("{}\n", printable(text)).as_bytes());
}

/// Prints `text` and a newline to stderr, escaped.
pub fn stderr_line(text: &str) {
    let mut err = std::io::stderr().lock();
    if let Err(e) = err
        .write_all(format!("{}\n", printable(text)).as_bytes())
        .and_then(|()| err.flush())
    {
        drop(err);
        fail("standard error", &e);
    }
}

/// Writes text the program made itself (a completion script, JSON from
/// serde, which escapes control characters) to stdout as is.
pub fn stdout_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        drop(out);
        fail("standard output", &e);
    }
}

/// Output that cannot be written cannot be returned as an error from every
/// print site: report it once, on stderr if that still works, and exit with
/// the file-system code. Files the command wrote are complete by then
/// (every write is atomic), so nothing is left half-done.
pub fn fail(which: &str, e: &std::io::Error) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "error: cannot write the command's {which}: {e}\n  what to do: Check the disk or pipe that {which} goes to; \
         files the command wrote are complete."
    );
    std::process::exit(i32::from(super::errors::EXIT_IO));
}

/// `text` with control characters (other than newline and tab) and Unicode
/// direction overrides escaped: names and tags read from hostile files must
/// not drive the terminal or reorder what it shows.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if (c.is_control() && c != '\n' && c != '\t') || bidi {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One value on one line: [`printable`], and newlines escaped too, for
/// fields that can never hold one (a subject, a path, a tag).
pub fn one_line(text: &str) -> String {
    printable(text).replace('\n', "\\n").replace('\t', "\\t")
}

pub fn print_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    stdout_bytes(format!("{text}\n").as_bytes());
}

/// `AB:CD:...` as `openssl x509 -fingerprint -sha256` prints it.
pub fn colon_hex(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or("").to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

pub use hsm_ceremony::custodian::cert::rfc3339 as date;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_direction_overrides_are_escaped() {
        let shown = printable("a\u{1b}[1A\u{1b}[2Kb\r\u{9b}c\u{202e}d\n\te");
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{shown}"
        );
        assert_eq!(shown, "a\\u{1b}[1A\\u{1b}[2Kb\\u{d}\\u{9b}c\\u{202e}d\n\te");
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
    }
}
