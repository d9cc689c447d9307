//! `demo`: the whole story in one folder — three custodians' keys, the
//! activation of an in-process emulated Managed HSM, inspection, proofs of
//! possession, a canary set with its full backup, and a recovery drill into
//! a second instance — with generated passphrases and no prompts. The order,
//! what each step is given and the setup between the steps are here; each
//! step is a real command, run through [`Commands`], which says what it does
//! as it goes.

use std::path::{Path, PathBuf};

use crate::ceremony::drill::REPORT_MD;
use crate::crypto::b64::b64u;
use crate::crypto::rng::CryptoRng;
use crate::custodian::keygen::Made;
use crate::emulator::{self, Role};
use crate::error::{Error, InstanceError, Result};
use crate::files::{self, Mode};

/// How many steps the story has.
pub const STEPS: usize = 7;

/// The demo's folder: one it was told to keep (created; must not exist), or
/// a temporary one removed when this is dropped.
#[derive(Debug)]
pub struct Folder {
    path: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl Folder {
    pub fn create(keep: Option<&Path>) -> Result<Folder> {
        match keep {
            Some(d) => {
                // A folder, not a file: an existing one is "already exists", not "not a file".
                if std::fs::symlink_metadata(d).is_ok() {
                    return Err(Error::OutputExists { path: d.to_path_buf() });
                }
                std::fs::create_dir_all(d).map_err(|source| Error::Write {
                    path: d.to_path_buf(),
                    source,
                })?;
                Ok(Folder {
                    path: d.to_path_buf(),
                    temp: None,
                })
            }
            None => {
                let temp = tempfile::tempdir().map_err(|source| Error::Write {
                    path: std::env::temp_dir(),
                    source,
                })?;
                Ok(Folder {
                    path: temp.path().to_path_buf(),
                    temp: Some(temp),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the folder outlives the demo.
    pub fn is_kept(&self) -> bool {
        self.temp.is_none()
    }
}

/// The custodians' keygen the demo asks for.
#[derive(Debug)]
pub struct Keygen<'a> {
    pub out_dir: &'a Path,
    pub count: usize,
    pub prefix: &'a str,
    pub bits: usize,
    pub days: u32,
    /// One private file per custodian, in order, holding their passphrase.
    pub passphrase_files: &'a [PathBuf],
}

/// The emulated instance the story activates: served inside the process
/// from its state folder (`local:DIR`), so the demo opens no socket.
#[derive(Debug)]
pub struct Instance {
    pub url: String,
    pub state: PathBuf,
    /// An administrator's bearer token, in a private file.
    pub token_file: PathBuf,
}

/// The drill the demo asks for.
#[derive(Debug)]
pub struct Drill<'a> {
    pub sd: &'a Path,
    pub keys: &'a [PathBuf],
    pub passphrase_files: &'a [PathBuf],
    pub canary: &'a Path,
    pub report: &'a Path,
}

/// The real commands, one per step; each says what it does as it goes.
pub trait Commands {
    fn keygen(&mut self, plan: &Keygen<'_>) -> Result<Vec<Made>>;
    fn download(&mut self, from: &Instance, certs: &[PathBuf], quorum: usize, out: &Path) -> Result<()>;
    fn inspect(&mut self, sd: &Path, certs: &[PathBuf]) -> Result<()>;
    fn verify(&mut self, sd: &Path, key: &Path, passphrase_file: &Path) -> Result<()>;
    fn prepare_canary(&mut self, on: &Instance, name: &str, out: &Path) -> Result<()>;
    /// Whether the drill passed.
    fn drill(&mut self, plan: &Drill<'_>) -> Result<bool>;
}

/// What the story tells between the commands' own output.
#[derive(Debug)]
pub enum Event<'a> {
    /// Step `n` of [`STEPS`] begins.
    Step { n: usize, what: &'static str },
    /// The instance to activate is up.
    InstanceStarted(&'a Instance),
    /// The drill report's Markdown: the evidence a drill leaves.
    Evidence(&'a str),
}

/// The drill's custodians: a quorum other than the first two, as a real recovery's may be.
const DRILL_CUSTODIANS: [usize; 2] = [0, 2];

/// Runs the story in `dir`. Fails with the first step that fails, or
/// [`InstanceError::DrillFailed`] when the drill's proofs do not all pass
/// (after its evidence is told).
pub fn run_with_rng<R: CryptoRng + ?Sized>(
    rng: &mut R,
    dir: &Path,
    commands: &mut dyn Commands,
    tell: &mut dyn FnMut(Event<'_>),
) -> Result<()> {
    let mut step = |n, what| tell(Event::Step { n, what });
    step(
        1,
        "Three custodians generate RSA wrapping keys and certificates (passphrases generated for the demo)",
    );
    let pass_files: Vec<PathBuf> = (0..3)
        .map(|i| passphrase_file(rng, dir, &format!("cert_{i}")))
        .collect::<Result<_>>()?;
    let made = commands.keygen(&Keygen {
        out_dir: dir,
        count: 3,
        prefix: "cert_",
        bits: 2048,
        days: 365,
        passphrase_files: &pass_files,
    })?;
    let certs: Vec<PathBuf> = made.iter().map(|m| m.cert_path.clone()).collect();
    let keys: Vec<PathBuf> = made.iter().map(|m| m.key_path.clone()).collect();

    step(
        2,
        "An emulated Managed HSM starts (in this process); the activation downloads its security domain, 2 of 3",
    );
    let instance = start_instance(dir)?;
    tell(Event::InstanceStarted(&instance));
    let sd = dir.join("sd.json");
    commands.download(&instance, &certs, 2, &sd)?;

    let mut step = |n, what| tell(Event::Step { n, what });
    step(
        3,
        "The downloaded security domain is inspected and matched to the custodians",
    );
    commands.inspect(&sd, &certs)?;

    step(4, "Each custodian proves they can open their own share");
    for (key, pass) in keys.iter().zip(&pass_files) {
        commands.verify(&sd, key, pass)?;
    }

    step(
        5,
        "A canary set on instance A: RSA, EC and AES keys, a DEK wrapped under two of them, a signature, a full backup",
    );
    let canary = dir.join("canary.json");
    commands.prepare_canary(&instance, "drill-canary", &canary)?;

    step(
        6,
        "Drill: custodians 0 and 2 recover a fresh emulated instance B (in memory only); the full backup restores \
         there, the inventory matches and the restored keys prove themselves HSM-side",
    );
    let report = dir.join("drill-report");
    let pick = |all: &[PathBuf]| -> Vec<PathBuf> { DRILL_CUSTODIANS.iter().map(|&i| all[i].clone()).collect() };
    let passed = commands.drill(&Drill {
        sd: &sd,
        keys: &pick(&keys),
        passphrase_files: &pick(&pass_files),
        canary: &canary,
        report: &report,
    })?;

    step(7, "The evidence");
    let md_path = report.join(REPORT_MD);
    let md = std::fs::read_to_string(&md_path).map_err(|source| Error::Read { path: md_path, source })?;
    tell(Event::Evidence(&md));
    if !passed {
        return Err(InstanceError::DrillFailed.into());
    }
    Ok(())
}

/// A generated passphrase in a private file `NAME.passphrase` (the demo's
/// convenience: a real custodian's is in their head).
fn passphrase_file<R: CryptoRng + ?Sized>(rng: &mut R, dir: &Path, name: &str) -> Result<PathBuf> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 18]);
    rng.fill_bytes(&mut bytes[..]);
    let path = dir.join(format!("{name}.passphrase"));
    files::write_new(&path, b64u(&bytes[..]).as_bytes(), Mode::Private)?;
    Ok(path)
}

/// Instance A's state folder and an administrator's token for it.
fn start_instance(dir: &Path) -> Result<Instance> {
    let state = dir.join("instance-a");
    std::fs::create_dir_all(&state).map_err(|source| Error::Write {
        path: state.clone(),
        source,
    })?;
    let token = emulator::issue_token(&state, "demo-admin", &[Role::Administrator, Role::CryptoUser])?;
    let token_file = dir.join("admin.token");
    files::write_new(&token_file, token.expose().as_bytes(), Mode::Private)?;
    Ok(Instance {
        url: format!("local:{}", state.display()),
        state,
        token_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{custodians, test_rng};

    /// Commands that check what they are given and note each call.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        fail_inspect: bool,
        drill_passes: bool,
    }

    fn private(path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o077 == 0
    }

    fn name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    impl Commands for Fake {
        fn keygen(&mut self, plan: &Keygen<'_>) -> Result<Vec<Made>> {
            assert_eq!((plan.count, plan.prefix, plan.bits, plan.days), (3, "cert_", 2048, 365));
            let secrets: Vec<Vec<u8>> = plan
                .passphrase_files
                .iter()
                .map(|p| std::fs::read(p).unwrap())
                .collect();
            assert!(plan.passphrase_files.iter().all(|p| private(p)));
            assert!(secrets[0] != secrets[1] && secrets[1] != secrets[2] && secrets[0].len() >= 24);
            self.calls.push("keygen".into());
            Ok((0..plan.count)
                .map(|i| Made {
                    name: format!("cert_{i}"),
                    key_path: plan.out_dir.join(format!("cert_{i}.key")),
                    cert_path: plan.out_dir.join(format!("cert_{i}.cer")),
                    cert: custodians()[i].cert.clone(),
                })
                .collect())
        }
        fn download(&mut self, from: &Instance, certs: &[PathBuf], quorum: usize, out: &Path) -> Result<()> {
            assert_eq!(from.url, format!("local:{}", from.state.display()));
            assert!(from.state.is_dir() && private(&from.token_file));
            self.calls
                .push(format!("download {} of {} to {}", quorum, certs.len(), name(out)));
            Ok(())
        }
        fn inspect(&mut self, sd: &Path, certs: &[PathBuf]) -> Result<()> {
            self.calls.push(format!("inspect {} with {}", name(sd), certs.len()));
            if self.fail_inspect {
                return Err(Error::Usage("inspect failed".into()));
            }
            Ok(())
        }
        fn verify(&mut self, _sd: &Path, key: &Path, pass: &Path) -> Result<()> {
            self.calls.push(format!("verify {} {}", name(key), name(pass)));
            Ok(())
        }
        fn prepare_canary(&mut self, _on: &Instance, canary: &str, out: &Path) -> Result<()> {
            self.calls.push(format!("prepare {canary} {}", name(out)));
            Ok(())
        }
        fn drill(&mut self, plan: &Drill<'_>) -> Result<bool> {
            let names = |ps: &[PathBuf]| ps.iter().map(|p| name(p)).collect::<Vec<_>>().join(",");
            self.calls
                .push(format!("drill {} {}", names(plan.keys), names(plan.passphrase_files)));
            std::fs::create_dir_all(plan.report).unwrap();
            std::fs::write(plan.report.join(REPORT_MD), "# Recovery drill\n").unwrap();
            Ok(self.drill_passes)
        }
    }

    fn run(fake: &mut Fake) -> (Result<()>, Vec<String>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut told = Vec::new();
        let result = run_with_rng(&mut test_rng(70), dir.path(), fake, &mut |e| {
            told.push(match e {
                Event::Step { n, .. } => format!("[{n}/{STEPS}]"),
                Event::InstanceStarted(i) => format!("instance {}", name(&i.state)),
                Event::Evidence(md) => md.trim().to_string(),
            })
        });
        (result, told, dir)
    }

    #[test]
    fn the_story_runs_its_commands_in_order_with_what_each_needs() {
        let mut fake = Fake {
            drill_passes: true,
            ..Fake::default()
        };
        let (result, told, dir) = run(&mut fake);
        result.unwrap();
        assert_eq!(
            fake.calls,
            [
                "keygen",
                "download 2 of 3 to sd.json",
                "inspect sd.json with 3",
                "verify cert_0.key cert_0.passphrase",
                "verify cert_1.key cert_1.passphrase",
                "verify cert_2.key cert_2.passphrase",
                "prepare drill-canary canary.json",
                "drill cert_0.key,cert_2.key cert_0.passphrase,cert_2.passphrase",
            ]
        );
        assert_eq!(
            told,
            [
                "[1/7]",
                "[2/7]",
                "instance instance-a",
                "[3/7]",
                "[4/7]",
                "[5/7]",
                "[6/7]",
                "[7/7]",
                "# Recovery drill"
            ]
        );
        assert!(dir.path().join("admin.token").is_file());
    }

    #[test]
    fn a_failed_drill_fails_the_demo_after_its_evidence() {
        let (result, told, _dir) = run(&mut Fake::default());
        assert!(
            matches!(result, Err(Error::Instance(InstanceError::DrillFailed))),
            "{result:?}"
        );
        assert_eq!(told.last().map(String::as_str), Some("# Recovery drill"));
    }

    #[test]
    fn a_failed_step_ends_the_story_there() {
        let mut fake = Fake {
            fail_inspect: true,
            drill_passes: true,
            ..Fake::default()
        };
        let (result, told, _dir) = run(&mut fake);
        assert!(matches!(result, Err(Error::Usage(ref m)) if m == "inspect failed"));
        assert_eq!(fake.calls.last().map(String::as_str), Some("inspect sd.json with 3"));
        assert_eq!(told.last().map(String::as_str), Some("[3/7]"));
    }

    #[test]
    fn a_kept_folder_must_be_new_and_a_temporary_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let refused = Folder::create(Some(dir.path()));
        assert!(matches!(refused, Err(Error::OutputExists { .. })), "{refused:?}");
        let kept = Folder::create(Some(&dir.path().join("run"))).unwrap();
        assert!(kept.is_kept() && kept.path().is_dir());
        let temp = Folder::create(None).unwrap();
        let path = temp.path().to_path_buf();
        assert!(!temp.is_kept() && path.is_dir());
        drop(temp);
        assert!(!path.exists());
        drop(kept);
        assert!(dir.path().join("run").is_dir());
    }
}
