//! The security-domain parser: any bytes either parse into a file that
//! validates, or are refused; never a panic. A parsed file re-serialises.
#![no_main]
use hsm_ceremony::format::sdfile::SecurityDomain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sd) = SecurityDomain::from_json(data) {
        let _ = sd.required();
        for i in 0..sd.share_count() {
            let _ = sd.share_jwe(i);
        }
        let again = SecurityDomain::from_json(sd.to_json().as_bytes()).expect("what we write, we read");
        assert_eq!(again.share_count(), sd.share_count());
    }
});
