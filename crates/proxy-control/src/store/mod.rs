//! What the proxy's replicas share about sessions: the live-session registry, the per-user,
//! per-lab-instance and per-VM limits, revocations, the memory of single-use token ids, and the
//! commands (close, revoke) that must reach a session wherever it runs.
//!
//! [`StateStore`] is the seam. [`MemoryStateStore`] keeps it all in this process (one replica,
//! nothing to install, the default); [`RedisStateStore`] keeps it in Redis so that several
//! replicas see one picture (`--state-url redis://…`). Both pass the same test suite.
//!
//! Sessions are *leases*: each replica renews its sessions' records every
//! [`StorePolicy::lease`] / 3, and a record not renewed within the lease (its replica died)
//! stops counting, so a crashed pod never leaves a user locked out. No token material is
//! stored: token ids are kept as SHA-256 hashes ([`hash_token_id`]).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! use proxy_control::store::{
//!     FirstUse, MemoryStateStore, Opened, SessionLimits, SessionRecord, StateStore,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), proxy_control::store::StoreError> {
//! let store = MemoryStateStore::default();
//! let limits = SessionLimits { per_user: Some(1), ..SessionLimits::default() };
//! let record = std::sync::Arc::new(SessionRecord::example("replica-a.1", "student-7"));
//! assert_eq!(store.open_session(&record, &limits, Duration::from_secs(15)).await?, Opened::Yes);
//! let second = std::sync::Arc::new(SessionRecord::example("replica-a.2", "student-7"));
//! assert!(matches!(store.open_session(&second, &limits, Duration::from_secs(15)).await?, Opened::OverLimit(_)));
//!
//! let expires = SystemTime::now() + Duration::from_secs(60);
//! assert_eq!(store.first_use("jti-hash", expires).await?, FirstUse::Yes);
//! assert_eq!(store.first_use("jti-hash", expires).await?, FirstUse::AlreadyUsed);
//! # Ok(())
//! # }
//! ```
mod memory;
#[cfg(feature = "redis")]
mod redis_store;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use crate::single_use::FirstUse;
pub use memory::MemoryStateStore;
#[cfg(feature = "redis")]
pub use redis_store::{RedisSettings, RedisSettingsError, RedisStateStore};

/// A live console session as the store and the admin API show it. Identifiers are strings
/// (LabOrchestrator ids may be integers or strings); times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Unique across replicas: `{replica}.{incarnation}.{number}`.
    pub id: String,
    /// The replica serving it (the pod name, from `HOSTNAME`).
    pub replica: String,
    /// The token's `id` claim.
    pub user_id: String,
    /// `lab_instance.lab_id`.
    pub lab_id: String,
    /// `lab_instance.lab_instance_id`.
    pub lab_instance_id: String,
    /// The VM's namespace.
    pub namespace: String,
    /// The VM.
    pub vmi: String,
    /// The browser's address as the proxy sees it (the ingress's, behind one).
    pub peer: String,
    /// `control` or `observer` (the token's `console.role`).
    pub role: String,
    /// When the session was admitted.
    pub started_at: u64,
    /// The token's `exp`.
    pub token_expires_at: u64,
    /// The subprotocol answered to the browser (empty before the upgrade or when none).
    pub client_subprotocol: String,
    /// Payload bytes relayed from the browser to the VM (as of the last renewal, for sessions
    /// of other replicas).
    pub client_to_upstream_bytes: u64,
    /// Data frames relayed from the browser to the VM.
    pub client_to_upstream_frames: u64,
    /// Payload bytes relayed from the VM to the browser.
    pub upstream_to_client_bytes: u64,
    /// Data frames relayed from the VM to the browser.
    pub upstream_to_client_frames: u64,
}

impl SessionRecord {
    /// A record with the given id and user and made-up other fields, for examples and tests.
    pub fn example(id: &str, user_id: &str) -> Self {
        SessionRecord {
            id: id.to_owned(),
            replica: id.split('.').next().unwrap_or(id).to_owned(),
            user_id: user_id.to_owned(),
            lab_id: "lab-1".to_owned(),
            lab_instance_id: format!("{user_id}-instance"),
            namespace: "lab-ns".to_owned(),
            vmi: format!("{user_id}-vm"),
            peer: "127.0.0.1:40000".to_owned(),
            role: "control".to_owned(),
            started_at: unix_seconds(SystemTime::now()),
            token_expires_at: unix_seconds(SystemTime::now()) + 3600,
            client_subprotocol: String::new(),
            client_to_upstream_bytes: 0,
            client_to_upstream_frames: 0,
            upstream_to_client_bytes: 0,
            upstream_to_client_frames: 0,
        }
    }

    /// The key the per-VM limit counts under: `namespace/vmi`.
    pub fn vm_key(&self) -> String {
        format!("{}/{}", self.namespace, self.vmi)
    }
}

/// Which sessions an operator means; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFilter {
    /// The token's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The lab instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lab_instance_id: Option<String>,
    /// The namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmi: Option<String>,
}

impl SessionFilter {
    /// Whether no field is given (the filter matches every session).
    pub fn is_empty(&self) -> bool {
        self.user_id.is_none()
            && self.lab_instance_id.is_none()
            && self.namespace.is_none()
            && self.vmi.is_none()
    }

    /// Whether `record` matches.
    pub fn matches(&self, record: &SessionRecord) -> bool {
        let field = |wanted: &Option<String>, actual: &str| {
            wanted.as_deref().is_none_or(|wanted| wanted == actual)
        };
        field(&self.user_id, &record.user_id)
            && field(&self.lab_instance_id, &record.lab_instance_id)
            && field(&self.namespace, &record.namespace)
            && field(&self.vmi, &record.vmi)
    }
}

/// Most concurrent sessions per user, per lab instance and per VM (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// Per token user id.
    pub per_user: Option<usize>,
    /// Per lab instance id.
    pub per_lab_instance: Option<usize>,
    /// Per `namespace/vmi`.
    pub per_vm: Option<usize>,
}

impl SessionLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.per_user.is_some() || self.per_lab_instance.is_some() || self.per_vm.is_some()
    }
}

/// The limit a session would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// `--max-sessions-per-user`.
    User,
    /// `--max-sessions-per-lab-instance`.
    LabInstance,
    /// `--max-sessions-per-vm`.
    Vm,
}

impl LimitScope {
    /// `user`, `lab_instance` or `vm`.
    pub fn label(self) -> &'static str {
        match self {
            LimitScope::User => "user",
            LimitScope::LabInstance => "lab_instance",
            LimitScope::Vm => "vm",
        }
    }
}

/// What [`StateStore::open_session`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Registered: it counts against the limits until ended or its lease runs out.
    Yes,
    /// Refused: this limit is reached.
    OverLimit(LimitScope),
}

/// Whose tokens a revocation refuses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationTarget {
    /// Every token of this user id.
    UserId(String),
    /// Every token of this lab instance.
    LabInstanceId(String),
    /// The token with this `jti`, as [`hash_token_id`] gives it (the id itself is not kept).
    JtiSha256(String),
}

/// Tokens refused until a time, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Whose tokens.
    #[serde(flatten)]
    pub target: RevocationTarget,
    /// Unix seconds until which matching tokens are refused.
    pub until: u64,
    /// Why (shown to the browser of a closed session).
    pub reason: String,
    /// Who revoked (as the operator said).
    pub by: String,
    /// When it was made, Unix seconds.
    pub created_at: u64,
}

impl Revocation {
    /// Whether it still applies at `now`.
    pub fn in_force(&self, now: SystemTime) -> bool {
        self.until > unix_seconds(now)
    }

    /// Whether a session of `user_id` in `lab_instance_id` whose token has the id hash
    /// `token_id_hash` is refused.
    pub fn applies_to(
        &self,
        user_id: &str,
        lab_instance_id: &str,
        token_id_hash: Option<&str>,
    ) -> bool {
        match &self.target {
            RevocationTarget::UserId(id) => id == user_id,
            RevocationTarget::LabInstanceId(id) => id == lab_instance_id,
            RevocationTarget::JtiSha256(hash) => token_id_hash == Some(hash.as_str()),
        }
    }
}

/// Something every replica must do to its own sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Close these sessions (wherever they run).
    Close {
        /// The session ids.
        session_ids: Vec<String>,
        /// Why (sent to the browser with the close code).
        reason: String,
        /// Who asked.
        by: String,
    },
    /// A revocation was made: close the matching sessions and refuse their tokens.
    Revoked(Revocation),
}

/// A store request that failed: the store is unreachable or answered something unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis failed or is unreachable.
    #[cfg(feature = "redis")]
    #[error("the state store (Redis) failed")]
    Redis(#[source] redis::RedisError),
    /// A value in the store could not be read.
    #[error("the state store holds an unreadable value")]
    Corrupt(#[source] serde_json::Error),
}

/// What to do with a check when the store cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OnOutage {
    /// Let the session through as if the check passed.
    Open,
    /// Refuse the session with 503 "state store unavailable".
    Closed,
}

/// The store's timing and what each check does during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorePolicy {
    /// How long a session's record lives without renewal (default 15 s); renewed every third
    /// of it, and revocations are re-read as often.
    pub lease: Duration,
    /// Per-user / lab-instance / VM limits when the store is down (default open: a store
    /// outage does not lock students out).
    pub limits: OnOutage,
    /// Single-use tokens when the store is down (default closed: a token could be replayed).
    pub single_use: OnOutage,
    /// Revocations when the store is down and the last copy is older than two leases
    /// (default closed: a revoked user could get in).
    pub revocations: OnOutage,
}

impl Default for StorePolicy {
    fn default() -> Self {
        StorePolicy {
            lease: Duration::from_secs(15),
            limits: OnOutage::Open,
            single_use: OnOutage::Closed,
            revocations: OnOutage::Closed,
        }
    }
}

/// Where the replicas keep what they share. Every method is one atomic step in the store.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// `memory` or `redis`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Registers `session` unless that would exceed one of `limits` (counting every replica's
    /// unexpired sessions), atomically: of two racing sessions over a limit of one, one wins.
    ///
    /// The record is shared: a store in this process keeps it rather than a copy.
    async fn open_session(
        &self,
        session: &Arc<SessionRecord>,
        limits: &SessionLimits,
        lease: Duration,
    ) -> Result<Opened, StoreError>;

    /// Renews the leases of `sessions` (this replica's, with their current counters) for
    /// `lease`, registering any the store lost (after a store restart).
    async fn renew_sessions(
        &self,
        sessions: &[SessionRecord],
        lease: Duration,
    ) -> Result<(), StoreError>;

    /// Removes an ended session.
    async fn end_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// Every unexpired session of every replica.
    async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;

    /// Records the first use of a token id hash until `expires_at` (see [`FirstUse`]).
    async fn first_use(
        &self,
        token_id_hash: &str,
        expires_at: SystemTime,
    ) -> Result<FirstUse, StoreError>;

    /// Forgets a use that opened no session, so the holder may try again.
    async fn forget_use(&self, token_id_hash: &str) -> Result<(), StoreError>;

    /// Stores a revocation (replacing one with the same target).
    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError>;

    /// Lifts the revocation of `target`; whether there was one.
    async fn lift(&self, target: &RevocationTarget) -> Result<bool, StoreError>;

    /// The revocations in force.
    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError>;

    /// Sends `command` to every replica's [`commands`](Self::commands) receivers, this one's
    /// included.
    async fn publish(&self, command: &Command) -> Result<(), StoreError>;

    /// Commands published by any replica from now on. Must be called inside the runtime the
    /// engine runs on.
    fn commands(&self) -> broadcast::Receiver<Command>;
}

/// The SHA-256 of a token id, hex: what stores and revocations keep instead of the `jti`.
pub fn hash_token_id(token_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token_id.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Seconds since the Unix epoch (0 before it).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_hashed() {
        let hash = hash_token_id("abc");
        assert_eq!(
            hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn filters_match_every_given_field() {
        let record = SessionRecord::example("a.1", "7");
        assert!(SessionFilter::default().matches(&record));
        let by_user = SessionFilter {
            user_id: Some("7".into()),
            ..SessionFilter::default()
        };
        assert!(by_user.matches(&record));
        let other_vm = SessionFilter {
            vmi: Some("other".into()),
            ..by_user
        };
        assert!(!other_vm.matches(&record));
    }

    #[test]
    fn commands_and_revocations_have_a_stable_json_form() {
        let revocation = Revocation {
            target: RevocationTarget::UserId("7".into()),
            until: 100,
            reason: "exam over".into(),
            by: "alice".into(),
            created_at: 50,
        };
        let json = serde_json::to_value(Command::Revoked(revocation.clone())).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"command": "revoked", "user_id": "7", "until": 100,
                "reason": "exam over", "by": "alice", "created_at": 50})
        );
        assert!(revocation.applies_to("7", "x", None));
        assert!(!revocation.applies_to("8", "x", None));
        assert!(revocation.in_force(UNIX_EPOCH + Duration::from_secs(99)));
        assert!(!revocation.in_force(UNIX_EPOCH + Duration::from_secs(100)));
    }
}
