//! Compact JWE as the security domain uses it (security-domain(5), DATA ITEMS and SHARES):
//! `dir` or `RSA-OAEP-256` key management, `A256CBC-HS512` content encryption.
//!
//! Parsing is strict: exactly five parts, a known `alg`, the one `enc`, no
//! `crit`, no compression, a 16-byte IV and a 32-byte tag.

use serde::Deserialize;
use sha2::Sha256;

use super::b64::{b64u, b64u_decode};
use super::cbc_hs512;
use super::rng::CryptoRng;
use super::secret::SecretBytes;
use super::CryptoError;

pub const ENC: &str = "A256CBC-HS512";
/// The `kid` the service and the Azure CLI put on share and wrapped-key JWEs.
pub const KID_NOT_USED: &str = "not used";

/// Key-management algorithms a reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// The content key is given directly (data items).
    Dir,
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256 (shares, wrapped key).
    RsaOaep256,
    /// RSA-OAEP with SHA-1: read-only, for old files.
    RsaOaep,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Dir => "dir",
            Alg::RsaOaep256 => "RSA-OAEP-256",
            Alg::RsaOaep => "RSA-OAEP",
        }
    }

    fn parse(name: &str) -> Result<Alg, CryptoError> {
        match name {
            "dir" => Ok(Alg::Dir),
            "RSA-OAEP-256" => Ok(Alg::RsaOaep256),
            "RSA-OAEP" => Ok(Alg::RsaOaep),
            // RSA1_5 is the padding-oracle class; "none" and anything else is unknown.
            other => Err(CryptoError::RefusedAlg(other.to_string())),
        }
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    enc: String,
    kid: Option<String>,
    // Present at all counts: `"crit": null` is refused like any `crit`.
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    zip: bool,
}

/// True for any value, `null` included; absent fields take the default (false).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// A parsed compact JWE. Holds ciphertext only: nothing secret.
#[derive(Clone, Debug)]
pub struct CompactJwe {
    header_b64: String,
    pub alg: Alg,
    pub kid: Option<String>,
    pub encrypted_key: Vec<u8>,
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

/// Something that can unwrap an RSA-encrypted content key: a private key in
/// memory, or (later) a key on a hardware token.
pub trait KeyUnwrapper {
    fn unwrap_cek(&self, alg: Alg, encrypted_key: &[u8]) -> Result<SecretBytes, CryptoError>;
}

impl KeyUnwrapper for rsa::PrivateKey {
    fn unwrap_cek(&self, alg: Alg, encrypted_key: &[u8]) -> Result<SecretBytes, CryptoError> {
        // The default (OS RNG) variants blind the RSA operation.
        let out = match alg {
            Alg::RsaOaep256 => self.oaep_decrypt::<Sha256>(encrypted_key),
            Alg::RsaOaep => self.oaep_decrypt::<sha1::Sha1>(encrypted_key),
            Alg::Dir => {
                return Err(CryptoError::WrongAlg {
                    want: "RSA-OAEP-256",
                    got: "dir".into(),
                })
            }
        };
        out.map(SecretBytes::new).map_err(|_| CryptoError::Unwrap)
    }
}

impl CompactJwe {
    pub fn parse(text: &str) -> Result<CompactJwe, CryptoError> {
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() != 5 {
            return Err(CryptoError::JweParts(parts.len()));
        }
        let header_json = b64u_decode(parts[0], "the JWE header")?;
        let raw: RawHeader = crate::format::json::from_slice(&header_json).map_err(CryptoError::JweHeader)?;
        if raw.crit {
            return Err(CryptoError::CritHeader);
        }
        if raw.zip {
            return Err(CryptoError::JweHeader(
                "compressed JWEs ('zip') are not accepted".into(),
            ));
        }
        let alg = Alg::parse(&raw.alg)?;
        if raw.enc != ENC {
            return Err(CryptoError::RefusedEnc(raw.enc));
        }
        let jwe = CompactJwe {
            header_b64: parts[0].to_string(),
            alg,
            kid: raw.kid,
            encrypted_key: b64u_decode(parts[1], "the JWE encrypted key")?,
            iv: b64u_decode(parts[2], "the JWE IV")?,
            ciphertext: b64u_decode(parts[3], "the JWE ciphertext")?,
            tag: b64u_decode(parts[4], "the JWE authentication tag")?,
        };
        check_len("IV", jwe.iv.len(), cbc_hs512::IV_LEN)?;
        check_len("authentication tag", jwe.tag.len(), cbc_hs512::TAG_LEN)?;
        if jwe.ciphertext.is_empty() || !jwe.ciphertext.len().is_multiple_of(16) {
            return Err(CryptoError::JweHeader(
                "the ciphertext is not a whole number of AES blocks".into(),
            ));
        }
        match alg {
            Alg::Dir if !jwe.encrypted_key.is_empty() => Err(CryptoError::JweHeader(
                "a 'dir' JWE must have an empty encrypted key".into(),
            )),
            Alg::RsaOaep256 | Alg::RsaOaep if jwe.encrypted_key.is_empty() => {
                Err(CryptoError::JweHeader("an RSA JWE must carry an encrypted key".into()))
            }
            _ => Ok(jwe),
        }
    }

    /// Requires the key-management algorithm to be `want`.
    pub fn expect_alg(&self, want: Alg) -> Result<(), CryptoError> {
        let ok = match want {
            Alg::Dir => self.alg == Alg::Dir,
            // Readers accept SHA-1 OAEP from old files wherever OAEP-256 is expected.
            Alg::RsaOaep256 | Alg::RsaOaep => matches!(self.alg, Alg::RsaOaep256 | Alg::RsaOaep),
        };
        if ok {
            Ok(())
        } else {
            Err(CryptoError::WrongAlg {
                want: want.name(),
                got: self.alg.name().to_string(),
            })
        }
    }

    /// Decrypts with a 64-byte content key (a `dir` key, or an unwrapped CEK).
    pub fn decrypt_with_key(&self, key: &[u8]) -> Result<SecretBytes, CryptoError> {
        let key: &[u8; cbc_hs512::KEY_LEN] = key.try_into().map_err(|_| CryptoError::JwePartLength {
            part: "content key",
            got: key.len(),
            want: cbc_hs512::KEY_LEN,
        })?;
        cbc_hs512::decrypt(key, &self.iv, self.header_b64.as_bytes(), &self.ciphertext, &self.tag)
    }

    /// Unwraps the CEK with `key`, then decrypts.
    pub fn decrypt_with(&self, key: &dyn KeyUnwrapper) -> Result<SecretBytes, CryptoError> {
        self.expect_alg(Alg::RsaOaep256)?;
        let cek = key.unwrap_cek(self.alg, &self.encrypted_key)?;
        self.decrypt_with_key(cek.expose())
    }
}

fn check_len(part: &'static str, got: usize, want: usize) -> Result<(), CryptoError> {
    if got == want {
        Ok(())
    } else {
        Err(CryptoError::JwePartLength { part, got, want })
    }
}

fn header(alg: Alg, kid: &str) -> String {
    let kid = serde_json::to_string(kid).expect("a string serialises");
    b64u(format!(r#"{{"alg":"{}","enc":"{ENC}","kid":{kid}}}"#, alg.name()).as_bytes())
}

fn seal<R: CryptoRng + ?Sized>(
    rng: &mut R,
    header_b64: String,
    encrypted_key: &[u8],
    cek: &[u8; 64],
    plaintext: &[u8],
) -> String {
    let mut iv = [0u8; cbc_hs512::IV_LEN];
    rng.fill_bytes(&mut iv);
    let (ct, tag) = cbc_hs512::encrypt(cek, &iv, header_b64.as_bytes(), plaintext);
    format!(
        "{header_b64}.{}.{}.{}.{}",
        b64u(encrypted_key),
        b64u(&iv),
        b64u(&ct),
        b64u(&tag)
    )
}

/// `{"alg":"dir","enc":"A256CBC-HS512","kid":"<kid>"}` under `key` (security-domain(5), DATA ITEMS).
pub fn encrypt_dir_with_rng<R: CryptoRng + ?Sized>(rng: &mut R, key: &[u8; 64], kid: &str, plaintext: &[u8]) -> String {
    seal(rng, header(Alg::Dir, kid), &[], key, plaintext)
}

/// A fresh 64-byte CEK wrapped with RSA-OAEP-256 to `public_key` (security-domain(5), SHARES).
pub fn encrypt_rsa_oaep256_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    public_key: &rsa::PublicKey,
    plaintext: &[u8],
) -> Result<String, CryptoError> {
    let mut cek = zeroize::Zeroizing::new([0u8; 64]);
    rng.fill_bytes(&mut cek[..]);
    let wrapped = public_key
        .oaep_encrypt_with_rng::<Sha256, R>(rng, &cek[..])
        .map_err(|e| CryptoError::RsaEncrypt(e.to_string()))?;
    Ok(seal(
        rng,
        header(Alg::RsaOaep256, KID_NOT_USED),
        &wrapped,
        &cek,
        plaintext,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{rsa_2048, test_rng};

    #[test]
    fn dir_round_trip_and_header_is_exactly_the_services() {
        let mut rng = test_rng(1);
        let key = [3u8; 64];
        let jwe = encrypt_dir_with_rng(&mut rng, &key, "hsm_backup", b"opaque item");
        let head = jwe.split('.').next().unwrap();
        assert_eq!(
            String::from_utf8(b64u_decode(head, "h").unwrap()).unwrap(),
            r#"{"alg":"dir","enc":"A256CBC-HS512","kid":"hsm_backup"}"#
        );
        let parsed = CompactJwe::parse(&jwe).unwrap();
        assert_eq!(parsed.alg, Alg::Dir);
        assert_eq!(parsed.kid.as_deref(), Some("hsm_backup"));
        assert_eq!(parsed.decrypt_with_key(&key).unwrap().expose(), b"opaque item");
        assert_eq!(parsed.decrypt_with_key(&[4u8; 64]).err(), Some(CryptoError::Integrity));
    }

    #[test]
    fn rsa_round_trip() {
        let mut rng = test_rng(2);
        let key = rsa_2048();
        let jwe = encrypt_rsa_oaep256_with_rng(&mut rng, &key.to_public_key(), b"share bytes").unwrap();
        let parsed = CompactJwe::parse(&jwe).unwrap();
        assert_eq!(parsed.encrypted_key.len(), 256);
        assert_eq!(parsed.decrypt_with(key).unwrap().expose(), b"share bytes");
    }

    /// Flipping any bit of any part (header, key, IV, ciphertext, tag) is
    /// refused, either at parse or at decryption.
    #[test]
    fn any_flipped_byte_in_any_part_is_detected() {
        let mut rng = test_rng(3);
        let key = rsa_2048();
        let jwe = encrypt_rsa_oaep256_with_rng(&mut rng, &key.to_public_key(), &[0x55; 64]).unwrap();
        let parts: Vec<&str> = jwe.split('.').collect();
        for p in 0..5 {
            let raw = b64u_decode(parts[p], "p").unwrap();
            for i in 0..raw.len() {
                let mut bad = raw.clone();
                bad[i] ^= 0x01;
                let mut new_parts: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
                new_parts[p] = b64u(&bad);
                let text = new_parts.join(".");
                let outcome = CompactJwe::parse(&text).and_then(|j| j.decrypt_with(key));
                assert!(outcome.is_err(), "flip in part {p} byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn strict_parsing() {
        let h = |json: &str| b64u(json.as_bytes());
        let body = format!("{}.{}.{}", b64u(&[0; 16]), b64u(&[0; 16]), b64u(&[0; 32]));
        let cases: Vec<(String, CryptoError)> = vec![
            ("a.b.c".into(), CryptoError::JweParts(3)),
            (
                format!("{}..{}.x", h(r#"{"alg":"dir","enc":"A256CBC-HS512"}"#), body),
                CryptoError::JweParts(6),
            ),
            (
                format!("{}.AAAA.{body}", h(r#"{"alg":"RSA1_5","enc":"A256CBC-HS512"}"#)),
                CryptoError::RefusedAlg("RSA1_5".into()),
            ),
            (
                format!("{}..{body}", h(r#"{"alg":"none","enc":"A256CBC-HS512"}"#)),
                CryptoError::RefusedAlg("none".into()),
            ),
            (
                format!("{}..{body}", h(r#"{"alg":"dir","enc":"A128CBC-HS256"}"#)),
                CryptoError::RefusedEnc("A128CBC-HS256".into()),
            ),
            (
                format!("{}..{body}", h(r#"{"alg":"dir","enc":"A256CBC-HS512","crit":["x"]}"#)),
                CryptoError::CritHeader,
            ),
            (
                format!(
                    "{}..{}.{}.{}",
                    h(r#"{"alg":"dir","enc":"A256CBC-HS512"}"#),
                    b64u(&[0; 16]),
                    b64u(&[0; 16]),
                    b64u(&[0; 31])
                ),
                CryptoError::JwePartLength {
                    part: "authentication tag",
                    got: 31,
                    want: 32,
                },
            ),
            (
                format!(
                    "{}..{}.{}.{}",
                    h(r#"{"alg":"dir","enc":"A256CBC-HS512"}"#),
                    b64u(&[0; 12]),
                    b64u(&[0; 16]),
                    b64u(&[0; 32])
                ),
                CryptoError::JwePartLength {
                    part: "IV",
                    got: 12,
                    want: 16,
                },
            ),
            (
                format!("{}..{body}", "!!!"),
                CryptoError::Base64 { what: "the JWE header" },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(CompactJwe::parse(&text).err(), Some(want), "{text}");
        }
        let dup = format!("{}..{body}", h(r#"{"alg":"dir","alg":"dir","enc":"A256CBC-HS512"}"#));
        assert!(
            matches!(CompactJwe::parse(&dup), Err(CryptoError::JweHeader(_))),
            "duplicate header member refused"
        );
        let null_crit = format!("{}..{body}", h(r#"{"alg":"dir","enc":"A256CBC-HS512","crit":null}"#));
        assert_eq!(CompactJwe::parse(&null_crit).err(), Some(CryptoError::CritHeader));
        let null_zip = format!("{}..{body}", h(r#"{"alg":"dir","enc":"A256CBC-HS512","zip":null}"#));
        assert!(matches!(CompactJwe::parse(&null_zip), Err(CryptoError::JweHeader(m)) if m.contains("zip")));
        let trailing = format!("{}..{body}", h(r#"{"alg":"dir","enc":"A256CBC-HS512"}{}"#));
        assert!(matches!(CompactJwe::parse(&trailing), Err(CryptoError::JweHeader(m)) if m.contains("after the JSON")));
    }
}
