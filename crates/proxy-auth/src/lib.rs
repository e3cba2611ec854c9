//! LabOrchestrator-compatible console tokens.
//!
//! (Crate docs, with compiling examples, are written by the `proxy-auth` issue. The names in this
//! file are the contract `proxy-server` codes against; the issue may add to them, not rename them.)

use std::time::SystemTime;

/// A user, lab or lab-instance id: integers or strings in the LabOrchestrator layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Identifier {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

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
    /// The `exp` claim.
    pub expires_at: SystemTime,
    /// `lab_instance.additional_data` (`None` when absent or null).
    pub additional_data: Option<serde_json::Value>,
}

/// Why a token was refused. Never contains the token or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The VM is not in the token's allow-list (HTTP 403).
    #[error("the token does not allow this VM")]
    VmNotAllowed,
    /// Placeholder until the auth issue defines the full set (HTTP 401).
    #[error("invalid token")]
    Invalid,
}

impl AuthError {
    /// Whether the token itself is fine but does not allow the request (403) rather than invalid (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::VmNotAllowed)
    }

    /// A stable snake_case label for logs and metrics, e.g. `expired`, `bad_signature`, `vm_not_allowed`.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::VmNotAllowed => "vm_not_allowed",
            AuthError::Invalid => "invalid",
        }
    }
}

/// Checks a token for one VM. `Verifier` is the real one; server tests may use fakes.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` and that it allows `vmi_name`.
    fn verify(&self, token: &str, vmi_name: &str) -> Result<Grant, AuthError>;
}
