//! Single-use console tokens: a token's `jti` may open one session. The memory of used ids is
//! part of the [`StateStore`](crate::store::StateStore); [`MemorySingleUseStore`] is the
//! bounded in-process memory the [`MemoryStateStore`](crate::store::MemoryStateStore) keeps.
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// What a store said about a token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstUse {
    /// Not seen before: it is now remembered until the token expires.
    Yes,
    /// Already used.
    AlreadyUsed,
    /// The store is full of ids whose tokens have not expired yet; refuse rather than forget.
    Full,
}

/// Used token ids in this process: ids are dropped when their tokens expire, and at most
/// `capacity` unexpired ids are held.
pub struct MemorySingleUseStore {
    capacity: usize,
    used: Mutex<HashMap<String, SystemTime>>,
}

/// The default capacity: one id per session for a very large lab, about 100 MB at most.
pub const DEFAULT_SINGLE_USE_CAPACITY: usize = 1_000_000;

impl MemorySingleUseStore {
    /// A store holding at most `capacity` unexpired ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Ids held now (expired ones are dropped on the next use past the capacity or by
    /// [`first_use_at`](Self::first_use_at)'s sweep).
    pub fn len(&self) -> usize {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records the first use of `token_id`, whose token expires at `expires_at`, at time `now`,
    /// atomically: of two concurrent calls with one id, one gets [`FirstUse::Yes`].
    pub fn first_use_at(
        &self,
        token_id: &str,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> FirstUse {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(expiry) = used.get(token_id) {
            if *expiry > now {
                return FirstUse::AlreadyUsed;
            }
            used.remove(token_id);
        }
        if used.len() >= self.capacity {
            used.retain(|_, expiry| *expiry > now);
            if used.len() >= self.capacity {
                return FirstUse::Full;
            }
        }
        used.insert(token_id.to_owned(), expires_at);
        FirstUse::Yes
    }
}

impl Default for MemorySingleUseStore {
    fn default() -> Self {
        Self::new(DEFAULT_SINGLE_USE_CAPACITY)
    }
}

impl fmt::Debug for MemorySingleUseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySingleUseStore")
            .field("capacity", &self.capacity)
            .field("held", &self.len())
            .finish()
    }
}

impl MemorySingleUseStore {
    /// Forgets a use that opened no session, so the holder may try again.
    pub fn release(&self, token_id: &str) {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token_id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_id_opens_one_session_until_its_token_expires() {
        let store = MemorySingleUseStore::new(10);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let expires = now + Duration::from_secs(60);
        assert_eq!(store.first_use_at("a", expires, now), FirstUse::Yes);
        assert_eq!(store.first_use_at("a", expires, now), FirstUse::AlreadyUsed);
        assert_eq!(store.first_use_at("b", expires, now), FirstUse::Yes);
        store.release("b");
        assert_eq!(store.first_use_at("b", expires, now), FirstUse::Yes);
        // After the token's expiry its id means nothing any more (the verifier refuses the
        // token anyway); the entry is replaced.
        let later = expires + Duration::from_secs(1);
        assert_eq!(
            store.first_use_at("a", later + Duration::from_secs(60), later),
            FirstUse::Yes
        );
    }

    #[test]
    fn memory_is_bounded_and_expired_ids_make_room() {
        let store = MemorySingleUseStore::new(2);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let soon = now + Duration::from_secs(10);
        let late = now + Duration::from_secs(100);
        assert_eq!(store.first_use_at("a", soon, now), FirstUse::Yes);
        assert_eq!(store.first_use_at("b", late, now), FirstUse::Yes);
        assert_eq!(store.first_use_at("c", late, now), FirstUse::Full);
        assert_eq!(store.len(), 2);
        // Once "a" expired, "c" takes its place.
        let after_a = soon + Duration::from_secs(1);
        assert_eq!(store.first_use_at("c", late, after_a), FirstUse::Yes);
        assert_eq!(store.len(), 2);
    }
}
