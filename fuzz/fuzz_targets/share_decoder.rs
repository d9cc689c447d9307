//! The share decoder: strict parsing, and what parses round-trips exactly.
#![no_main]
use hsm_ceremony::crypto::shamir::Share;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(share) = Share::from_bytes(data) {
        assert!((1..=126).contains(&share.x()));
        assert_eq!(share.to_bytes().as_slice(), data);
        let _ = hsm_ceremony::crypto::shamir::combine(&[&share, &share]);
    }
});
