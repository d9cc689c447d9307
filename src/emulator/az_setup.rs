//! `emulator az-setup`: the shell lines that point the real Azure CLI at a
//! served emulator through a private configuration directory, and the
//! service principal they sign in with.
//!
//! The operator's own `~/.azure` is never read or written: every line runs
//! under `AZURE_CONFIG_DIR` set to a 0700 folder in the state directory.
//! The client secret is written to a 0600 file there and read by the login
//! line, so it never appears in the text the operator `eval`s (nor in the
//! shell's history).

use std::path::{Path, PathBuf};

use super::rbac::Role;
use crate::error::{EmulatorError, Error, Result};
use crate::files::{self, Mode};

/// The private az configuration folder, inside the state directory.
pub const AZ_CONFIG_DIR: &str = "azure-cli";
/// The client secret's file, inside [`AZ_CONFIG_DIR`].
pub const SECRET_FILE: &str = "service-principal.secret";
/// Written by `emulator serve` once it listens: the URL az-setup names.
pub const URL_FILE: &str = "serve.url";
/// The name of the cloud registered in the private configuration.
pub const CLOUD_NAME: &str = "HsmCeremonyEmulator";

/// What `az-setup` made and the lines it prints.
pub struct AzSetup {
    pub config_dir: PathBuf,
    pub client_id: String,
    pub url: String,
    /// POSIX shell lines, every value single-quoted.
    pub lines: Vec<String>,
}

/// `text` as one POSIX shell word: single-quoted, each `'` written `'\''`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        EmulatorError::NotUtf8 {
            path: path.to_path_buf(),
        }
        .into()
    })
}

/// Records the URL a serving emulator listens on, for `az-setup`.
pub(crate) fn record_url(state_dir: &Path, url: &str) -> Result<()> {
    files::replace(&state_dir.join(URL_FILE), format!("{url}\n").as_bytes(), Mode::Public)
}

/// The URL the emulator serving `state_dir` listens on.
///
/// Errors: no emulator serves the folder (its lock is free), or it recorded
/// no usable URL.
fn served_url(state_dir: &Path) -> Result<String> {
    let not_served = || {
        Error::from(EmulatorError::NotServed {
            dir: state_dir.to_path_buf(),
        })
    };
    // The server holds this lock while it runs; taking it means none does.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(state_dir.join(".lock"))
        .map_err(|_| not_served())?;
    if lock.try_lock().is_ok() {
        return Err(not_served());
    }
    let path = state_dir.join(URL_FILE);
    let text = files::read_limited(&path, 256, "emulator URL file").map_err(|_| not_served())?;
    let url = String::from_utf8(text).map_err(|_| not_served())?.trim().to_string();
    check_url(&url).map_err(|_| EmulatorError::UrlFile { path: path.clone() })?;
    Ok(url)
}

/// Only the emulator's own form: `https://127.0.0.1:PORT` (or `[::1]`,
/// `localhost`), no path; az's MSAL refuses http authorities.
fn check_url(url: &str) -> Result<()> {
    let bad = || Error::from(EmulatorError::NotEmulatorUrl { url: url.to_string() });
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    // Digits only, as the listener prints it: u16's parser takes "+8443" and
    // "08443", which would become az's authority and the mhsmDns suffix.
    let canonical = port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0');
    if !["127.0.0.1", "[::1]", "localhost"].contains(&host) || !canonical || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// The cloud config that maps `--hsm-name localhost` onto `url`'s port
/// (az builds `https://{name}{mhsmDns}`). `url` has passed [`check_url`].
fn hsm_suffix_config(url: &str) -> String {
    let port = url.rsplit_once(':').map_or("", |(_, p)| p);
    format!(r#"{{"suffixes":{{"mhsmDns":":{port}"}}}}"#)
}

/// `dir` as a real folder (not a link) that only its owner can enter:
/// it will hold az's token cache and the client secret.
fn private_dir(dir: &Path) -> Result<()> {
    super::state::ensure_dir(dir)?;
    let meta = std::fs::symlink_metadata(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(EmulatorError::NotAFolder {
            path: dir.to_path_buf(),
        }
        .into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Registers a service principal for `principal` with `roles` on the
/// emulator serving `state_dir`, writes its secret to the private az
/// folder, and returns the lines that configure az and sign it in.
///
/// Errors: a bad principal name or URL, no emulator serving the folder
/// (when `url` is not given), no CA (the emulator serves plain HTTP), or
/// the state folder cannot be written.
pub fn az_setup(state_dir: &Path, principal: &str, roles: &[Role], url: Option<&str>) -> Result<AzSetup> {
    // Before anything is made: a name the token endpoint would refuse.
    super::rbac::tokens::check_principal(principal)?;
    let state_dir = std::path::absolute(state_dir).map_err(|source| Error::Read {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let url = match url {
        Some(u) => {
            check_url(u)?;
            u.trim_end_matches('/').to_string()
        }
        None => served_url(&state_dir)?,
    };
    let ca = state_dir.join(super::CA_FILE);
    if !ca.is_file() {
        return Err(EmulatorError::NoCa { path: ca }.into());
    }
    let config_dir = state_dir.join(AZ_CONFIG_DIR);
    private_dir(&config_dir)?;
    let sp = super::register_client(&state_dir, principal, roles)?;
    let secret_file = config_dir.join(SECRET_FILE);
    files::replace(&secret_file, sp.secret().as_bytes(), Mode::Private)?;

    let tenant = super::Config::new(PathBuf::new()).tenant;
    let q = shell_quote;
    let (cfg, ca_s, secret_s) = (q(utf8(&config_dir)?), q(utf8(&ca)?), q(utf8(&secret_file)?));
    let endpoints = format!(
        "--endpoint-active-directory {aad} --endpoint-active-directory-resource-id {res} \
         --endpoint-resource-manager {arm} --endpoint-management {res} --endpoint-microsoft-graph-resource-id {graph} \
         --suffix-keyvault-dns {kv} --skip-endpoint-discovery",
        aad = q(&url),
        res = q(&format!("{url}/")),
        arm = q(&format!("{url}/{tenant}/arm/")),
        // `az keyvault role assignment create/list` look the principals up in
        // Microsoft Graph and fail when the cloud names no Graph; a lookup the
        // emulator answers 404 is one az skips (it then shows no display name).
        graph = q(&format!("{url}/{tenant}/graph/")),
        // az refuses key commands while the cloud has no vault suffix; names
        // under it are never resolved, since commands name the emulator by --id.
        kv = q(".vault.emulator.invalid"),
    );
    let lines = vec![
        format!("export AZURE_CONFIG_DIR={cfg}"),
        format!("export REQUESTS_CA_BUNDLE={ca_s}"),
        "export AZURE_CORE_COLLECT_TELEMETRY=no AZURE_CORE_NO_COLOR=yes".to_string(),
        // One chain: if any step fails, az must not go on to sign in with
        // whatever cloud (the real one) is still selected.
        "az config set core.instance_discovery=false core.collect_telemetry=false core.survey_message=false \
         auto-upgrade.enable=no --only-show-errors --output none \\"
            .to_string(),
        "&& az cloud set --name AzureCloud --only-show-errors --output none \\".to_string(),
        format!(
            "&& {{ az cloud unregister --name {cloud} --only-show-errors --output none >/dev/null 2>&1; true; }} \\",
            cloud = q(CLOUD_NAME)
        ),
        format!(
            "&& az cloud register --name {cloud} {endpoints} --only-show-errors --output none \\",
            cloud = q(CLOUD_NAME)
        ),
        // `az cloud register` has no Managed HSM suffix flag, but its cloud
        // config does: with the suffix ":PORT", az makes `--hsm-name localhost`
        // https://localhost:PORT, a name the emulator's certificate carries.
        format!(
            "&& az cloud update --name {cloud} --skip-endpoint-discovery --cloud-config {config} \
             --only-show-errors --output none \\",
            cloud = q(CLOUD_NAME),
            config = q(&hsm_suffix_config(&url))
        ),
        format!(
            "&& az cloud set --name {} --only-show-errors --output none \\",
            q(CLOUD_NAME)
        ),
        format!(
            "&& az login --service-principal --username {} --password \"$(cat {secret_s})\" --tenant {} \
             --allow-no-subscriptions --only-show-errors --output none",
            q(&sp.client_id),
            q(&tenant)
        ),
    ];
    Ok(AzSetup {
        config_dir,
        client_id: sp.client_id,
        url,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(x)`y`"), "'$(x)`y`'");
    }

    #[test]
    fn the_hsm_suffix_is_the_port() {
        assert_eq!(
            hsm_suffix_config("https://127.0.0.1:8443"),
            r#"{"suffixes":{"mhsmDns":":8443"}}"#
        );
        assert_eq!(hsm_suffix_config("https://[::1]:1"), r#"{"suffixes":{"mhsmDns":":1"}}"#);
    }

    #[test]
    fn only_https_loopback_urls() {
        assert!(check_url("https://127.0.0.1:8443").is_ok());
        assert!(check_url("https://[::1]:8443").is_ok());
        for bad in [
            "http://127.0.0.1:1",
            "https://example.com:1",
            "https://127.0.0.1:0",
            "https://127.0.0.1",
            "https://127.0.0.1:+8443",
            "https://127.0.0.1:08443",
            "https://127.0.0.1:65536",
            "https://127.0.0.1:",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
