//! [`KubeVirtConnector`]: dials `virtualmachineinstances/{vmi}/vnc` on the Kubernetes API server.
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::HeaderValue;
use proxy_wire::{ClientHandshakeError, UpgradeRequest, WireLimits, WireRole, WireTransport};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::connector::{ConnectError, Connector, TlsHandshake, Upstream, UpstreamTarget};
use crate::credentials::{BearerHeader, CredentialFileError, ReloadingFile, tls_config_from_pem};
use crate::remote::{RemoteHost, RemoteUrl, RemoteUrlError};
use crate::stream::UpstreamStream;
use crate::template::{ApiPathTemplate, DEFAULT_API_PATH, TemplateError};

/// `kubectl proxy`'s address: the dev-mode default (`WS_REMOTE_URL` in the container).
pub const DEFAULT_LOCAL_DEV_URL: &str = "ws://localhost:8001";
/// The subprotocol KubeVirt's VNC endpoint speaks.
pub const DEFAULT_SUBPROTOCOL: &str = proxy_wire::subprotocol::KUBEVIRT_PLAIN;
/// Frame and message limits on what the upstream sends, unless
/// [`KubeVirtConnectorBuilder::limits`] says otherwise: 64 MiB messages of 16 MiB frames at most.
pub const DEFAULT_UPSTREAM_LIMITS: WireLimits = WireLimits {
    max_message_size: Some(64 << 20),
    max_frame_size: Some(16 << 20),
};
/// Where a pod finds its service-account token.
pub const SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Where a pod finds the cluster CA.
pub const SERVICE_ACCOUNT_CA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// Default limit for resolving and connecting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for the TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for the API server's answer to the WebSocket upgrade.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default age after which the token and CA files are re-read even if they look unchanged.
pub const DEFAULT_CREDENTIAL_REFRESH: Duration = Duration::from_secs(60);
/// Default TCP keepalive idle time on the upstream socket.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The transport of an open KubeVirt upstream.
pub type KubeVirtTransport = WireTransport<UpstreamStream>;

/// Why a [`KubeVirtConnector`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `remote_url` is unusable.
    #[error("invalid remote URL")]
    RemoteUrl(#[from] RemoteUrlError),
    /// `api_path` is not a valid template.
    #[error("invalid API path template")]
    ApiPath(#[from] TemplateError),
    /// In-cluster mode needs an environment variable that is not set.
    #[error("{variable} is not set (in-cluster mode needs it; is this running in a pod?)")]
    MissingEnvironment {
        /// The variable.
        variable: &'static str,
    },
    /// `KUBERNETES_SERVICE_PORT` is not a port number.
    #[error("KUBERNETES_SERVICE_PORT is not a port number")]
    InvalidServicePort,
    /// The bearer token file is unusable.
    #[error("cannot use the bearer token file")]
    TokenFile(#[source] CredentialFileError),
    /// The CA file is unusable.
    #[error("cannot use the CA file")]
    CaFile(#[source] CredentialFileError),
    /// A `wss`/`https` URL without a CA file: there is nothing to verify the server against.
    #[error("a TLS remote URL needs a CA file (the connector trusts no system roots)")]
    TlsWithoutCaFile,
    /// A CA file for a plain `ws`/`http` URL would be silently unused.
    #[error("a CA file was given but the remote URL is not TLS (use wss:// or https://)")]
    CaFileWithoutTls,
    /// A bearer token over plain TCP would leak it.
    #[error(
        "refusing to send the bearer token over a plain-text connection (use wss:// or https://)"
    )]
    TokenWithoutTls,
    /// The host cannot be used as a TLS server name.
    #[error("the remote host cannot be used as a TLS server name")]
    InvalidServerName,
    /// A requested subprotocol is not an HTTP token.
    #[error("subprotocol number {index} is not a valid HTTP token")]
    InvalidSubprotocol {
        /// Position in the list, from 0.
        index: usize,
    },
}

/// Builds a [`KubeVirtConnector`]. Start from [`in_cluster`](Self::in_cluster),
/// [`local_dev`](Self::local_dev) or [`new`](Self::new).
#[derive(Debug, Clone)]
#[must_use]
pub struct KubeVirtConnectorBuilder {
    remote_url: String,
    api_path: String,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    subprotocols: Vec<String>,
    preserve_session: bool,
    connect_timeout: Duration,
    tls_handshake_timeout: Duration,
    upgrade_timeout: Duration,
    credential_refresh: Duration,
    tcp_nodelay: bool,
    tcp_keepalive: Option<Duration>,
    limits: WireLimits,
}

impl KubeVirtConnectorBuilder {
    /// A connector for `remote_url` (`ws`, `wss`, `http` or `https`; IPv6 hosts in brackets; a
    /// path prefix is kept) without credentials. Add [`bearer_token_file`](Self::bearer_token_file)
    /// and [`ca_file`](Self::ca_file) for a TLS API server.
    pub fn new(remote_url: impl Into<String>) -> Self {
        Self {
            remote_url: remote_url.into(),
            api_path: DEFAULT_API_PATH.to_owned(),
            token_file: None,
            ca_file: None,
            subprotocols: vec![DEFAULT_SUBPROTOCOL.to_owned()],
            preserve_session: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            upgrade_timeout: DEFAULT_UPGRADE_TIMEOUT,
            credential_refresh: DEFAULT_CREDENTIAL_REFRESH,
            tcp_nodelay: true,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            limits: DEFAULT_UPSTREAM_LIMITS,
        }
    }

    /// Dev mode (the Python API's `local_dev_mode = true`): plain `ws://`, no bearer, no TLS,
    /// to [`DEFAULT_LOCAL_DEV_URL`] unless [`remote_url`](Self::remote_url) says otherwise.
    pub fn local_dev() -> Self {
        Self::new(DEFAULT_LOCAL_DEV_URL)
    }

    /// In-cluster mode from `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`; see
    /// [`in_cluster_at`](Self::in_cluster_at).
    pub fn in_cluster() -> Result<Self, BuildError> {
        let variable = |variable: &'static str| {
            std::env::var(variable).map_err(|_| BuildError::MissingEnvironment { variable })
        };
        Self::in_cluster_at(
            &variable("KUBERNETES_SERVICE_HOST")?,
            &variable("KUBERNETES_SERVICE_PORT")?,
        )
    }

    /// In-cluster mode (the Python API's `local_dev_mode = false`) for the given service host
    /// and port: `wss://host:port`, the pod's service-account CA as the only trust root and its
    /// token as bearer ([`SERVICE_ACCOUNT_CA_PATH`], [`SERVICE_ACCOUNT_TOKEN_PATH`]; both files
    /// can be moved with [`ca_file`](Self::ca_file) and [`bearer_token_file`](Self::bearer_token_file)).
    pub fn in_cluster_at(host: &str, port: &str) -> Result<Self, BuildError> {
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| BuildError::InvalidServicePort)?;
        let host = host.trim();
        let authority = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self::new(format!("wss://{authority}"))
            .bearer_token_file(SERVICE_ACCOUNT_TOKEN_PATH)
            .ca_file(SERVICE_ACCOUNT_CA_PATH))
    }

    /// Replaces the base URL.
    pub fn remote_url(mut self, remote_url: impl Into<String>) -> Self {
        self.remote_url = remote_url.into();
        self
    }

    /// The path template (default [`DEFAULT_API_PATH`]); checked by [`build`](Self::build).
    pub fn api_path(mut self, template: impl Into<String>) -> Self {
        self.api_path = template.into();
        self
    }

    /// Sends `Authorization: Bearer <contents of path>`, re-reading the file as it rotates.
    pub fn bearer_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Trusts exactly the PEM certificates in `path` (re-read as it changes), and no others.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sends neither a bearer token nor uses a CA file (undoes the in-cluster defaults).
    pub fn without_credentials(mut self) -> Self {
        self.token_file = None;
        self.ca_file = None;
        self
    }

    /// Subprotocols to request, in preference order (default [`DEFAULT_SUBPROTOCOL`]; empty
    /// requests none).
    pub fn subprotocols<I, S>(mut self, subprotocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = subprotocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `preserveSession=true`, so KubeVirt refuses this connection instead of dropping a
    /// VNC session that is already open on the VM. Off by default, as in KubeVirt.
    pub fn preserve_session(mut self, preserve: bool) -> Self {
        self.preserve_session = preserve;
        self
    }

    /// Limit for resolving the host and connecting TCP (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Limit for the TLS handshake (default [`DEFAULT_TLS_HANDSHAKE_TIMEOUT`]).
    pub fn tls_handshake_timeout(mut self, limit: Duration) -> Self {
        self.tls_handshake_timeout = limit;
        self
    }

    /// Limit for the API server's answer to the upgrade (default [`DEFAULT_UPGRADE_TIMEOUT`]).
    pub fn upgrade_timeout(mut self, limit: Duration) -> Self {
        self.upgrade_timeout = limit;
        self
    }

    /// Age after which the token and CA files are re-read even when their size, inode and
    /// modification time look unchanged (default [`DEFAULT_CREDENTIAL_REFRESH`]).
    pub fn credential_refresh_interval(mut self, interval: Duration) -> Self {
        self.credential_refresh = interval;
        self
    }

    /// `TCP_NODELAY` on the upstream socket (default on: VNC input events are tiny and
    /// latency-bound).
    pub fn tcp_nodelay(mut self, nodelay: bool) -> Self {
        self.tcp_nodelay = nodelay;
        self
    }

    /// TCP keepalive idle time on the upstream socket, `None` for off (default
    /// [`DEFAULT_TCP_KEEPALIVE`]).
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle;
        self
    }

    /// Message and frame size limits on what the upstream sends (default
    /// [`DEFAULT_UPSTREAM_LIMITS`]); over a limit the session ends with 1009.
    pub fn limits(mut self, limits: WireLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Validates everything and reads the token and CA files once.
    pub fn build(self) -> Result<KubeVirtConnector, BuildError> {
        let remote = RemoteUrl::parse(&self.remote_url)?;
        let template = ApiPathTemplate::parse(&self.api_path)?;
        match (remote.tls, &self.ca_file, &self.token_file) {
            (true, None, _) => return Err(BuildError::TlsWithoutCaFile),
            (false, Some(_), _) => return Err(BuildError::CaFileWithoutTls),
            (false, _, Some(_)) => return Err(BuildError::TokenWithoutTls),
            _ => {}
        }
        let server_name = match &remote.host {
            RemoteHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
            RemoteHost::Name(name) => {
                ServerName::try_from(name.clone()).map_err(|_| BuildError::InvalidServerName)?
            }
        };
        let subprotocol_header = subprotocol_header(&self.subprotocols)?;
        let token = self
            .token_file
            .map(|path| {
                ReloadingFile::load(path, "token", self.credential_refresh, BearerHeader::parse)
            })
            .transpose()
            .map_err(BuildError::TokenFile)?;
        let tls = self
            .ca_file
            .map(|path| {
                ReloadingFile::load(path, "ca", self.credential_refresh, tls_config_from_pem)
            })
            .transpose()
            .map_err(BuildError::CaFile)?;
        Ok(KubeVirtConnector {
            inner: Arc::new(Settings {
                remote,
                template,
                server_name,
                token,
                tls,
                subprotocol_header,
                preserve_session: self.preserve_session,
                connect_timeout: self.connect_timeout,
                tls_handshake_timeout: self.tls_handshake_timeout,
                upgrade_timeout: self.upgrade_timeout,
                tcp_nodelay: self.tcp_nodelay,
                tcp_keepalive: self.tcp_keepalive,
                limits: self.limits,
            }),
        })
    }
}

fn subprotocol_header(subprotocols: &[String]) -> Result<Option<HeaderValue>, BuildError> {
    let is_token_char =
        |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    if let Some(index) = subprotocols
        .iter()
        .position(|p| p.is_empty() || !p.bytes().all(is_token_char))
    {
        return Err(BuildError::InvalidSubprotocol { index });
    }
    if subprotocols.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&subprotocols.join(", "))
        .map(Some)
        .map_err(|_| BuildError::InvalidSubprotocol { index: 0 })
}

/// Opens WebSockets to KubeVirt's VNC subresource. Cheap to clone (shared settings and
/// credential caches).
///
/// Each [`connect`](Connector::connect) validates the names (nothing is dialled for a name
/// outside DNS-1123), takes the current token and CA (re-read when rotated), resolves and dials
/// TCP with `TCP_NODELAY`, does the TLS handshake if the URL is `wss`, then the WebSocket
/// upgrade with `Authorization` and `Sec-WebSocket-Protocol`; each step has its own timeout.
#[derive(Clone)]
pub struct KubeVirtConnector {
    inner: Arc<Settings>,
}

struct Settings {
    remote: RemoteUrl,
    template: ApiPathTemplate,
    server_name: ServerName<'static>,
    token: Option<ReloadingFile<BearerHeader>>,
    tls: Option<ReloadingFile<Arc<ClientConfig>>>,
    subprotocol_header: Option<HeaderValue>,
    preserve_session: bool,
    connect_timeout: Duration,
    tls_handshake_timeout: Duration,
    upgrade_timeout: Duration,
    tcp_nodelay: bool,
    tcp_keepalive: Option<Duration>,
    limits: WireLimits,
}

impl fmt::Debug for KubeVirtConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.inner;
        f.debug_struct("KubeVirtConnector")
            .field("remote", &settings.remote.websocket_uri(""))
            .field("api_path", &settings.template.as_str())
            .field("token_file", &settings.token.as_ref().map(|t| t.path()))
            .field("ca_file", &settings.tls.as_ref().map(|t| t.path()))
            .field("subprotocols", &settings.subprotocol_header)
            .field("preserve_session", &settings.preserve_session)
            .field("connect_timeout", &settings.connect_timeout)
            .field("tls_handshake_timeout", &settings.tls_handshake_timeout)
            .field("upgrade_timeout", &settings.upgrade_timeout)
            .finish_non_exhaustive()
    }
}

impl KubeVirtConnector {
    /// Shorthand for [`KubeVirtConnectorBuilder::new`].
    pub fn builder(remote_url: impl Into<String>) -> KubeVirtConnectorBuilder {
        KubeVirtConnectorBuilder::new(remote_url)
    }

    /// The WebSocket URI [`connect`](Connector::connect) would dial for `target`, after the same
    /// name checks.
    pub fn request_uri(&self, target: UpstreamTarget<'_>) -> Result<String, ConnectError> {
        Ok(self.inner.remote.websocket_uri(&self.request_path(target)?))
    }

    /// The rendered API path for `target`, with `?preserveSession=true` when asked for.
    fn request_path(&self, target: UpstreamTarget<'_>) -> Result<String, ConnectError> {
        let settings = &self.inner;
        let mut path = settings
            .template
            .render(target.namespace, target.vmi_name)?;
        if settings.preserve_session {
            path.push_str("?preserveSession=true");
        }
        Ok(path)
    }

    /// The request target on the wire: the remote URL's base path and the API path.
    fn request_target(&self, target: UpstreamTarget<'_>) -> Result<String, ConnectError> {
        let path = self.request_path(target)?;
        Ok(format!("{}{path}", self.inner.remote.base_path))
    }

    /// Whether connections use TLS (a `wss`/`https` remote URL).
    pub fn is_tls(&self) -> bool {
        self.inner.remote.tls
    }

    async fn dial(&self) -> Result<TcpStream, ConnectError> {
        let settings = &self.inner;
        let stream = timeout(settings.connect_timeout, self.dial_any_address())
            .await
            .map_err(|_| ConnectError::ConnectTimeout {
                authority: settings.remote.authority.clone(),
                timeout: settings.connect_timeout,
            })??;
        if let Err(error) = stream.set_nodelay(settings.tcp_nodelay) {
            tracing::warn!(%error, "cannot set TCP_NODELAY on the upstream socket");
        }
        if let Some(idle) = settings.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                tracing::warn!(%error, "cannot set TCP keepalive on the upstream socket");
            }
        }
        Ok(stream)
    }

    async fn dial_any_address(&self) -> Result<TcpStream, ConnectError> {
        let remote = &self.inner.remote;
        let addresses: Vec<SocketAddr> = match &remote.host {
            RemoteHost::Ip(ip) => vec![SocketAddr::new(*ip, remote.port)],
            RemoteHost::Name(name) => tokio::net::lookup_host((name.as_str(), remote.port))
                .await
                .map_err(|source| ConnectError::Resolve {
                    host: name.clone(),
                    source,
                })?
                .collect(),
        };
        let mut last_error = ConnectError::NoAddress {
            host: remote.host.to_string(),
        };
        for addr in addresses {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(source) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                    last_error = ConnectError::Refused { addr, source };
                }
                Err(source) => last_error = ConnectError::Unreachable { addr, source },
            }
        }
        Err(last_error)
    }

    async fn tls_handshake(
        &self,
        config: Arc<ClientConfig>,
        tcp: TcpStream,
    ) -> Result<(UpstreamStream, TlsHandshake), ConnectError> {
        let settings = &self.inner;
        let authority = || settings.remote.authority.clone();
        let connector = tokio_rustls::TlsConnector::from(config);
        let handshake = connector.connect(settings.server_name.clone(), tcp);
        match timeout(settings.tls_handshake_timeout, handshake).await {
            Err(_) => Err(ConnectError::TlsHandshakeTimeout {
                authority: authority(),
                timeout: settings.tls_handshake_timeout,
            }),
            Ok(Ok(stream)) => {
                let kind = match stream.get_ref().1.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => TlsHandshake::Resumed,
                    _ => TlsHandshake::Full,
                };
                Ok((UpstreamStream::tls(stream), kind))
            }
            Ok(Err(error)) => Err(tls_failure(authority(), error)),
        }
    }
}

/// A refused upgrade is the API server's answer (its status and body say why); anything else is
/// a protocol failure.
fn upgrade_failure(error: ClientHandshakeError) -> ConnectError {
    match error {
        ClientHandshakeError::Refused { status, body } => {
            match http::StatusCode::from_u16(status) {
                Ok(status) => ConnectError::from_status(status, &body),
                Err(_) => ConnectError::Protocol(ClientHandshakeError::Refused { status, body }),
            }
        }
        other => ConnectError::Protocol(other),
    }
}

/// Splits a failed handshake into rustls' typed reason and plain I/O trouble.
fn tls_failure(authority: String, error: std::io::Error) -> ConnectError {
    if !error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
    {
        return ConnectError::TlsIo {
            authority,
            source: error,
        };
    }
    match error
        .into_inner()
        .map(|inner| inner.downcast::<rustls::Error>())
    {
        Some(Ok(source)) => ConnectError::Tls {
            authority,
            source: *source,
        },
        Some(Err(other)) => ConnectError::TlsIo {
            authority,
            source: std::io::Error::other(other),
        },
        None => ConnectError::TlsIo {
            authority,
            source: std::io::Error::other("TLS handshake failed"),
        },
    }
}

#[async_trait]
impl Connector for KubeVirtConnector {
    type Transport = KubeVirtTransport;

    async fn connect(
        &self,
        target: UpstreamTarget<'_>,
    ) -> Result<Upstream<Self::Transport>, ConnectError> {
        let settings = &self.inner;
        let request_target = self.request_target(target)?;
        let authorization = match &settings.token {
            Some(token) => Some(token.current().await.header_value()),
            None => None,
        };
        let tls_config = match &settings.tls {
            Some(ca) => Some(ca.current().await),
            None => None,
        };

        let tcp = self.dial().await?;
        let (mut stream, tls_handshake) = match tls_config {
            Some(config) => {
                let (stream, kind) = self.tls_handshake(config, tcp).await?;
                (stream, Some(kind))
            }
            None => (UpstreamStream::plain(tcp), None),
        };

        let authorization_header;
        let extra_headers: &[(&str, &[u8])] = match &authorization {
            Some(value) => {
                authorization_header = [("authorization", value.as_bytes())];
                &authorization_header
            }
            None => &[],
        };
        let request = UpgradeRequest {
            target: &request_target,
            host: &settings.remote.authority,
            subprotocols: settings
                .subprotocol_header
                .as_ref()
                .and_then(|value| value.to_str().ok()),
            extra_headers,
        };
        let upgraded = timeout(
            settings.upgrade_timeout,
            proxy_wire::upgrade(&mut stream, &request),
        )
        .await
        .map_err(|_| ConnectError::UpgradeTimeout {
            timeout: settings.upgrade_timeout,
        })?
        .map_err(upgrade_failure)?;
        let subprotocol = upgraded.subprotocol;
        tracing::debug!(
            namespace = target.namespace,
            vmi = target.vmi_name,
            subprotocol = subprotocol.as_deref(),
            tls = settings.remote.tls,
            "upstream WebSocket open"
        );
        Ok(Upstream {
            transport: WireTransport::from_partially_read(
                stream,
                WireRole::Client,
                settings.limits,
                upgraded.already_read,
            ),
            subprotocol,
            tls_handshake,
        })
    }
}
