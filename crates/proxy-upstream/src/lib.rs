//! Dials the KubeVirt VNC subresource for a verified grant.
//!
//! The server hands a [`Connector`] an [`UpstreamTarget`] (namespace from the token, VMI name
//! from the path) and gets back an open upstream WebSocket as a relay
//! [`FrameTransport`](proxy_core::FrameTransport), or a [`ConnectError`] whose
//! [`class`](ConnectError::class) says which status to give the client.
//!
//! [`KubeVirtConnector`] is the real connector. It builds
//! `{remote_url}{api_path}` with both names checked against the Kubernetes name rules (see
//! [`validate_namespace`], [`validate_vmi_name`], [`ApiPathTemplate`]), and works in two modes:
//!
//! - **In cluster** ([`KubeVirtConnectorBuilder::in_cluster`]): `wss://` to
//!   `$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the service-account CA as the only
//!   trust root, the service-account token as bearer; both files are re-read as they rotate.
//! - **Dev** ([`KubeVirtConnectorBuilder::local_dev`]): plain `ws://` (default
//!   `ws://localhost:8001`, i.e. `kubectl proxy`), no token, no TLS.
//!
//! The WebSocket itself is [`proxy_wire`]'s: its client upgrade, then a
//! [`WireTransport`](proxy_wire::WireTransport) in the client role with the connector's
//! [`WireLimits`](proxy_wire::WireLimits) ([`DEFAULT_UPSTREAM_LIMITS`] unless set).
//!
//! It requests the `plain.kubevirt.io` subprotocol, sets `TCP_NODELAY`, and bounds connecting,
//! the TLS handshake and the upgrade with separate timeouts. The bearer token never appears in
//! an error, a `Debug` output or a log record.
//!
//! ```no_run
//! use proxy_upstream::{Connector, KubeVirtConnectorBuilder, UpstreamTarget};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let connector = KubeVirtConnectorBuilder::in_cluster()?
//!     .preserve_session(true)
//!     .build()?;
//! let target = UpstreamTarget { namespace: "lab-1", vmi_name: "ubuntu" };
//! match connector.connect(target).await {
//!     Ok(upstream) => println!("open, subprotocol {:?}", upstream.subprotocol),
//!     Err(error) => println!("{error} -> {:?}", error.class()),
//! }
//! # Ok(())
//! # }
//! ```

mod connector;
mod credentials;
mod kubevirt;
mod remote;
mod stream;
mod template;
mod tickets;

pub use connector::{
    BodyExcerpt, ConnectError, Connector, FailureClass, TlsHandshake, Upstream, UpstreamTarget,
};
pub use credentials::{CredentialFileError, client_tls_config_from_ca_file};
pub use kubevirt::{
    BuildError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CREDENTIAL_REFRESH, DEFAULT_LOCAL_DEV_URL,
    DEFAULT_SUBPROTOCOL, DEFAULT_TCP_KEEPALIVE, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    DEFAULT_UPGRADE_TIMEOUT, DEFAULT_UPSTREAM_LIMITS, KubeVirtConnector, KubeVirtConnectorBuilder,
    KubeVirtTransport, SERVICE_ACCOUNT_CA_PATH, SERVICE_ACCOUNT_TOKEN_PATH,
};
/// The Kubernetes name rules, from [`proxy_auth`] (their one home).
pub use proxy_auth::{
    InvalidNameError, MAX_NAMESPACE_LEN, MAX_VMI_NAME_LEN, NameField, NameProblem,
    validate_namespace, validate_vmi_name,
};
pub use remote::RemoteUrlError;
pub use stream::UpstreamStream;
pub use template::{ApiPathTemplate, DEFAULT_API_PATH, TemplateError, V1_API_PATH};
