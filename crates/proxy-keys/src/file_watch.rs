//! A value built from files and built again when they change (a Kubernetes Secret volume swaps
//! a symlink, cert-manager rewrites in place), without a watcher thread: the files' metadata is
//! compared at most every [`CHECK_INTERVAL`] when the value is asked for. The TLS certificate
//! ([`ServerTls`](crate::tls::ServerTls)) and the token keys ([`KeyRing`](crate::keys::KeyRing))
//! reload this way.
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// How often, at most, the files are looked at for a change.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What asking for a reloading value did about its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Nothing changed (or it was not time to look).
    Unchanged,
    /// The files changed and the new value is in use.
    Reloaded,
    /// The files changed but do not load; the last good value stays in use.
    Failed,
}

/// A value and the files it was built from.
pub(crate) struct Reloading<T> {
    files: Vec<PathBuf>,
    state: Mutex<State<T>>,
}

struct State<T> {
    value: Arc<T>,
    /// What the files looked like when last loaded or last found broken.
    stamps: Vec<FileStamp>,
    checked_at: Instant,
}

impl<T> Reloading<T> {
    /// The value `load` builds from `files` now. The files are looked at first, so a change
    /// while loading is seen at the next check.
    pub(crate) fn load<E>(
        files: Vec<PathBuf>,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Result<Self, E> {
        let stamps = stamps(&files);
        let value = load()?;
        Ok(Self::with(files, stamps, value))
    }

    /// `value`, with no files to watch: it never changes.
    pub(crate) fn unwatched(value: T) -> Self {
        Self::with(Vec::new(), Vec::new(), value)
    }

    fn with(files: Vec<PathBuf>, stamps: Vec<FileStamp>, value: T) -> Self {
        Self {
            files,
            state: Mutex::new(State {
                value: Arc::new(value),
                stamps,
                checked_at: Instant::now(),
            }),
        }
    }

    /// The files watched.
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The value in use, without looking at the files.
    pub(crate) fn peek(&self) -> Arc<T> {
        Arc::clone(
            &self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .value,
        )
    }

    /// Puts `value` in use (built from another input than the files, which are not looked at).
    pub(crate) fn replace(&self, value: T) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.value = Arc::new(value);
        Arc::clone(&state.value)
    }

    /// The value, built again by `load` first when it is time to look and the files changed; a
    /// failed `load` keeps the last good value and hands its error to `failed`.
    pub(crate) fn current<E>(
        &self,
        load: impl FnOnce() -> Result<T, E>,
        failed: impl FnOnce(E),
    ) -> (Arc<T>, Reload) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked_at.elapsed() < CHECK_INTERVAL {
            return (Arc::clone(&state.value), Reload::Unchanged);
        }
        state.checked_at = Instant::now();
        let stamps = stamps(&self.files);
        if stamps == state.stamps {
            return (Arc::clone(&state.value), Reload::Unchanged);
        }
        state.stamps = stamps;
        match load() {
            Ok(value) => {
                state.value = Arc::new(value);
                (Arc::clone(&state.value), Reload::Reloaded)
            }
            Err(error) => {
                failed(error);
                (Arc::clone(&state.value), Reload::Failed)
            }
        }
    }
}

/// Enough of a file's metadata, followed through symlinks, to notice it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

/// The stamps of `paths`, in order; a missing file is a state of its own (its return is a change).
fn stamps(paths: &[PathBuf]) -> Vec<FileStamp> {
    paths
        .iter()
        .map(|path| match std::fs::metadata(path) {
            Ok(metadata) => FileStamp {
                modified: metadata.modified().ok(),
                len: metadata.len(),
                inode: metadata.ino(),
                device: metadata.dev(),
            },
            Err(_) => FileStamp {
                modified: None,
                len: u64::MAX,
                inode: 0,
                device: 0,
            },
        })
        .collect()
}
