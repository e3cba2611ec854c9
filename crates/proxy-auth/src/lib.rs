//! LabOrchestrator-compatible console tokens: claim types, verification, VM allow-list, minting.
//!
//! A lab backend hands a user a JWT that names the VMs of one lab instance; `ws-proxy` checks it before
//! it opens a VNC console. This crate is both sides of that contract and nothing else: no tokio, no
//! networking, so any service can depend on it alone to check or mint tokens.
//!
//! The token layout is the one of the Python `lab_orchestrator_lib_auth` (HS256 with the secret's UTF-8
//! bytes by default):
//!
//! ```json
//! {"id": 5, "exp": 1632137911.79,
//!  "lab_instance": {"lab_id": 1, "lab_instance_id": 9, "namespace_name": "pentest-ubuntu-3-9",
//!                   "allowed_vmi_names": ["ubuntu"], "additional_data": null}}
//! ```
//!
//! - [`Verifier`] checks a token against configured keys and an explicit list of algorithms (never the
//!   token's say-so: `alg: none` and HS/RS confusion are refused), `exp` (required, integer or float),
//!   `nbf`/`iat` when present, `iss`/`aud` when configured, with an explicit leeway (default 0, as
//!   PyJWT). The [`TokenVerifier`] trait is the seam the server codes against.
//! - [`Verifier::verify_at`] / [`TokenVerifier::verify`] then match the requested VM exactly against
//!   `allowed_vmi_names` and return a [`Grant`]; the namespace and the VM name must be DNS-1123 names, so
//!   nothing from a token can reshape the upstream URL.
//! - [`AuthError`] says why a token was refused: [`AuthError::is_forbidden`] for HTTP 403 versus 401,
//!   [`AuthError::label`] for logs and metrics. No error and no `Debug` output contains a token or key.
//! - [`issue`] mints tokens like the Python `generate_auth_token`; [`encode`] signs any [`Claims`].
//!
//! # Verifying
//!
//! ```
//! use proxy_auth::{AuthError, TokenVerifier, Verifier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let token = proxy_auth::issue(5, proxy_auth::LabInstance::new(1, 9, "pentest-ubuntu-3-9", ["ubuntu"]),
//! #     proxy_auth::Expiry::DEFAULT, &proxy_auth::SigningKey::hs256("SECRET_KEY value")?)?;
//! let verifier = Verifier::hs256("SECRET_KEY value")?;
//! let grant = verifier.verify(&token, "ubuntu")?;
//! assert_eq!(grant.namespace, "pentest-ubuntu-3-9");
//!
//! let refused = verifier.verify(&token, "kali").unwrap_err();
//! assert_eq!(refused, AuthError::VmNotAllowed);
//! assert!(refused.is_forbidden());
//! assert_eq!(refused.label(), "vm_not_allowed");
//! # Ok(())
//! # }
//! ```
//!
//! Public keys, several algorithms and clock leeway:
//!
//! ```no_run
//! use std::time::Duration;
//! use proxy_auth::{Algorithm, VerificationKey, Verifier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder()
//!     .key(VerificationKey::from_public_key_file("/etc/ws-proxy/jwt.pub.pem")?)
//!     .algorithms([Algorithm::RS256, Algorithm::PS256])
//!     .leeway(Duration::from_secs(5))
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Minting
//!
//! ```
//! use std::time::Duration;
//! use proxy_auth::{Expiry, LabInstance, SigningKey, issue};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lab_instance = LabInstance::new(1, 9, "pentest-ubuntu-3-9", ["ubuntu", "kali"])
//!     .with_additional_data(serde_json::json!({"view_only": false}));
//! let key = SigningKey::hs256("SECRET_KEY value")?;
//! let token = issue(5, lab_instance, Expiry::In(Duration::from_secs(600)), &key)?;
//! println!("/{token}/ubuntu");
//! # Ok(())
//! # }
//! ```

use std::time::SystemTime;

mod claims;
mod console;
mod error;
mod issue;
mod keys;
mod names;
mod verify;

pub use claims::{Claims, Identifier, LabInstance, NumericDate};
pub use console::{CONSOLE_CLAIM, ConsoleAccess, ConsoleRole};
pub use error::{AuthError, ConfigError, IssueError, KeyError, MalformedToken, TokenPart};
pub use issue::{Expiry, IssueOptions, encode, issue, issue_with, issue_with_id};
/// The JWS algorithms (HS*, RS*, PS*, ES256/ES384, EdDSA), from `jsonwebtoken`.
pub use jsonwebtoken::Algorithm;
pub use keys::{KeyFamily, SigningKey, VerificationKey};
pub use names::{
    InvalidNameError, MAX_NAMESPACE_LEN, MAX_VMI_NAME_LEN, NameField, NameProblem,
    is_dns1123_label, is_dns1123_subdomain, validate_namespace, validate_vmi_name,
};
pub use verify::{MAX_TOKEN_BYTES, Verifier, VerifierBuilder};

/// What a verified token allows: one VM console in one namespace, until `expires_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The `id` claim: the user the token was issued to.
    pub user_id: Identifier,
    /// `lab_instance.lab_id`.
    pub lab_id: Identifier,
    /// `lab_instance.lab_instance_id`.
    pub lab_instance_id: Identifier,
    /// `lab_instance.namespace_name`, a valid DNS-1123 label.
    pub namespace: String,
    /// The requested VM name, found in `allowed_vmi_names` and a valid DNS-1123 name.
    pub vmi_name: String,
    /// The `exp` claim, in whole seconds (a fraction is dropped, as PyJWT's `int(exp)` does).
    pub expires_at: SystemTime,
    /// `lab_instance.additional_data` (`None` when absent or null).
    pub additional_data: Option<serde_json::Value>,
    /// The `jti` claim, the token's own id, when it has one as a string (single-use tokens and
    /// revocation key on it).
    pub token_id: Option<String>,
    /// The `console` claim: control or observer, and whether to record (see [`ConsoleAccess`]).
    pub console: ConsoleAccess,
}

/// What [`TokenVerifier::refresh_for_unknown_key`] returns: a future that ends when the verifier
/// has asked for its keys again, with whether they changed.
pub type KeyRefresh<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>;

/// Checks a token for one VM. `Verifier` is the real one; server tests may use fakes.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` and that it allows `vmi_name`.
    fn verify(&self, token: &str, vmi_name: &str) -> Result<Grant, AuthError>;

    /// Called after [`verify`](Self::verify) refused a token with [`AuthError::UnknownKeyId`].
    /// A verifier whose keys come from somewhere it can ask again (a JWK Set URL) returns a
    /// future that ends when it has asked, with `true` when the keys changed: the caller then
    /// verifies the token once more. The default, for keys that are what they are, is `None`.
    fn refresh_for_unknown_key(&self) -> Option<KeyRefresh<'_>> {
        None
    }
}
