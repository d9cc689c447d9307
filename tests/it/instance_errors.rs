//! `instance …` against a URL it must not trust or cannot reach: URLs are
//! parsed (user info never redirects the token to another host), and every
//! failure — a closed port, a CA that does not sign the instance, a refused
//! token — is exit 7 with its own advice, never "none" and exit 0.

use crate::util;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use util::{Dir, Served, BIN, EXIT_INPUT};

const EXIT_INSTANCE: i32 = 7;
const TOKEN: &str = "tok-3b1f0c9e-not-to-be-printed";

fn status(dir: &Dir, url: &str, extra: &[&str]) -> util::Output {
    let mut args = vec!["instance", "status", "--url", url, "--token-file", "t"];
    args.extend_from_slice(extra);
    dir.run(&args)
}

fn token_dir(name: &str) -> Dir {
    let dir = Dir::new(name);
    dir.write("t", TOKEN);
    dir.chmod("t", 0o600);
    dir
}

/// `http://127.0.0.1:1@127.0.0.2:PORT` names the host 127.0.0.2: a prefix
/// match took it for loopback 127.0.0.1 and sent the bearer token there.
#[test]
fn user_info_in_the_url_sends_nothing_to_the_host_behind_it() {
    let other = TcpListener::bind("127.0.0.2:0").expect("127.0.0.2 is a loopback address on Linux");
    other.set_nonblocking(true).unwrap();
    let port = other.local_addr().unwrap().port();
    let dir = token_dir("url-userinfo");
    for url in [
        format!("http://127.0.0.1:1@127.0.0.2:{port}"),
        format!("https://127.0.0.1:1@127.0.0.2:{port}"),
        format!("http://localhost@127.0.0.2:{port}/"),
    ] {
        let out = status(&dir, &url, &[]);
        out.fails(
            EXIT_INPUT,
            &["user name or password", &format!("127.0.0.2:{port}"), "what to do"],
        );
        assert!(!out.stderr.contains(TOKEN) && !out.stdout.contains(TOKEN), "{out:?}");
        assert!(
            other
                .accept()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "{url}: 127.0.0.2 received a connection"
        );
    }
    // The same host without user info is reached: the listener is real.
    let mut control = Command::new(BIN)
        .args([
            "instance",
            "status",
            "--url",
            &format!("http://127.0.0.2:{port}"),
            "--token-file",
            "t",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let reached = loop {
        if other.accept().is_ok() {
            break true;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = control.kill();
    let _ = control.wait();
    assert!(reached, "the control request never reached 127.0.0.2");
}

#[test]
fn status_of_a_closed_port_is_a_failure_with_advice() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = token_dir("status-closed");
    for url in [format!("https://127.0.0.1:{port}"), format!("http://127.0.0.1:{port}")] {
        let out = status(&dir, &url, &[]);
        out.fails(
            EXIT_INSTANCE,
            &[&format!("127.0.0.1:{port}"), "what to do: Check the URL and port"],
        );
        assert!(!out.stdout.contains("none"), "{out:?}");
        status(&dir, &url, &["--json"]).fails(EXIT_INSTANCE, &["Check the URL and port"]);
    }
}

#[test]
fn status_with_the_wrong_ca_or_a_refused_token_is_a_failure_with_advice() {
    let dir = token_dir("status-refused");
    let served = Served::start(&dir, "state");
    // A certificate that did not sign the emulator's: the TLS handshake fails.
    util::openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=other CA",
        ],
    );
    let out = status(&dir, &served.url, &["--ca", "other.pem"]);
    out.fails(
        EXIT_INSTANCE,
        &["TLS", "what to do: The instance's certificate is not trusted", "--ca"],
    );
    assert!(!out.stdout.contains("none"), "{out:?}");
    // The right CA, a token the emulator never issued: 401.
    let out = status(&dir, &served.url, &["--ca", &served.ca]);
    out.fails(
        EXIT_INSTANCE,
        &["401", "what to do: The token was refused", "--token-file"],
    );
    assert!(!out.stderr.contains(TOKEN), "{out:?}");
    // A token without the administrator role: 403 and its own advice.
    let issued = dir.run(&[
        "emulator",
        "token",
        "--state",
        "state",
        "--principal",
        "app",
        "--role",
        "crypto-user",
    ]);
    issued.ok();
    dir.write("t", issued.stdout.trim());
    status(&dir, &served.url, &["--ca", &served.ca]).fails(EXIT_INSTANCE, &["403", "lacks the local role"]);
    // An administrator's token on a fresh instance: no operation yet is "none", exit 0.
    let issued = dir.run(&[
        "emulator",
        "token",
        "--state",
        "state",
        "--principal",
        "ops",
        "--role",
        "administrator",
    ]);
    issued.ok();
    dir.write("t", issued.stdout.trim());
    status(&dir, &served.url, &["--ca", &served.ca])
        .ok()
        .stdout_has("download (activation)  none")
        .stdout_has("upload (recovery)      none");
}

#[test]
fn a_password_or_query_in_the_url_is_never_echoed() {
    let dir = token_dir("url-masked");
    for url in [
        "https://ops:hunter2@127.0.0.1:9",
        "https://127.0.0.1:9/?access_token=hunter2",
        "https://127.0.0.1:9/#hunter2",
        "http://hunter2@example.com",
    ] {
        let out = status(&dir, url, &[]);
        out.fails(EXIT_INPUT, &["--url", "what to do: Give the instance's base URL"]);
        assert!(!out.stderr.contains("hunter2"), "{url}: {out:?}");
    }
}
