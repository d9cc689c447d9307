//! The HSM's account settings (`settings.json`), as `GET /settings` and
//! `PATCH /settings/{name}` serve them (data-plane `settings.json` of the
//! specs: `{"settings": [{"name", "value", "type"}]}`, values as strings).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::persist::Document;
use crate::emulator::error::ApiError;

pub const SETTINGS_FILE: &str = "settings.json";

/// The settings the service lists: name, type, the emulator's default.
/// The default is the emulator's choice (the specs give none): off.
pub const KNOWN: [(&str, &str, &str); 1] = [("AllowKeyManagementOperationsThroughARM", "boolean", "false")];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    pub format: u32,
    /// Values changed from their default.
    pub values: BTreeMap<String, String>,
}

impl Default for SettingsFile {
    fn default() -> Self {
        SettingsFile {
            format: 1,
            values: BTreeMap::new(),
        }
    }
}

impl Document for SettingsFile {
    const WHAT: &'static str = "settings file";
    fn format(&self) -> u32 {
        self.format
    }
}

fn known(name: &str) -> Result<(&'static str, &'static str, &'static str), ApiError> {
    KNOWN.into_iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
        ApiError::not_found(
            "SettingNotFound",
            format!(
                "'{name}' is not a setting of this HSM; the settings are: {}",
                KNOWN.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

impl SettingsFile {
    pub fn get(&self, name: &str) -> Result<Value, ApiError> {
        let (name, kind, default) = known(name)?;
        let value = self.values.get(name).map(String::as_str).unwrap_or(default);
        Ok(json!({"name": name, "value": value, "type": kind}))
    }

    pub fn list(&self) -> Value {
        let all: Vec<Value> = KNOWN.iter().filter_map(|(n, _, _)| self.get(n).ok()).collect();
        json!({ "settings": all })
    }

    /// Sets `name` to `value`, which must suit the setting's type.
    pub fn set(&mut self, name: &str, value: &str) -> Result<Value, ApiError> {
        let (name, kind, _) = known(name)?;
        if kind == "boolean" && value != "true" && value != "false" {
            return Err(ApiError::bad_request(format!(
                "'{value}' is not a value of the boolean setting {name}: use \"true\" or \"false\""
            )));
        }
        self.values.insert(name.to_string(), value.to_string());
        self.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_and_change_as_the_service_shapes_them() {
        let mut s = SettingsFile::default();
        assert_eq!(
            s.list(),
            json!({"settings": [{"name": "AllowKeyManagementOperationsThroughARM", "value": "false", "type": "boolean"}]})
        );
        assert_eq!(
            s.set("AllowKeyManagementOperationsThroughARM", "true").unwrap()["value"],
            "true"
        );
        assert_eq!(
            s.get("AllowKeyManagementOperationsThroughARM").unwrap()["value"],
            "true"
        );
        let e = s.set("AllowKeyManagementOperationsThroughARM", "True").unwrap_err();
        assert!(e.message.contains("use \"true\" or \"false\""), "{}", e.message);
        let e = s.get("nope").unwrap_err();
        assert_eq!(e.status.as_u16(), 404);
        assert!(e.message.contains("'nope' is not a setting"));
    }
}
