//! Minting tokens, as a lab backend does with the Python `generate_auth_token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Header;
use serde_json::{Map, Value};

use crate::claims::{Claims, Identifier, LabInstance, NumericDate};
use crate::console::{CONSOLE_CLAIM, ConsoleAccess};
use crate::error::IssueError;
use crate::keys::SigningKey;
use crate::names::{is_dns1123_label, is_dns1123_subdomain};

/// When a minted token expires: the Python `expires_in` or `expires_at` argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expiry {
    /// This long after now; written as fractional seconds, as Python's `time.time() + expires_in`.
    In(Duration),
    /// At this date, written as given (an integer stays an integer).
    At(NumericDate),
}

impl Expiry {
    /// The Python default: `expires_in=600`.
    pub const DEFAULT: Expiry = Expiry::In(Duration::from_secs(600));

    fn date(self, now: SystemTime) -> NumericDate {
        match self {
            Expiry::In(lifetime) => {
                let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
                NumericDate::FractionalSeconds(now.as_secs_f64() + lifetime.as_secs_f64())
            }
            Expiry::At(date) => date,
        }
    }
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry::DEFAULT
    }
}

/// Mints a console token like `generate_auth_token(user_id, params, secret, expires_in | expires_at,
/// algorithm)`: payload `{"id", "exp", "lab_instance"}` in that order, header `{"typ":"JWT","alg":...}`.
///
/// As in Python, an absent `additional_data` is written as `null`. Unlike Python, names the verifier
/// would refuse are refused here: the namespace must be a DNS-1123 label and every allowed VM name a
/// DNS-1123 subdomain.
pub fn issue(
    user_id: impl Into<Identifier>,
    lab_instance: LabInstance,
    expiry: Expiry,
    key: &SigningKey,
) -> Result<String, IssueError> {
    claims_for(user_id, lab_instance, expiry).and_then(|claims| encode(&claims, key))
}

/// Like [`issue`], with a `jti` claim: the token's id, which a proxy with single-use tokens
/// remembers until the token expires (a second session with it is refused).
///
/// ```
/// use proxy_auth::{Expiry, LabInstance, SigningKey, Verifier, issue_with_id};
///
/// let key = SigningKey::hs256("secret").unwrap();
/// let lab = LabInstance::new(1, 9, "lab-1", ["ubuntu"]);
/// let token = issue_with_id(5, lab, Expiry::DEFAULT, &key, "session-7f3a").unwrap();
/// let grant = Verifier::hs256("secret").unwrap().verify(&token, "ubuntu").unwrap();
/// assert_eq!(grant.token_id.as_deref(), Some("session-7f3a"));
/// ```
pub fn issue_with_id(
    user_id: impl Into<Identifier>,
    lab_instance: LabInstance,
    expiry: Expiry,
    key: &SigningKey,
    token_id: &str,
) -> Result<String, IssueError> {
    let options = IssueOptions {
        token_id: Some(token_id.to_owned()),
        ..IssueOptions::default()
    };
    issue_with(user_id, lab_instance, expiry, key, &options)
}

/// What [`issue_with`] adds to a LabOrchestrator token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueOptions {
    /// The `jti` claim (see [`issue_with_id`]).
    pub token_id: Option<String>,
    /// The `console` claim (see [`ConsoleAccess`]); `None` leaves it out (full control).
    pub console: Option<ConsoleAccess>,
}

/// Like [`issue`], with the claims of `options`.
///
/// ```
/// use proxy_auth::{ConsoleAccess, ConsoleRole, Expiry, IssueOptions, LabInstance, SigningKey, Verifier, issue_with};
///
/// let key = SigningKey::hs256("secret").unwrap();
/// let lab = LabInstance::new(1, 9, "lab-1", ["ubuntu"]);
/// let options = IssueOptions { console: Some(ConsoleAccess::observer()), ..IssueOptions::default() };
/// let token = issue_with(5, lab, Expiry::DEFAULT, &key, &options).unwrap();
/// let grant = Verifier::hs256("secret").unwrap().verify(&token, "ubuntu").unwrap();
/// assert_eq!(grant.console.role, ConsoleRole::Observer);
/// ```
pub fn issue_with(
    user_id: impl Into<Identifier>,
    lab_instance: LabInstance,
    expiry: Expiry,
    key: &SigningKey,
    options: &IssueOptions,
) -> Result<String, IssueError> {
    let mut claims = claims_for(user_id, lab_instance, expiry)?;
    if let Some(token_id) = &options.token_id {
        claims
            .other
            .insert("jti".to_owned(), Value::String(token_id.clone()));
    }
    if let Some(console) = options.console {
        claims
            .other
            .insert(CONSOLE_CLAIM.to_owned(), console.to_claim());
    }
    encode(&claims, key)
}

/// The claims [`issue`] signs, after the name checks.
fn claims_for(
    user_id: impl Into<Identifier>,
    mut lab_instance: LabInstance,
    expiry: Expiry,
) -> Result<Claims, IssueError> {
    if !is_dns1123_label(&lab_instance.namespace_name) {
        return Err(IssueError::InvalidName {
            claim: "lab_instance.namespace_name",
        });
    }
    if !lab_instance
        .allowed_vmi_names
        .iter()
        .all(|name| is_dns1123_subdomain(name))
    {
        return Err(IssueError::InvalidName {
            claim: "lab_instance.allowed_vmi_names",
        });
    }
    lab_instance.additional_data.get_or_insert(Value::Null);
    Ok(Claims {
        id: user_id.into(),
        exp: expiry.date(SystemTime::now()),
        lab_instance,
        other: Map::new(),
    })
}

/// Signs exactly `claims` (nothing added, nothing checked but a finite `exp`).
pub fn encode(claims: &Claims, key: &SigningKey) -> Result<String, IssueError> {
    if !claims.exp.is_finite() {
        return Err(IssueError::InvalidExpiry);
    }
    jsonwebtoken::encode(&Header::new(key.algorithm()), claims, key.encoding_key())
        .map_err(IssueError::Signing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_fractional_seconds_after_now() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        assert_eq!(
            Expiry::In(Duration::from_secs(600)).date(now),
            NumericDate::FractionalSeconds(1_700_000_600.5)
        );
        assert_eq!(
            Expiry::At(NumericDate::Seconds(7)).date(now),
            NumericDate::Seconds(7)
        );
        assert_eq!(Expiry::default(), Expiry::In(Duration::from_secs(600)));
    }

    #[test]
    fn issue_refuses_names_the_verifier_would_refuse() {
        let key = SigningKey::hs256("secret").unwrap();
        let bad_namespace = LabInstance::new(1, 9, "../kube-system", ["ubuntu"]);
        assert!(matches!(
            issue(5, bad_namespace, Expiry::DEFAULT, &key),
            Err(IssueError::InvalidName {
                claim: "lab_instance.namespace_name"
            })
        ));
        let bad_vm = LabInstance::new(1, 9, "lab-1", ["ubuntu", "a/b"]);
        assert!(matches!(
            issue(5, bad_vm, Expiry::DEFAULT, &key),
            Err(IssueError::InvalidName {
                claim: "lab_instance.allowed_vmi_names"
            })
        ));
    }

    #[test]
    fn encode_refuses_a_non_finite_expiry() {
        let key = SigningKey::hs256("secret").unwrap();
        let claims = Claims {
            id: 5.into(),
            exp: NumericDate::FractionalSeconds(f64::INFINITY),
            lab_instance: LabInstance::new(1, 9, "lab-1", ["ubuntu"]),
            other: Map::new(),
        };
        assert!(matches!(
            encode(&claims, &key),
            Err(IssueError::InvalidExpiry)
        ));
    }
}
