//! The crash tests' hook: a process that kills itself at a named point of a rotation, a drill or a log append.

/// Test hook: with `HSM_CEREMONY_KILL_AT=<point>` in the environment the
/// process kills itself at that point, so the integration tests can crash a
/// rotation or a drill between any two of its steps. The signal is SIGKILL,
/// or `HSM_CEREMONY_KILL_SIGNAL` (`TERM`, `HUP`, `INT`): what an operator's
/// Ctrl-C or a closed terminal does. Compiled in only with the `test-hooks`
/// feature, which only `cargo test` turns on: a release build has neither
/// the hook nor the variables' names.
#[cfg(feature = "test-hooks")]
pub fn kill_point(point: &str) {
    if std::env::var_os("HSM_CEREMONY_KILL_AT").is_some_and(|v| v == point) {
        #[cfg(unix)]
        {
            let signal = match std::env::var("HSM_CEREMONY_KILL_SIGNAL").as_deref() {
                Ok("TERM") => libc::SIGTERM,
                Ok("HUP") => libc::SIGHUP,
                Ok("INT") => libc::SIGINT,
                _ => libc::SIGKILL,
            };
            // SAFETY: signals this very thread with the default disposition,
            // which ends the process. The disposition is reset first: one
            // inherited as ignored (nohup ignores SIGHUP) would leave only
            // the SIGKILL below. raise, not kill(getpid()): another thread
            // may take a process-directed signal after kill returns.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        std::process::abort();
    }
}

/// Without `test-hooks`: nothing, and nothing to read from the environment.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn kill_point(_point: &str) {}

/// Test hook: with `HSM_CEREMONY_FAIL_AT=<point>` in the environment the
/// step at that point fails with an error (rather than the process dying),
/// so the tests can check what a failed step cleans up. Compiled in only
/// with the `test-hooks` feature, like [`kill_point`].
#[cfg(feature = "test-hooks")]
pub fn fail_point(point: &str) -> Result<(), String> {
    if std::env::var_os("HSM_CEREMONY_FAIL_AT").is_some_and(|v| v == point) {
        return Err(format!(
            "HSM_CEREMONY_FAIL_AT={point} (a test hook) made this step fail"
        ));
    }
    Ok(())
}

/// Without `test-hooks`: never fails, and reads nothing from the environment.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn fail_point(_point: &str) -> Result<(), String> {
    Ok(())
}
