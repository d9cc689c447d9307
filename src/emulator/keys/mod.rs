//! Keys of the emulated Managed HSM: RSA-HSM, EC-HSM and oct-HSM keys with
//! versions, soft delete and rotation policies ([`store`], persisted as
//! `keys.json` unless the instance holds recovered contents), the JSON the
//! routes answer with ([`bundle`]), the checked request bodies ([`spec`]) and
//! the HSM-side operations with the private key ([`crypto`]).

pub mod bundle;
pub mod crypto;
pub mod spec;
pub mod store;

pub use bundle::View;
pub use crypto::Material;
pub use spec::KeySpec;
pub(crate) use store::KeyStore;
pub use store::{check_name, Page, MAX_RESULTS};
