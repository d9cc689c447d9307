//! The restore-blob opener as the emulator runs it on upload: parse, then
//! open with a fixed RSA-2048 exchange key. The blob's x5t_256 is set to the
//! key's so the fuzzer reaches RSA-OAEP and the items' MACs.
#![no_main]
use std::sync::OnceLock;

use hsm_ceremony::custodian::{cert::Certificate, keygen};
use hsm_ceremony::format::restore_blob::RestoreBlob;
use hsm_ceremony::recovery;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fn exchange() -> &'static (rsa::PrivateKey, Certificate) {
    static CELL: OnceLock<(rsa::PrivateKey, Certificate)> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let key = keygen::generate_key_with_rng(&mut rng, 2048).unwrap();
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let cert = keygen::self_signed_certificate_with_rng(&mut rng, &key, "fuzz-exchange", 30, now).unwrap();
        (key, cert)
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, cert) = exchange();
    if let Ok(mut blob) = RestoreBlob::from_json(data) {
        let _ = recovery::open_restore_blob(&blob, key, cert);
        blob.wrapped_key.x5t_256 = cert.x5t_256();
        assert!(recovery::open_restore_blob(&blob, key, cert).is_err(), "a forged blob opened");
    }
});
