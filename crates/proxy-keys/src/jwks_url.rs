//! Token keys published at a URL: a JWK Set (RFC 7517) that a lab backend or an OIDC provider
//! serves over HTTPS, fetched with a configurable CA (or the system's) and a bounded body.
//!
//! [`JwksUrl`] is the setting and one fetch; [`KeyRing`](crate::keys::KeyRing) fetches it at
//! start, again every [`refresh_interval`](JwksUrl::refresh_interval), and when a token names a
//! `kid` it does not know (at most every [`min_refetch_interval`](JwksUrl::min_refetch_interval)).
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::header::{ACCEPT, HOST, USER_AGENT};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use proxy_auth::{KeyError, VerificationKey};
use proxy_upstream::{CredentialFileError, client_tls_config_from_ca_file};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The largest JWK Set body accepted (a set of a dozen RSA-4096 keys is about 10 KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How often the set is fetched when nothing asks for it sooner.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// The shortest time between two fetches caused by tokens with an unknown `kid`.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// How long one fetch (connect, TLS, request, body) may take.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a JWK Set URL is not one the proxy can fetch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksUrlError {
    /// The text is not a URL.
    #[error("the JWK Set URL is not a valid URL")]
    Invalid(#[source] http::uri::InvalidUri),
    /// Keys that sign console tokens travel only over HTTPS.
    #[error("the JWK Set URL must start with https:// (got {scheme:?})")]
    NotHttps {
        /// The scheme given.
        scheme: String,
    },
    /// There is no host to connect to.
    #[error("the JWK Set URL has no host")]
    NoHost,
    /// An interval or timeout of zero.
    #[error("the JWK Set {what} must be longer than zero")]
    ZeroDuration {
        /// Which duration.
        what: &'static str,
    },
}

/// Why one fetch of the JWK Set failed (the last good keys stay in use).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksFetchError {
    /// The configured CA file cannot be used.
    #[error("the JWK Set CA file cannot be used")]
    Ca(#[source] CredentialFileError),
    /// The system's CA certificates cannot be read, or there are none.
    #[error("no system CA certificates to check the JWK Set URL with (set a CA file)")]
    NoSystemRoots,
    /// The TLS client cannot be set up.
    #[error("cannot set up TLS for the JWK Set URL")]
    Tls(#[source] rustls::Error),
    /// The host is not a valid TLS server name.
    #[error("the JWK Set URL's host is not a valid TLS server name")]
    ServerName,
    /// The TCP connection or the TLS handshake failed.
    #[error("cannot connect to the JWK Set URL")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("the JWK Set request failed")]
    Http(#[source] hyper::Error),
    /// The server answered with another status than 200.
    #[error("the JWK Set URL answered {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The body is longer than [`MAX_JWKS_BYTES`] or broke off.
    #[error("the JWK Set body is larger than {MAX_JWKS_BYTES} bytes or broke off")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body is not a usable JWK Set.
    #[error("the JWK Set URL does not serve a usable key set")]
    Keys(#[source] KeyError),
    /// The fetch took longer than its timeout.
    #[error("fetching the JWK Set took longer than {0:?}")]
    Timeout(Duration),
}

/// A JWK Set URL and how it is fetched.
///
/// ```
/// use std::time::Duration;
/// use proxy_keys::JwksUrl;
///
/// let url = JwksUrl::parse("https://lab.example.com/.well-known/jwks.json")?
///     .ca_file("/etc/ws-proxy/lab-ca.crt")
///     .refresh_interval(Duration::from_secs(60))?;
/// assert_eq!(url.to_string(), "https://lab.example.com/.well-known/jwks.json");
/// assert!(JwksUrl::parse("http://lab.example.com/jwks.json").is_err());
/// # Ok::<(), proxy_keys::JwksUrlError>(())
/// ```
#[derive(Debug, Clone)]
pub struct JwksUrl {
    uri: Uri,
    host: String,
    port: u16,
    ca_file: Option<PathBuf>,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    timeout: Duration,
}

impl std::fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.uri.fmt(f)
    }
}

impl JwksUrl {
    /// An `https://` URL, with the default intervals and the system's CA certificates.
    pub fn parse(url: &str) -> Result<Self, JwksUrlError> {
        let uri: Uri = url.parse().map_err(JwksUrlError::Invalid)?;
        let scheme = uri.scheme_str().unwrap_or("");
        if !scheme.eq_ignore_ascii_case("https") {
            return Err(JwksUrlError::NotHttps {
                scheme: scheme.to_owned(),
            });
        }
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or(JwksUrlError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        Ok(Self {
            uri,
            host,
            port,
            ca_file: None,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
            timeout: DEFAULT_FETCH_TIMEOUT,
        })
    }

    /// Trusts exactly the certificates in this PEM file (re-read at every fetch) instead of
    /// the system's.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Fetches the set this often (default [`DEFAULT_REFRESH_INTERVAL`]).
    pub fn refresh_interval(mut self, interval: Duration) -> Result<Self, JwksUrlError> {
        self.refresh_interval = nonzero(interval, "refresh interval")?;
        Ok(self)
    }

    /// Fetches at most this often for tokens with an unknown `kid` (default
    /// [`DEFAULT_MIN_REFETCH_INTERVAL`]).
    pub fn min_refetch_interval(mut self, interval: Duration) -> Result<Self, JwksUrlError> {
        self.min_refetch_interval = nonzero(interval, "minimum refetch interval")?;
        Ok(self)
    }

    /// Gives one fetch this long (default [`DEFAULT_FETCH_TIMEOUT`]).
    pub fn timeout(mut self, limit: Duration) -> Result<Self, JwksUrlError> {
        self.timeout = nonzero(limit, "fetch timeout")?;
        Ok(self)
    }

    /// The interval between fetches when nothing asks sooner.
    pub fn refresh_every(&self) -> Duration {
        self.refresh_interval
    }

    /// The shortest time between two fetches for unknown key ids.
    pub fn refetch_at_most_every(&self) -> Duration {
        self.min_refetch_interval
    }

    /// How long one fetch may take.
    pub fn fetch_timeout(&self) -> Duration {
        self.timeout
    }

    /// Fetches the set once and returns its keys, the raw body (to tell an unchanged set) and
    /// nothing else; any failure leaves the caller's keys as they were.
    pub async fn fetch(&self) -> Result<(Vec<VerificationKey>, Bytes), JwksFetchError> {
        tokio::time::timeout(self.timeout, self.fetch_body())
            .await
            .map_err(|_| JwksFetchError::Timeout(self.timeout))?
            .and_then(|body| {
                let keys = VerificationKey::from_jwk_set(&body).map_err(JwksFetchError::Keys)?;
                Ok((keys, body))
            })
    }

    async fn fetch_body(&self) -> Result<Bytes, JwksFetchError> {
        let tls = self.tls_config()?;
        let server_name =
            ServerName::try_from(self.host.clone()).map_err(|_| JwksFetchError::ServerName)?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(JwksFetchError::Connect)?;
        let stream = TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(JwksFetchError::Connect)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(JwksFetchError::Http)?;
        let driver = tokio::spawn(connection);
        let authority = self
            .uri
            .authority()
            .map_or_else(|| self.host.clone(), |authority| authority.to_string());
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        let request = http::Request::get(path)
            .header(HOST, authority)
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .header(USER_AGENT, concat!("ws-proxy/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|error| JwksFetchError::Body(Box::new(error)))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(JwksFetchError::Http)?;
            let status = response.status();
            if status != http::StatusCode::OK {
                return Err(JwksFetchError::Status {
                    status: status.as_u16(),
                });
            }
            Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|body| body.to_bytes())
                .map_err(JwksFetchError::Body)
        };
        let body = exchange.await;
        driver.abort();
        body
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, JwksFetchError> {
        if let Some(path) = &self.ca_file {
            return client_tls_config_from_ca_file(path).map_err(JwksFetchError::Ca);
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if added == 0 {
            return Err(JwksFetchError::NoSystemRoots);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(JwksFetchError::Tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn nonzero(duration: Duration, what: &'static str) -> Result<Duration, JwksUrlError> {
    if duration.is_zero() {
        Err(JwksUrlError::ZeroDuration { what })
    } else {
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_accepted() {
        assert!(matches!(
            JwksUrl::parse("http://lab.example.com/jwks.json"),
            Err(JwksUrlError::NotHttps { .. })
        ));
        assert!(JwksUrl::parse("lab.example.com/jwks.json").is_err());
        assert!(matches!(
            JwksUrl::parse("https://exa mple"),
            Err(JwksUrlError::Invalid(_))
        ));
        let url = JwksUrl::parse("https://[::1]:8443/keys?v=2").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 8443));
        let url = JwksUrl::parse("HTTPS://idp.example.com/certs").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("idp.example.com", 443));
    }

    #[test]
    fn zero_durations_are_refused() {
        let url = JwksUrl::parse("https://idp.example.com/certs").unwrap();
        assert!(url.clone().refresh_interval(Duration::ZERO).is_err());
        assert!(url.clone().min_refetch_interval(Duration::ZERO).is_err());
        assert!(url.timeout(Duration::ZERO).is_err());
    }
}
