//! The ceremony's records: the hash-chained log, the manifest custodians sign
//! before a split, rotations, old copies destroyed, drill reports and quorum health.

pub mod destruction;
pub mod drill;
pub mod health;
pub mod kill;
pub mod log;
pub mod manifest;
pub mod rotation;
pub mod signing;
pub mod step;
pub mod witness;
