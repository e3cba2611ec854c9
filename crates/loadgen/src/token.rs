//! Console tokens for the proxy target, in the LabOrchestrator claim layout, signed with HS256.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::LoadgenError;

/// A signing secret or a minted token: text whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The wrapped text, for the places that must send it (a URL, a child's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Serialize)]
struct LabInstance<'a> {
    lab_id: u64,
    lab_instance_id: u64,
    namespace_name: &'a str,
    allowed_vmi_names: &'a [String],
    additional_data: Option<()>,
}

#[derive(Serialize)]
struct Claims<'a> {
    id: &'static str,
    exp: u64,
    lab_instance: LabInstance<'a>,
}

/// Mints an HS256 console token for `namespace` allowing `vmi_names`, valid for `lifetime`.
///
/// The claims follow the LabOrchestrator layout the proxy verifies (`id`, `exp`, `lab_instance`
/// with `lab_id`, `lab_instance_id`, `namespace_name`, `allowed_vmi_names`, `additional_data`).
pub fn mint_console_token(
    secret: &Secret,
    namespace: &str,
    vmi_names: &[String],
    lifetime: Duration,
) -> Result<Secret, LoadgenError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let claims = Claims {
        id: "loadgen",
        exp: (now + lifetime).as_secs(),
        lab_instance: LabInstance {
            lab_id: 1,
            lab_instance_id: 1,
            namespace_name: namespace,
            allowed_vmi_names: vmi_names,
            additional_data: None,
        },
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes()).map_err(LoadgenError::Mint)?;
    jsonwebtoken::encode(&Header::default(), &claims, &key)
        .map(Secret)
        .map_err(LoadgenError::Mint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn minted_token_decodes_to_the_laborchestrator_layout() {
        let secret = Secret::new("test-secret");
        let names = vec!["echo".to_owned(), "sink-10".to_owned()];
        let token = mint_console_token(&secret, "lab-ns", &names, Duration::from_secs(60)).unwrap();
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            token.expose(),
            &DecodingKey::from_secret(b"test-secret").unwrap(),
            &Validation::default(),
        )
        .unwrap();
        let lab = &decoded.claims["lab_instance"];
        assert_eq!(lab["namespace_name"], "lab-ns");
        assert_eq!(lab["allowed_vmi_names"], serde_json::json!(["echo", "sink-10"]));
        assert!(lab["additional_data"].is_null());
        assert_eq!(decoded.claims["id"], "loadgen");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let secret = Secret::new("do-not-print-me");
        assert!(!format!("{secret:?}").contains("do-not-print-me"));
    }
}
