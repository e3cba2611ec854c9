//! The token keys of a running proxy: a [`Verifier`] that is built again when its key files
//! (the secret file, public key files, a JWK Set file) change or its JWK Set URL serves another
//! set, so keys rotate without a restart.
//!
//! The files are looked at again at most every [`KEY_RELOAD_CHECK_INTERVAL`] when a token is
//! checked (size, modification time and inode, followed through symlinks, as a Kubernetes
//! Secret volume swaps them). A [`JwksUrl`] is fetched at start (a failure there is a
//! configuration error), then on its own thread every
//! [`refresh_interval`](JwksUrl::refresh_interval) and when a token names a `kid` no key has (at
//! most every [`min_refetch_interval`](JwksUrl::min_refetch_interval); that token waits for the
//! fetch and is checked again). A changed set that loads replaces the old one for the tokens that
//! follow (open sessions are not affected: their tokens were checked when they opened); a set
//! that does not load or a fetch that fails keeps the last good one, is logged and counted
//! (`ws_proxy_key_reloads_total{result="failed"}`), and is tried again at the next change or
//! fetch.
use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proxy_auth::{AuthError, Grant, KeyRefresh, TokenVerifier, VerificationKey, Verifier};
use tokio::sync::{Notify, watch};

use crate::file_watch::{Reload, Reloading};
use crate::jwks_url::{JwksFetchError, JwksUrl};

/// How often, at most, the key files are looked at for a change.
pub const KEY_RELOAD_CHECK_INTERVAL: Duration = crate::file_watch::CHECK_INTERVAL;

/// Builds the verifier from the files again, with the keys last fetched from the URL.
type Load =
    dyn Fn(&[VerificationKey]) -> Result<Verifier, Box<dyn Error + Send + Sync>> + Send + Sync;

/// Why a key ring could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError<E: Error + 'static> {
    /// The key files, with the fetched keys, do not make a verifier.
    #[error(transparent)]
    Load(E),
    /// The JWK Set URL could not be fetched at start.
    #[error("cannot fetch the JWK Set from {url}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: JwksFetchError,
    },
    /// The thread that fetches the JWK Set could not be started.
    #[error("cannot start the JWK Set fetcher")]
    Thread(#[source] std::io::Error),
}

/// The proxy's token verifier: fixed, or re-built as its key files and JWK Set URL change.
pub struct KeyRing {
    shared: Arc<Shared>,
    remote: Option<Remote>,
}

struct Shared {
    verifier: Reloading<Verifier>,
    load: Box<Load>,
    fetched: Mutex<Fetched>,
    metrics: OnceLock<KeyMetrics>,
}

/// The keys last fetched from the URL, and the body they came in (an unchanged body is not a
/// reload).
#[derive(Default)]
struct Fetched {
    keys: Arc<[VerificationKey]>,
    body: Bytes,
}

/// The handle on the fetcher thread.
struct Remote {
    url: JwksUrl,
    wake: Arc<Notify>,
    rounds: watch::Receiver<Rounds>,
    /// The fetch an unknown `kid` last asked for: when, and how many rounds had ended then.
    asked: Mutex<Option<(Instant, u64)>>,
}

/// What the fetcher has done so far.
#[derive(Debug, Clone, Copy, Default)]
struct Rounds {
    ended: u64,
    changed: u64,
}

/// Where a key ring reports its reloads: what happened and how many keys it holds now.
#[derive(Clone)]
pub struct KeyMetrics {
    on_reload: Arc<dyn Fn(Reload, usize) + Send + Sync>,
}

impl KeyMetrics {
    /// Reports each reload (and the key count at attach time) to `on_reload`.
    pub fn new(on_reload: impl Fn(Reload, usize) + Send + Sync + 'static) -> Self {
        Self {
            on_reload: Arc::new(on_reload),
        }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("files", &self.files())
            .field("jwks_url", &self.remote.as_ref().map(|remote| &remote.url))
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A verifier that never changes (keys given in code): no files to watch.
    pub fn fixed(verifier: Verifier) -> Self {
        Self {
            shared: Arc::new(Shared {
                verifier: Reloading::unwatched(verifier),
                load: Box::new(|_| Err("keys given in code have no files to reload".into())),
                fetched: Mutex::default(),
                metrics: OnceLock::new(),
            }),
            remote: None,
        }
    }

    /// A verifier built by `load` from `files`, now (an error here is a configuration error at
    /// start) and again whenever the files change.
    pub fn from_files<F, E>(files: Vec<PathBuf>, load: F) -> Result<Self, E>
    where
        F: Fn() -> Result<Verifier, E> + Send + Sync + 'static,
        E: Error + Send + Sync + 'static,
    {
        Self::from_sources(files, None, move |_| load()).map_err(|error| match error {
            KeyRingError::Load(error) => error,
            KeyRingError::Fetch { .. } | KeyRingError::Thread(_) => {
                unreachable!("a key ring without a URL neither fetches nor starts a thread")
            }
        })
    }

    /// A verifier built by `load` from `files` and the keys fetched from `jwks_url`: the URL is
    /// fetched first (before this returns), then kept fresh on a thread of its own that ends
    /// when the key ring is dropped.
    pub fn from_sources<F, E>(
        files: Vec<PathBuf>,
        jwks_url: Option<JwksUrl>,
        load: F,
    ) -> Result<Self, KeyRingError<E>>
    where
        F: Fn(&[VerificationKey]) -> Result<Verifier, E> + Send + Sync + 'static,
        E: Error + Send + Sync + 'static,
    {
        let fetched = match &jwks_url {
            None => Fetched::default(),
            Some(url) => first_fetch(url)?,
        };
        let verifier =
            Reloading::load(files, || load(&fetched.keys)).map_err(KeyRingError::Load)?;
        let shared = Arc::new(Shared {
            verifier,
            load: Box::new(move |keys| load(keys).map_err(|error| Box::new(error) as _)),
            fetched: Mutex::new(fetched),
            metrics: OnceLock::new(),
        });
        let remote = match jwks_url {
            None => None,
            Some(url) => Some(Remote::start(url, &shared).map_err(KeyRingError::Thread)?),
        };
        Ok(Self { shared, remote })
    }

    /// The files watched for a change.
    pub fn files(&self) -> &[PathBuf] {
        self.shared.verifier.files()
    }

    /// The JWK Set URL the keys are fetched from, if any.
    pub fn jwks_url(&self) -> Option<&JwksUrl> {
        self.remote.as_ref().map(|remote| &remote.url)
    }

    /// Reports this key ring's reloads to `metrics` from now on (the first call wins).
    pub fn attach_metrics(&self, metrics: KeyMetrics) {
        let keys = self.current().key_ids().len();
        (metrics.on_reload)(Reload::Unchanged, keys);
        let _ = self.shared.metrics.set(metrics);
    }

    /// The verifier for the next token, built again first if the files changed.
    pub fn current(&self) -> Arc<Verifier> {
        let shared = &self.shared;
        let (verifier, reload) = shared.verifier.current(
            || (shared.load)(&shared.fetched_keys()),
            |error| {
                tracing::warn!(
                    error = %proxy_core::ErrorChain(error.as_ref()),
                    "the changed key files do not load; keeping the last good keys"
                );
            },
        );
        shared.report(reload, &verifier);
        verifier
    }
}

impl Drop for KeyRing {
    fn drop(&mut self) {
        if let Some(remote) = &self.remote {
            // The fetcher sees the key ring gone when it wakes, and ends.
            remote.wake.notify_one();
        }
    }
}

impl TokenVerifier for KeyRing {
    fn verify(&self, token: &str, vmi_name: &str) -> Result<Grant, AuthError> {
        self.current().verify(token, vmi_name)
    }

    fn refresh_for_unknown_key(&self) -> Option<KeyRefresh<'_>> {
        let remote = self.remote.as_ref()?;
        let ended_now = remote.rounds.borrow().ended;
        let waits_for = {
            let mut asked = remote.asked.lock().unwrap_or_else(PoisonError::into_inner);
            match *asked {
                // A fetch asked for recently is still running: wait for it too.
                Some((_, ended_then)) if ended_then == ended_now => ended_then,
                Some((at, _)) if at.elapsed() < remote.url.refetch_at_most_every() => return None,
                _ => {
                    *asked = Some((Instant::now(), ended_now));
                    remote.wake.notify_one();
                    ended_now
                }
            }
        };
        let mut rounds = remote.rounds.clone();
        let changed_before = rounds.borrow().changed;
        let limit = remote.url.fetch_timeout() + Duration::from_secs(1);
        Some(Box::pin(async move {
            let ended =
                tokio::time::timeout(limit, rounds.wait_for(|rounds| rounds.ended > waits_for))
                    .await;
            matches!(ended, Ok(Ok(rounds)) if rounds.changed > changed_before)
        }))
    }
}

impl Shared {
    fn fetched_keys(&self) -> Arc<[VerificationKey]> {
        let fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&fetched.keys)
    }

    /// Takes a fetched set: a new body that makes a verifier with the files' keys replaces the
    /// keys in use.
    fn adopt(&self, keys: Vec<VerificationKey>, body: Bytes) -> Reload {
        {
            let fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
            if fetched.body == body {
                return Reload::Unchanged;
            }
        }
        match (self.load)(&keys) {
            Ok(verifier) => {
                *self.fetched.lock().unwrap_or_else(PoisonError::into_inner) = Fetched {
                    keys: keys.into(),
                    body,
                };
                let verifier = self.verifier.replace(verifier);
                self.report(Reload::Reloaded, &verifier);
                Reload::Reloaded
            }
            Err(error) => {
                tracing::warn!(
                    error = %proxy_core::ErrorChain(error.as_ref()),
                    "the fetched JWK Set does not load; keeping the last good keys"
                );
                self.report(Reload::Failed, &self.verifier.peek());
                Reload::Failed
            }
        }
    }

    fn report(&self, reload: Reload, verifier: &Verifier) {
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
    }
}

/// The fetch at start, on a runtime of its own (the caller may or may not be in one).
fn first_fetch<E: Error + 'static>(url: &JwksUrl) -> Result<Fetched, KeyRingError<E>> {
    let fetch_on_thread = {
        let url = url.clone();
        move || Ok::<_, std::io::Error>(fetcher_runtime()?.block_on(url.fetch()))
    };
    let fetched = std::thread::Builder::new()
        .name("ws-proxy-jwks".to_owned())
        .spawn(fetch_on_thread)
        .map_err(KeyRingError::Thread)?
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the JWK Set fetcher panicked")))
        .map_err(KeyRingError::Thread)?;
    let (keys, body) = fetched.map_err(|source| KeyRingError::Fetch {
        url: url.to_string(),
        source,
    })?;
    let ids: Vec<&str> = keys.iter().map(|key| key.key_id().unwrap_or("-")).collect();
    tracing::info!(url = %url, keys = ids.len(), key_ids = %ids.join(","), "fetched the JWK Set");
    Ok(Fetched {
        keys: keys.into(),
        body,
    })
}

fn fetcher_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

impl Remote {
    fn start(url: JwksUrl, shared: &Arc<Shared>) -> std::io::Result<Self> {
        let wake = Arc::new(Notify::new());
        let (report, rounds) = watch::channel(Rounds::default());
        let fetcher = Fetcher {
            url: url.clone(),
            shared: Arc::downgrade(shared),
            wake: Arc::clone(&wake),
            report,
        };
        let runtime = fetcher_runtime()?;
        std::thread::Builder::new()
            .name("ws-proxy-jwks".to_owned())
            .spawn(move || runtime.block_on(fetcher.run()))?;
        Ok(Self {
            url,
            wake,
            rounds,
            asked: Mutex::new(None),
        })
    }
}

/// The fetcher thread's side: fetches on the interval and when woken, until the key ring goes.
struct Fetcher {
    url: JwksUrl,
    shared: Weak<Shared>,
    wake: Arc<Notify>,
    report: watch::Sender<Rounds>,
}

impl Fetcher {
    async fn run(self) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.url.refresh_every()) => {}
                () = self.wake.notified() => {}
            }
            if self.shared.strong_count() == 0 {
                return;
            }
            let fetched = self.url.fetch().await;
            let Some(shared) = self.shared.upgrade() else {
                return;
            };
            let reload = match fetched {
                Ok((keys, body)) => shared.adopt(keys, body),
                Err(error) => {
                    tracing::warn!(
                        url = %self.url,
                        error = %proxy_core::ErrorChain(&error),
                        "cannot fetch the JWK Set; keeping the last good keys"
                    );
                    shared.report(Reload::Failed, &shared.verifier.peek());
                    Reload::Failed
                }
            };
            drop(shared);
            self.report.send_modify(|rounds| {
                rounds.ended += 1;
                if reload == Reload::Reloaded {
                    rounds.changed += 1;
                }
            });
        }
    }
}
