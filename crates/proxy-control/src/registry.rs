//! This replica's live sessions: their records and live counters, how to stop each one, the
//! revocations they are checked against, and the loop that keeps the shared store current
//! (lease renewal, revocation refresh, commands from other replicas).
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use proxy_core::{CloseFrame, LiveStats, StopRequest, close_code};
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

use crate::metrics::StoreMetrics;
use crate::store::{
    Command, OnOutage, Revocation, RevocationTarget, SessionFilter, SessionRecord, StateStore,
    StorePolicy,
};

/// Close code sent to a browser whose session an operator closed.
pub const OPERATOR_CLOSE_CODE: u16 = 4410;
/// Close code sent to a browser whose token was revoked during the session.
pub const REVOKED_CLOSE_CODE: u16 = 4401;
/// Close reason prefix of an operator's close (the operator's reason follows).
const OPERATOR_CLOSE_REASON: &str = "closed by operator";
/// Close reason of a revoked session (the revocation's reason follows).
const REVOKED_REASON: &str = "token revoked";

struct LiveSession {
    /// Shared with the session's lease: one copy of the record per session.
    record: Arc<SessionRecord>,
    /// The subprotocol answered to the browser, once it is (empty before).
    client_subprotocol: String,
    live: Arc<LiveStats>,
    token_id_hash: Option<String>,
    stop: Option<oneshot::Sender<StopRequest>>,
}

/// The revocations this replica checks new sessions against, and when they were last read
/// from the store.
struct RevocationCache {
    revocations: Vec<Revocation>,
    refreshed_at: Option<Instant>,
}

/// This replica's sessions and its view of the shared state.
pub(crate) struct Registry {
    replica: String,
    incarnation: String,
    sessions: Mutex<HashMap<String, LiveSession>>,
    revocations: Mutex<RevocationCache>,
    store: Arc<dyn StateStore>,
    policy: StorePolicy,
}

/// What a revocation check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RevocationCheck {
    Allowed,
    Revoked,
    /// The store could not be read for too long and the policy is closed.
    Unknown,
}

/// A registered session; dropping it removes the session here and from the store.
pub struct SessionLease {
    registry: Arc<Registry>,
    /// Resolves when an operator or a revocation stops the session (taken by the relay).
    stopped: Option<oneshot::Receiver<StopRequest>>,
    live: Arc<LiveStats>,
    /// The record as admitted (the store may not have counted it when it was down and limits
    /// fail open; the next renewal registers it).
    record: Arc<SessionRecord>,
}

impl SessionLease {
    /// The session as admitted.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// The session's live byte and frame counters, which the relay updates as it goes.
    pub fn live(&self) -> &Arc<LiveStats> {
        &self.live
    }

    /// What resolves when an operator's close or a revocation stops the session; `None` once
    /// taken.
    pub fn take_stop_request(&mut self) -> Option<oneshot::Receiver<StopRequest>> {
        self.stopped.take()
    }

    /// Records the subprotocol the browser was answered with (empty for none).
    pub fn set_client_subprotocol(&self, subprotocol: &str) {
        self.registry
            .set_client_subprotocol(&self.record.id, subprotocol);
    }
}

impl Drop for SessionLease {
    fn drop(&mut self) {
        self.registry.remove(&self.record.id);
        let store = Arc::clone(&self.registry.store);
        let record = Arc::clone(&self.record);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.end_session(&record).await {
                    // The lease runs out by itself.
                    warn!(error = %proxy_core::ErrorChain(&error), session = %record.id, "could not remove an ended session from the state store");
                }
            });
        }
    }
}

impl Registry {
    pub(crate) fn new(store: Arc<dyn StateStore>, policy: StorePolicy, replica: String) -> Self {
        // Tells this process's sessions from those of an earlier process with the same name
        // (a restarted StatefulSet pod) whose leases have not run out yet.
        let mut random = [0u8; 3];
        let incarnation = match aws_lc_rs::rand::fill(&mut random) {
            Ok(()) => random.iter().map(|byte| format!("{byte:02x}")).collect(),
            Err(_) => format!("{:06x}", std::process::id() & 0x00ff_ffff),
        };
        Self {
            replica,
            incarnation,
            sessions: Mutex::new(HashMap::new()),
            revocations: Mutex::new(RevocationCache {
                revocations: Vec::new(),
                refreshed_at: None,
            }),
            store,
            policy,
        }
    }

    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// A new cluster-unique session id for this replica's session number `number`.
    pub(crate) fn session_id(&self, number: u64) -> String {
        format!("{}.{}.{number}", self.replica, self.incarnation)
    }

    /// Adds an admitted session (already counted by the store, or not when the store was
    /// down).
    pub(crate) fn insert(
        self: &Arc<Self>,
        record: Arc<SessionRecord>,
        token_id_hash: Option<String>,
    ) -> SessionLease {
        let (stop, stopped) = oneshot::channel();
        let live = Arc::new(LiveStats::default());
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                record.id.clone(),
                LiveSession {
                    record: Arc::clone(&record),
                    client_subprotocol: String::new(),
                    live: Arc::clone(&live),
                    token_id_hash,
                    stop: Some(stop),
                },
            );
        SessionLease {
            registry: Arc::clone(self),
            stopped: Some(stopped),
            live,
            record,
        }
    }

    fn set_client_subprotocol(&self, id: &str, subprotocol: &str) {
        if let Some(session) = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(id)
        {
            subprotocol.clone_into(&mut session.client_subprotocol);
        }
    }

    fn remove(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// This replica's sessions with their current counters.
    pub(crate) fn local_records(&self) -> Vec<SessionRecord> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.values().map(current_record).collect()
    }

    /// The live counters of every local session.
    pub(crate) fn live_stats(&self) -> Vec<Arc<LiveStats>> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .values()
            .map(|session| Arc::clone(&session.live))
            .collect()
    }

    /// Stops every local session with `request` (the drain timeout passed); returns how many.
    pub(crate) fn stop_all(&self, request: &StopRequest) -> usize {
        self.stop_where(|_| true, request).len()
    }

    /// Stops the local sessions `select` picks with `request`; returns their ids.
    fn stop_where(
        &self,
        select: impl Fn(&LiveSession) -> bool,
        request: &StopRequest,
    ) -> Vec<String> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stopped = Vec::new();
        for (id, session) in sessions.iter_mut() {
            if select(session)
                && let Some(stop) = session.stop.take()
            {
                let _ = stop.send(request.clone());
                stopped.push(id.clone());
            }
        }
        stopped
    }

    /// Whether a new session's token is revoked, by the cached revocations.
    pub(crate) fn check_revocation(
        &self,
        user_id: &str,
        lab_instance_id: &str,
        token_id_hash: Option<&str>,
    ) -> RevocationCheck {
        let cache = self
            .revocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        if cache.revocations.iter().any(|revocation| {
            revocation.in_force(now)
                && revocation.applies_to(user_id, lab_instance_id, token_id_hash)
        }) {
            return RevocationCheck::Revoked;
        }
        let stale = cache
            .refreshed_at
            .is_none_or(|at| at.elapsed() > 2 * self.policy.lease);
        if stale && self.policy.revocations == OnOutage::Closed {
            RevocationCheck::Unknown
        } else {
            RevocationCheck::Allowed
        }
    }

    fn replace_revocations(&self, revocations: Vec<Revocation>) {
        let mut cache = self
            .revocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.revocations = revocations;
        cache.refreshed_at = Some(Instant::now());
    }

    fn add_revocation(&self, revocation: Revocation) {
        let mut cache = self
            .revocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache
            .revocations
            .retain(|kept| kept.target != revocation.target);
        cache.revocations.push(revocation);
    }

    /// Drops a lifted revocation from the cache at once (other replicas see it at their next
    /// refresh).
    pub(crate) fn forget_revocation(&self, target: &RevocationTarget) {
        self.revocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .revocations
            .retain(|kept| &kept.target != target);
    }

    /// Carries out a command on this replica's sessions.
    pub(crate) fn apply(&self, command: Command, metrics: &StoreMetrics) {
        match command {
            Command::Close {
                session_ids,
                reason,
                by,
            } => {
                let request = StopRequest::Close {
                    to_client: CloseFrame::new(
                        OPERATOR_CLOSE_CODE,
                        close_reason(OPERATOR_CLOSE_REASON, &reason),
                    ),
                    to_upstream: CloseFrame::new(close_code::NORMAL, OPERATOR_CLOSE_REASON),
                    label: "operator_closed",
                };
                let closed =
                    self.stop_where(|session| session_ids.contains(&session.record.id), &request);
                for id in closed {
                    metrics.operator_closed("close");
                    info!(target: "ws_proxy::audit", event = "session_closed_by_operator", session = %id, by = %by, reason = %reason, "session closed by an operator");
                }
            }
            Command::Revoked(revocation) => {
                let request = StopRequest::Close {
                    to_client: CloseFrame::new(
                        REVOKED_CLOSE_CODE,
                        close_reason(REVOKED_REASON, &revocation.reason),
                    ),
                    to_upstream: CloseFrame::new(close_code::NORMAL, REVOKED_REASON),
                    label: "revoked",
                };
                let closed = self.stop_where(
                    |session| {
                        revocation.applies_to(
                            &session.record.user_id,
                            &session.record.lab_instance_id,
                            session.token_id_hash.as_deref(),
                        )
                    },
                    &request,
                );
                for id in closed {
                    metrics.operator_closed("revoke");
                    info!(target: "ws_proxy::audit", event = "session_closed_by_revocation", session = %id, by = %revocation.by, reason = %revocation.reason, "session closed: its token was revoked");
                }
                self.add_revocation(revocation);
            }
        }
    }

    /// Filters `records` (from the store) and replaces this replica's with their live
    /// counterparts; this replica's sessions the store has not seen yet are added.
    pub(crate) fn merge_with_local(
        &self,
        records: Vec<SessionRecord>,
        filter: &SessionFilter,
    ) -> Vec<SessionRecord> {
        let mut local: HashMap<String, SessionRecord> = self
            .local_records()
            .into_iter()
            .map(|record| (record.id.clone(), record))
            .collect();
        let mut merged: Vec<SessionRecord> = records
            .into_iter()
            .filter_map(|record| {
                if record.replica == self.replica {
                    // Ours: the live copy, or none (it ended, or an earlier process's).
                    local.remove(&record.id)
                } else {
                    Some(record)
                }
            })
            .collect();
        merged.extend(local.into_values());
        merged.retain(|record| filter.matches(record));
        merged.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        merged
    }

    /// Renews this replica's leases and re-reads the revocations, once.
    pub(crate) async fn refresh(&self, metrics: &StoreMetrics) {
        let records = self.local_records();
        let renewed = metrics
            .store_call(
                "renew_sessions",
                self.store.renew_sessions(&records, self.policy.lease),
            )
            .await;
        let revocations = metrics
            .store_call("revocations", self.store.revocations())
            .await;
        if let Ok(revocations) = revocations {
            self.replace_revocations(revocations);
        }
        // A session that ended while the renewal ran may have been registered again by it: end
        // it once more rather than leave it counting until its lease runs out.
        let ended: Vec<&SessionRecord> = {
            let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            records
                .iter()
                .filter(|record| !sessions.contains_key(&record.id))
                .collect()
        };
        for record in ended {
            let _ = metrics
                .store_call("end_session", self.store.end_session(record))
                .await;
        }
        if let Err(error) = renewed {
            warn!(error = %proxy_core::ErrorChain(&error), "renewing the session leases in the state store failed");
        }
    }

    /// Keeps the store current until the engine is dropped: renews leases and re-reads
    /// revocations every third of the lease, and carries out commands as they arrive.
    pub(crate) async fn keep(self: Arc<Self>, metrics: StoreMetrics) {
        let mut commands = self.store.commands();
        let mut tick = tokio::time::interval(self.policy.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.refresh(&metrics).await,
                command = commands.recv() => match command {
                    Ok(command) => self.apply(command, &metrics),
                    // Missed commands: revocations are re-read at the next tick; a missed
                    // close is lost (the operator sees the session still listed).
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "state store commands were missed");
                        self.refresh(&metrics).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

fn current_record(session: &LiveSession) -> SessionRecord {
    let mut record = SessionRecord::clone(&session.record);
    record
        .client_subprotocol
        .clone_from(&session.client_subprotocol);
    let (to_upstream, to_client) = (
        session.live.client_to_upstream(),
        session.live.upstream_to_client(),
    );
    record.client_to_upstream_bytes = to_upstream.bytes;
    record.client_to_upstream_frames = to_upstream.frames;
    record.upstream_to_client_bytes = to_client.bytes;
    record.upstream_to_client_frames = to_client.frames;
    record
}

/// `prefix: detail` cut to what a close frame can carry (123 bytes), on a character boundary.
fn close_reason(prefix: &str, detail: &str) -> String {
    let mut reason = if detail.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}: {detail}")
    };
    let mut end = reason.len().min(proxy_core::MAX_CLOSE_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason
}

/// `HOSTNAME` (the pod name in Kubernetes), else `ws-proxy`.
pub fn replica_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "ws-proxy".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("token revoked", ""), "token revoked");
        assert_eq!(
            close_reason("closed by operator", "exam over"),
            "closed by operator: exam over"
        );
        let long = close_reason("closed by operator", &"é".repeat(200));
        assert!(long.len() <= proxy_core::MAX_CLOSE_REASON_LEN);
        assert!(long.starts_with("closed by operator: é"));
    }

    #[test]
    fn missing_hostname_names_the_replica_ws_proxy() {
        assert!(!replica_name().is_empty());
    }
}
