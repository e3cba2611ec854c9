//! `wss://` on the console port: the server certificate and key from PEM files (what
//! cert-manager and a Kubernetes Secret volume provide), re-read when they change.
//!
//! Secret volumes are updated by swapping a symlink (`..data`), cert-manager renews before
//! expiry, and an operator may write a broken pair by hand. So the files are looked at again at
//! most every [`RELOAD_CHECK_INTERVAL`] when a connection arrives (their size, modification time
//! and inode, followed through symlinks); a changed pair is loaded and used for the connections
//! that follow, while open sessions keep the certificate they were made with. A pair that does
//! not load keeps the last good one in use, is logged and counted
//! (`ws_proxy_tls_reloads_total{result="failed"}`), and is tried again when the files change
//! once more.
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::file_watch::Reloading;

/// How often, at most, the files are looked at for a change.
pub const RELOAD_CHECK_INTERVAL: Duration = crate::file_watch::CHECK_INTERVAL;

/// Where the console port's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub certificate: PathBuf,
    /// The private key, PEM (PKCS #8, PKCS #1 or SEC1).
    pub private_key: PathBuf,
    /// With a CA file, clients must present a certificate that CA signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the TLS {what} file {}", path.display())]
    Read {
        /// Which file: certificate, private key or client CA.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file holds no usable PEM item of the kind it should.
    #[error("the TLS {what} file {} holds no {what} in PEM", path.display())]
    NoPem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// A PEM item could not be parsed.
    #[error("the TLS {what} file {} is not valid PEM", path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (a key that does not match the certificate, say) or the CA.
    #[error("the TLS certificate, key or client CA was refused")]
    Config(#[source] rustls::Error),
    /// The client CA could not be used to verify clients.
    #[error("the TLS client CA file cannot verify clients")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}

pub use crate::file_watch::Reload;

/// The console port's TLS configuration, reloaded from [`TlsFiles`] as they change.
pub struct ServerTls {
    files: TlsFiles,
    config: Reloading<ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files once; an unusable pair is an error here, at start.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let paths = [&files.certificate, &files.private_key]
            .into_iter()
            .chain(files.client_ca.as_ref())
            .cloned()
            .collect();
        let config = Reloading::load(paths, || build_config(&files))?;
        Ok(Self { files, config })
    }

    /// The files this configuration comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for the next connection, reloaded first if the files changed.
    pub fn current(&self) -> (Arc<ServerConfig>, Reload) {
        let (config, reload) = self.config.current(
            || build_config(&self.files),
            |error| {
                tracing::warn!(
                    error = %proxy_core::ErrorChain(&error),
                    "the changed TLS files do not load; keeping the last good certificate"
                );
            },
        );
        if reload == Reload::Reloaded {
            tracing::info!(
                certificate = %self.files.certificate.display(),
                "TLS certificate reloaded"
            );
        }
        (config, reload)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certificates)
}

fn build_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates("certificate", &files.certificate)?;
    let key_pem = read("private key", &files.private_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPem {
            what: "private key",
            path: files.private_key.clone(),
        },
        source => TlsError::Pem {
            what: "private key",
            path: files.private_key.clone(),
            source,
        },
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates("client CA", path)? {
                roots.add(certificate).map_err(TlsError::Config)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(TlsError::ClientVerifier)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
