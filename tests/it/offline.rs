//! Offline by construction: the ceremony commands run in a network namespace
//! with no interfaces (`unshare -n`), and only the instance client and the
//! emulator (`src/instance`, `src/emulator`, and the emulator's CLI front,
//! which parses `--listen`) name a networking crate or socket type.

use crate::util;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use util::{Dir, BIN};

/// How to enter a namespace with no network here, or why that is impossible.
fn unshare_prefix() -> Result<Vec<&'static str>, String> {
    let mut why = Vec::new();
    for prefix in [vec!["unshare", "-n"], vec!["unshare", "-rn"]] {
        match Command::new(prefix[0]).args(&prefix[1..]).arg("true").output() {
            Ok(o) if o.status.success() => return Ok(prefix),
            Ok(o) => why.push(format!(
                "`{} true`: {}",
                prefix.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => why.push(format!("`{}`: {e}", prefix.join(" "))),
        }
    }
    Err(why.join("; "))
}

#[test]
fn every_offline_command_succeeds_with_no_network_at_all() {
    let prefix = match unshare_prefix() {
        Ok(p) => p,
        Err(why) => {
            // Written past libtest's capture, so the SKIP shows in `cargo test` and .ci/run's log.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP every_offline_command_succeeds_with_no_network_at_all: no network namespace here: {why}"
            );
            return;
        }
    };
    // The namespace really has no interface but a loopback that is down.
    let dev = Command::new(prefix[0])
        .args(&prefix[1..])
        .args(["cat", "/proc/net/dev"])
        .output()
        .unwrap();
    let dev = String::from_utf8_lossy(&dev.stdout);
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "the namespace has interfaces: {dev}");

    let d = Dir::new("offline");
    d.ceremony();
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "custodian",
            "keygen",
            "--name",
            "n0",
            "--bits",
            "2048",
            "--insecure-unencrypted-key",
        ],
        vec!["sd", "inspect", "sd.json", "--certs", "c0.cer", "c1.cer", "c2.cer"],
        vec![
            "custodian",
            "verify",
            "--sd-file",
            "sd.json",
            "--key",
            "c0.key",
            "--passphrase-file",
            "c0.pass",
        ],
        vec![
            "sd",
            "split",
            "--certs",
            "c0.cer",
            "c1.cer",
            "n0.cer",
            "--quorum",
            "2",
            "--random-contents",
            "--out",
            "new.json",
        ],
        vec![
            "restore-blob",
            "--sd-file",
            "sd.json",
            "--sd-exchange-key",
            "exchange.cer",
            "--sd-wrapping-keys",
            "c0.key",
            "c1.key",
            "--passphrase-file",
            "c0.pass",
            "--passphrase-file",
            "c1.pass",
            "--out",
            "blob.json",
        ],
        vec![
            "rotate",
            "--sd-file",
            "sd.json",
            "--sd-wrapping-keys",
            "c1.key",
            "c2.key",
            "--passphrase-file",
            "c1.pass",
            "--passphrase-file",
            "c2.pass",
            "--new-certs",
            "c0.cer",
            "c2.cer",
            "n0.cer",
            "--quorum",
            "2",
            "--out",
            "rot.json",
        ],
        vec!["log", "verify", "ceremony-log.jsonl"],
        // The local drill: a whole ceremony and recovery.
        vec!["demo"],
    ];
    for args in &runs {
        let out = Command::new(prefix[0])
            .args(&prefix[1..])
            .arg(BIN)
            .args(args)
            .current_dir(d.path())
            .env_remove("HSM_CEREMONY_PASSPHRASE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "offline: hsm-ceremony {} failed\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for f in ["n0.key", "new.json", "blob.json", "rot.json.pending"] {
        assert!(d.exists(f), "{f} was not written");
    }
    println!(
        "offline: {} commands succeeded in a network namespace with no interfaces",
        runs.len()
    );
}

/// Files allowed to name networking: the instance client, the emulator, and
/// the emulator's CLI front (a `SocketAddr` for `--listen`, nothing more).
const NETWORK_ALLOWED: [&str; 3] = ["src/instance/", "src/emulator/", "src/cli/emulator.rs"];
const NETWORK_NAMES: [&str; 9] = [
    "ureq",
    "hyper",
    "tokio",
    "rustls",
    "std::net",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "socket2",
];

#[test]
fn only_the_instance_client_and_the_emulator_name_networking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (scanned, offenders) = util::src_lines_naming(
        |rel| !NETWORK_ALLOWED.iter().any(|a| rel.starts_with(a)),
        &NETWORK_NAMES,
    );
    assert!(scanned > 30, "only {scanned} source files scanned");
    assert!(
        offenders.is_empty(),
        "networking named outside src/instance and src/emulator:\n{}",
        offenders.join("\n")
    );
    // The emulator's CLI front may only parse an address.
    let front = fs::read_to_string(root.join("src/cli/emulator.rs")).unwrap();
    for name in NETWORK_NAMES.iter().filter(|n| **n != "std::net") {
        assert!(!front.contains(name), "src/cli/emulator.rs names {name}");
    }
}
