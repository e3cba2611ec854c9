//! The one-replica [`StateStore`]: everything in this process, behind one mutex per kind.
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    Command, FirstUse, LimitScope, Opened, Revocation, RevocationTarget, SessionLimits,
    SessionRecord, StateStore, StoreError,
};
use crate::single_use::{DEFAULT_SINGLE_USE_CAPACITY, MemorySingleUseStore};

/// Commands waiting for a slow receiver before it misses some (it then re-reads revocations).
const COMMAND_QUEUE: usize = 1024;

/// The embedded store: sessions, revocations and used token ids of this replica alone.
/// Sessions of a replica are all in this process, so leases never run out here.
pub struct MemoryStateStore {
    sessions: Mutex<HashMap<String, StoredSession>>,
    revocations: Mutex<HashMap<RevocationTarget, Revocation>>,
    used_token_ids: MemorySingleUseStore,
    commands: broadcast::Sender<Command>,
}

/// A session as this store keeps it: the record the replica admitted, shared with its
/// registry (one copy per session in this process), and what renewals change.
struct StoredSession {
    record: Arc<SessionRecord>,
    renewed: Renewed,
}

/// The fields of a record that change while its session lives.
#[derive(Default)]
struct Renewed {
    client_subprotocol: String,
    counters: [u64; 4],
}

impl Renewed {
    fn of(record: &SessionRecord) -> Self {
        Self {
            client_subprotocol: record.client_subprotocol.clone(),
            counters: [
                record.client_to_upstream_bytes,
                record.client_to_upstream_frames,
                record.upstream_to_client_bytes,
                record.upstream_to_client_frames,
            ],
        }
    }
}

impl StoredSession {
    fn new(record: Arc<SessionRecord>) -> Self {
        let renewed = Renewed::of(&record);
        Self { record, renewed }
    }

    /// The record with its latest renewal.
    fn current(&self) -> SessionRecord {
        let [c2u_bytes, c2u_frames, u2c_bytes, u2c_frames] = self.renewed.counters;
        SessionRecord {
            client_subprotocol: self.renewed.client_subprotocol.clone(),
            client_to_upstream_bytes: c2u_bytes,
            client_to_upstream_frames: c2u_frames,
            upstream_to_client_bytes: u2c_bytes,
            upstream_to_client_frames: u2c_frames,
            ..SessionRecord::clone(&self.record)
        }
    }

    /// Takes `renewal`'s changing fields; a renewal that names the session otherwise (it
    /// never does from a registry) replaces the record.
    fn renew(&mut self, renewal: &SessionRecord) {
        if identity(renewal) != identity(&self.record) {
            self.record = Arc::new(renewal.clone());
        }
        self.renewed = Renewed::of(renewal);
    }
}

/// The fields of a record that name the session (all but what renewals change), compared
/// without copying the record; a new field must be placed on one side or the other.
fn identity(record: &SessionRecord) -> impl PartialEq + '_ {
    let SessionRecord {
        id,
        replica,
        user_id,
        lab_id,
        lab_instance_id,
        namespace,
        vmi,
        peer,
        role,
        started_at,
        token_expires_at,
        client_subprotocol: _,
        client_to_upstream_bytes: _,
        client_to_upstream_frames: _,
        upstream_to_client_bytes: _,
        upstream_to_client_frames: _,
    } = record;
    (
        (id, replica, user_id, lab_id, lab_instance_id, namespace),
        (vmi, peer, role, started_at, token_expires_at),
    )
}

impl MemoryStateStore {
    /// A store holding at most `single_use_capacity` unexpired token ids.
    pub fn new(single_use_capacity: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            revocations: Mutex::new(HashMap::new()),
            used_token_ids: MemorySingleUseStore::new(single_use_capacity),
            commands: broadcast::channel(COMMAND_QUEUE).0,
        }
    }
}

impl Default for MemoryStateStore {
    fn default() -> Self {
        Self::new(DEFAULT_SINGLE_USE_CAPACITY)
    }
}

impl fmt::Debug for MemoryStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStateStore")
            .field("used_token_ids", &self.used_token_ids)
            .finish_non_exhaustive()
    }
}

/// Which limit `session` would exceed among `existing` sessions, if any.
fn exceeded_limit<'a>(
    existing: impl Iterator<Item = &'a SessionRecord>,
    session: &SessionRecord,
    limits: &SessionLimits,
) -> Option<LimitScope> {
    let (mut user, mut lab_instance, mut vm) = (0usize, 0usize, 0usize);
    for other in existing {
        user += usize::from(other.user_id == session.user_id);
        lab_instance += usize::from(other.lab_instance_id == session.lab_instance_id);
        vm += usize::from(other.namespace == session.namespace && other.vmi == session.vmi);
    }
    let over = |limit: Option<usize>, count: usize| limit.is_some_and(|limit| count >= limit);
    if over(limits.per_user, user) {
        Some(LimitScope::User)
    } else if over(limits.per_lab_instance, lab_instance) {
        Some(LimitScope::LabInstance)
    } else if over(limits.per_vm, vm) {
        Some(LimitScope::Vm)
    } else {
        None
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn open_session(
        &self,
        session: &Arc<SessionRecord>,
        limits: &SessionLimits,
        _lease: Duration,
    ) -> Result<Opened, StoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        // Without limits there is nothing to count (and no reason to walk every session).
        let existing = sessions.values().map(|stored| &*stored.record);
        if limits.any()
            && let Some(scope) = exceeded_limit(existing, session, limits)
        {
            return Ok(Opened::OverLimit(scope));
        }
        sessions.insert(session.id.clone(), StoredSession::new(Arc::clone(session)));
        Ok(Opened::Yes)
    }

    async fn renew_sessions(
        &self,
        renewed: &[SessionRecord],
        _lease: Duration,
    ) -> Result<(), StoreError> {
        // This store never loses a session, so a renewal only refreshes counters; it must not
        // bring back a session that ended after the renewal's snapshot was taken.
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        for session in renewed {
            if let Some(kept) = sessions.get_mut(&session.id) {
                kept.renew(session);
            }
        }
        Ok(())
    }

    async fn end_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&session.id);
        Ok(())
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(sessions.values().map(StoredSession::current).collect())
    }

    async fn first_use(
        &self,
        token_id_hash: &str,
        expires_at: SystemTime,
    ) -> Result<FirstUse, StoreError> {
        Ok(self
            .used_token_ids
            .first_use_at(token_id_hash, expires_at, SystemTime::now()))
    }

    async fn forget_use(&self, token_id_hash: &str) -> Result<(), StoreError> {
        self.used_token_ids.release(token_id_hash);
        Ok(())
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let mut revocations = self
            .revocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        revocations.retain(|_, kept| kept.in_force(now));
        revocations.insert(revocation.target.clone(), revocation.clone());
        Ok(())
    }

    async fn lift(&self, target: &RevocationTarget) -> Result<bool, StoreError> {
        Ok(self
            .revocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(target)
            .is_some_and(|revocation| revocation.in_force(SystemTime::now())))
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let now = SystemTime::now();
        let revocations = self
            .revocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(revocations
            .values()
            .filter(|revocation| revocation.in_force(now))
            .cloned()
            .collect())
    }

    async fn publish(&self, command: &Command) -> Result<(), StoreError> {
        // No receiver (no engine serving) is not an error: nobody has sessions to act on.
        let _ = self.commands.send(command.clone());
        Ok(())
    }

    fn commands(&self) -> broadcast::Receiver<Command> {
        self.commands.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_session_is_shared_not_copied_and_renewals_change_only_its_counters() {
        let store = MemoryStateStore::default();
        let record = Arc::new(SessionRecord::example("a.1", "u1"));
        let limits = SessionLimits::default();
        let lease = Duration::from_secs(15);
        assert_eq!(
            store
                .open_session(&record, &limits, lease)
                .await
                .unwrap_or_else(|_| unreachable!()),
            Opened::Yes
        );
        assert_eq!(
            Arc::strong_count(&record),
            2,
            "the store keeps the record itself"
        );

        let mut renewal = SessionRecord::clone(&record);
        renewal.upstream_to_client_bytes = 4096;
        renewal.client_subprotocol = "binary".to_owned();
        let renewed = store
            .renew_sessions(std::slice::from_ref(&renewal), lease)
            .await;
        assert!(renewed.is_ok());
        assert_eq!(
            Arc::strong_count(&record),
            2,
            "a renewal keeps sharing the record"
        );
        let listed = store.sessions().await.unwrap_or_default();
        assert_eq!(listed, [renewal.clone()]);

        // A renewal naming the session otherwise is kept as given.
        renewal.peer = "10.0.0.9:1234".to_owned();
        let renewed = store
            .renew_sessions(std::slice::from_ref(&renewal), lease)
            .await;
        assert!(renewed.is_ok());
        assert_eq!(
            Arc::strong_count(&record),
            1,
            "the store holds the new record"
        );
        let listed = store.sessions().await.unwrap_or_default();
        assert_eq!(listed, [renewal]);
    }
}
