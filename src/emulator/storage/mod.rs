//! Where full backups go: an Azure Blob Storage container named by URL and
//! SAS token, exactly as the real service takes it (`SASTokenParameter`),
//! or — an emulator extension — a local folder given as `file:///abs/path`.
//!
//! The caller names the place; the emulator then writes only inside it:
//! one folder per backup (`mhsm-{name}-{yyyyMMddHHmmss}`), never anything
//! outside. Plain `http://` storage is refused unless its host is a
//! loopback address (Azurite), so a SAS token never crosses a network in
//! clear text. `useManagedIdentity: true` is refused: the emulator has no
//! managed identity to present to a storage account.

mod blob;
mod local;

use zeroize::Zeroizing;

use super::error::ApiError;

pub(crate) use blob::BlobContainer;

/// Largest backup blob written or read (the key store is at most 16 MiB, sealed and framed).
pub(crate) const MAX_BLOB_BYTES: u64 = 64 * 1024 * 1024;
/// The one blob a backup folder holds.
pub(crate) const BACKUP_BLOB: &str = "backup.hsmemu";

/// A parsed, checked storage location: a container (Azure Blob) or a folder (local).
pub(crate) enum Container {
    Blob(BlobContainer),
    Local(local::LocalFolder),
}

/// `SASTokenParameter` as the request carried it.
pub(crate) struct SasParameter {
    pub storage_resource_uri: String,
    pub token: Option<Zeroizing<String>>,
    pub use_managed_identity: bool,
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A backup folder name as the service makes them (and as a caller may name
/// one to restore): letters, digits, '-', '_' and '.', not starting with '.'.
pub(crate) fn check_folder(folder: &str) -> Result<(), ApiError> {
    let ok = !folder.is_empty()
        && folder.len() <= 200
        && !folder.starts_with('.')
        && folder.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "'{folder}' is not a backup folder name (1 to 200 letters, digits, '-', '_' or '.', as a full backup names it)"
        )))
    }
}

impl SasParameter {
    /// The container this parameter names, checked.
    pub fn container(&self) -> Result<Container, ApiError> {
        self.split(None).map(|(c, _)| c)
    }

    /// The container and the backup folder in it. The SDK splits a folder
    /// URL at its first path segment, which for Azurite's path-style URLs
    /// (`http://127.0.0.1:10000/devstoreaccount1/container/folder`) is the
    /// account: the URI and folder are joined again and split where the
    /// container really ends.
    pub fn container_and_folder(&self, folder: &str) -> Result<(Container, String), ApiError> {
        let (c, f) = self.split(Some(folder))?;
        Ok((c, f.expect("a folder was given")))
    }

    fn split(&self, folder: Option<&str>) -> Result<(Container, Option<String>), ApiError> {
        if self.use_managed_identity {
            return Err(ApiError::bad_request(
                "useManagedIdentity is not supported by this emulator: it has no managed identity to present to \
                 the storage account; pass a SAS token in 'token' instead",
            ));
        }
        let uri = self.storage_resource_uri.trim_end_matches('/');
        let full = match folder {
            Some("") => {
                return Err(ApiError::bad_request("the backup folder name is empty"));
            }
            Some(f) => format!("{uri}/{}", f.trim_matches('/')),
            None => uri.to_string(),
        };
        if full.contains(['?', '#', '%', '\\']) || full.chars().any(|c| c.is_control() || c == ' ') {
            return Err(ApiError::bad_request(
                "storageResourceUri must be a plain container URL without query, fragment or escapes; \
                 the SAS goes in 'token'",
            ));
        }
        if let Some(path) = full.strip_prefix("file://") {
            if self.token.as_deref().is_some_and(|t| !t.is_empty()) {
                return Err(ApiError::bad_request(
                    "a file:// storage target takes no SAS token; leave 'token' out",
                ));
            }
            return local::split(path, folder.is_some()).map(|(c, f)| (Container::Local(c), f));
        }
        let (scheme, rest) = full
            .split_once("://")
            .ok_or_else(|| ApiError::bad_request(format!("storageResourceUri '{uri}' is not a URL")))?;
        let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match host_port.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((h, p)) => (h, p),
                None => ("", ""),
            },
            None => match host_port.split_once(':') {
                Some((h, p)) => (h, &host_port[h.len()..][..p.len() + 1]),
                None => (host_port, ""),
            },
        };
        if !port.is_empty() && port.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).is_none() {
            return Err(ApiError::bad_request(format!(
                "storageResourceUri '{uri}' has a bad port"
            )));
        }
        if host.is_empty() || host.contains('@') {
            return Err(ApiError::bad_request(format!(
                "storageResourceUri '{uri}' names no storage host (or carries credentials)"
            )));
        }
        let loopback = is_loopback(host);
        match scheme {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(ApiError::bad_request(format!(
                    "storageResourceUri '{uri}' is plain http to a host that is not loopback: the SAS token would \
                     travel in clear text; use https (plain http is accepted only for Azurite on 127.0.0.1)"
                )))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "storageResourceUri scheme '{other}' is not supported; use https://ACCOUNT.blob.core.windows.net/CONTAINER \
                     (or, with this emulator, file:///ABSOLUTE/FOLDER)"
                )))
            }
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err(ApiError::bad_request(format!(
                "the storage path '{full}' has a '.' or '..' segment: name the container and folder plainly"
            )));
        }
        // Loopback storage is Azurite, whose URLs carry the account first.
        let container_len = if loopback { 2 } else { 1 };
        let want = container_len + usize::from(folder.is_some());
        if segments.len() != want {
            return Err(ApiError::bad_request(format!(
                "storageResourceUri '{uri}' does not name a blob container: expected {}",
                if loopback {
                    "http://127.0.0.1:PORT/ACCOUNT/CONTAINER (Azurite)"
                } else {
                    "https://ACCOUNT.blob.core.windows.net/CONTAINER"
                }
            )));
        }
        for s in &segments[..container_len] {
            blob::check_container_segment(s)?;
        }
        let folder_name = match folder {
            Some(_) => {
                let f = segments[container_len].to_string();
                check_folder(&f)?;
                Some(f)
            }
            None => None,
        };
        let token = self
            .token
            .as_deref()
            .map(|t| t.trim_start_matches('?'))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("a SAS token is required in 'token' (this emulator has no managed identity)")
            })?;
        let base = format!("{scheme}://{host_port}/{}", segments[..container_len].join("/"));
        Ok((Container::Blob(BlobContainer::new(base, token)?), folder_name))
    }
}

impl Container {
    /// The container's URL (never the SAS), as responses and messages name it.
    pub fn url(&self) -> String {
        match self {
            Container::Blob(b) => b.url().to_string(),
            Container::Local(l) => l.url(),
        }
    }

    /// Checks the container can be listed with these credentials.
    pub fn check_access(&self) -> Result<(), ApiError> {
        match self {
            Container::Blob(b) => b.list(Some("mhsm-")).map(drop),
            Container::Local(l) => l.check_access(),
        }
    }

    /// Whether anything is stored under `folder/`.
    pub fn folder_exists(&self, folder: &str) -> Result<bool, ApiError> {
        match self {
            Container::Blob(b) => Ok(!b.list(Some(&format!("{folder}/")))?.is_empty()),
            Container::Local(l) => Ok(l.folder(folder).exists()),
        }
    }

    pub fn put(&self, folder: &str, name: &str, bytes: &[u8]) -> Result<(), ApiError> {
        match self {
            Container::Blob(b) => b.put(&format!("{folder}/{name}"), bytes),
            Container::Local(l) => l.put(folder, name, bytes),
        }
    }

    pub fn get(&self, folder: &str, name: &str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        match self {
            Container::Blob(b) => b.get(&format!("{folder}/{name}")),
            Container::Local(l) => l.get(folder, name),
        }
    }
}

/// A failure to store or fetch: the storage (not the caller's request) is at fault.
pub(crate) fn storage_error(message: String) -> ApiError {
    ApiError {
        status: hyper::StatusCode::BAD_REQUEST,
        code: "StorageError",
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sas(uri: &str, token: Option<&str>) -> SasParameter {
        SasParameter {
            storage_resource_uri: uri.to_string(),
            token: token.map(|t| Zeroizing::new(t.to_string())),
            use_managed_identity: false,
        }
    }

    #[test]
    fn containers_are_accepted_as_the_service_takes_them_and_refused_precisely() {
        let ok = [
            (
                "https://acct.blob.core.windows.net/backups",
                "https://acct.blob.core.windows.net/backups",
            ),
            (
                "https://acct.blob.core.windows.net/backups/",
                "https://acct.blob.core.windows.net/backups",
            ),
            (
                "http://127.0.0.1:10000/devstoreaccount1/cont1",
                "http://127.0.0.1:10000/devstoreaccount1/cont1",
            ),
            (
                "http://localhost:10000/devstoreaccount1/cont1",
                "http://localhost:10000/devstoreaccount1/cont1",
            ),
            (
                "http://[::1]:10000/devstoreaccount1/cont1",
                "http://[::1]:10000/devstoreaccount1/cont1",
            ),
        ];
        for (uri, want) in ok {
            let c = sas(uri, Some("?sv=2021&sig=abc"))
                .container()
                .unwrap_or_else(|e| panic!("{uri}: {}", e.message));
            assert_eq!(c.url(), want);
        }
        let refused = [
            ("http://10.0.0.5/acct/c", Some("sig=x"), "not loopback"),
            ("http://acct.blob.core.windows.net/cont", Some("sig=x"), "not loopback"),
            ("ftp://x/c", Some("sig=x"), "scheme 'ftp'"),
            (
                "https://acct.blob.core.windows.net",
                Some("sig=x"),
                "does not name a blob container",
            ),
            (
                "https://acct.blob.core.windows.net/a/b",
                Some("sig=x"),
                "does not name a blob container",
            ),
            ("https://acct.blob.core.windows.net/cont?sig=x", None, "without query"),
            ("https://acct.blob.core.windows.net/cont", None, "SAS token is required"),
            (
                "https://acct.blob.core.windows.net/cont",
                Some(""),
                "SAS token is required",
            ),
            (
                "https://user@acct.blob.core.windows.net/cont",
                Some("sig=x"),
                "credentials",
            ),
            (
                "https://acct.blob.core.windows.net/Bad_Name",
                Some("sig=x"),
                "container name",
            ),
            (
                "https://acct.blob.core.windows.net/cont",
                Some("sv=1&se=2"),
                "no signature",
            ),
            ("not a url", Some("sig=x"), "without query"),
            ("file://relative/dir", None, "absolute"),
        ];
        for (uri, token, why) in refused {
            let e = match sas(uri, token).container() {
                Ok(_) => panic!("{uri} accepted"),
                Err(e) => e,
            };
            assert_eq!(e.status, hyper::StatusCode::BAD_REQUEST, "{uri}");
            assert!(e.message.contains(why), "{uri}: {}", e.message);
        }
        let mut mi = sas("https://acct.blob.core.windows.net/cont", None);
        mi.use_managed_identity = true;
        assert!(mi.container().err().unwrap().message.contains("no managed identity"));
    }

    #[test]
    fn a_folder_split_at_the_account_by_the_sdk_is_joined_again() {
        // azure-keyvault-administration splits Azurite's folder URL after the account.
        let s = sas("http://127.0.0.1:10000/devstoreaccount1", Some("sig=x"));
        let (c, f) = s.container_and_folder("cont1/mhsm-emulator-20250101000000").unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:10000/devstoreaccount1/cont1");
        assert_eq!(f, "mhsm-emulator-20250101000000");
        let s = sas("https://acct.blob.core.windows.net/cont1", Some("sig=x"));
        let (c, f) = s.container_and_folder("mhsm-x-1").unwrap();
        assert_eq!(
            (c.url().as_str(), f.as_str()),
            ("https://acct.blob.core.windows.net/cont1", "mhsm-x-1")
        );
        for bad in ["", "../etc", ".hidden", "a/b", "x/.."] {
            assert!(s.container_and_folder(bad).is_err(), "{bad:?}");
        }
    }
}
