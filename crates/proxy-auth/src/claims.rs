//! The LabOrchestrator claim layout, as serde types that round-trip exactly.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A user, lab or lab-instance id: integers or strings in the LabOrchestrator layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Identifier {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identifier::Int(id) => write!(f, "{id}"),
            Identifier::Str(id) => f.write_str(id),
        }
    }
}

// Deserialized by type rather than `untagged`, which buffers the value and builds an error
// (a formatted message) for every variant it rules out: a tenth of a session's set-up work
// went into such errors for string ids.
impl<'de> Deserialize<'de> for Identifier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdentifierVisitor;

        impl serde::de::Visitor<'_> for IdentifierVisitor {
            type Value = Identifier;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string id")
            }

            fn visit_i64<E: serde::de::Error>(self, id: i64) -> Result<Identifier, E> {
                Ok(Identifier::Int(id))
            }

            fn visit_u64<E: serde::de::Error>(self, id: u64) -> Result<Identifier, E> {
                i64::try_from(id)
                    .map(Identifier::Int)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(id), &self))
            }

            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<Identifier, E> {
                Ok(Identifier::Str(id.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, id: String) -> Result<Identifier, E> {
                Ok(Identifier::Str(id))
            }
        }

        deserializer.deserialize_any(IdentifierVisitor)
    }
}

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumericDateVisitor;

        impl serde::de::Visitor<'_> for NumericDateVisitor {
            type Value = NumericDate;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds since the Unix epoch, an integer or a float")
            }

            fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<NumericDate, E> {
                Ok(NumericDate::Seconds(seconds))
            }

            // Past i64, as `untagged` did: the float form.
            fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<NumericDate, E> {
                Ok(i64::try_from(seconds).map_or(
                    NumericDate::FractionalSeconds(seconds as f64),
                    NumericDate::Seconds,
                ))
            }

            fn visit_f64<E: serde::de::Error>(self, seconds: f64) -> Result<NumericDate, E> {
                Ok(NumericDate::FractionalSeconds(seconds))
            }
        }

        deserializer.deserialize_any(NumericDateVisitor)
    }
}

impl From<i64> for Identifier {
    fn from(id: i64) -> Self {
        Identifier::Int(id)
    }
}

impl From<&str> for Identifier {
    fn from(id: &str) -> Self {
        Identifier::Str(id.to_owned())
    }
}

impl From<String> for Identifier {
    fn from(id: String) -> Self {
        Identifier::Str(id)
    }
}

/// A JWT time claim (`exp`, `nbf`, `iat`): seconds since the Unix epoch, written as an integer or a float.
///
/// The Python `generate_auth_token` writes `time.time() + expires_in`, a float, unless given an integer
/// `expires_at`. Both forms are kept as written, so a decoded token re-encodes to the same JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum NumericDate {
    /// Whole seconds.
    Seconds(i64),
    /// Fractional seconds.
    FractionalSeconds(f64),
}

impl NumericDate {
    /// The whole seconds, truncated toward zero as PyJWT's `int(payload["exp"])` does; `None` for a
    /// non-finite or out-of-range float.
    pub fn whole_seconds(self) -> Option<i64> {
        match self {
            NumericDate::Seconds(seconds) => Some(seconds),
            NumericDate::FractionalSeconds(seconds) => {
                let truncated = seconds.trunc();
                // -2^63 is exact as a float; 2^63 (just above i64::MAX) is the first float out of range.
                let i64_range = i64::MIN as f64..-(i64::MIN as f64);
                i64_range.contains(&truncated).then_some(truncated as i64)
            }
        }
    }

    /// The whole seconds as a [`SystemTime`]; `None` when out of the platform's range.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let seconds = self.whole_seconds()?;
        if seconds >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(seconds.unsigned_abs()))
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))
        }
    }

    /// The date of `time`: whole seconds when it has no fractional part, fractional seconds otherwise.
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) if after.subsec_nanos() == 0 => {
                NumericDate::Seconds(i64::try_from(after.as_secs()).unwrap_or(i64::MAX))
            }
            Ok(after) => NumericDate::FractionalSeconds(after.as_secs_f64()),
            Err(before) => {
                let before = before.duration();
                if before.subsec_nanos() == 0 {
                    NumericDate::Seconds(-i64::try_from(before.as_secs()).unwrap_or(i64::MAX))
                } else {
                    NumericDate::FractionalSeconds(-before.as_secs_f64())
                }
            }
        }
    }

    pub(crate) fn is_finite(self) -> bool {
        match self {
            NumericDate::Seconds(_) => true,
            NumericDate::FractionalSeconds(seconds) => seconds.is_finite(),
        }
    }
}

impl From<i64> for NumericDate {
    fn from(seconds: i64) -> Self {
        NumericDate::Seconds(seconds)
    }
}

/// The `lab_instance` claim: which lab instance, which namespace, which VMs.
///
/// `additional_data` distinguishes absent (`None`, older tokens) from an explicit JSON `null`
/// (`Some(Value::Null)`, what `generate_auth_token` writes when given none), so both re-encode as
/// they were. Fields this crate does not know are kept in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabInstance {
    /// The id of the lab.
    pub lab_id: Identifier,
    /// The id of the lab instance.
    pub lab_instance_id: Identifier,
    /// The Kubernetes namespace the VMs run in.
    pub namespace_name: String,
    /// The VM names the holder may open a console to; matched exactly.
    pub allowed_vmi_names: Vec<String>,
    /// Free-form data of the lab backend; see the type docs for absent versus `null`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub additional_data: Option<Value>,
    /// Any other members of the `lab_instance` object, kept for an exact round trip.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl LabInstance {
    /// A lab instance without additional data or other members.
    pub fn new(
        lab_id: impl Into<Identifier>,
        lab_instance_id: impl Into<Identifier>,
        namespace_name: impl Into<String>,
        allowed_vmi_names: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        LabInstance {
            lab_id: lab_id.into(),
            lab_instance_id: lab_instance_id.into(),
            namespace_name: namespace_name.into(),
            allowed_vmi_names: allowed_vmi_names.into_iter().map(Into::into).collect(),
            additional_data: None,
            other: Map::new(),
        }
    }

    /// The same lab instance carrying `additional_data`.
    pub fn with_additional_data(mut self, additional_data: Value) -> Self {
        self.additional_data = Some(additional_data);
        self
    }
}

/// The whole payload of a LabOrchestrator console token.
///
/// Registered claims other than `exp` (`nbf`, `iat`, `iss`, `aud`, ...) and anything else live in
/// `other`, so a decoded payload re-encodes to the same JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user the token was issued to.
    pub id: Identifier,
    /// When the token expires.
    pub exp: NumericDate,
    /// What the token grants access to.
    pub lab_instance: LabInstance,
    /// All other top-level claims.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Deserializes a present member as `Some`, even when it is `null` (serde's `Option` would give `None`).
fn present_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_keep_their_json_type() {
        let ids: Vec<Identifier> = serde_json::from_value(json!([5, "user-5"])).unwrap();
        assert_eq!(
            ids,
            vec![Identifier::Int(5), Identifier::Str("user-5".into())]
        );
        assert_eq!(serde_json::to_value(&ids).unwrap(), json!([5, "user-5"]));
        assert_eq!(ids[0].to_string(), "5");
        assert!(serde_json::from_value::<Identifier>(json!(1.5)).is_err());
        assert!(serde_json::from_value::<Identifier>(json!(null)).is_err());
    }

    #[test]
    fn numeric_dates_round_trip_as_written() {
        for text in ["8633272048", "4102444800.25", "4102444800.0", "-5"] {
            let date: NumericDate = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&date).unwrap(), text);
        }
        let float: NumericDate = serde_json::from_str("4102444800.75").unwrap();
        assert_eq!(float, NumericDate::FractionalSeconds(4_102_444_800.75));
        assert_eq!(float.whole_seconds(), Some(4_102_444_800));
        assert_eq!(
            NumericDate::FractionalSeconds(-0.5).whole_seconds(),
            Some(0)
        );
        assert_eq!(NumericDate::FractionalSeconds(1e300).whole_seconds(), None);
        assert_eq!(
            NumericDate::FractionalSeconds(f64::NAN).whole_seconds(),
            None
        );
        assert!(serde_json::from_str::<NumericDate>("\"8633272048\"").is_err());
    }

    #[test]
    fn numeric_dates_convert_to_and_from_system_time() {
        let whole = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            NumericDate::from_system_time(whole),
            NumericDate::Seconds(1_700_000_000)
        );
        assert_eq!(
            NumericDate::Seconds(1_700_000_000).to_system_time(),
            Some(whole)
        );
        let fractional = whole + Duration::from_millis(250);
        assert_eq!(
            NumericDate::from_system_time(fractional),
            NumericDate::FractionalSeconds(1_700_000_000.25)
        );
        assert_eq!(
            NumericDate::Seconds(-10).to_system_time(),
            UNIX_EPOCH.checked_sub(Duration::from_secs(10))
        );
    }

    #[test]
    fn claims_round_trip_exactly_with_absent_null_and_present_additional_data() {
        for additional_data in [
            None,
            Some(json!(null)),
            Some(json!({"hallo": "welt", "view_only": false})),
        ] {
            let mut lab_instance = json!({
                "lab_id": "lab-a",
                "lab_instance_id": 9,
                "namespace_name": "lab-1-9",
                "allowed_vmi_names": ["ubuntu", "kali"],
                "future_member": [1, 2],
            });
            if let Some(data) = &additional_data {
                lab_instance["additional_data"] = data.clone();
            }
            let payload =
                json!({"id": 5, "exp": 4102444800.25, "nbf": 10, "lab_instance": lab_instance});
            let claims: Claims = serde_json::from_value(payload.clone()).unwrap();
            assert_eq!(claims.lab_instance.additional_data, additional_data);
            assert_eq!(claims.other.get("nbf"), Some(&json!(10)));
            assert_eq!(serde_json::to_value(&claims).unwrap(), payload);
        }
    }

    #[test]
    fn lab_instance_serializes_in_the_python_member_order() {
        let lab_instance = LabInstance::new(1, 9, "pentest-ubuntu-3-9", ["ubuntu"])
            .with_additional_data(Value::Null);
        assert_eq!(
            serde_json::to_string(&lab_instance).unwrap(),
            r#"{"lab_id":1,"lab_instance_id":9,"namespace_name":"pentest-ubuntu-3-9","allowed_vmi_names":["ubuntu"],"additional_data":null}"#
        );
    }
}
