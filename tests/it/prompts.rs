//! The hidden prompts, driven through a real pseudo-terminal as a custodian
//! would meet them (see `util::pty`): what they ask, that nothing typed is
//! echoed, and what happens after a wrong answer.

use crate::util;

use util::pty::{finish, on_terminal};
use util::{passphrase, Dir};

const GOOD: &str = "a long and private custodian phrase";

#[test]
fn keygen_asks_twice_hides_the_input_and_asks_again_when_the_entries_differ() {
    let dir = Dir::new("prompt-keygen");
    let mut s = on_terminal(&dir, &["custodian", "keygen", "--name", "alice", "--bits", "2048"]);
    let mut seen = String::new();
    seen += &s.exp_string("New passphrase for custodian alice").unwrap();
    s.send_line(GOOD).unwrap();
    seen += &s.exp_string("Repeat it").unwrap();
    s.send_line("a different phrase entirely").unwrap();
    seen += &s.exp_string("The two entries differ; try again.").unwrap();
    seen += &s.exp_string("New passphrase for custodian alice").unwrap();
    s.send_line(GOOD).unwrap();
    seen += &s.exp_string("Repeat it").unwrap();
    s.send_line(GOOD).unwrap();
    seen += &s.exp_string("x5t#S256").unwrap();
    let (rest, code) = finish(s);
    seen += &rest;
    assert_eq!(code, 0, "{seen}");
    assert!(!seen.contains(GOOD), "the passphrase was echoed:\n{seen}");
    assert!(
        !seen.contains("a different phrase"),
        "the passphrase was echoed:\n{seen}"
    );
    // The key opens with what was typed, and only with that.
    dir.write_secret("alice.pass", format!("{GOOD}\n"));
    util::openssl(
        &dir,
        &["pkey", "-in", "alice.key", "-passin", "file:alice.pass", "-noout"],
    );
    assert_eq!(dir.mode("alice.key"), 0o600);
}

#[test]
fn keygen_refuses_a_weak_passphrase_at_the_prompt_and_gives_up_after_three() {
    let dir = Dir::new("prompt-weak");
    let mut s = on_terminal(&dir, &["custodian", "keygen", "--name", "bob", "--bits", "2048"]);
    for _ in 0..3 {
        s.exp_string("New passphrase for custodian bob").unwrap();
        s.send_line("short").unwrap();
        // Judged on the first entry: no confirmation is asked for a weak one.
        let seen = s.exp_string("please choose another.").unwrap();
        assert!(
            !seen.contains("Repeat it"),
            "a weak passphrase was asked again:\n{seen}"
        );
    }
    let (rest, code) = finish(s);
    assert_ne!(code, 0, "{rest}");
    assert!(rest.contains("no acceptable passphrase was chosen for bob"), "{rest}");
    assert!(!dir.exists("bob.key") && !dir.exists("bob.cer"), "{:?}", dir.listing());
    dir.assert_no_temp();
}

#[test]
fn restore_blob_names_each_key_file_and_allows_three_tries() {
    let dir = Dir::new("prompt-restore");
    dir.copy(&["sd.json", "c0.key", "c0.cer", "c1.key", "c1.cer", "exchange.cer"]);
    let args = util::restore_blob_args(&["c0.key", "c1.key"], &[], "blob.json");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = on_terminal(&dir, &args);
    let mut seen = String::new();
    seen += &s.exp_string("Passphrase for c0.key").unwrap();
    s.send_line("not the right one at all").unwrap();
    seen += &s.exp_string("That passphrase does not open c0.key.").unwrap();
    seen += &s.exp_string("Passphrase for c0.key (try 2 of 3)").unwrap();
    s.send_line(&passphrase(0)).unwrap();
    seen += &s.exp_string("Passphrase for c1.key").unwrap();
    s.send_line(&passphrase(1)).unwrap();
    let (rest, code) = finish(s);
    seen += &rest;
    assert_eq!(code, 0, "{seen}");
    assert!(dir.exists("blob.json"));
    for secret in [passphrase(0), passphrase(1), "not the right one".into()] {
        assert!(!seen.contains(&secret), "a passphrase was echoed:\n{seen}");
    }

    // Three wrong answers: the key file is named, nothing is written.
    dir.remove("blob.json");
    let mut s = on_terminal(&dir, &args);
    s.exp_string("Passphrase for c0.key").unwrap();
    s.send_line("wrong again and again").unwrap();
    for attempt in 2..=3 {
        s.exp_string("That passphrase does not open c0.key.").unwrap();
        s.exp_string(&format!("Passphrase for c0.key (try {attempt} of 3)"))
            .unwrap();
        s.send_line("wrong again and again").unwrap();
    }
    // The custodian is skipped, the next one asked; one share is not a quorum.
    s.exp_string("warning: the key c0.key cannot be used: the passphrase does not open it")
        .unwrap();
    s.exp_string("Passphrase for c1.key").unwrap();
    s.send_line(&passphrase(1)).unwrap();
    let (rest, code) = finish(s);
    assert_eq!(code, util::EXIT_QUORUM, "{rest}");
    assert!(
        rest.contains("c0.key"),
        "the failure names the key that did not open: {rest}"
    );
    assert!(!dir.exists("blob.json"));
    dir.assert_no_temp();
}

#[test]
fn batch_keygen_asks_each_custodian_in_turn() {
    let dir = Dir::new("prompt-batch");
    let mut s = on_terminal(
        &dir,
        &[
            "custodian",
            "keygen",
            "--count",
            "2",
            "--prefix",
            "cust_",
            "--bits",
            "2048",
        ],
    );
    for name in ["cust_0", "cust_1"] {
        s.exp_string(&format!("New passphrase for custodian {name}")).unwrap();
        s.send_line(&format!("{GOOD} for {name}")).unwrap();
        s.exp_string("Repeat it").unwrap();
        s.send_line(&format!("{GOOD} for {name}")).unwrap();
    }
    let (rest, code) = finish(s);
    assert_eq!(code, 0, "{rest}");
    assert!(!rest.contains(GOOD), "a passphrase was echoed:\n{rest}");
    // Each key opens with its own custodian's passphrase.
    for name in ["cust_0", "cust_1"] {
        dir.write_secret("p.pass", format!("{GOOD} for {name}\n"));
        util::openssl(
            &dir,
            &[
                "pkey",
                "-in",
                &format!("{name}.key"),
                "-passin",
                "file:p.pass",
                "-noout",
            ],
        );
    }
}
