//! The quorum and size limits of Azure's tooling (security-domain(5), SECURITY-DOMAIN FILE), in one place.

/// The Azure service accepts N in [3, 10] at download time.
pub const AZURE_MIN_CUSTODIANS: usize = 3;
pub const MAX_CUSTODIANS: usize = 10;
/// M in [2, N]; the Azure CLI refuses `required` outside [2, 10].
pub const MIN_QUORUM: usize = 2;
/// Below this an RSA modulus is refused everywhere (the service's own floor).
pub const MIN_RSA_BITS: usize = 2048;
/// A real security domain is about 19 KB; anything past this is not one and
/// is refused before it is read into memory.
pub const MAX_SD_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Certificates and keys are a few KB.
pub const MAX_KEY_FILE_BYTES: u64 = 256 * 1024;

/// Which service the security domain is for: Azure's limits, or a local
/// (emulated) instance that also accepts 2 custodians.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Azure,
    Local,
}

/// Checks N and M against the profile's limits.
pub fn check_quorum(n: usize, m: usize, profile: Profile) -> Result<(), String> {
    let min_n = match profile {
        Profile::Azure => AZURE_MIN_CUSTODIANS,
        Profile::Local => MIN_QUORUM,
    };
    if n < min_n || n > MAX_CUSTODIANS {
        return Err(format!(
            "{n} custodians is outside the allowed {min_n} to {MAX_CUSTODIANS}"
        ));
    }
    if m < MIN_QUORUM || m > n {
        return Err(format!(
            "a quorum of {m} is outside the allowed {MIN_QUORUM} to {n} (the number of custodians)"
        ));
    }
    Ok(())
}

/// Whether `name` is a Managed HSM key name (`^[0-9a-zA-Z-]{1,127}$`): the
/// rule the service and the emulator apply, so a client can refuse a name
/// before it becomes part of a request path.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 127 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_limits() {
        assert!(check_quorum(3, 2, Profile::Azure).is_ok());
        assert!(check_quorum(10, 10, Profile::Azure).is_ok());
        assert!(check_quorum(2, 2, Profile::Azure).is_err());
        assert!(check_quorum(2, 2, Profile::Local).is_ok());
        assert!(check_quorum(11, 2, Profile::Local).is_err());
        assert!(check_quorum(3, 1, Profile::Azure).is_err());
        assert!(check_quorum(3, 4, Profile::Azure).is_err());
    }
}
