//! Console tokens for the proxy target, in the LabOrchestrator claim layout, signed with HS256.

use std::fmt;
use std::time::Duration;

use proxy_auth::{Expiry, LabInstance, SigningKey};

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

/// Mints an HS256 console token for `namespace` allowing `vmi_names`, valid for `lifetime`, with
/// [`proxy_auth::issue`]: the LabOrchestrator layout the proxy verifies (`id` = `loadgen`, `exp`,
/// `lab_instance` with `lab_id` 1, `lab_instance_id` 1, `namespace_name`, `allowed_vmi_names`,
/// `additional_data` null).
pub fn mint_console_token(
    secret: &Secret,
    namespace: &str,
    vmi_names: &[String],
    lifetime: Duration,
) -> Result<Secret, LoadgenError> {
    let key = SigningKey::hs256(secret.expose()).map_err(LoadgenError::SigningKey)?;
    let lab_instance = LabInstance::new(1, 1, namespace, vmi_names.iter().cloned());
    proxy_auth::issue("loadgen", lab_instance, Expiry::In(lifetime), &key)
        .map(Secret)
        .map_err(LoadgenError::Mint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_passes_the_proxy_verifier_for_every_allowed_vm() {
        let secret = Secret::new("test-secret");
        let names = vec!["echo".to_owned(), "sink-10".to_owned()];
        let token = mint_console_token(&secret, "lab-ns", &names, Duration::from_secs(60)).unwrap();
        let verifier = proxy_auth::Verifier::hs256("test-secret").unwrap();
        for name in &names {
            let grant = verifier.verify(token.expose(), name).unwrap();
            assert_eq!(grant.namespace, "lab-ns");
            assert_eq!(&grant.vmi_name, name);
        }
        assert!(
            verifier
                .verify(token.expose(), "source-1-1")
                .unwrap_err()
                .is_forbidden()
        );
        let other = proxy_auth::Verifier::hs256("other-secret").unwrap();
        assert!(other.verify(token.expose(), "echo").is_err());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let secret = Secret::new("do-not-print-me");
        assert!(!format!("{secret:?}").contains("do-not-print-me"));
    }
}
