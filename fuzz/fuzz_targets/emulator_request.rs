//! The emulator's request parse (`emulator::preflight`): the same route,
//! api-version, path and body parse the server runs before authorization
//! and state come in (src/emulator/request.rs). Input: method line, path
//! and query line, then the body. Every refusal must be a 4xx in Key
//! Vault's error shape, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    if let Err((status, body)) = hsm_ceremony::emulator::preflight(&method, &path, body) {
        assert!((400..500).contains(&status), "a hostile request gave {status}");
        assert!(body.starts_with("{\"error\""), "not Key Vault's error shape: {body}");
    }
});
