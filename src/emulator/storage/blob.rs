//! A small Azure Blob Storage client: Put Blob (block blob, one shot), Get
//! Blob and List Blobs by prefix, authorised by a SAS token in the query,
//! as the Blob service REST API and Azurite take them. Blocking (ureq):
//! callers run it off the async executor. Bounded: every request has a
//! deadline and every answer a size limit. The SAS never appears in a
//! message: the container URL is named without it.

use std::time::Duration;

use zeroize::Zeroizing;

use super::{storage_error, MAX_BLOB_BYTES};
use crate::emulator::error::ApiError;

/// The Blob service version asked for; Azurite (with `--skipApiVersionCheck`) and Azure accept it.
pub(crate) const X_MS_VERSION: &str = "2021-12-02";
/// Deadline for one storage request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest container listing read.
const MAX_LIST_BYTES: u64 = 4 * 1024 * 1024;

/// An account or container name segment as Azure allows them: 3 to 63
/// lowercase letters, digits and '-' (Azurite's account `devstoreaccount1` fits).
pub(crate) fn check_container_segment(s: &str) -> Result<(), ApiError> {
    let ok = (3..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "'{s}' is not a valid storage account or container name (3 to 63 lowercase letters, digits or single '-')"
        )))
    }
}

/// One container and the SAS that opens it.
pub(crate) struct BlobContainer {
    /// `https://acct.blob.core.windows.net/container`, no query.
    url: String,
    sas: Zeroizing<String>,
}

/// One request as it will be sent: method, URL (with the SAS) and headers.
pub(crate) struct Prepared {
    pub method: &'static str,
    pub url: Zeroizing<String>,
    pub headers: Vec<(&'static str, String)>,
}

impl BlobContainer {
    pub fn new(url: String, sas: &str) -> Result<BlobContainer, ApiError> {
        let has_sig = sas.split('&').any(|p| p.starts_with("sig=") && p.len() > 4);
        if !has_sig {
            return Err(ApiError::bad_request(
                "the SAS token has no signature (sig=...): pass the container SAS as Azure Storage issued it",
            ));
        }
        if sas.contains(['#', ' ', '\r', '\n']) {
            return Err(ApiError::bad_request(
                "the SAS token holds characters a query string cannot carry",
            ));
        }
        Ok(BlobContainer {
            url,
            sas: Zeroizing::new(sas.to_string()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Put Blob: the whole blob in one request, as a block blob.
    pub fn prepare_put(&self, name: &str, len: usize) -> Prepared {
        Prepared {
            method: "PUT",
            url: Zeroizing::new(format!("{}/{name}?{}", self.url, *self.sas)),
            headers: vec![
                ("x-ms-version", X_MS_VERSION.to_string()),
                ("x-ms-blob-type", "BlockBlob".to_string()),
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Length", len.to_string()),
            ],
        }
    }

    pub fn prepare_get(&self, name: &str) -> Prepared {
        Prepared {
            method: "GET",
            url: Zeroizing::new(format!("{}/{name}?{}", self.url, *self.sas)),
            headers: vec![("x-ms-version", X_MS_VERSION.to_string())],
        }
    }

    /// List Blobs, one page (up to 5000 names: a backup folder holds one blob).
    pub fn prepare_list(&self, prefix: Option<&str>) -> Prepared {
        let prefix = prefix.map(|p| format!("&prefix={p}")).unwrap_or_default();
        Prepared {
            method: "GET",
            url: Zeroizing::new(format!(
                "{}?restype=container&comp=list{prefix}&{}",
                self.url, *self.sas
            )),
            headers: vec![("x-ms-version", X_MS_VERSION.to_string())],
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into()
    }

    /// Words for a failure that never carry the SAS.
    fn scrub(&self, text: String) -> String {
        if self.sas.is_empty() {
            text
        } else {
            text.replace(self.sas.as_str(), "<SAS>")
        }
    }

    fn send(&self, p: &Prepared, body: Option<&[u8]>, limit: u64) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        let agent = Self::agent();
        let what = format!("{} {}", p.method, self.url);
        let result = match body {
            Some(bytes) => {
                let mut req = agent.put(p.url.as_str());
                for (k, v) in &p.headers {
                    if *k != "Content-Length" {
                        req = req.header(*k, v);
                    }
                }
                req.send(bytes)
            }
            None => {
                let mut req = agent.get(p.url.as_str());
                for (k, v) in &p.headers {
                    req = req.header(*k, v);
                }
                req.call()
            }
        };
        let mut resp = result.map_err(|e| {
            storage_error(self.scrub(format!("the storage account could not be reached ({what}): {e}")))
        })?;
        let status = resp.status().as_u16();
        let code = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| storage_error(self.scrub(format!("{what}: the storage answer could not be read: {e}"))))?;
        if (200..300).contains(&status) {
            return Ok(Zeroizing::new(bytes));
        }
        let hint = match status {
            403 => " (the SAS token is wrong, expired or lacks the permission: a backup needs write, list and read on the container)",
            404 => " (no such container or blob)",
            _ => "",
        };
        Err(storage_error(self.scrub(format!(
            "the storage account refused {what}: HTTP {status} {code}{hint}"
        ))))
    }

    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<(), ApiError> {
        if bytes.len() as u64 > MAX_BLOB_BYTES {
            return Err(storage_error(format!(
                "the backup is {} bytes, more than this emulator's limit of {MAX_BLOB_BYTES}",
                bytes.len()
            )));
        }
        self.send(&self.prepare_put(name, bytes.len()), Some(bytes), 64 * 1024)
            .map(drop)
    }

    pub fn get(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        self.send(&self.prepare_get(name), None, MAX_BLOB_BYTES)
    }

    pub fn list(&self, prefix: Option<&str>) -> Result<Vec<String>, ApiError> {
        let xml = self.send(&self.prepare_list(prefix), None, MAX_LIST_BYTES)?;
        Ok(blob_names(&String::from_utf8_lossy(&xml)))
    }
}

/// The `<Name>` of every `<Blob>` in a List Blobs answer.
pub(crate) fn blob_names(xml: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Blob>") {
        rest = &rest[start + 6..];
        let Some(end) = rest.find("</Blob>") else { break };
        let blob = &rest[..end];
        if let (Some(a), Some(b)) = (blob.find("<Name>"), blob.find("</Name>")) {
            if a + 6 <= b {
                names.push(unescape(&blob[a + 6..b]));
            }
        }
        rest = &rest[end..];
    }
    names
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> BlobContainer {
        BlobContainer::new(
            "http://127.0.0.1:10000/devstoreaccount1/backups".into(),
            "sv=2021-12-02&sr=c&sp=rwl&sig=c2ln",
        )
        .unwrap()
    }

    #[test]
    fn requests_are_built_as_the_blob_service_takes_them() {
        let c = container();
        let put = c.prepare_put("mhsm-x-20250101000000/backup.hsmemu", 42);
        assert_eq!(put.method, "PUT");
        assert_eq!(
            put.url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/backups/mhsm-x-20250101000000/backup.hsmemu?sv=2021-12-02&sr=c&sp=rwl&sig=c2ln"
        );
        assert!(put.headers.contains(&("x-ms-blob-type", "BlockBlob".into())));
        assert!(put.headers.contains(&("x-ms-version", X_MS_VERSION.into())));
        assert!(put.headers.contains(&("Content-Length", "42".into())));
        let list = c.prepare_list(Some("mhsm-x/"));
        assert_eq!(
            list.url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/backups?restype=container&comp=list&prefix=mhsm-x/&sv=2021-12-02&sr=c&sp=rwl&sig=c2ln"
        );
        assert_eq!(c.prepare_get("a/b").method, "GET");
    }

    #[test]
    fn a_sas_without_signature_is_refused_and_never_echoed() {
        let e = BlobContainer::new("https://a.blob.core.windows.net/c".into(), "sv=1&se=2")
            .err()
            .unwrap();
        assert!(e.message.contains("no signature"));
        assert!(BlobContainer::new("https://a/c".into(), "sig=").is_err());
        let c = container();
        let msg = c.scrub(format!("failed at {}", *c.prepare_get("x").url));
        assert!(!msg.contains("sig=c2ln") && msg.contains("<SAS>"), "{msg}");
    }

    #[test]
    fn an_unreachable_account_is_a_storage_error_without_the_sas() {
        // Port 9 on loopback: nothing listens (discard), so the connection is refused at once.
        let c = BlobContainer::new(
            "http://127.0.0.1:9/devstoreaccount1/backups".into(),
            "sp=r&sig=secretsig",
        )
        .unwrap();
        let e = c.get("x").unwrap_err();
        assert_eq!(e.code, "StorageError");
        assert!(!e.message.contains("secretsig"), "{}", e.message);
        assert!(
            e.message.contains("http://127.0.0.1:9/devstoreaccount1/backups"),
            "{}",
            e.message
        );
    }

    #[test]
    fn listings_are_read_for_blob_names() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="x" ContainerName="c"><Prefix>m/</Prefix><Blobs><Blob><Name>m/backup.hsmemu</Name><Properties><Content-Length>3</Content-Length></Properties></Blob><Blob><Name>m/a&amp;b</Name></Blob></Blobs><NextMarker/></EnumerationResults>"#;
        assert_eq!(blob_names(xml), vec!["m/backup.hsmemu", "m/a&b"]);
        assert!(blob_names("<EnumerationResults><Blobs/></EnumerationResults>").is_empty());
        assert!(blob_names("<Blob><Name>unterminated").is_empty());
    }
}
