//! What a log line records: the step (`command`) and its outcome, as types.
//! Their on-disk form is the text earlier versions wrote, byte for byte: the
//! chain hashes each line's bytes, so a renamed step would break every log.
//!
//! A name the tool does not know reads as `Other`, not as an error: a log is
//! evidence, and one written by another version (or holding a step since
//! retired) must still verify and show. `Other` never matches a known step,
//! so an unknown line can never count as a proof, a drill or a rotation.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! steps {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// A ceremony step, as a log line names it.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum Step {
            $(#[doc = $doc] $variant,)*
            /// A name this version does not write (kept as read).
            Other(String),
        }

        impl Step {
            /// Every step this version writes.
            pub const KNOWN: &'static [Step] = &[$(Step::$variant,)*];

            /// The name as written in the log.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Step::$variant => $name,)*
                    Step::Other(name) => name,
                }
            }
        }

        impl FromStr for Step {
            type Err = Infallible;
            fn from_str(s: &str) -> Result<Step, Infallible> {
                Ok(match s {
                    $($name => Step::$variant,)*
                    other => Step::Other(other.to_string()),
                })
            }
        }
    };
}

steps! {
    CustodianKeygen => "custodian keygen", "A custodian key pair and certificate made.";
    CustodianVerify => "custodian verify", "A custodian proved possession of a share.";
    SdCheckCerts => "sd check-certs", "Custodian certificates checked before a split.";
    SdSplit => "sd split", "A master key split to a custodian set.";
    RestoreBlob => "restore-blob", "A quorum of shares made into a restore blob.";
    Rotate => "rotate", "A rotation's pending security domain made.";
    RotateFinalize => "rotate finalize", "A pending rotation made the security domain.";
    RotateCancel => "rotate cancel", "A pending rotation withdrawn.";
    LogSign => "log sign", "A line countersigned by a custodian.";
    LogDestroyed => "log destroyed", "An old copy of a security domain destroyed.";
    InstanceDownload => "instance download", "A security domain downloaded from an instance.";
    InstanceUpload => "instance upload", "A restore blob uploaded to an instance.";
    Drill => "drill", "A recovery drill against an emulated instance.";
    DrillProofs => "drill proofs", "The canary proofs against an instance recovered by hand.";
}

/// An `Entry` not yet filled in has an empty name.
impl Default for Step {
    fn default() -> Step {
        Step::Other(String::new())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or_else(|never: Infallible| match never {}))
    }
}

/// How a step ended, as a log line records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `ok`: the step did what it says.
    Ok,
    /// `failed: <why>`: the step's error message (never a secret).
    Failed(String),
    /// Any other text (another version's, or empty before the step ends);
    /// never counts as `Ok`.
    Other(String),
}

impl Default for Outcome {
    fn default() -> Outcome {
        Outcome::Other(String::new())
    }
}

const FAILED: &str = "failed: ";

impl Outcome {
    /// The outcome of a step that returned `result`.
    pub fn of<T, E: fmt::Display>(result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Failed(why) => write!(f, "{FAILED}{why}"),
            Outcome::Other(text) => f.write_str(text),
        }
    }
}

impl FromStr for Outcome {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Outcome, Infallible> {
        Ok(match s {
            "ok" => Outcome::Ok,
            _ => match s.strip_prefix(FAILED) {
                Some(why) => Outcome::Failed(why.to_string()),
                None => Outcome::Other(s.to_string()),
            },
        })
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or_else(|never: Infallible| match never {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_kept() {
        for step in Step::KNOWN {
            assert_eq!(step.as_str().parse::<Step>().unwrap(), *step);
        }
        let old: Step = "sd retire".parse().unwrap();
        assert_eq!(old, Step::Other("sd retire".into()));
        assert_eq!(old.to_string(), "sd retire");
        assert!(!Step::KNOWN.contains(&old));
    }

    #[test]
    fn outcomes_round_trip_and_only_ok_is_ok() {
        for text in ["ok", "failed: the disk is full", "failed: ", "passed", "OK", ""] {
            let o: Outcome = text.parse().unwrap();
            assert_eq!(o.to_string(), text);
            assert_eq!(o.is_ok(), text == "ok", "{text:?}");
        }
        assert_eq!(Outcome::of::<(), _>(&Err("no room")), Outcome::Failed("no room".into()));
    }
}
