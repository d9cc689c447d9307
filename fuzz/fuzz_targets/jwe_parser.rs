//! The compact-JWE parser, then decryption with a fixed 64-byte key (the
//! MAC must refuse anything the fuzzer makes up).
#![no_main]
use hsm_ceremony::crypto::jwe::CompactJwe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(jwe) = CompactJwe::parse(text) {
        assert!(jwe.decrypt_with_key(&[7u8; 64]).is_err(), "a forged JWE opened");
    }
});
