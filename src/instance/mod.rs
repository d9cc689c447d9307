//! The blocking HTTP client for a Managed HSM instance, real or emulated:
//! security-domain download, transfer key, upload with status polling, and
//! the canary-key operations. Only the URL it is given is ever contacted (no
//! proxy from the environment, no redirects, pending URLs are rebuilt from
//! the base URL rather than taken from response headers).

mod client;

pub use client::{InstanceClient, KeyInfo, OperationStatus, DEFAULT_API_VERSION};
