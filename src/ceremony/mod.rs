//! The ceremony's records: the hash-chained log, the manifest custodians sign
//! before a split, rotations, drill reports and quorum health.

pub mod drill;
pub mod health;
pub mod kill;
pub mod log;
pub mod manifest;
pub mod rotation;
pub mod signing;
pub mod step;
