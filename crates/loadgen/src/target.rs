//! Where the load goes: the upstream directly, a byte relay (socat or loadgen's own tokio relay),
//! or the proxy under test.

use std::fmt;

use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};

use crate::LoadgenError;
use crate::token::Secret;
use crate::upstream::KUBEVIRT_SUBPROTOCOL;

/// KubeVirt's VNC path with `{namespace}` and `{vmi_name}` placeholders: what a proxy dials
/// upstream (the connector's own default template).
pub const KUBEVIRT_VNC_PATH: &str = proxy_upstream::DEFAULT_API_PATH;

/// The columns of a report, in column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TargetKind {
    /// Straight at the upstream server: the baseline.
    Direct,
    /// Through `socat`, a raw TCP byte relay: the floor any relay process pays.
    Socat,
    /// Through [`crate::byte_relay`], a TCP byte relay on tokio: the floor for a relay on the proxy's runtime.
    ByteRelay,
    /// Through websocat, a general WebSocket relay that checks no token (the fastest peer).
    Websocat,
    /// Through the Python original, `lab-orchestrator-ws-proxy` 1.0.0 (what users run today).
    PythonOriginal,
    /// Through the proxy under test (dev mode: plain `ws://` upstream, no credentials).
    Proxy,
    /// Through a second proxy process in the pod's shape: `wss://` to the API server with a CA
    /// file and a service-account token file.
    ProxyInCluster,
}

impl TargetKind {
    /// Every kind, in column order.
    pub const ALL: [TargetKind; 7] = [
        TargetKind::Direct,
        TargetKind::Socat,
        TargetKind::ByteRelay,
        TargetKind::Websocat,
        TargetKind::PythonOriginal,
        TargetKind::Proxy,
        TargetKind::ProxyInCluster,
    ];

    /// The columns the proxy is compared with (its ratio "proxy/column").
    pub const BASELINES: [TargetKind; 5] = [
        TargetKind::Direct,
        TargetKind::Socat,
        TargetKind::ByteRelay,
        TargetKind::Websocat,
        TargetKind::PythonOriginal,
    ];
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Direct => "direct",
            TargetKind::Socat => "socat",
            TargetKind::ByteRelay => "byte relay",
            TargetKind::Websocat => "websocat",
            TargetKind::PythonOriginal => "python original",
            TargetKind::Proxy => "proxy",
            TargetKind::ProxyInCluster => "proxy in-cluster",
        })
    }
}

/// One target: a `ws://` URL template plus what is needed to fill it in.
///
/// Placeholders: `{vmi}` or `{vmi_name}` (the upstream [`Mode`](crate::Mode) name),
/// `{namespace}` and `{token}`.
#[derive(Clone)]
pub struct Target {
    kind: TargetKind,
    url_template: String,
    token: Option<Secret>,
    user_tokens: Option<std::sync::Arc<[Secret]>>,
    offer_subprotocol: bool,
    pid: Option<u32>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("url_template", &self.url_template)
            .field("has_token", &self.token.is_some())
            .field("offer_subprotocol", &self.offer_subprotocol)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Target {
    /// The upstream itself at `upstream_base` (e.g. `ws://127.0.0.1:9000`), on KubeVirt's VNC path,
    /// offering `plain.kubevirt.io` like a proxy would.
    pub fn direct(upstream_base: &str) -> Target {
        Target {
            kind: TargetKind::Direct,
            url_template: format!("{}{KUBEVIRT_VNC_PATH}", upstream_base.trim_end_matches('/')),
            token: None,
            user_tokens: None,
            offer_subprotocol: true,
            pid: None,
        }
    }

    /// A byte relay listening at `relay_base` that forwards to the upstream; same path as [`Target::direct`].
    pub fn socat(relay_base: &str) -> Target {
        Target {
            kind: TargetKind::Socat,
            ..Target::direct(relay_base)
        }
    }

    /// [`crate::byte_relay`] listening at `relay_base`; same path as [`Target::direct`].
    pub fn byte_relay(relay_base: &str) -> Target {
        Target {
            kind: TargetKind::ByteRelay,
            ..Target::direct(relay_base)
        }
    }

    /// websocat listening at `relay_base`, forwarding to the upstream's KubeVirt path; clients
    /// offer no subprotocol.
    pub fn websocat(relay_base: &str) -> Target {
        Target {
            kind: TargetKind::Websocat,
            offer_subprotocol: false,
            ..Target::direct(relay_base)
        }
    }

    /// The Python original at `url_template` (the proxy's URL shape) with `token`; clients offer
    /// no subprotocol (it selects none).
    pub fn python_original(url_template: impl Into<String>, token: Option<Secret>) -> Target {
        Target {
            kind: TargetKind::PythonOriginal,
            ..Target::proxy(url_template, token)
        }
    }

    /// The proxy at `url_template`, e.g. `ws://127.0.0.1:5001/{token}/{vmi}`. `token` fills `{token}`.
    /// Clients offer no subprotocol (like noVNC); the proxy picks the upstream's.
    pub fn proxy(url_template: impl Into<String>, token: Option<Secret>) -> Target {
        Target {
            kind: TargetKind::Proxy,
            url_template: url_template.into(),
            token,
            user_tokens: None,
            offer_subprotocol: false,
            pid: None,
        }
    }

    /// The same proxy target, filling the in-cluster column.
    pub fn in_cluster(mut self) -> Target {
        self.kind = TargetKind::ProxyInCluster;
        self
    }

    /// Sets the process whose resident memory the idle scenario reports.
    pub fn with_pid(mut self, pid: u32) -> Target {
        self.pid = Some(pid);
        self
    }

    /// Sets whether clients offer `plain.kubevirt.io`.
    pub fn with_subprotocol_offer(mut self, offer: bool) -> Target {
        self.offer_subprotocol = offer;
        self
    }

    /// Which column this target fills.
    pub fn kind(&self) -> TargetKind {
        self.kind
    }

    /// The URL template, placeholders unfilled (safe to print: the token is not in it).
    pub fn url_template(&self) -> &str {
        &self.url_template
    }

    /// The process measured by the idle scenario, if any.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Tokens minted one per user ([`class_namespace`] `user`), for the class-start scenario.
    pub fn with_user_tokens(mut self, tokens: Vec<Secret>) -> Target {
        self.user_tokens = Some(tokens.into());
        self
    }

    /// The session URL of user number `user` of a class: the VM `vmi` in the user's own
    /// namespace, with the user's own token when the target has them.
    pub fn class_session_url(&self, user: usize, vmi: &str) -> Secret {
        let token = self
            .user_tokens
            .as_ref()
            .and_then(|tokens| tokens.get(user))
            .or(self.token.as_ref());
        self.fill(&class_namespace(user), vmi, token)
    }

    /// The session URL for VM name `vmi` in `namespace`. Contains the token: never log it.
    pub fn session_url(&self, namespace: &str, vmi: &str) -> Secret {
        self.fill(namespace, vmi, self.token.as_ref())
    }

    fn fill(&self, namespace: &str, vmi: &str, token: Option<&Secret>) -> Secret {
        let token = token.map(Secret::expose).unwrap_or_default();
        Secret::new(
            self.url_template
                .replace("{namespace}", namespace)
                .replace("{vmi}", vmi)
                .replace("{vmi_name}", vmi)
                .replace("{token}", token),
        )
    }

    /// Opens one WebSocket session to `url` (from [`Target::session_url`]) with `TCP_NODELAY`.
    pub async fn connect(&self, url: &Secret, vmi: &str) -> Result<ClientSocket, LoadgenError> {
        let invalid = || LoadgenError::InvalidUrl { target: self.kind };
        let mut request = url.expose().into_client_request().map_err(|_| invalid())?;
        let uri = request.uri();
        if uri.scheme_str() != Some("ws") {
            return Err(invalid());
        }
        let host = uri
            .host()
            .ok_or_else(invalid)?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        if self.offer_subprotocol {
            request.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(KUBEVIRT_SUBPROTOCOL),
            );
        }
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| LoadgenError::Connect {
                target: self.kind,
                vmi: vmi.to_owned(),
                source,
            })?;
        // Small messages must not wait for Nagle; failure to set it only costs speed.
        let _ = stream.set_nodelay(true);
        let (websocket, _response) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|source| LoadgenError::Handshake {
                target: self.kind,
                vmi: vmi.to_owned(),
                source: Box::new(source),
            })?;
        Ok(websocket)
    }
}

/// The namespace of user number `user` in the class-start scenario (one lab instance each).
pub fn class_namespace(user: usize) -> String {
    format!("class-{user}")
}

/// A client-side WebSocket session.
pub type ClientSocket = WebSocketStream<TcpStream>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_urls_fill_every_placeholder() {
        let proxy = Target::proxy(
            "ws://127.0.0.1:5001/{token}/{vmi}",
            Some(Secret::new("tok")),
        );
        assert_eq!(
            proxy.session_url("ns", "echo").expose(),
            "ws://127.0.0.1:5001/tok/echo"
        );
        let direct = Target::direct("ws://127.0.0.1:9000/");
        assert_eq!(
            direct.session_url("ns", "sink").expose(),
            "ws://127.0.0.1:9000/apis/subresources.kubevirt.io/v1alpha3/namespaces/ns/virtualmachineinstances/sink/vnc"
        );
    }

    #[test]
    fn debug_output_hides_the_token() {
        let proxy = Target::proxy(
            "ws://127.0.0.1:5001/{token}/{vmi}",
            Some(Secret::new("sekrit-token")),
        );
        assert!(!format!("{proxy:?}").contains("sekrit-token"));
    }
}
