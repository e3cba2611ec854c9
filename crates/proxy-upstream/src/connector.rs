//! The seam between the server and the upstream: the [`Connector`] trait, its target and result
//! types, and the failure set the server maps onto client statuses.
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use proxy_core::FrameTransport;

use crate::credentials::CredentialFileError;
use proxy_auth::InvalidNameError;

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
    /// How the TLS session was set up; `None` for a plain `ws://` upstream.
    pub tls_handshake: Option<TlsHandshake>,
}

/// Which kind of TLS handshake opened an upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsHandshake {
    /// A full handshake: certificate chain sent and verified, key exchange.
    Full,
    /// A resumed session (a TLS 1.3 ticket from an earlier connection): no certificate work.
    Resumed,
}

impl TlsHandshake {
    /// The metric label: `full` or `resumed`.
    pub fn label(self) -> &'static str {
        match self {
            TlsHandshake::Full => "full",
            TlsHandshake::Resumed => "resumed",
        }
    }
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

/// Why the upstream could not be opened. [`ConnectError::class`] says how to report it.
///
/// Sources are attached (print the chain for the full story); `Display` says what happened in
/// one line. No variant carries the bearer token, and the names of a rejected target are not
/// repeated either.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The namespace or VMI name is not a valid Kubernetes name; nothing was dialled.
    #[error(transparent)]
    InvalidName(#[from] InvalidNameError),
    /// The API server's host name could not be resolved.
    #[error("cannot resolve the API server host {host}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("the API server host {host} resolved to no address")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// The API server actively refused the TCP connection.
    #[error("the API server at {addr} refused the connection")]
    Refused {
        /// The address dialled.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The API server could not be reached (no route, network down, reset...).
    #[error("cannot reach the API server at {addr}")]
    Unreachable {
        /// The address dialled.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Resolving and connecting took longer than the connect timeout.
    #[error("connecting to the API server at {authority} timed out after {timeout:?}")]
    ConnectTimeout {
        /// `host:port` of the API server.
        authority: String,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake took longer than the TLS handshake timeout.
    #[error("the TLS handshake with {authority} timed out after {timeout:?}")]
    TlsHandshakeTimeout {
        /// `host:port` of the API server.
        authority: String,
        /// The configured TLS handshake timeout.
        timeout: Duration,
    },
    /// The TLS handshake failed; the source is rustls' reason (for example an unknown issuer).
    #[error("the TLS handshake with {authority} failed")]
    Tls {
        /// `host:port` of the API server.
        authority: String,
        /// Why rustls gave up.
        #[source]
        source: rustls::Error,
    },
    /// The connection broke during the TLS handshake.
    #[error("the connection to {authority} broke during the TLS handshake")]
    TlsIo {
        /// `host:port` of the API server.
        authority: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The API server did not answer the WebSocket upgrade within the upgrade timeout.
    #[error("the API server did not answer the WebSocket upgrade within {timeout:?}")]
    UpgradeTimeout {
        /// The configured upgrade timeout.
        timeout: Duration,
    },
    /// 401: the API server does not accept the proxy's service-account token.
    #[error("the API server rejected the proxy's service-account token (401 Unauthorized): {body}")]
    Unauthorized {
        /// What the API server said.
        body: BodyExcerpt,
    },
    /// 403: RBAC denies the proxy's service account the VNC subresource.
    #[error(
        "the proxy's service account lacks `get` on `virtualmachineinstances/vnc` in API group \
         `subresources.kubevirt.io` (403 Forbidden): {body}"
    )]
    Forbidden {
        /// What the API server said.
        body: BodyExcerpt,
    },
    /// 404: the VMI (or, with a wrong `api_path`, the API) does not exist.
    #[error("the API server found no such VMI (404 Not Found): {body}")]
    VmNotFound {
        /// What the API server said.
        body: BodyExcerpt,
    },
    /// KubeVirt says the VMI exists but is not running (409, or a "not running" answer).
    #[error("the VMI is not running ({status}): {body}")]
    VmNotRunning {
        /// The HTTP status.
        status: StatusCode,
        /// What the API server said.
        body: BodyExcerpt,
    },
    /// Any other non-101 answer to the upgrade.
    #[error("the API server answered the WebSocket upgrade with {status}: {body}")]
    UpstreamStatus {
        /// The HTTP status.
        status: StatusCode,
        /// What the API server said.
        body: BodyExcerpt,
    },
    /// The WebSocket upgrade failed for a protocol reason (bad accept key, a subprotocol the proxy
    /// did not ask for, connection closed mid-handshake...).
    #[error("the WebSocket upgrade with the API server failed")]
    Protocol(#[source] proxy_wire::ClientHandshakeError),
    /// The bearer token file could not be read or used, and no earlier token is known.
    #[error("cannot use the service-account token file")]
    TokenFile(#[source] CredentialFileError),
    /// The CA file could not be read or used, and no earlier CA is known.
    #[error("cannot use the CA file")]
    CaFile(#[source] CredentialFileError),
}

impl ConnectError {
    /// How the server should report this failure to the client.
    pub fn class(&self) -> FailureClass {
        match self {
            ConnectError::InvalidName(_) => FailureClass::InvalidTarget,
            ConnectError::VmNotFound { .. } => FailureClass::VmNotFound,
            ConnectError::VmNotRunning { .. } => FailureClass::VmNotRunning,
            ConnectError::ConnectTimeout { .. }
            | ConnectError::TlsHandshakeTimeout { .. }
            | ConnectError::UpgradeTimeout { .. } => FailureClass::Timeout,
            ConnectError::Resolve { .. }
            | ConnectError::NoAddress { .. }
            | ConnectError::Refused { .. }
            | ConnectError::Unreachable { .. }
            | ConnectError::Tls { .. }
            | ConnectError::TlsIo { .. }
            | ConnectError::Unauthorized { .. }
            | ConnectError::Forbidden { .. }
            | ConnectError::UpstreamStatus { .. }
            | ConnectError::Protocol(_)
            | ConnectError::TokenFile(_)
            | ConnectError::CaFile(_) => FailureClass::BadGateway,
        }
    }

    /// A stable, low-cardinality name of the error kind, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            ConnectError::InvalidName(_) => "invalid_name",
            ConnectError::Resolve { .. } => "resolve",
            ConnectError::NoAddress { .. } => "no_address",
            ConnectError::Refused { .. } => "refused",
            ConnectError::Unreachable { .. } => "unreachable",
            ConnectError::ConnectTimeout { .. } => "connect_timeout",
            ConnectError::TlsHandshakeTimeout { .. } => "tls_handshake_timeout",
            ConnectError::Tls { .. } => "tls",
            ConnectError::TlsIo { .. } => "tls_io",
            ConnectError::UpgradeTimeout { .. } => "upgrade_timeout",
            ConnectError::Unauthorized { .. } => "unauthorized",
            ConnectError::Forbidden { .. } => "forbidden",
            ConnectError::VmNotFound { .. } => "vm_not_found",
            ConnectError::VmNotRunning { .. } => "vm_not_running",
            ConnectError::UpstreamStatus { .. } => "upstream_status",
            ConnectError::Protocol(_) => "protocol",
            ConnectError::TokenFile(_) => "token_file",
            ConnectError::CaFile(_) => "ca_file",
        }
    }

    /// Maps a non-101 answer of the API server to its error.
    ///
    /// 401, 403 and 404 are taken at their word; 409 is what KubeVirt answers for a VMI that is
    /// not running or paused, and older KubeVirt versions say "not running" (or "phase is ...
    /// instead of Running") with other statuses, which is recognised from the message too.
    pub fn from_status(status: StatusCode, body: &[u8]) -> Self {
        let body = BodyExcerpt::from_body(body);
        match status {
            StatusCode::UNAUTHORIZED => ConnectError::Unauthorized { body },
            StatusCode::FORBIDDEN => ConnectError::Forbidden { body },
            StatusCode::NOT_FOUND => ConnectError::VmNotFound { body },
            StatusCode::CONFLICT => ConnectError::VmNotRunning { status, body },
            _ if body.says_not_running() => ConnectError::VmNotRunning { status, body },
            _ => ConnectError::UpstreamStatus { status, body },
        }
    }
}

/// A short, printable excerpt of an API server error body.
///
/// For a Kubernetes `Status` object this is its `message`; otherwise the start of the body.
/// Control characters become spaces and the text is cut at [`BodyExcerpt::MAX_CHARS`]
/// characters, so it is safe to put in a log line. Only what arrived together with the status
/// line is seen (the upgrade hands over the bytes it had already read); API servers send small
/// error bodies in the same write, but a slow peer may leave it empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyExcerpt(String);

impl BodyExcerpt {
    /// The longest excerpt kept, in characters.
    pub const MAX_CHARS: usize = 300;

    /// Extracts the excerpt from a response body.
    pub fn from_body(body: &[u8]) -> Self {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|value| value.get("message")?.as_str().map(str::to_owned));
        let text = match message {
            Some(message) => message,
            None => String::from_utf8_lossy(body).into_owned(),
        };
        let mut excerpt: String = text
            .trim()
            .chars()
            .take(Self::MAX_CHARS + 1)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if excerpt.chars().count() > Self::MAX_CHARS {
            excerpt = excerpt.chars().take(Self::MAX_CHARS).collect();
            excerpt.push('…');
        }
        Self(excerpt)
    }

    /// The excerpt.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn says_not_running(&self) -> bool {
        let text = self.0.to_ascii_lowercase();
        text.contains("not running") || text.contains("instead of running")
    }
}

impl fmt::Display for BodyExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(no body)")
        } else {
            f.write_str(&self.0)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_object_message_becomes_the_excerpt() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"virtualmachineinstance.kubevirt.io \"vm\" not found","reason":"NotFound","code":404}"#;
        assert_eq!(
            BodyExcerpt::from_body(body).as_str(),
            r#"virtualmachineinstance.kubevirt.io "vm" not found"#
        );
    }

    #[test]
    fn plain_bodies_are_trimmed_cleaned_and_cut() {
        assert_eq!(
            BodyExcerpt::from_body(b"  line one\r\nline two\n").as_str(),
            "line one  line two"
        );
        let long = "x".repeat(1000);
        let excerpt = BodyExcerpt::from_body(long.as_bytes());
        assert_eq!(excerpt.as_str().chars().count(), BodyExcerpt::MAX_CHARS + 1);
        assert!(excerpt.as_str().ends_with('…'));
        assert_eq!(BodyExcerpt::from_body(b"").to_string(), "(no body)");
        assert_eq!(
            BodyExcerpt::from_body(b"\xff\xfeok").as_str(),
            "\u{fffd}\u{fffd}ok"
        );
    }

    #[test]
    fn statuses_map_to_variants_and_classes() {
        let cases: [(u16, &[u8], &str, FailureClass); 8] = [
            (401, b"Unauthorized", "unauthorized", FailureClass::BadGateway),
            (403, b"forbidden", "forbidden", FailureClass::BadGateway),
            (404, b"not found", "vm_not_found", FailureClass::VmNotFound),
            (409, b"VMI is paused", "vm_not_running", FailureClass::VmNotRunning),
            (400, b"VMI is not running", "vm_not_running", FailureClass::VmNotRunning),
            (
                400,
                b"Unable to connect to VirtualMachineInstance because phase is Scheduling instead of Running",
                "vm_not_running",
                FailureClass::VmNotRunning,
            ),
            (400, b"No graphics devices are present.", "upstream_status", FailureClass::BadGateway),
            (500, b"internal error", "upstream_status", FailureClass::BadGateway),
        ];
        for (status, body, label, class) in cases {
            let error = ConnectError::from_status(StatusCode::from_u16(status).unwrap(), body);
            assert_eq!((error.label(), error.class()), (label, class), "{status}");
        }
    }

    #[test]
    fn forbidden_names_the_missing_permission() {
        let error = ConnectError::from_status(StatusCode::FORBIDDEN, b"denied");
        let text = error.to_string();
        assert!(
            text.contains("lacks `get` on `virtualmachineinstances/vnc`"),
            "{text}"
        );
        assert!(text.contains("subresources.kubevirt.io"), "{text}");
        assert!(text.ends_with("denied"), "{text}");
    }

    #[test]
    fn invalid_names_are_invalid_targets() {
        let error = ConnectError::from(proxy_auth::validate_vmi_name("A").unwrap_err());
        assert_eq!(error.class(), FailureClass::InvalidTarget);
    }
}
