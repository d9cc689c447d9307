//! The emulator's own TLS identity: an ECDSA P-256 CA and a server
//! certificate for 127.0.0.1, ::1 and localhost, made once per state
//! directory (`tls.json`, 0600) with the CA published as `ca.pem` for
//! clients to trust. The CA's private key is discarded after signing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::SecretText;
use crate::crypto::b64::{b64u, b64u_decode};
use crate::custodian::pem;
use crate::error::{EmulatorError, Error, Result};
use crate::files::{self, Mode};

pub const TLS_FILE: &str = "tls.json";
pub const CA_FILE: &str = "ca.pem";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    format: u32,
    ca_der: String,
    server_der: String,
    server_key_pkcs8: SecretText,
}

pub(crate) struct TlsMaterial {
    pub config: Arc<rustls::ServerConfig>,
    pub ca_pem_path: PathBuf,
}

fn gen_err(e: impl std::fmt::Display) -> Error {
    EmulatorError::TlsCertificate { why: e.to_string() }.into()
}

fn generate() -> Result<TlsFile> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hsm-ceremony emulator CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key).map_err(gen_err)?;

    let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut server = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    server.distinguished_name = dn;
    server.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().map_err(gen_err)?),
        SanType::IpAddress("127.0.0.1".parse().expect("literal")),
        SanType::IpAddress("::1".parse().expect("literal")),
    ];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = now - Duration::hours(1);
    server.not_after = now + Duration::days(3650);
    let issuer = Issuer::from_params(&ca, &ca_key);
    let server_cert = server.signed_by(&server_key, &issuer).map_err(gen_err)?;
    Ok(TlsFile {
        format: 1,
        ca_der: b64u(ca_cert.der()),
        server_der: b64u(server_cert.der()),
        server_key_pkcs8: SecretText::new(b64u(&Zeroizing::new(server_key.serialize_der()))),
    })
}

/// Loads the identity of `state_dir`, making it on first use, and rewrites
/// `ca.pem` from it if that file is missing or differs.
pub(crate) fn load_or_create(state_dir: &Path) -> Result<TlsMaterial> {
    let path = state_dir.join(TLS_FILE);
    let file: TlsFile = if path.exists() {
        let bytes = Zeroizing::new(files::read_limited(&path, 64 * 1024, "emulator TLS file")?);
        crate::format::json::from_slice(&bytes).map_err(|why| EmulatorError::Corrupt {
            path: path.clone(),
            what: "TLS file",
            why,
        })?
    } else {
        let file = generate()?;
        let bytes = Zeroizing::new(serde_json::to_vec(&file).expect("plain data serialises"));
        files::replace(&path, &bytes, Mode::Private)?;
        file
    };
    let bad = |e: crate::crypto::CryptoError| -> Error {
        EmulatorError::Corrupt {
            path: path.clone(),
            what: "TLS file",
            why: e.to_string(),
        }
        .into()
    };
    let ca_der = b64u_decode(&file.ca_der, "CA certificate").map_err(bad)?;
    let server_der = b64u_decode(&file.server_der, "server certificate").map_err(bad)?;
    let key_der = b64u_decode(file.server_key_pkcs8.expose(), "server key").map_err(bad)?;

    let ca_pem_path = state_dir.join(CA_FILE);
    let ca_pem = pem::encode("CERTIFICATE", &ca_der);
    if std::fs::read(&ca_pem_path).ok().as_deref() != Some(ca_pem.as_bytes()) {
        files::replace(&ca_pem_path, ca_pem.as_bytes(), Mode::Public)?;
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(gen_err)?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_der), CertificateDer::from(ca_der)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        )
        .map_err(|e| EmulatorError::Corrupt {
            path: path.clone(),
            what: "TLS file",
            why: format!("it holds an unusable certificate or key: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        config: Arc::new(config),
        ca_pem_path,
    })
}
