//! `hsm-ceremony self-test`: the known-answer tests (src/selftest.rs), one
//! line each, on the ceremony laptop before anything else.

use hsm_ceremony::error::{Error, Result};
use hsm_ceremony::selftest;

/// Run the known-answer tests of the cryptography a ceremony uses.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Run the known-answer tests of the cryptography a ceremony uses: the SP 800-108 KDF, \
                  A256CBC-HS512 (RFC 7518 B.3), RSA-OAEP-256 decryption, Shamir GF(257) split and combine, \
                  PKCS#8 PBES2 decryption, and the operating system's RNG. Run it on the ceremony laptop \
                  first; any failure exits 4 and the binary must not be used.",
    after_help = "Example:\n  hsm-ceremony self-test"
)]
pub struct SelfTestArgs {}

pub fn run(_args: &SelfTestArgs) -> Result<()> {
    let results = selftest::run_all();
    let mut failed = Vec::new();
    for r in &results {
        match &r.outcome {
            Ok(()) => crate::out!("ok    {:<14} {}", r.kat.id(), r.kat.describe()),
            Err(why) => {
                crate::out!("FAIL  {:<14} {}: {why}", r.kat.id(), r.kat.describe());
                failed.push(r.kat.id());
            }
        }
    }
    if !failed.is_empty() {
        return Err(Error::SelfTestFailed { failed });
    }
    crate::say!("self-test: all {} known-answer tests passed", results.len());
    Ok(())
}
