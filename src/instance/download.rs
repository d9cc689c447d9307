//! The activation download (`instance download`): the custodians'
//! certificates and the quorum go to an instance, which makes its security
//! domain; once the instance reports the download done, the file is saved.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::InstanceClient;
use crate::ceremony::log::FileRef;
use crate::custodian::cert::Certificate;
use crate::error::Result;
use crate::files::{self, Mode};
use crate::inputs;

/// A download checked and ready to send: nothing has been sent yet.
#[derive(Debug)]
pub struct Download {
    /// The custodians' certificates, in share order.
    pub certs: Vec<Certificate>,
    /// Each certificate file, fingerprinted from the bytes parsed.
    pub files: Vec<FileRef>,
    pub quorum: usize,
    pub out: PathBuf,
}

/// What a download saved.
#[derive(Debug)]
pub struct Downloaded {
    /// The security-domain file, fingerprinted from the bytes written.
    pub file: FileRef,
    pub quorum: usize,
    pub custodians: usize,
}

impl Download {
    /// Checks what can be checked before an instance is asked (once
    /// activated it cannot be again): `out` is free and its folder takes
    /// files, each certificate is read once, and no custodian is there twice,
    /// since the instance would wrap shares to whatever it is given.
    pub fn prepare(cert_paths: &[PathBuf], quorum: usize, out: &Path) -> Result<Download> {
        files::ensure_absent(out)?;
        files::ensure_writable_folder(&files::folder_of(out), out)?;
        let mut labelled = Vec::new();
        let mut refs = Vec::new();
        for path in cert_paths {
            let (cert, sha256) = inputs::certificate_hashed(path)?;
            labelled.push((inputs::label(path), cert));
            refs.push(FileRef::parsed(path, sha256));
        }
        crate::recovery::check_distinct_custodians(&labelled)?;
        Ok(Download {
            certs: labelled.into_iter().map(|(_, c)| c).collect(),
            files: refs,
            quorum,
            out: out.to_path_buf(),
        })
    }

    /// Sends the certificates and quorum, waits for the instance to report
    /// the download done ([`InstanceClient::download`]) and writes the
    /// security domain to `out` atomically: a failure at any point leaves
    /// no file.
    pub fn run(&self, client: &InstanceClient) -> Result<Downloaded> {
        let sd = client.download(&self.certs, self.quorum)?;
        files::write_new(&self.out, sd.as_bytes(), Mode::Public)?;
        Ok(Downloaded {
            file: FileRef::parsed(&self.out, hex::encode(Sha256::digest(sd.as_bytes()))),
            quorum: self.quorum,
            custodians: self.certs.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret::BearerToken;
    use crate::emulator::{InProcess, Role};
    use crate::error::{Error, RecoveryError};
    use crate::format::sdfile::SecurityDomain;
    use crate::test_support::custodians;

    fn write_certs(dir: &Path, which: &[usize]) -> Vec<PathBuf> {
        which
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let path = dir.join(format!("cert_{n}.cer"));
                std::fs::write(&path, custodians()[i].cert.to_pem()).unwrap();
                path
            })
            .collect()
    }

    #[test]
    fn a_download_saves_the_security_domain_for_the_certificates_sent() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_certs(dir.path(), &[0, 1, 2]);
        let out = dir.path().join("sd.json");
        let d = Download::prepare(&paths, 2, &out).unwrap();
        for (f, p) in d.files.iter().zip(&paths) {
            assert_eq!(f, &FileRef::of(p).unwrap());
        }
        let hsm = std::sync::Arc::new(InProcess::in_memory().unwrap());
        let token = hsm.issue_token("admin", &[Role::Administrator]).unwrap();
        // A refused request writes nothing.
        let stranger = InstanceClient::in_process(hsm.clone(), BearerToken::new("not-a-token".to_string()));
        assert!(matches!(d.run(&stranger), Err(Error::Instance(_))));
        assert!(!out.exists());
        let client = InstanceClient::in_process(hsm, token);
        let done = d.run(&client).unwrap();
        assert_eq!(done.file, FileRef::of(&out).unwrap());
        assert_eq!((done.quorum, done.custodians), (2, 3));
        let sd = SecurityDomain::from_json(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!((sd.required(), sd.share_count()), (2, 3));
        for c in &custodians()[..3] {
            assert!(sd.share_index(&c.cert.x5t_256()).is_some());
        }
    }

    #[test]
    fn a_download_is_refused_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sd.json");
        // One custodian's certificate twice.
        let mut paths = write_certs(dir.path(), &[0, 1, 2]);
        std::fs::copy(&paths[0], dir.path().join("twin.cer")).unwrap();
        paths.push(dir.path().join("twin.cer"));
        assert!(matches!(
            Download::prepare(&paths, 2, &out),
            Err(Error::Recovery(RecoveryError::CertsNotReady(_)))
        ));
        // An output already there.
        std::fs::write(&out, "taken").unwrap();
        assert!(matches!(
            Download::prepare(&paths[..3], 2, &out),
            Err(Error::OutputExists { .. })
        ));
        // A file that is no certificate, named.
        let bad = dir.path().join("bad.cer");
        std::fs::write(&bad, "not a certificate").unwrap();
        let refused = Download::prepare(&[bad], 2, &dir.path().join("other.json"));
        assert!(matches!(refused, Err(Error::Certificate { ref label, .. }) if label.ends_with("bad.cer")));
    }
}
