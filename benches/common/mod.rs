//! What the emulator benchmarks share: a served emulator on loopback, its
//! memory, latency percentiles.
#![allow(dead_code)] // each benchmark uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Served {
    pub child: Child,
    pub url: String,
    pub ca: PathBuf,
    pub dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(dir: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hsm-ceremony"))
        .args(["emulator", "serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the emulator starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut s = Served {
        child,
        url: String::new(),
        ca: PathBuf::new(),
        dir: dir.to_path_buf(),
    };
    for _ in 0..2 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the emulator prints its address");
        if let Some(u) = line.strip_prefix("listening on ") {
            s.url = u.into();
        } else if let Some(c) = line.strip_prefix("CA certificate: ") {
            s.ca = c.into();
        }
    }
    s
}

pub fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
