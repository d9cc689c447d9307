//! The security-domain file, `version: 2` (security-domain(5), SECURITY-DOMAIN FILE): what
//! `az keyvault security-domain download` writes and the service produces.

use serde::{Deserialize, Serialize};

use super::limits::{MAX_CUSTODIANS, MIN_QUORUM};
use super::FormatError;
use crate::crypto::b64::b64u_decode;
use crate::crypto::jwe::{Alg, CompactJwe};

pub const VERSION: u64 = 2;
pub const KDF: &str = "sp108_kdf";
pub const KEY_ALGORITHM: &str = "shamir_share";
/// The three items a real Managed HSM security domain carries, with the
/// ciphertext sizes seen in a real one.
pub const REAL_ITEMS: [(&str, usize); 3] = [
    ("hsm_backup", 8192),
    ("base_enclave_backup", 880),
    ("partition_enclave_backup", 2960),
];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataItem {
    pub compact_jwe: String,
    pub tag: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncData {
    pub data: Vec<DataItem>,
    pub kdf: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncShare {
    pub enc_key: String,
    pub x5t_256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedKeys {
    pub enc_shares: Vec<EncShare>,
    pub key_algorithm: String,
    pub required: u64,
}

/// A security-domain file. Field order is the service's; extra keys are
/// tolerated on read and never written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecurityDomain {
    #[serde(rename = "EncData")]
    pub enc_data: EncData,
    #[serde(rename = "SharedKeys")]
    pub shared_keys: SharedKeys,
    pub version: u64,
}

impl SecurityDomain {
    /// Parses and checks everything a reader can check without keys.
    pub fn from_json(bytes: &[u8]) -> Result<SecurityDomain, FormatError> {
        let sd: SecurityDomain = super::from_json(bytes)?;
        sd.validate()?;
        Ok(sd)
    }

    /// The compact one-line JSON the service writes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    pub fn required(&self) -> usize {
        self.shared_keys.required as usize
    }

    pub fn share_count(&self) -> usize {
        self.shared_keys.enc_shares.len()
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        if self.version != VERSION {
            return Err(FormatError::field("version", self.version, "2"));
        }
        if self.enc_data.kdf != KDF {
            return Err(FormatError::field(
                "EncData.kdf",
                format!("'{}'", self.enc_data.kdf),
                "'sp108_kdf'",
            ));
        }
        let keys = &self.shared_keys;
        if keys.key_algorithm != KEY_ALGORITHM {
            return Err(FormatError::field(
                "SharedKeys.key_algorithm",
                format!("'{}'", keys.key_algorithm),
                "'shamir_share'",
            ));
        }
        let n = keys.enc_shares.len();
        if keys.required < MIN_QUORUM as u64 || keys.required > MAX_CUSTODIANS as u64 {
            return Err(FormatError::field(
                "SharedKeys.required",
                keys.required,
                "between 2 and 10",
            ));
        }
        if n < keys.required as usize || n > MAX_CUSTODIANS {
            return Err(FormatError::field(
                "the number of shares",
                n,
                format!("between the quorum ({}) and {MAX_CUSTODIANS}", keys.required),
            ));
        }
        for (i, share) in keys.enc_shares.iter().enumerate() {
            let thumb = b64u_decode(&share.x5t_256, "x5t_256").map_err(|e| FormatError::Jwe {
                location: format!("share {}", i + 1),
                source: e,
            })?;
            if thumb.len() != 32 {
                return Err(FormatError::field(
                    format!("share {} x5t_256", i + 1),
                    format!("{} bytes", thumb.len()),
                    "32 bytes",
                ));
            }
            if keys.enc_shares[..i].iter().any(|s| s.x5t_256 == share.x5t_256) {
                return Err(FormatError::Invalid(format!(
                    "shares {} and {} are for the same certificate (x5t_256 {})",
                    keys.enc_shares[..i]
                        .iter()
                        .position(|s| s.x5t_256 == share.x5t_256)
                        .unwrap()
                        + 1,
                    i + 1,
                    share.x5t_256
                )));
            }
            self.share_jwe(i)?;
        }
        if self.enc_data.data.is_empty() {
            return Err(FormatError::Invalid("EncData.data holds no items".into()));
        }
        for (i, item) in self.enc_data.data.iter().enumerate() {
            if item.tag.is_empty() {
                return Err(FormatError::Invalid(format!("data item {} has an empty tag", i + 1)));
            }
            // Tags are printed: a control character could drive the terminal.
            if item.tag.chars().any(char::is_control) {
                return Err(FormatError::Invalid(format!(
                    "data item {}'s tag holds control characters",
                    i + 1
                )));
            }
            if self.enc_data.data[..i].iter().any(|d| d.tag == item.tag) {
                return Err(FormatError::Invalid(format!(
                    "two data items carry the tag '{}'",
                    item.tag
                )));
            }
            self.item_jwe(i)?;
        }
        Ok(())
    }

    /// The parsed JWE of share `i` (0-based), required to be RSA-OAEP.
    pub fn share_jwe(&self, i: usize) -> Result<CompactJwe, FormatError> {
        let location = format!("share {} (x5t_256 {})", i + 1, self.shared_keys.enc_shares[i].x5t_256);
        let jwe = CompactJwe::parse(&self.shared_keys.enc_shares[i].enc_key).map_err(|source| FormatError::Jwe {
            location: location.clone(),
            source,
        })?;
        jwe.expect_alg(Alg::RsaOaep256)
            .map_err(|source| FormatError::Jwe { location, source })?;
        Ok(jwe)
    }

    /// The parsed JWE of data item `i`, required to be `dir` with a `kid`
    /// (if any) equal to the item's tag.
    pub fn item_jwe(&self, i: usize) -> Result<CompactJwe, FormatError> {
        item_jwe(&self.enc_data.data[i])
    }

    /// Index of the share for a certificate thumbprint.
    pub fn share_index(&self, x5t_256: &str) -> Option<usize> {
        self.shared_keys.enc_shares.iter().position(|s| s.x5t_256 == x5t_256)
    }
}

pub(crate) fn item_jwe(item: &DataItem) -> Result<CompactJwe, FormatError> {
    let location = format!("data item '{}'", item.tag);
    let jwe = CompactJwe::parse(&item.compact_jwe).map_err(|source| FormatError::Jwe {
        location: location.clone(),
        source,
    })?;
    jwe.expect_alg(Alg::Dir).map_err(|source| FormatError::Jwe {
        location: location.clone(),
        source,
    })?;
    if let Some(kid) = &jwe.kid {
        if kid != &item.tag {
            return Err(FormatError::Invalid(format!(
                "{location}: its JWE says kid '{kid}', not the item's tag"
            )));
        }
    }
    Ok(jwe)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../fixtures/azure/sdfile.json");

    #[test]
    fn real_azure_file_parses_and_round_trips_byte_for_byte() {
        let sd = SecurityDomain::from_json(FIXTURE).unwrap();
        assert_eq!(sd.required(), 2);
        assert_eq!(sd.share_count(), 3);
        let tags: Vec<&str> = sd.enc_data.data.iter().map(|d| d.tag.as_str()).collect();
        assert_eq!(tags, ["hsm_backup", "base_enclave_backup", "partition_enclave_backup"]);
        let sizes: Vec<usize> = (0..3).map(|i| sd.item_jwe(i).unwrap().ciphertext.len()).collect();
        assert_eq!(sizes, [8192, 880, 2960]);
        for i in 0..3 {
            let jwe = sd.share_jwe(i).unwrap();
            assert_eq!((jwe.encrypted_key.len(), jwe.ciphertext.len()), (256, 80));
        }
        assert_eq!(sd.to_json().as_bytes(), FIXTURE, "we write what the service writes");
    }

    fn mutate(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(FIXTURE).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn strict_checks_name_the_field() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (mutate(|v| v["version"] = 1.into()), "version"),
            (
                mutate(|v| v["SharedKeys"]["key_algorithm"] = "xor".into()),
                "key_algorithm",
            ),
            (mutate(|v| v["SharedKeys"]["required"] = 1.into()), "required"),
            (mutate(|v| v["SharedKeys"]["required"] = 11.into()), "required"),
            (mutate(|v| v["SharedKeys"]["required"] = 4.into()), "number of shares"),
            (mutate(|v| v["SharedKeys"]["required"] = (-2).into()), "required"),
            (mutate(|v| v["EncData"]["kdf"] = "hkdf".into()), "kdf"),
            (mutate(|v| v["EncData"]["data"] = serde_json::json!([])), "no items"),
            (
                mutate(|v| {
                    v["SharedKeys"]["enc_shares"][1]["x5t_256"] = v["SharedKeys"]["enc_shares"][0]["x5t_256"].clone()
                }),
                "same certificate",
            ),
            (
                mutate(|v| v["SharedKeys"]["enc_shares"][0]["x5t_256"] = "AAAA".into()),
                "32 bytes",
            ),
            (
                mutate(|v| v["EncData"]["data"][0]["compact_jwe"] = "a.b.c".into()),
                "5 parts",
            ),
            (
                mutate(|v| v["EncData"]["data"][1]["tag"] = "hsm_backup".into()),
                "hsm_backup",
            ),
            (
                mutate(|v| {
                    v.as_object_mut().unwrap().remove("SharedKeys");
                }),
                "SharedKeys",
            ),
            (b"{not json".to_vec(), "JSON"),
        ];
        for (bytes, needle) in cases {
            let err = SecurityDomain::from_json(&bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "expected '{needle}' in: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_tolerated() {
        let bytes = mutate(|v| v["Extra"] = "x".into());
        let sd = SecurityDomain::from_json(&bytes).unwrap();
        assert!(!sd.to_json().contains("Extra"), "writers emit exactly the spec's keys");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let text = std::str::from_utf8(FIXTURE)
            .unwrap()
            .replacen("\"version\":2", "\"version\":2,\"version\":2", 1);
        assert!(SecurityDomain::from_json(text.as_bytes()).is_err());
    }
}
