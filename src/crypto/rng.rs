//! The one source of randomness in production: the operating system's.
//! Every function that draws randomness takes an RNG parameter so tests can
//! be deterministic; callers outside tests pass [`os_rng`].

use rand_core::UnwrapErr;

pub use rand_core::CryptoRng;

/// The OS random number generator. A failure of the OS RNG aborts rather than
/// yielding predictable bytes.
pub fn os_rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}
