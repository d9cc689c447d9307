//! The evidence a recovery drill leaves: what was recovered, by whom, where,
//! each step's outcome and duration, and whether the canary key came back.
//! JSON for machines, a short Markdown summary for the ceremony binder.
//! Holds thumbprints and fingerprints only, never a secret.

use std::time::Instant;

use serde::{Deserialize, Serialize};

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
