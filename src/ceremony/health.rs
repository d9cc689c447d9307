//! Quorum health: per custodian, whether their certificate is usable and
//! when they last proved possession or took part in a drill; for the quorum,
//! how many custodians can be lost before recovery becomes impossible.

use serde::Serialize;
use time::OffsetDateTime;

use super::log::{Line, Step};
use crate::custodian::cert::{CertIssue, Certificate};
use crate::format::limits::MIN_RSA_BITS;
use crate::format::sdfile::SecurityDomain;

/// Certificates expiring sooner than this put the quorum at risk.
pub const EXPIRY_WARNING_DAYS: i64 = crate::custodian::cert::EXPIRY_RISK_DAYS;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    AtRisk,
    CannotRecover,
}

#[derive(Debug, Serialize)]
pub struct CustodianHealth {
    pub position: usize,
    pub x5t_256: String,
    pub certificate: Option<String>,
    pub bits: Option<usize>,
    pub days_left: Option<i64>,
    pub usable: bool,
    pub last_proof: Option<String>,
    pub last_drill: Option<String>,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub required: usize,
    pub custodians: Vec<CustodianHealth>,
    pub usable: usize,
    /// How many more custodians can be lost before recovery is impossible.
    pub can_lose: i64,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// Assesses `sd` (whose file has SHA-256 `sd_sha256`) with the custodians'
/// certificates and, when given, the ceremony log.
pub fn assess(
    sd: &SecurityDomain,
    sd_sha256: &str,
    certs: &[(String, Certificate)],
    log: Option<&[Line]>,
    now: OffsetDateTime,
) -> Health {
    let mut reasons = Vec::new();
    let custodians: Vec<CustodianHealth> = sd
        .shared_keys
        .enc_shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let cert = certs.iter().find(|(_, c)| c.x5t_256() == share.x5t_256);
            let mut problems = Vec::new();
            let (usable, bits, days_left) = match cert {
                None => {
                    problems.push("no certificate was given for this share".to_string());
                    (false, None, None)
                }
                Some((_, c)) => {
                    let days = c.days_left(now);
                    let mut ok = true;
                    // Dates are hygiene, not recovery: Azure's restore does not check them,
                    // so a custodian with an expired certificate still opens their share.
                    for issue in c.problems(now, EXPIRY_WARNING_DAYS) {
                        problems.push(match issue {
                            CertIssue::WeakKey { bits } => {
                                ok = false;
                                format!("RSA-{bits} is below {MIN_RSA_BITS} bits")
                            }
                            CertIssue::NotYetValid => format!(
                                "the certificate is not valid before {}: replace it (rotate)",
                                day(c.not_before)
                            ),
                            CertIssue::Expired => format!(
                                "the certificate expired on {}: rotate (the share still opens)",
                                day(c.not_after)
                            ),
                            CertIssue::ExpiresSoon { days } => format!(
                                "the certificate expires in {days} days: at risk: rotate before {}",
                                day(c.not_after)
                            ),
                        });
                    }
                    (ok, Some(c.bits), Some(days))
                }
            };
            let (last_proof, last_drill) = match log {
                Some(lines) => {
                    let proof = last_time(lines, |l| {
                        l.entry.command == Step::CustodianVerify
                            && l.entry.outcome.is_ok()
                            && l.entry.inputs.iter().any(|f| f.sha256 == sd_sha256)
                            && l.entry.thumbprints.contains(&share.x5t_256)
                    });
                    if proof.is_none() {
                        problems.push("has never proved possession of this security domain's share".into());
                    }
                    let drill = last_time(lines, |l| {
                        l.entry.command == Step::Drill
                            && l.entry.outcome.is_ok()
                            && l.entry.thumbprints.contains(&share.x5t_256)
                    });
                    (proof, drill)
                }
                None => (None, None),
            };
            CustodianHealth {
                position: i + 1,
                x5t_256: share.x5t_256.clone(),
                certificate: cert.map(|(l, _)| l.clone()),
                bits,
                days_left,
                usable,
                last_proof,
                last_drill,
                problems,
            }
        })
        .collect();
    let required = sd.required();
    // One person's two certificates (one RSA modulus) are one custodian: a
    // second share they hold adds nothing when they are lost or unavailable.
    let held: Vec<(String, Certificate)> = custodians
        .iter()
        .filter(|c| c.usable)
        .filter_map(|c| certs.iter().find(|(_, k)| k.x5t_256() == c.x5t_256).cloned())
        .collect();
    let twins = crate::recovery::custodian_identity_problems(&held);
    let usable = held.len() - twins.len();
    reasons.extend(twins);
    let can_lose = usable as i64 - required as i64;
    let mut verdict = Verdict::Healthy;
    if usable < required {
        verdict = Verdict::CannotRecover;
        reasons.push(format!(
            "only {usable} of {} custodians are usable and {required} are needed",
            custodians.len()
        ));
    } else {
        if can_lose == 0 {
            reasons.push(format!(
                "losing one more custodian makes recovery impossible ({usable} usable, {required} needed)"
            ));
        }
        for c in custodians.iter().filter(|c| c.usable) {
            let cert = certs.iter().find(|(_, x)| x.x5t_256() == c.x5t_256).map(|(_, x)| x);
            match (c.days_left, cert) {
                (Some(d), Some(x)) if d < 0 => reasons.push(format!(
                    "custodian {} ({}): certificate expired on {}: rotate (the share still opens; Azure does not check dates)",
                    c.position,
                    c.x5t_256,
                    day(x.not_after)
                )),
                (Some(d), Some(x)) if d < EXPIRY_WARNING_DAYS => reasons.push(format!(
                    "custodian {} ({}): certificate expires in {d} days: at risk: rotate before {}",
                    c.position,
                    c.x5t_256,
                    day(x.not_after)
                )),
                (_, Some(x)) if now < x.not_before => reasons.push(format!(
                    "custodian {} ({}): certificate not valid before {}: rotate to a valid one",
                    c.position,
                    c.x5t_256,
                    day(x.not_before)
                )),
                _ => {}
            }
            if log.is_some() && c.last_proof.is_none() {
                reasons.push(format!(
                    "custodian {} ({}) has never proved possession",
                    c.position, c.x5t_256
                ));
            }
        }
        if let Some(lines) = log {
            if let Some(why) = superseded(lines, sd_sha256) {
                reasons.push(why);
            }
            reasons.extend(undestroyed(lines, sd_sha256));
        }
        if !reasons.is_empty() {
            verdict = Verdict::AtRisk;
        }
    }
    Health {
        required,
        custodians,
        usable,
        can_lose,
        verdict,
        reasons,
    }
}

/// A date as the custodian reads it on paper: YYYY-MM-DD.
fn day(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn last_time(lines: &[Line], pred: impl Fn(&Line) -> bool) -> Option<String> {
    lines.iter().rev().find(|l| pred(l)).map(|l| l.time.clone())
}

/// Whether the log names a later custodian set's security domain than this one.
fn superseded(lines: &[Line], sd_sha256: &str) -> Option<String> {
    let epoch_of = |l: &Line| l.entry.details.get("epoch").and_then(|e| e.as_u64());
    let ours = lines
        .iter()
        .filter(|l| l.entry.outputs.iter().any(|f| f.sha256 == sd_sha256))
        .filter_map(epoch_of)
        .max()?;
    let newest = lines
        .iter()
        .filter(|l| l.entry.outcome.is_ok())
        .filter_map(epoch_of)
        .max()?;
    (newest > ours)
        .then(|| format!("this security domain is of custodian-set epoch {ours}, superseded by epoch {newest}"))
}

/// The files rotations retired on the way to this security domain (each
/// `rotate finalize` back from it) that no `log destroyed` line records:
/// any copy of one still recovers the HSM with a quorum of its old keys.
fn undestroyed(lines: &[Line], sd_sha256: &str) -> Vec<String> {
    let ok = |l: &&Line, step: &Step| l.entry.outcome.is_ok() && l.entry.command == *step;
    let destroyed = |sha: &str| {
        lines
            .iter()
            .filter(|l| ok(l, &Step::LogDestroyed))
            .any(|l| l.entry.inputs.iter().any(|f| f.sha256 == sha))
    };
    let mut reasons = Vec::new();
    let mut seen = vec![sd_sha256.to_string()];
    let mut current = sd_sha256.to_string();
    // Each step goes one rotation back; a file seen twice ends the walk (a forged loop).
    while let Some(finalize) = lines
        .iter()
        .rev()
        .filter(|l| ok(l, &Step::RotateFinalize))
        .find(|l| l.entry.outputs.iter().any(|f| f.sha256 == current))
    {
        let Some(old) = finalize.entry.inputs.first() else {
            break;
        };
        if !destroyed(&old.sha256) {
            reasons.push(format!(
                "the file retired by line {} ({}, sha256 {}) has no `log destroyed` line: a copy of it and a quorum \
                 of its old keys still recover the HSM; destroy every copy and record each with `hsm-ceremony log destroyed`",
                finalize.seq,
                old.path,
                old.sha256.get(..16).unwrap_or(&old.sha256)
            ));
        }
        if seen.contains(&old.sha256) {
            break;
        }
        seen.push(old.sha256.clone());
        current = old.sha256.clone();
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ceremony::log::{Entry, FileRef, Outcome};
    use crate::crypto::secret::MasterKey;
    use crate::format::limits::Profile;
    use crate::recovery::{random_items_with_rng, split_with_rng};
    use crate::test_support::{custodians, test_rng};
    use time::Duration;

    fn sd(n: usize, m: usize) -> SecurityDomain {
        let mut rng = test_rng(40);
        let certs: Vec<(String, Certificate)> = custodians()[..n]
            .iter()
            .map(|c| (c.name.clone(), c.cert.clone()))
            .collect();
        let master = MasterKey::generate_with_rng(&mut rng);
        let items = random_items_with_rng(&mut rng);
        split_with_rng(&mut rng, &master, &items, &certs, m, Profile::Azure).unwrap()
    }

    fn certs(n: usize) -> Vec<(String, Certificate)> {
        custodians()[..n]
            .iter()
            .map(|c| (c.name.clone(), c.cert.clone()))
            .collect()
    }

    fn proof(x5t: &str, seq: u64) -> Line {
        Line {
            seq,
            time: "2026-11-01T00:00:00Z".into(),
            prev: String::new(),
            entry: Entry {
                command: Step::CustodianVerify,
                inputs: vec![FileRef {
                    path: "sd.json".into(),
                    sha256: "abc".into(),
                }],
                thumbprints: vec![x5t.into()],
                outcome: Outcome::Ok,
                ..Default::default()
            },
        }
    }

    #[test]
    fn all_fine_is_healthy() {
        let sd = sd(4, 2);
        let log: Vec<Line> = sd
            .shared_keys
            .enc_shares
            .iter()
            .enumerate()
            .map(|(i, s)| proof(&s.x5t_256, i as u64))
            .collect();
        let h = assess(&sd, "abc", &certs(4), Some(&log), OffsetDateTime::now_utc());
        assert_eq!(h.verdict, Verdict::Healthy, "{:?}", h.reasons);
        assert_eq!(h.can_lose, 2);
    }

    /// Regression: shares held twice by one person (one modulus, two
    /// exponents) were counted as two custodians, so "can lose 1" was wrong.
    #[test]
    fn one_modulus_holding_two_shares_counts_once() {
        let mut sd = sd(3, 2);
        let twin = crate::test_support::twin_certificate(&custodians()[0].key);
        sd.shared_keys.enc_shares[2].x5t_256 = twin.x5t_256();
        let mut set = certs(2);
        set.push(("twin".into(), twin));
        let h = assess(&sd, "abc", &set, None, OffsetDateTime::now_utc());
        assert_eq!(h.usable, 2);
        assert_eq!(h.can_lose, 0);
        assert_eq!(h.verdict, Verdict::AtRisk);
        assert!(
            h.reasons
                .iter()
                .any(|r| r.contains("twin has the same key as custodian0")),
            "{:?}",
            h.reasons
        );
    }

    #[test]
    fn a_certificate_expiring_in_ten_days_is_at_risk() {
        let sd = sd(4, 2);
        // Seen from 355 days on, the 365-day certificates expire in about 10 days.
        let later = OffsetDateTime::now_utc() + Duration::days(355);
        let h = assess(&sd, "abc", &certs(4), None, later);
        assert_eq!(h.verdict, Verdict::AtRisk);
        assert!(h.reasons.iter().any(|r| r.contains("expires in")), "{:?}", h.reasons);
    }

    /// Azure's restore does not check certificate dates: every custodian with
    /// an expired certificate still opens their share, so it is hygiene (at
    /// risk, exit 8), never "cannot recover".
    #[test]
    fn expired_certificates_are_at_risk_not_lost() {
        let sd = sd(3, 2);
        let after = OffsetDateTime::now_utc() + Duration::days(400);
        let h = assess(&sd, "abc", &certs(3), None, after);
        assert_eq!(h.verdict, Verdict::AtRisk, "{:?}", h.reasons);
        assert_eq!(h.usable, 3);
        assert!(
            h.reasons
                .iter()
                .any(|r| r.contains("expired on ") && r.contains(": rotate")),
            "{:?}",
            h.reasons
        );
    }

    #[test]
    fn missing_certificates_cannot_recover() {
        let sd = sd(3, 2);
        let h = assess(&sd, "abc", &certs(3)[..1], None, OffsetDateTime::now_utc());
        assert_eq!(h.verdict, Verdict::CannotRecover, "missing certificates count as lost");
    }

    #[test]
    fn a_custodian_who_never_proved_possession_is_at_risk() {
        let sd = sd(4, 2);
        let log: Vec<Line> = sd.shared_keys.enc_shares[..3]
            .iter()
            .enumerate()
            .map(|(i, s)| proof(&s.x5t_256, i as u64))
            .collect();
        let h = assess(&sd, "abc", &certs(4), Some(&log), OffsetDateTime::now_utc());
        assert_eq!(h.verdict, Verdict::AtRisk);
        assert!(
            h.reasons
                .iter()
                .any(|r| r.contains("custodian 4") && r.contains("never proved")),
            "{:?}",
            h.reasons
        );
    }

    fn line(seq: u64, command: Step, input: &str, output: &str) -> Line {
        let file = |sha: &str| FileRef {
            path: format!("{sha}.json"),
            sha256: sha.into(),
        };
        Line {
            seq,
            time: "2026-11-01T00:00:00Z".into(),
            prev: String::new(),
            entry: Entry {
                command,
                inputs: vec![file(input)],
                outputs: if output.is_empty() { vec![] } else { vec![file(output)] },
                outcome: Outcome::Ok,
                ..Default::default()
            },
        }
    }

    /// Two rotations (e1 → e2 → abc): each retired file must have a destroyed line.
    #[test]
    fn retired_files_without_a_destroyed_line_are_at_risk() {
        let sd = sd(3, 2);
        let mut log: Vec<Line> = sd
            .shared_keys
            .enc_shares
            .iter()
            .enumerate()
            .map(|(i, s)| proof(&s.x5t_256, i as u64 + 1))
            .collect();
        log.push(line(4, Step::RotateFinalize, "e1", "e2"));
        log.push(line(5, Step::RotateFinalize, "e2", "abc"));
        let h = assess(&sd, "abc", &certs(3), Some(&log), OffsetDateTime::now_utc());
        assert_eq!(h.verdict, Verdict::AtRisk);
        let named: Vec<&String> = h.reasons.iter().filter(|r| r.contains("log destroyed")).collect();
        assert_eq!(named.len(), 2, "{:?}", h.reasons);
        assert!(
            named[0].contains("line 5 (e2.json") && named[1].contains("line 4 (e1.json"),
            "{named:?}"
        );
        log.push(line(6, Step::LogDestroyed, "e2", ""));
        log.push(line(7, Step::LogDestroyed, "e1", ""));
        let h = assess(&sd, "abc", &certs(3), Some(&log), OffsetDateTime::now_utc());
        assert_eq!(h.verdict, Verdict::Healthy, "{:?}", h.reasons);
    }
}
