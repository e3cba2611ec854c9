//! The admin API's bearer token: read from a file, read again when the file changes (a
//! Kubernetes Secret volume update), compared in constant time.
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::file_watch::Reloading;

/// The admin bearer token, read from a file and read again when the file changes (a
/// Kubernetes Secret volume update), compared in constant time.
pub struct AdminToken {
    token: Reloading<Vec<u8>>,
}

/// The admin token file is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminTokenError {
    /// It cannot be read.
    #[error("cannot read the admin token file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It holds fewer than 16 bytes (after trimming the trailing newline).
    #[error("the admin token in {} is shorter than 16 bytes", path.display())]
    TooShort {
        /// The file.
        path: PathBuf,
    },
}

fn read_token(path: &Path) -> Result<Vec<u8>, AdminTokenError> {
    let text = std::fs::read(path).map_err(|source| AdminTokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim_ascii_end().to_vec();
    if token.len() < 16 {
        return Err(AdminTokenError::TooShort {
            path: path.to_owned(),
        });
    }
    Ok(token)
}

impl AdminToken {
    /// The token in `path` (trailing whitespace ignored; at least 16 bytes).
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, AdminTokenError> {
        let path = path.into();
        let watched = path.clone();
        Ok(Self {
            token: Reloading::load(vec![watched], || read_token(&path))?,
        })
    }

    /// Whether `presented` is the current token.
    pub fn allows(&self, presented: &[u8]) -> bool {
        let path = self.token.files().first().cloned().unwrap_or_default();
        let (token, _) = self.token.current(
            || read_token(&path),
            |error| warn!(error = %proxy_core::ErrorChain(&error), "the admin token file changed but is unusable; the previous token stays in use"),
        );
        aws_lc_rs::constant_time::verify_slices_are_equal(&token, presented).is_ok()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("file", &self.token.files())
            .finish_non_exhaustive()
    }
}
