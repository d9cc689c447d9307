//! The blocking HTTP client for a Managed HSM instance, real or emulated:
//! security-domain download, transfer key, upload with status polling, keys
//! and their HSM-side operations, full backup and restore, and the drill's
//! instance. Only the URL it is given is ever contacted (no proxy from the
//! environment, no redirects, pending URLs and list pages are rebuilt from
//! the base URL rather than taken from the answers).

mod client;
mod download;
mod target;

pub use client::{
    base_url, is_emulator_url, Activation, BackupDone, InstanceClient, InstanceStatus, KeyInfo, ListedVersion, NewKey,
    OperationStatus, Progress, DEFAULT_API_VERSION,
};
pub use download::{Download, Downloaded};
pub use target::{DrillInstance, LOCAL_LABEL};
