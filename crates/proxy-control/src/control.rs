//! [`Control`]: the control plane behind one value. Admission asks it one question per console
//! request ([`Control::admit`]); the admin API asks it to list, close, revoke and lift; the
//! server runs its upkeep ([`Control::keep_current`]). Every store-outage decision is made here.
use std::sync::Arc;
use std::time::SystemTime;

use proxy_auth::Grant;
use tracing::warn;

use crate::metrics::StoreMetrics;
use crate::registry::{Registry, RevocationCheck, SessionLease};
use crate::single_use::FirstUse;
use crate::store::{
    Command, LimitScope, OnOutage, Opened, Revocation, RevocationTarget, SessionFilter,
    SessionLimits, SessionRecord, StateStore, StoreError, StorePolicy, hash_token_id, unix_seconds,
};

/// What the control plane is configured with.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where the shared state lives.
    pub store: Arc<dyn StateStore>,
    /// Lease length and the outage policy of each check.
    pub policy: StorePolicy,
    /// This replica's name (the pod name): session ids and records carry it.
    pub replica: String,
    /// Per-user, per-lab-instance and per-VM session limits.
    pub limits: SessionLimits,
    /// Whether a token's `jti` may open one session only.
    pub single_use_tokens: bool,
}

/// Why the control plane refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The token's user, lab instance or `jti` is revoked.
    #[error("token revoked")]
    Revoked,
    /// Single-use tokens are on and the token has no `jti`.
    #[error("single-use tokens need a jti")]
    TokenWithoutId,
    /// A session limit is reached.
    #[error("over the per-{} session limit", .0.label())]
    OverLimit(LimitScope),
    /// The single-use token already opened a session.
    #[error("token already used")]
    AlreadyUsed,
    /// The memory of used single-use tokens is full.
    #[error("the memory of single-use tokens is full")]
    SingleUseMemoryFull,
    /// The store cannot be asked and the outage policy of `check` is closed.
    #[error("the state store cannot be asked ({check}) and its outage policy is closed")]
    StoreUnavailable {
        /// `revocations`, `limits` or `single_use`.
        check: &'static str,
    },
}

/// A session the control plane admitted. Dropped without [`commit`](Self::commit) (the upstream
/// could not be opened, the client went away), it takes the session out of the registry and the
/// store and forgets the single-use mark, so the token's holder can try again.
pub struct Admission {
    lease: SessionLease,
    single_use: SingleUseMark,
}

impl Admission {
    /// The session as admitted.
    pub fn record(&self) -> &SessionRecord {
        self.lease.record()
    }

    /// The session opened: the single-use mark stays; the lease lives until it is dropped.
    pub fn commit(self) -> SessionLease {
        let Admission { lease, single_use } = self;
        single_use.keep();
        lease
    }
}

/// A single-use token id marked used; forgotten again when dropped unkept.
struct SingleUseMark {
    token_id_hash: Option<String>,
    store: Arc<dyn StateStore>,
}

impl SingleUseMark {
    fn keep(mut self) {
        self.token_id_hash = None;
    }
}

impl Drop for SingleUseMark {
    fn drop(&mut self) {
        let Some(hash) = self.token_id_hash.take() else {
            return;
        };
        let store = Arc::clone(&self.store);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.forget_use(&hash).await;
            });
        }
    }
}

/// The control plane of one replica.
pub struct Control {
    registry: Arc<Registry>,
    store: Arc<dyn StateStore>,
    policy: StorePolicy,
    limits: SessionLimits,
    single_use_tokens: bool,
    metrics: StoreMetrics,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("store", &self.store.kind())
            .field("replica", &self.registry.replica())
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .field("single_use_tokens", &self.single_use_tokens)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The control plane for `config`, reporting store calls to `metrics`.
    pub fn new(config: ControlConfig, metrics: StoreMetrics) -> Self {
        let registry = Arc::new(Registry::new(
            Arc::clone(&config.store),
            config.policy,
            config.replica,
        ));
        Self {
            registry,
            store: config.store,
            policy: config.policy,
            limits: config.limits,
            single_use_tokens: config.single_use_tokens,
            metrics,
        }
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        self.registry.replica()
    }

    /// `memory` or `redis`.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// A new cluster-unique session id for this replica's session number `number`.
    pub fn session_id(&self, number: u64) -> String {
        self.registry.session_id(number)
    }

    /// Decides whether `grant`'s session (id `session_id`, from `peer`) may open, in order:
    /// its token is not revoked, it has a `jti` when tokens are single use, it is within the
    /// session limits, and a single-use token is used for the first time. When the store
    /// cannot be asked, each check follows its outage policy.
    pub async fn admit(
        &self,
        grant: &Grant,
        session_id: String,
        peer: &str,
    ) -> Result<Admission, Refusal> {
        let token_id_hash = grant.token_id.as_deref().map(hash_token_id);
        let record = Arc::new(admitted_record(grant, session_id, self.replica(), peer));
        match self.registry.check_revocation(
            &record.user_id,
            &record.lab_instance_id,
            token_id_hash.as_deref(),
        ) {
            RevocationCheck::Allowed => {}
            RevocationCheck::Revoked => return Err(Refusal::Revoked),
            RevocationCheck::Unknown => return Err(self.closed_by_outage("revocations")),
        }
        if self.single_use_tokens && token_id_hash.is_none() {
            return Err(Refusal::TokenWithoutId);
        }
        self.open_session(&record).await?;
        // From here on, dropping the lease takes the session out of the store again.
        let lease = self.registry.insert(record, token_id_hash.clone());
        let single_use = SingleUseMark {
            token_id_hash: match token_id_hash {
                Some(hash) if self.single_use_tokens => {
                    self.first_use(hash, grant.expires_at).await?
                }
                _ => None,
            },
            store: Arc::clone(&self.store),
        };
        Ok(Admission { lease, single_use })
    }

    /// Counts the session in the store against the limits.
    async fn open_session(&self, record: &Arc<SessionRecord>) -> Result<(), Refusal> {
        let opened = self
            .metrics
            .store_call(
                "open_session",
                self.store
                    .open_session(record, &self.limits, self.policy.lease),
            )
            .await;
        match opened {
            Ok(Opened::Yes) => Ok(()),
            Ok(Opened::OverLimit(scope)) => Err(Refusal::OverLimit(scope)),
            Err(error) => {
                warn!(error = %proxy_core::ErrorChain(&error), "the state store cannot register the session");
                if !self.limits.any() {
                    return Ok(());
                }
                self.outage("limits", self.policy.limits)
            }
        }
    }

    /// Marks a single-use token used; the hash to forget if the session does not open, or
    /// `None` when the store could not be asked and the policy lets the session through.
    async fn first_use(
        &self,
        hash: String,
        expires_at: SystemTime,
    ) -> Result<Option<String>, Refusal> {
        let used = self
            .metrics
            .store_call("first_use", self.store.first_use(&hash, expires_at))
            .await;
        match used {
            Ok(FirstUse::Yes) => Ok(Some(hash)),
            Ok(FirstUse::AlreadyUsed) => Err(Refusal::AlreadyUsed),
            Ok(FirstUse::Full) => {
                warn!("the memory of single-use tokens is full; refusing new sessions");
                Err(Refusal::SingleUseMemoryFull)
            }
            Err(error) => {
                warn!(error = %proxy_core::ErrorChain(&error), "the state store cannot check a single-use token");
                self.outage("single_use", self.policy.single_use)
                    .map(|()| None)
            }
        }
    }

    /// A check the store could not answer, decided by its outage policy.
    fn outage(&self, check: &'static str, policy: OnOutage) -> Result<(), Refusal> {
        match policy {
            OnOutage::Open => {
                self.metrics.outage_decision(check);
                Ok(())
            }
            OnOutage::Closed => Err(self.closed_by_outage(check)),
        }
    }

    fn closed_by_outage(&self, check: &'static str) -> Refusal {
        self.metrics.outage_decision(check);
        Refusal::StoreUnavailable { check }
    }

    /// The live byte and frame counters of every session on this replica (for a metrics
    /// exporter that books what grew while sessions run).
    pub fn live_stats(&self) -> Vec<std::sync::Arc<proxy_core::LiveStats>> {
        self.registry.live_stats()
    }

    /// Stops every live session of this replica with `request` (for example
    /// [`StopRequest::Shutdown`](proxy_core::StopRequest::Shutdown) when the drain timeout
    /// passed); returns how many were told.
    pub fn stop_all(&self, request: &proxy_core::StopRequest) -> usize {
        self.registry.stop_all(request)
    }

    /// Renews this replica's leases and re-reads the revocations, once (before the first
    /// session, so that revocations are known).
    pub async fn refresh(&self) {
        self.registry.refresh(&self.metrics).await;
    }

    /// Keeps the store current until dropped: renews leases and re-reads revocations every
    /// third of the lease, and carries out commands from any replica as they arrive.
    pub fn keep_current(&self) -> impl Future<Output = ()> + Send + 'static {
        Arc::clone(&self.registry).keep(self.metrics.clone())
    }

    /// Every session matching `filter`, cluster-wide when the store is shared, with live
    /// counters for this replica's; this replica's alone (and `false`) when the store cannot
    /// be read.
    pub async fn sessions(&self, filter: &SessionFilter) -> (Vec<SessionRecord>, bool) {
        match self
            .metrics
            .store_call("sessions", self.store.sessions())
            .await
        {
            Ok(records) => (self.registry.merge_with_local(records, filter), true),
            Err(error) => {
                warn!(error = %proxy_core::ErrorChain(&error), "listing sessions: the state store cannot be read; listing this replica's only");
                (self.registry.merge_with_local(Vec::new(), filter), false)
            }
        }
    }

    /// Sends `command` to every replica. When it cannot be published, this replica carries it
    /// out on its own sessions and the error says the others did not get it.
    pub async fn broadcast(&self, command: Command) -> Result<(), StoreError> {
        let published = self
            .metrics
            .store_call("publish", self.store.publish(&command))
            .await;
        if published.is_err() {
            self.registry.apply(command, &self.metrics);
        }
        published
    }

    /// The revocations in force.
    pub async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.metrics
            .store_call("revocations", self.store.revocations())
            .await
    }

    /// Stores `revocation` (an error: nothing was revoked) and closes the matching sessions on
    /// every replica (those on others at their next refresh when the command cannot be sent).
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        self.metrics
            .store_call("revoke", self.store.revoke(revocation))
            .await?;
        let _ = self.broadcast(Command::Revoked(revocation.clone())).await;
        Ok(())
    }

    /// Lifts the revocation of `target`; false when there was none.
    pub async fn lift(&self, target: &RevocationTarget) -> Result<bool, StoreError> {
        let lifted = self
            .metrics
            .store_call("lift", self.store.lift(target))
            .await?;
        if lifted {
            self.registry.forget_revocation(target);
        }
        Ok(lifted)
    }
}

/// The record of a session as admitted: no bytes yet, no subprotocol answered yet.
fn admitted_record(grant: &Grant, id: String, replica: &str, peer: &str) -> SessionRecord {
    SessionRecord {
        id,
        replica: replica.to_owned(),
        user_id: grant.user_id.to_string(),
        lab_id: grant.lab_id.to_string(),
        lab_instance_id: grant.lab_instance_id.to_string(),
        namespace: grant.namespace.clone(),
        vmi: grant.vmi_name.clone(),
        peer: peer.to_owned(),
        role: grant.console.role.as_str().to_owned(),
        started_at: unix_seconds(SystemTime::now()),
        token_expires_at: unix_seconds(grant.expires_at),
        client_subprotocol: String::new(),
        client_to_upstream_bytes: 0,
        client_to_upstream_frames: 0,
        upstream_to_client_bytes: 0,
        upstream_to_client_frames: 0,
    }
}
