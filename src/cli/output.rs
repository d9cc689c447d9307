//! Printing for people and scripts: results to stdout, progress and
//! warnings to stderr, `--quiet` to keep only results and errors.

use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Narrative output, dropped by `--quiet`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::cli::output::is_quiet() {
            println!($($arg)*);
        }
    };
}

pub fn warn(message: &str) {
    eprintln!("warning: {}", printable(message));
}

/// `text` with control characters (other than newline and tab) escaped:
/// names and tags read from hostile files must not drive the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialise")
    );
}

/// `AB:CD:...` as `openssl x509 -fingerprint -sha256` prints it.
pub fn colon_hex(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or("").to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

pub fn date(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
