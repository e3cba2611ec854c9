//! The service-account token and CA files, re-read when they change.
//!
//! The kubelet rotates projected service-account tokens by swapping the file in place (atomic
//! symlink flip), and CA bundles change on cluster CA rotation. Like client-go and kube-rs, the
//! connector therefore never caches either forever: before each dial it checks the file's
//! metadata and re-reads it when it changed or when the refresh interval has passed. A failed
//! re-read keeps the last good value (and logs a warning), so a transient read error during a
//! swap never breaks new sessions.
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::time::Instant;

/// Why the token or CA file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialFileError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The token file is empty (or only whitespace).
    #[error("the token file {} is empty", path.display())]
    EmptyToken {
        /// The file.
        path: PathBuf,
    },
    /// The token holds bytes that cannot go into an HTTP header.
    #[error("the token file {} holds characters that cannot be sent in an HTTP header", path.display())]
    TokenNotHeaderSafe {
        /// The file.
        path: PathBuf,
    },
    /// The CA file is not valid PEM.
    #[error("the CA file {} is not valid PEM", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser found.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The CA file holds no `CERTIFICATE` block.
    #[error("the CA file {} holds no certificate", path.display())]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file cannot be used as a trust root.
    #[error("a certificate in the CA file {} cannot be used as a trust root", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why rustls refused it.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the client configuration.
    #[error("cannot build the TLS client configuration")]
    TlsConfig(#[source] rustls::Error),
}

/// The `Authorization` header value built from the token file. Its `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct BearerHeader(HeaderValue);

impl BearerHeader {
    pub(crate) fn parse(path: &Path, contents: &[u8]) -> Result<Self, CredentialFileError> {
        let token = contents.trim_ascii();
        if token.is_empty() {
            return Err(CredentialFileError::EmptyToken {
                path: path.to_owned(),
            });
        }
        let mut value = Vec::with_capacity(token.len() + 7);
        value.extend_from_slice(b"Bearer ");
        value.extend_from_slice(token);
        let mut header = HeaderValue::from_bytes(&value).map_err(|_| {
            CredentialFileError::TokenNotHeaderSafe {
                path: path.to_owned(),
            }
        })?;
        header.set_sensitive(true);
        Ok(Self(header))
    }

    pub(crate) fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Debug for BearerHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerHeader(<redacted>)")
    }
}

/// A rustls client configuration (HTTP/1.1 by ALPN) that trusts exactly the certificates in the
/// PEM file at `path`: the one way this project turns a CA bundle into a TLS client, for the
/// Kubernetes API and for a JWK Set URL.
pub fn client_tls_config_from_ca_file(
    path: &Path,
) -> Result<Arc<ClientConfig>, CredentialFileError> {
    let pem = std::fs::read(path).map_err(|source| CredentialFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    tls_config_from_pem(path, &pem)
}

/// Builds a rustls client configuration that trusts exactly the certificates in `pem`.
pub(crate) fn tls_config_from_pem(
    path: &Path,
    pem: &[u8],
) -> Result<Arc<ClientConfig>, CredentialFileError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|source| CredentialFileError::Pem {
            path: path.to_owned(),
            source,
        })?;
        roots
            .add(certificate)
            .map_err(|source| CredentialFileError::BadCertificate {
                path: path.to_owned(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(CredentialFileError::NoCertificates {
            path: path.to_owned(),
        });
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // AES-128-GCM with SHA-256 first, as Go's crypto/tls (kube-apiserver) orders them: SHA-256
    // runs on the CPU's SHA extensions where SHA-384 does not, and the TLS 1.3 key schedule of
    // every handshake is dozens of HMACs (8 % of the in-cluster proxy's CPU at session set-up
    // went to SHA-512 blocks before; docs/performance.md).
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(CredentialFileError::TlsConfig)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // WebSocket upgrades are HTTP/1.1 only; say so, or an API server may pick h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption =
        rustls::client::Resumption::store(Arc::new(crate::tickets::TicketStore::default()));
    Ok(Arc::new(config))
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileVersion {
    fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode,
        }
    }
}

type Parser<T> = fn(&Path, &[u8]) -> Result<T, CredentialFileError>;

/// A value parsed from a file, re-read when the file changes or the refresh interval passes.
pub(crate) struct ReloadingFile<T> {
    path: PathBuf,
    what: &'static str,
    refresh_interval: Duration,
    parse: Parser<T>,
    state: Mutex<Loaded<T>>,
}

struct Loaded<T> {
    value: T,
    version: Option<FileVersion>,
    loaded_at: Instant,
}

impl<T: Clone> ReloadingFile<T> {
    /// Reads the file once, synchronously (at build time): a missing file is a startup error.
    pub(crate) fn load(
        path: PathBuf,
        what: &'static str,
        refresh_interval: Duration,
        parse: Parser<T>,
    ) -> Result<Self, CredentialFileError> {
        let version = std::fs::metadata(&path).ok().map(|m| FileVersion::of(&m));
        let contents = std::fs::read(&path).map_err(|source| CredentialFileError::Read {
            path: path.clone(),
            source,
        })?;
        let value = parse(&path, &contents)?;
        Ok(Self {
            path,
            what,
            refresh_interval,
            parse,
            state: Mutex::new(Loaded {
                value,
                version,
                loaded_at: Instant::now(),
            }),
        })
    }

    /// The current value: re-read if the file changed or is due, else the cached one.
    pub(crate) async fn current(&self) -> T {
        let (cached, version, loaded_at) = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            (state.value.clone(), state.version, state.loaded_at)
        };
        let now = Instant::now();
        // A plain `stat`, not tokio's blocking pool: the file is local (a projected volume on
        // tmpfs in a pod), its stat takes about a microsecond, and the pool's thread hand-off
        // cost more than that on every dial (docs/performance-log.md, issue 18).
        let seen = std::fs::metadata(&self.path)
            .ok()
            .map(|m| FileVersion::of(&m));
        let changed = seen.is_some() && seen != version;
        let due = now.saturating_duration_since(loaded_at) >= self.refresh_interval;
        if !changed && !due {
            return cached;
        }
        match self.read().await {
            Ok(value) => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if changed {
                    tracing::info!(path = %self.path.display(), file = self.what, "reloaded changed credential file");
                }
                *state = Loaded {
                    value: value.clone(),
                    version: seen,
                    loaded_at: now,
                };
                value
            }
            Err(error) => {
                tracing::warn!(
                    path = %self.path.display(),
                    file = self.what,
                    error = %error,
                    "cannot re-read credential file; keeping the last good one"
                );
                cached
            }
        }
    }

    async fn read(&self) -> Result<T, CredentialFileError> {
        let contents =
            tokio::fs::read(&self.path)
                .await
                .map_err(|source| CredentialFileError::Read {
                    path: self.path.clone(),
                    source,
                })?;
        (self.parse)(&self.path, &contents)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl<T> fmt::Debug for ReloadingFile<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingFile")
            .field("path", &self.path)
            .field("refresh_interval", &self.refresh_interval)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(header: &BearerHeader) -> String {
        header.header_value().to_str().unwrap().to_owned()
    }

    fn token_file(dir: &tempfile::TempDir, contents: &str) -> PathBuf {
        let path = dir.path().join("token");
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn reloading(path: PathBuf) -> ReloadingFile<BearerHeader> {
        ReloadingFile::load(path, "token", Duration::from_secs(60), BearerHeader::parse).unwrap()
    }

    #[test]
    fn token_is_trimmed_and_marked_sensitive() {
        let header = BearerHeader::parse(Path::new("t"), b"  abc.def  \n").unwrap();
        assert_eq!(token_of(&header), "Bearer abc.def");
        assert!(header.header_value().is_sensitive());
        assert_eq!(format!("{header:?}"), "BearerHeader(<redacted>)");
    }

    #[test]
    fn unusable_tokens_are_refused_without_echoing_them() {
        let empty = BearerHeader::parse(Path::new("/t"), b" \n").unwrap_err();
        assert!(matches!(empty, CredentialFileError::EmptyToken { .. }));
        let control = BearerHeader::parse(Path::new("/t"), b"abc\x01secret").unwrap_err();
        assert!(matches!(
            control,
            CredentialFileError::TokenNotHeaderSafe { .. }
        ));
        assert!(!format!("{control} {control:?}").contains("secret"));
    }

    #[test]
    fn aes_128_gcm_sha256_is_offered_first_like_go_servers_choose() {
        let pki = test_support::TestPki::new("ca");
        let config = tls_config_from_pem(Path::new("/ca"), pki.ca_pem.as_bytes()).unwrap();
        let suites: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.suite())
            .collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(suites.contains(&rustls::CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn ca_file_without_certificates_is_refused() {
        let error = tls_config_from_pem(Path::new("/ca"), b"not pem at all").unwrap_err();
        assert!(
            matches!(error, CredentialFileError::NoCertificates { .. }),
            "{error:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn same_size_in_place_rewrite_is_picked_up_once_the_interval_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(&dir, "token-one");
        let source = reloading(path.clone());
        let original_mtime = std::fs::metadata(&path).unwrap().modified().unwrap();

        // Same length, same inode, same mtime: invisible to the metadata check.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Write::write_all(&mut &file, b"token-two").unwrap();
        file.set_modified(original_mtime).unwrap();
        drop(file);

        assert_eq!(token_of(&source.current().await), "Bearer token-one");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(token_of(&source.current().await), "Bearer token-two");
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_is_picked_up_before_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(&dir, "token-one");
        let source = reloading(path.clone());
        // The kubelet's way: write a new file and move it over the old one (new inode).
        let staged = dir.path().join("token.new");
        std::fs::write(&staged, "token-two").unwrap();
        std::fs::rename(&staged, &path).unwrap();
        assert_eq!(token_of(&source.current().await), "Bearer token-two");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_reads_keep_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(&dir, "token-one");
        let source = reloading(path.clone());

        std::fs::remove_file(&path).unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(token_of(&source.current().await), "Bearer token-one");

        std::fs::write(&path, "   ").unwrap();
        assert_eq!(token_of(&source.current().await), "Bearer token-one");

        std::fs::write(&path, "token-three").unwrap();
        assert_eq!(token_of(&source.current().await), "Bearer token-three");
    }

    #[test]
    fn loading_a_missing_file_fails_with_its_path() {
        let error = ReloadingFile::load(
            PathBuf::from("/nonexistent/token"),
            "token",
            Duration::from_secs(60),
            BearerHeader::parse,
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "cannot read /nonexistent/token");
    }
}
