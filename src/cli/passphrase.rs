//! Where passphrases come from: the hidden prompt, a file, an inherited file
//! descriptor, or the environment — never the command line, except the Azure
//! CLI's `--passwords`, kept for compatibility with a warning. Token PINs
//! come the same ways: prompt, `--pin-file`, a URI's file `pin-source`, or
//! the environment; never a flag's value.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::Args;

use hsm_ceremony::crypto::secret::Passphrase;
use hsm_ceremony::custodian::key::check_passphrase_strength;
use hsm_ceremony::error::{Error, ParameterError, Result};
use hsm_ceremony::inputs;

/// The variable read when no other passphrase source is given (automation).
pub const ENV_VAR: &str = "HSM_CEREMONY_PASSPHRASE";
/// The variable read for a token PIN when no other source is given.
pub const PIN_ENV_VAR: &str = "HSM_CEREMONY_PIN";

#[derive(Args, Clone, Debug, Default)]
pub struct PassphraseArgs {
    /// Read passphrases from FILE: one file for every key, or one file per
    /// key in the order the keys are given. The first line is the passphrase.
    #[arg(long = "passphrase-file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Read passphrases from an inherited file descriptor, one line per key
    /// in order (e.g. `--passphrase-fd 3 3<secrets`).
    #[arg(long = "passphrase-fd", value_name = "FD")]
    pub fd: Option<i32>,
    /// Read the PIN of PKCS#11 tokens from FILE (first line): one file for
    /// every token, or one per token URI in the order given.
    #[arg(long = "pin-file", value_name = "FILE")]
    pub pin_files: Vec<PathBuf>,
}

/// A `--passwords` value as clap holds it: `Clone` because clap's values must
/// be, but wiped on drop and shown as `[redacted]` by `Debug`, so the parsed
/// command line can be printed or logged without the passphrase.
#[derive(Clone)]
pub struct CommandLineSecret(zeroize::Zeroizing<String>);

impl CommandLineSecret {
    /// For `#[arg(value_parser = CommandLineSecret::parse)]`.
    pub fn parse(s: &str) -> std::result::Result<Self, std::convert::Infallible> {
        Ok(CommandLineSecret(zeroize::Zeroizing::new(s.to_string())))
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CommandLineSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Hands out one passphrase per key, from the sources given.
pub struct Passphrases {
    files: Vec<PathBuf>,
    fd: Option<BufReader<File>>,
    passwords: Option<Vec<CommandLineSecret>>,
    pin_files: Vec<PathBuf>,
    /// Key indices that asked for a PIN, in order (pin files map to them).
    pins_asked: Vec<usize>,
}

/// A passphrase and whether it was typed (typed ones may be asked again).
pub struct Given {
    pub passphrase: Passphrase,
    pub typed: bool,
}

impl Passphrases {
    pub fn new(args: &PassphraseArgs, passwords: Option<Vec<CommandLineSecret>>, keys: usize) -> Result<Self> {
        if args.files.len() > 1 && args.files.len() != keys {
            return Err(Error::Usage(format!(
                "{} --passphrase-file options were given for {keys} key(s); give one file for all keys, or exactly one per key",
                args.files.len()
            )));
        }
        if let Some(list) = &passwords {
            crate::note!(
                "warning: --passwords puts passphrases on the command line, where every user of this machine can read them \
                 (ps, /proc). Prefer the prompt, --passphrase-file or --passphrase-fd."
            );
            if list.len() != keys {
                return Err(Error::Usage(format!(
                    "--passwords has {} entries for {keys} key(s); give one per key, empty for an unencrypted key",
                    list.len()
                )));
            }
        }
        let fd = match args.fd {
            Some(fd) => Some(BufReader::new(open_fd(fd)?)),
            None => None,
        };
        Ok(Passphrases {
            files: args.files.clone(),
            fd,
            passwords,
            pin_files: args.pin_files.clone(),
            pins_asked: Vec::new(),
        })
    }

    /// True when no source but the terminal is available.
    fn interactive_only(&self) -> bool {
        self.files.is_empty() && self.fd.is_none() && self.passwords.is_none() && std::env::var_os(ENV_VAR).is_none()
    }

    /// The passphrase for key `index` (0-based) named `label`, or `None`
    /// when `--passwords` says the key is not encrypted.
    pub fn for_key(&mut self, index: usize, label: &str, attempt: usize) -> Result<Option<Given>> {
        if let Some(list) = &self.passwords {
            let entry = list[index].expose();
            return Ok((!entry.is_empty()).then(|| Given {
                passphrase: Passphrase::new(entry.to_string()),
                typed: false,
            }));
        }
        if !self.files.is_empty() {
            let file = if self.files.len() == 1 {
                &self.files[0]
            } else {
                &self.files[index]
            };
            return Ok(Some(Given {
                passphrase: read_passphrase_file(file, "passphrase file")?,
                typed: false,
            }));
        }
        if let Some(reader) = &mut self.fd {
            // Bounded like a passphrase file: a descriptor on /dev/zero must not fill memory.
            let mut raw = zeroize::Zeroizing::new(Vec::new());
            reader
                .by_ref()
                .take(MAX_SECRET_BYTES + 1)
                .read_until(b'\n', &mut raw)
                .map_err(|e| Error::Usage(format!("cannot read a passphrase from --passphrase-fd: {e}")))?;
            if raw.len() as u64 > MAX_SECRET_BYTES {
                return Err(Error::Usage(format!(
                    "--passphrase-fd: the line for {label} is longer than {MAX_SECRET_BYTES} bytes; it is not a passphrase"
                )));
            }
            let line = zeroize::Zeroizing::new(
                String::from_utf8(raw.to_vec())
                    .map_err(|_| Error::Usage(format!("--passphrase-fd: the line for {label} is not UTF-8 text")))?,
            );
            if line.is_empty() {
                return Err(Error::Usage(format!(
                    "--passphrase-fd ran out of lines before the passphrase for {label}"
                )));
            }
            return Ok(Some(Given {
                passphrase: Passphrase::new(strip_newline(&line)),
                typed: false,
            }));
        }
        if let Ok(value) = std::env::var(ENV_VAR) {
            return Ok(Some(Given {
                passphrase: Passphrase::new(value),
                typed: false,
            }));
        }
        let prompt = if attempt == 0 {
            format!("Passphrase for {label}")
        } else {
            format!("Passphrase for {label} (try {} of 3)", attempt + 1)
        };
        Ok(Some(Given {
            passphrase: prompt_hidden(&prompt)?,
            typed: true,
        }))
    }

    /// A new passphrase for custodian `name` (asked twice when typed), checked
    /// for strength.
    pub fn new_for(&mut self, index: usize, name: &str) -> Result<Passphrase> {
        if self.interactive_only() {
            for _ in 0..3 {
                // Judged on the first entry: a weak one is refused before the custodian retypes it.
                let pass = prompt_hidden(&format!("New passphrase for custodian {name}"))?;
                if let Err(why) = check_passphrase_strength(&pass) {
                    crate::note!("{why}; please choose another.");
                    continue;
                }
                let again = prompt_hidden("Repeat it")?;
                if again.expose() != pass.expose() {
                    crate::note!("The two entries differ; try again.");
                    continue;
                }
                return Ok(pass);
            }
            return Err(ParameterError::NoPassphraseChosen { key: name.to_string() }.into());
        }
        let given = self.for_key(index, name, 0)?.ok_or_else(|| {
            Error::Usage(format!(
                "an empty passphrase was given for {name}; use --insecure-unencrypted-key to mean no passphrase"
            ))
        })?;
        check_passphrase_strength(&given.passphrase).map_err(|source| ParameterError::WeakPassphrase {
            key: name.to_string(),
            source,
        })?;
        Ok(given.passphrase)
    }

    /// The PIN for the token key `index` (0-based among all keys) named
    /// `label`: the URI's own `pin-source` file, else `--pin-file`, else
    /// HSM_CEREMONY_PIN, else the hidden prompt.
    pub fn pin_for(&mut self, index: usize, label: &str, pin_source: Option<&PathBuf>) -> Result<Passphrase> {
        if let Some(file) = pin_source {
            return read_passphrase_file(file, "PIN file");
        }
        if !self.pins_asked.contains(&index) {
            self.pins_asked.push(index);
        }
        if !self.pin_files.is_empty() {
            let nth = self.pins_asked.iter().position(|&i| i == index).unwrap_or(0);
            let file = match self.pin_files.len() {
                1 => &self.pin_files[0],
                _ => self.pin_files.get(nth).ok_or_else(|| {
                    Error::Usage(format!(
                        "{} --pin-file options were given, but {label} is token key number {}; \
                         give one file for all tokens, or one per token",
                        self.pin_files.len(),
                        nth + 1
                    ))
                })?,
            };
            return read_passphrase_file(file, "PIN file");
        }
        if let Ok(value) = std::env::var(PIN_ENV_VAR) {
            return Ok(Passphrase::new(value));
        }
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage(format!(
                "PIN for {label}: no terminal to ask on; give --pin-file or {PIN_ENV_VAR}"
            )));
        }
        dialoguer::Password::new()
            // Prompts name files: escaped like every other output.
            .with_prompt(super::output::printable(&format!("PIN for {label}")))
            .interact()
            .map(Passphrase::new)
            .map_err(|e| Error::Usage(format!("could not read the PIN: {e}")))
    }
}

fn strip_newline(line: &str) -> String {
    line.strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(line)
        .to_string()
}

/// The most a passphrase or PIN source is read: a file, or a descriptor's line.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// The first line of a passphrase or PIN file (`what`), which must be
/// readable by its owner only.
fn read_passphrase_file(path: &Path, what: &'static str) -> Result<Passphrase> {
    let bytes = inputs::secret_file(path, MAX_SECRET_BYTES, what)?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| Error::Usage(format!("{} is not UTF-8 text", path.display())))?;
    let first = text.split('\n').next().unwrap_or("");
    Ok(Passphrase::new(first.strip_suffix('\r').unwrap_or(first).to_string()))
}

fn prompt_hidden(prompt: &str) -> Result<Passphrase> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!(
            "{prompt}: no terminal to ask on; give --passphrase-file, --passphrase-fd or {ENV_VAR}"
        )));
    }
    dialoguer::Password::new()
        .with_prompt(super::output::printable(prompt))
        .interact()
        .map(Passphrase::new)
        .map_err(|e| Error::Usage(format!("could not read the passphrase: {e}")))
}

#[cfg(unix)]
fn open_fd(fd: i32) -> Result<File> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(Error::Usage(format!(
            "--passphrase-fd {fd} is a standard stream; use 3 or above"
        )));
    }
    // SAFETY: the descriptor is inherited for exactly this purpose and owned from here on;
    // fcntl checks it is open first.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(Error::Usage(format!(
            "--passphrase-fd {fd} is not an open file descriptor"
        )));
    }
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(not(unix))]
fn open_fd(_fd: i32) -> Result<File> {
    Err(Error::Usage("--passphrase-fd is only available on Unix".into()))
}
