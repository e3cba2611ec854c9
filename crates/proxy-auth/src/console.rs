//! What a token lets its holder do on the console: the optional top-level `console` claim.
//!
//! ```json
//! {"id": 5, "exp": 1796170000, "lab_instance": {...}, "console": {"role": "observer", "record": true}}
//! ```
//!
//! Absent, the holder has full control and nothing is recorded (what every LabOrchestrator token
//! means). `role` is `"control"` or `"observer"` (watch only: the proxy drops keyboard, pointer,
//! clipboard and other input); `record` asks a proxy that records to record the session. A role
//! this crate does not know is refused rather than read as control; other members are ignored.
use serde_json::{Map, Value};

use crate::error::AuthError;

/// The name of the claim.
pub const CONSOLE_CLAIM: &str = "console";

/// What the holder may do on the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConsoleRole {
    /// Keyboard, pointer and clipboard reach the VM (the default).
    #[default]
    Control,
    /// The holder only watches: input never reaches the VM.
    Observer,
}

impl ConsoleRole {
    /// The claim's word for the role.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleRole::Control => "control",
            ConsoleRole::Observer => "observer",
        }
    }
}

/// The `console` claim: role and whether the session should be recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleAccess {
    /// What the holder may do.
    pub role: ConsoleRole,
    /// Whether the token asks for the session to be recorded.
    pub record: bool,
}

impl ConsoleAccess {
    /// An observer's access (watch only, not recorded).
    pub fn observer() -> Self {
        Self {
            role: ConsoleRole::Observer,
            record: false,
        }
    }

    /// The access `claims` (the payload's top-level members) describe.
    pub fn from_claims(claims: &Map<String, Value>) -> Result<Self, AuthError> {
        let malformed = |claim| AuthError::MalformedClaims { claim };
        let console = match claims.get(CONSOLE_CLAIM) {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Object(console)) => console,
            Some(_) => return Err(malformed("console")),
        };
        let role = match console.get("role") {
            None | Some(Value::Null) => ConsoleRole::Control,
            Some(Value::String(role)) if role == "control" => ConsoleRole::Control,
            Some(Value::String(role)) if role == "observer" => ConsoleRole::Observer,
            Some(_) => return Err(malformed("console.role")),
        };
        let record = match console.get("record") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(record)) => *record,
            Some(_) => return Err(malformed("console.record")),
        };
        Ok(Self { role, record })
    }

    /// The claim's JSON value.
    pub fn to_claim(self) -> Value {
        serde_json::json!({"role": self.role.as_str(), "record": self.record})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn access(value: Value) -> Result<ConsoleAccess, AuthError> {
        let mut claims = Map::new();
        claims.insert(CONSOLE_CLAIM.to_owned(), value);
        ConsoleAccess::from_claims(&claims)
    }

    #[test]
    fn absent_means_control_without_recording() {
        assert_eq!(
            ConsoleAccess::from_claims(&Map::new()),
            Ok(ConsoleAccess::default())
        );
        assert_eq!(access(json!(null)), Ok(ConsoleAccess::default()));
        assert_eq!(access(json!({})), Ok(ConsoleAccess::default()));
    }

    #[test]
    fn roles_and_recording_are_read_and_written_back() {
        let observer = access(json!({"role": "observer", "record": true, "future": 1})).unwrap();
        assert_eq!(observer.role, ConsoleRole::Observer);
        assert!(observer.record);
        assert_eq!(access(observer.to_claim()), Ok(observer));
        assert_eq!(
            access(json!({"role": "control"})).unwrap().role,
            ConsoleRole::Control
        );
    }

    #[test]
    fn unknown_roles_and_wrong_types_are_refused() {
        for value in [
            json!({"role": "admin"}),
            json!({"role": 1}),
            json!({"record": "yes"}),
            json!("observer"),
        ] {
            assert!(
                matches!(
                    access(value.clone()),
                    Err(AuthError::MalformedClaims { .. })
                ),
                "{value}"
            );
        }
    }
}
