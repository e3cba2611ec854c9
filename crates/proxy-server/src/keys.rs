//! The token keys of a running proxy: a [`Verifier`] that is built again when its key files
//! (the secret file, public key files, a JWK Set file) change, so keys rotate without a restart.
//!
//! The files are looked at again at most every [`KEY_RELOAD_CHECK_INTERVAL`] when a token is
//! checked (size, modification time and inode, followed through symlinks, as a Kubernetes
//! Secret volume swaps them). A changed set that loads replaces the old one for the tokens that
//! follow (open sessions are not affected: their tokens were checked when they opened); a set
//! that does not load keeps the last good one, is logged and counted
//! (`ws_proxy_key_reloads_total{result="failed"}`), and is tried again when the files change.
use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use proxy_auth::{AuthError, Grant, TokenVerifier, Verifier};

use crate::file_watch::{FileStamp, stamps};
use crate::tls::Reload;

/// How often, at most, the key files are looked at for a change.
pub const KEY_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Builds the verifier from the files again.
type Load = dyn Fn() -> Result<Verifier, Box<dyn Error + Send + Sync>> + Send + Sync;

/// The proxy's token verifier: fixed, or re-built from its key files as they change.
pub struct KeyRing {
    files: Vec<PathBuf>,
    load: Option<Box<Load>>,
    state: Mutex<State>,
    metrics: OnceLock<KeyMetrics>,
}

struct State {
    verifier: Arc<Verifier>,
    stamps: Vec<FileStamp>,
    checked_at: Instant,
}

/// What a reload reports to the metrics (see [`ProxyMetrics`](crate::ProxyMetrics)).
#[derive(Clone)]
pub(crate) struct KeyMetrics {
    pub(crate) on_reload: Arc<dyn Fn(Reload, usize) + Send + Sync>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("files", &self.files)
            .field("reloads", &self.load.is_some())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A verifier that never changes (keys given in code).
    pub fn fixed(verifier: Verifier) -> Self {
        Self {
            files: Vec::new(),
            load: None,
            state: Mutex::new(State {
                verifier: Arc::new(verifier),
                stamps: Vec::new(),
                checked_at: Instant::now(),
            }),
            metrics: OnceLock::new(),
        }
    }

    /// A verifier built by `load` from `files`, now (an error here is a configuration error at
    /// start) and again whenever the files change.
    pub fn from_files<F, E>(files: Vec<PathBuf>, load: F) -> Result<Self, E>
    where
        F: Fn() -> Result<Verifier, E> + Send + Sync + 'static,
        E: Error + Send + Sync + 'static,
    {
        let file_stamps = stamps(&files);
        let verifier = load()?;
        Ok(Self {
            files,
            load: Some(Box::new(move || {
                load().map_err(|error| Box::new(error) as _)
            })),
            state: Mutex::new(State {
                verifier: Arc::new(verifier),
                stamps: file_stamps,
                checked_at: Instant::now(),
            }),
            metrics: OnceLock::new(),
        })
    }

    /// The files watched for a change.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub(crate) fn attach_metrics(&self, metrics: KeyMetrics) {
        let keys = self.current().key_ids().len();
        (metrics.on_reload)(Reload::Unchanged, keys);
        let _ = self.metrics.set(metrics);
    }

    /// The verifier for the next token, built again first if the files changed.
    pub fn current(&self) -> Arc<Verifier> {
        let Some(load) = &self.load else {
            return Arc::clone(
                &self
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .verifier,
            );
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked_at.elapsed() < KEY_RELOAD_CHECK_INTERVAL {
            return Arc::clone(&state.verifier);
        }
        state.checked_at = Instant::now();
        let file_stamps = stamps(&self.files);
        if file_stamps == state.stamps {
            return Arc::clone(&state.verifier);
        }
        state.stamps = file_stamps;
        let reload = match load() {
            Ok(verifier) => {
                let ids: Vec<&str> = verifier
                    .key_ids()
                    .into_iter()
                    .map(|id| id.unwrap_or("-"))
                    .collect();
                tracing::info!(keys = ids.len(), key_ids = %ids.join(","), "token keys reloaded");
                state.verifier = Arc::new(verifier);
                Reload::Reloaded
            }
            Err(error) => {
                tracing::warn!(
                    error = %proxy_core::ErrorChain(error.as_ref()),
                    "the changed key files do not load; keeping the last good keys"
                );
                Reload::Failed
            }
        };
        if let Some(metrics) = self.metrics.get() {
            (metrics.on_reload)(reload, state.verifier.key_ids().len());
        }
        Arc::clone(&state.verifier)
    }
}

impl TokenVerifier for KeyRing {
    fn verify(&self, token: &str, vmi_name: &str) -> Result<Grant, AuthError> {
        self.current().verify(token, vmi_name)
    }
}
