//! Running the binary on a real pseudo-terminal, as a custodian meets its
//! prompts. The terminal starts with echo on (`stty echo`), so a prompt that
//! failed to hide what is typed would put it in the transcript.

use std::process::Command;

use nix::sys::wait::WaitStatus;
use rexpect::session::{spawn_command, PtySession};

use super::{Dir, BIN};

/// `hsm-ceremony ARGS` in `dir` on a fresh terminal with echo on, after
/// `setup` adjusts the command (environment).
pub fn on_terminal_with(dir: &Dir, args: &[&str], setup: impl FnOnce(&mut Command)) -> PtySession {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("stty echo && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_remove("HSM_CEREMONY_PASSPHRASE")
        .env_remove("HSM_CEREMONY_PIN")
        .env("TERM", "dumb");
    setup(&mut cmd);
    spawn_command(cmd, Some(60_000)).expect("a pseudo-terminal")
}

pub fn on_terminal(dir: &Dir, args: &[&str]) -> PtySession {
    on_terminal_with(dir, args, |_| {})
}

/// Waits for the end and returns the rest of the transcript and the exit code.
pub fn finish(mut s: PtySession) -> (String, i32) {
    let rest = s.exp_eof().expect("the command ends");
    let code = match s.process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("the command did not exit normally: {other:?}"),
    };
    (rest, code)
}
