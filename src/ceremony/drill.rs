//! The evidence a recovery drill leaves: what was recovered, by whom, where,
//! each step's outcome and duration, and whether the canary key came back.
//! JSON for machines, a short Markdown summary for the ceremony binder.
//! Holds thumbprints and fingerprints only, never a secret.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::kill::kill_point;
use crate::crypto::rng::CryptoRng;
use crate::custodian::cert::Certificate;
use crate::error::{Error, InstanceError, Result};
use crate::files::read_limited;
use crate::format::restore_blob::RestoreBlob;
use crate::recovery::{self, Recovered};

/// A key made and backed up on the original instance before the drill.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Canary {
    pub version: u32,
    pub instance: String,
    pub name: String,
    pub kid: String,
    pub key_version: String,
    pub created: String,
    /// The key backup blob as the instance gave it (opaque, sealed by the instance).
    pub backup: String,
}

/// Reads the canary backup `drill prepare` wrote.
pub fn load_canary(path: &Path) -> Result<Canary> {
    let bytes = read_limited(path, 1024 * 1024, "canary backup")?;
    crate::format::json::from_slice(&bytes).map_err(|e| Error::NotA {
        path: path.to_path_buf(),
        what: "canary backup from `drill prepare`",
        why: e,
    })
}

/// The instance a drill recovers onto, as its steps use it: the CLI's
/// HTTPS client for a URL, or an in-process emulated instance.
pub trait Target {
    fn transfer_key(&self) -> Result<Certificate>;
    /// Uploads the restore blob and waits for Success.
    fn upload(&self, blob: &RestoreBlob) -> Result<()>;
    fn restore_key(&self, backup: &str) -> Result<RestoredKey>;
}

impl<T: Target + ?Sized> Target for &T {
    fn transfer_key(&self) -> Result<Certificate> {
        (**self).transfer_key()
    }
    fn upload(&self, blob: &RestoreBlob) -> Result<()> {
        (**self).upload(blob)
    }
    fn restore_key(&self, backup: &str) -> Result<RestoredKey> {
        (**self).restore_key(backup)
    }
}

/// A key restored from a backup.
pub struct RestoredKey {
    pub name: String,
    pub version: String,
    /// The key id as people read it.
    pub kid: String,
}

/// The drill's steps, each timed into `report`: reach the target
/// (`connect`, which gives it and its label), fetch its exchange key, open a
/// quorum, build and upload the restore blob, then restore the canary and
/// check it is the same key. `quorum` readies the asking outside any step (a
/// usage error there is no failed step) and returns what opens the quorum.
pub fn run_steps_with_rng<T: Target, Q: FnOnce() -> Result<Recovered>, R: CryptoRng + ?Sized>(
    rng: &mut R,
    report: &mut Report,
    connect: impl FnOnce() -> Result<(T, String)>,
    quorum: impl FnOnce() -> Result<Q>,
    canary: Option<&Canary>,
) -> Result<()> {
    let (target, label) = report.step("start or reach the target instance", connect)?;
    report.instance = label;
    let exchange = report.step("fetch the exchange key", || target.transfer_key())?;
    kill_point("drill:exchange-key");
    let open = quorum()?;
    let recovered = report.step("open a quorum of shares", open)?;
    kill_point("drill:quorum-open");
    report.participants = recovered
        .custodians
        .iter()
        .map(|(x5t, who)| Participant {
            x5t_256: x5t.clone(),
            who: who.clone(),
        })
        .collect();
    let blob = report.step("build the restore blob", || {
        recovery::build_restore_blob_with_rng(rng, &recovered.items, &exchange)
    })?;
    drop(recovered);
    report.step("upload and wait for Success", || target.upload(&blob))?;
    kill_point("drill:uploaded");
    match canary {
        None => report.canary = "not checked: no --canary backup was given".into(),
        Some(c) => {
            let restored = report.step("restore the canary key", || {
                let k = target.restore_key(&c.backup)?;
                if k.name != c.name || k.version != c.key_version {
                    return Err(InstanceError::WrongKeyRestored {
                        got: k.name,
                        got_version: k.version,
                        want: c.name.clone(),
                        want_version: c.key_version.clone(),
                    }
                    .into());
                }
                Ok(k)
            });
            kill_point("drill:canary-restored");
            match restored {
                Ok(k) => report.canary = format!("{} (made on {}) restored as {}", c.name, c.instance, k.kid),
                Err(e) => {
                    let err: Error = InstanceError::CanaryNotRestored {
                        name: c.name.clone(),
                        source: Box::new(e),
                    }
                    .into();
                    report.canary = err.to_string();
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    pub outcome: String,
    pub duration_ms: u128,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Participant {
    pub x5t_256: String,
    pub who: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub version: u32,
    pub date: String,
    pub instance: String,
    pub sd_file: String,
    pub sd_sha256: String,
    pub quorum: usize,
    pub custodians: usize,
    pub participants: Vec<Participant>,
    pub steps: Vec<Step>,
    pub canary: String,
    pub outcome: String,
}

impl Report {
    pub fn new(
        date: String,
        instance: String,
        sd_file: String,
        sd_sha256: String,
        quorum: usize,
        custodians: usize,
    ) -> Self {
        Report {
            version: 1,
            date,
            instance,
            sd_file,
            sd_sha256,
            quorum,
            custodians,
            participants: Vec::new(),
            steps: Vec::new(),
            canary: "not checked".into(),
            outcome: "failed".into(),
        }
    }

    /// Runs one step, timing it and recording its outcome.
    pub fn step<T, E: std::fmt::Display>(&mut self, name: &str, body: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = Instant::now();
        let result = body();
        self.steps.push(Step {
            name: name.into(),
            outcome: match &result {
                Ok(_) => "ok".into(),
                Err(e) => format!("failed: {e}"),
            },
            duration_ms: start.elapsed().as_millis(),
        });
        result
    }

    pub fn passed(&self) -> bool {
        self.outcome == "passed"
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }

    pub fn to_markdown(&self) -> String {
        let mut md = format!(
            "# Recovery drill: {}\n\n\
             | | |\n|---|---|\n\
             | date | {} |\n| instance | {} |\n| security domain | `{}` |\n| SHA-256 | `{}` |\n\
             | quorum | {} of {} |\n| canary key | {} |\n\n\
             ## Custodians who took part\n\n",
            self.outcome.to_uppercase(),
            self.date,
            self.instance,
            self.sd_file,
            self.sd_sha256,
            self.quorum,
            self.custodians,
            self.canary
        );
        if self.participants.is_empty() {
            md.push_str("(none: the quorum was not reached)\n");
        }
        for p in &self.participants {
            md.push_str(&format!("- `{}` ({})\n", p.x5t_256, p.who));
        }
        md.push_str("\n## Steps\n\n| step | outcome | duration |\n|---|---|---|\n");
        for s in &self.steps {
            md.push_str(&format!(
                "| {} | {} | {} ms |\n",
                s.name,
                s.outcome.replace('|', "/").replace('\n', " "),
                s.duration_ms
            ));
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::limits::Profile;
    use crate::recovery::{CustodianKey, Quorum};
    use crate::test_support::{custodians, test_rng};

    /// An instance that hands out its exchange key, takes any blob, and
    /// restores every backup as the key `version`.
    struct Fake {
        uploads: std::cell::Cell<usize>,
        version: &'static str,
    }

    impl Target for Fake {
        fn transfer_key(&self) -> Result<Certificate> {
            Ok(custodians()[4].cert.clone())
        }
        fn upload(&self, _: &RestoreBlob) -> Result<()> {
            self.uploads.set(self.uploads.get() + 1);
            Ok(())
        }
        fn restore_key(&self, _: &str) -> Result<RestoredKey> {
            Ok(RestoredKey {
                name: "canary".into(),
                version: self.version.into(),
                kid: "https://hsm/keys/canary".into(),
            })
        }
    }

    /// The canary check fails the drill when the key restored is not the
    /// one backed up, after the upload (so the report says how far it got).
    #[test]
    fn a_canary_that_comes_back_as_another_version_fails_the_drill() {
        let mut rng = test_rng(40);
        let master = crate::crypto::secret::MasterKey::generate_with_rng(&mut rng);
        let items = recovery::random_items_with_rng(&mut rng);
        let certs: Vec<_> = custodians()[..3]
            .iter()
            .map(|c| (c.name.clone(), c.cert.clone()))
            .collect();
        let sd = recovery::split_with_rng(&mut rng, &master, &items, &certs, 2, Profile::Azure).unwrap();
        let canary = Canary {
            version: 1,
            instance: "https://old".into(),
            name: "canary".into(),
            kid: "k".into(),
            key_version: "v1".into(),
            created: "2026-11-23T00:00:00Z".into(),
            backup: "opaque".into(),
        };
        for (version, passes) in [("v1", true), ("v2", false)] {
            let mut report = Report::new("d".into(), "?".into(), "sd.json".into(), "ab".into(), 2, 3);
            let fake = Fake {
                uploads: 0.into(),
                version,
            };
            let quorum = || {
                Ok(|| {
                    let mut q = Quorum::new(&sd);
                    for c in &custodians()[..2] {
                        q.add(&CustodianKey::from_rsa(c.name.clone(), c.key.clone(), None))?;
                    }
                    q.finish()
                })
            };
            let result = run_steps_with_rng(
                &mut rng,
                &mut report,
                || Ok((&fake, "fake".into())),
                quorum,
                Some(&canary),
            );
            assert_eq!(result.is_ok(), passes, "{version}: {result:?}");
            assert_eq!(fake.uploads.get(), 1);
            assert_eq!(report.instance, "fake");
            assert_eq!(report.participants.len(), 2);
            assert_eq!(report.steps.len(), 6);
            assert_eq!(report.canary.contains("did NOT restore"), !passes, "{}", report.canary);
        }
    }

    #[test]
    fn steps_are_timed_and_failures_recorded() {
        let mut r = Report::new(
            "2026-11-23T00:00:00Z".into(),
            "local".into(),
            "sd.json".into(),
            "ab".into(),
            2,
            3,
        );
        let ok: Result<u8, String> = r.step("one", || Ok(1));
        assert_eq!(ok, Ok(1));
        let bad: Result<u8, String> = r.step("two", || Err("no | way".into()));
        assert!(bad.is_err());
        assert_eq!(r.steps[0].outcome, "ok");
        assert_eq!(r.steps[1].outcome, "failed: no | way");
        let md = r.to_markdown();
        assert!(md.contains("# Recovery drill: FAILED"));
        assert!(md.contains("| two | failed: no / way |"), "{md}");
        assert!(!r.passed());
        let back: Report = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
