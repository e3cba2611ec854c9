//! The seam between the server and the upstream. The `proxy-upstream` issue fills in the
//! KubeVirt implementation and the full error set; these names are the contract.
use async_trait::async_trait;
use proxy_core::FrameTransport;

/// The VM console to dial: both names come from a verified token and the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTarget<'a> {
    /// Kubernetes namespace of the VMI (from the token).
    pub namespace: &'a str,
    /// Name of the VirtualMachineInstance (from the path, allowed by the token).
    pub vmi_name: &'a str,
}

/// An open upstream WebSocket.
#[derive(Debug)]
pub struct Upstream<T> {
    /// The frame transport to relay through.
    pub transport: T,
    /// The subprotocol the upstream agreed to, if any.
    pub subprotocol: Option<String>,
}

/// How the server should report a failed dial to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The names were rejected before dialling (HTTP 400/404 to the client).
    InvalidTarget,
    /// The API server says the VMI does not exist (404).
    VmNotFound,
    /// The VMI exists but is not running (409).
    VmNotRunning,
    /// Unreachable, TLS, RBAC or any other upstream failure (502).
    BadGateway,
    /// Connecting, the TLS handshake or the upgrade timed out (504).
    Timeout,
}

/// Why the upstream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Placeholder until the upstream issue defines the full set.
    #[error("upstream unavailable")]
    Unavailable,
}

impl ConnectError {
    /// How the server should report this failure to the client.
    pub fn class(&self) -> FailureClass {
        FailureClass::BadGateway
    }
}

/// Opens upstream WebSockets. `KubeVirtConnector` is the real one; tests use fakes.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The transport of an open upstream.
    type Transport: FrameTransport + 'static;

    /// Dials the VNC console of `target`.
    async fn connect(
        &self,
        target: UpstreamTarget<'_>,
    ) -> Result<Upstream<Self::Transport>, ConnectError>;
}
