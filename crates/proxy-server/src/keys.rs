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
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proxy_auth::{AuthError, Grant, TokenVerifier, Verifier};

use crate::file_watch::{Reload, Reloading};

/// How often, at most, the key files are looked at for a change.
pub const KEY_RELOAD_CHECK_INTERVAL: Duration = crate::file_watch::CHECK_INTERVAL;

/// Builds the verifier from the files again.
type Load = dyn Fn() -> Result<Verifier, Box<dyn Error + Send + Sync>> + Send + Sync;

/// The proxy's token verifier: fixed, or re-built from its key files as they change.
pub struct KeyRing {
    verifier: Reloading<Verifier>,
    load: Box<Load>,
    metrics: OnceLock<KeyMetrics>,
}

/// What a reload reports to the metrics (see [`ProxyMetrics`](crate::ProxyMetrics)).
#[derive(Clone)]
pub(crate) struct KeyMetrics {
    pub(crate) on_reload: Arc<dyn Fn(Reload, usize) + Send + Sync>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("files", &self.files())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A verifier that never changes (keys given in code): no files to watch.
    pub fn fixed(verifier: Verifier) -> Self {
        Self {
            verifier: Reloading::unwatched(verifier),
            load: Box::new(|| Err("keys given in code have no files to reload".into())),
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
        let verifier = Reloading::load(files, &load)?;
        Ok(Self {
            verifier,
            load: Box::new(move || load().map_err(|error| Box::new(error) as _)),
            metrics: OnceLock::new(),
        })
    }

    /// The files watched for a change.
    pub fn files(&self) -> &[PathBuf] {
        self.verifier.files()
    }

    pub(crate) fn attach_metrics(&self, metrics: KeyMetrics) {
        let keys = self.current().key_ids().len();
        (metrics.on_reload)(Reload::Unchanged, keys);
        let _ = self.metrics.set(metrics);
    }

    /// The verifier for the next token, built again first if the files changed.
    pub fn current(&self) -> Arc<Verifier> {
        let (verifier, reload) = self.verifier.current(&self.load, |error| {
            tracing::warn!(
                error = %proxy_core::ErrorChain(error.as_ref()),
                "the changed key files do not load; keeping the last good keys"
            );
        });
        if reload == Reload::Reloaded {
            let ids: Vec<&str> = verifier
                .key_ids()
                .into_iter()
                .map(|id| id.unwrap_or("-"))
                .collect();
            tracing::info!(keys = ids.len(), key_ids = %ids.join(","), "token keys reloaded");
        }
        if reload != Reload::Unchanged
            && let Some(metrics) = self.metrics.get()
        {
            (metrics.on_reload)(reload, verifier.key_ids().len());
        }
        verifier
    }
}

impl TokenVerifier for KeyRing {
    fn verify(&self, token: &str, vmi_name: &str) -> Result<Grant, AuthError> {
        self.current().verify(token, vmi_name)
    }
}
