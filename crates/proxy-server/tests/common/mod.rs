//! Shared pieces of the integration tests: token minting, the simulated KubeVirt upstream,
//! a raw HTTP client and a WebSocket client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    dead_code
)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS256 secret of the copied PyJWT fixtures (tests/fixtures/tokens.json).
pub const SECRET: &str = "fixture-secret-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// The namespace every minted token names.
pub const NAMESPACE: &str = "lab-1-9";
/// What the fake upstream sends first on every console, like a VNC server's RFB greeting.
pub const GREETING: &[u8] = b"RFB 003.008\n";
/// VM names the fake upstream treats specially.
pub const VM_MISSING: &str = "missing";
/// Answered like virt-api does for a stopped VM (400 "VMI is not running"), which the proxy
/// maps to 409.
pub const VM_STOPPED: &str = "stopped";
/// Closes right after the greeting with 4321 "console ended".
pub const VM_CLOSES: &str = "closer";
/// A VM whose console is the simulator's RFB server (it shows typed keys).
pub const VM_DESKTOP: &str = "desktop";
/// Sends full-screen-sized updates (1280x800x4 bytes each) as fast as they are read.
pub const VM_SOURCE: &str = "source";

/// A fixture token by case name, from the copied PyJWT fixtures.
pub fn fixture_token(name: &str) -> String {
    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/tokens.json")).unwrap();
    fixtures["cases"][name]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A fresh HS256 token for user 5, lab instance 9 in [`NAMESPACE`], allowing `vms`.
pub fn mint(vms: &[&str]) -> String {
    test_support::mint_console_token(SECRET, NAMESPACE, 9, vms, Duration::from_secs(600))
}

/// The upstream of every test: [`kubevirt_sim`] in dev-mode shape (plain `ws://`, the
/// `kubectl proxy` side), serving in [`NAMESPACE`] the echo consoles `ubuntu`, `kali` and
/// `manjaro` (each sends [`GREETING`] first), [`VM_STOPPED`] (not running: 400, as virt-api
/// answers), [`VM_CLOSES`] and the RFB console [`VM_DESKTOP`]; any other VM is unknown (404).
pub struct KubevirtUpstream {
    pub addr: SocketAddr,
    pub sim: KubevirtSim,
}

impl KubevirtUpstream {
    pub async fn start() -> Self {
        let config = ["ubuntu", "kali", "manjaro"]
            .iter()
            .fold(SimConfig::new().greeting(GREETING), |config, vm| {
                config.vm_in_namespace(NAMESPACE, *vm, VmBehavior::Echo)
            });
        let config = config
            .vm_in_namespace(NAMESPACE, VM_STOPPED, VmBehavior::NotRunning)
            .vm_in_namespace(NAMESPACE, VM_DESKTOP, VmBehavior::Rfb)
            .vm_in_namespace(
                NAMESPACE,
                VM_SOURCE,
                VmBehavior::Source {
                    chunk_bytes: 1280 * 800 * 4,
                    total_bytes: None,
                },
            )
            .vm_in_namespace(
                NAMESPACE,
                VM_CLOSES,
                VmBehavior::Closes {
                    code: 4321,
                    reason: "console ended".to_owned(),
                },
            );
        let sim = KubevirtSim::start(config).await.unwrap();
        Self {
            addr: sim.local_addr(),
            sim,
        }
    }

    pub fn url(&self) -> String {
        self.sim.base_url()
    }

    /// Path and `Sec-WebSocket-Protocol` of each upgrade request seen, oldest first.
    pub fn seen(&self) -> Vec<(String, Option<String>)> {
        self.sim
            .requests()
            .into_iter()
            .map(|request| {
                let offered = request.offered_subprotocols;
                (
                    request.path,
                    (!offered.is_empty()).then(|| offered.join(", ")),
                )
            })
            .collect()
    }

    /// Code and reason of each close frame the upstream received (`None`: no status).
    pub fn closes(&self) -> Vec<Option<(u16, String)>> {
        self.sim.received_closes()
    }
}

/// A raw HTTP/1.1 request; returns the status code and the whole response text.
pub async fn raw_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `GET path` as a WebSocket upgrade, read to the end.
pub async fn upgrade_request(addr: SocketAddr, path: &str) -> (u16, String) {
    raw_request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    )
    .await
}

/// A plain `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to the proxy, offering `protocols` (none when empty). Returns the socket
/// and the subprotocol the proxy answered.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    protocols: &str,
) -> Result<(Client, Option<String>), tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let answered = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok((socket, answered))
}

/// The next data message's bytes (skipping pings and pongs).
pub async fn next_data(client: &mut Client) -> Vec<u8> {
    loop {
        match client
            .next()
            .await
            .expect("stream ended")
            .expect("read failed")
        {
            Message::Binary(data) => return data.to_vec(),
            Message::Text(text) => return text.as_bytes().to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected data, got {other:?}"),
        }
    }
}

/// Reads until the close frame; returns its code and reason.
pub async fn next_close(client: &mut Client) -> Option<(u16, String)> {
    loop {
        match client.next().await {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("read failed before the close frame: {error}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Sends `payload`, expects it echoed back.
pub async fn echo_round_trip(client: &mut Client, payload: &[u8]) {
    client
        .send(Message::Binary(Bytes::copy_from_slice(payload)))
        .await
        .unwrap();
    assert_eq!(next_data(client).await, payload);
}

#[allow(unused_imports)]
pub use test_support::pattern;

/// A proxy (or any engine) serving on 127.0.0.1 inside the test's runtime.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Serves `engine` on a fresh loopback port until [`stop`](Self::stop).
    pub async fn engine<V, C>(engine: proxy_server::ProxyEngine<V, C>) -> Self
    where
        V: proxy_auth::TokenVerifier,
        C: proxy_upstream::Connector,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            engine
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Builds a [`WebsocketProxy`](proxy_server::WebsocketProxy) and serves its engine.
    pub async fn proxy(builder: proxy_server::WebsocketProxyBuilder) -> Self {
        Self::engine(builder.build().unwrap().engine().clone()).await
    }

    /// Asks the server to stop (drain) without waiting.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and waits for it to finish draining.
    pub async fn stop(mut self) {
        self.request_stop();
        self.task.await.unwrap();
    }

    /// Waits for the server to finish after [`request_stop`](Self::request_stop).
    pub async fn finished(self) {
        self.task.await.unwrap();
    }
}

/// A builder for a dev-mode proxy in front of `upstream`, with the fixture secret.
pub fn dev_proxy(upstream: &KubevirtUpstream) -> proxy_server::WebsocketProxyBuilder {
    dev_proxy_to(upstream.url())
}

/// A builder for a dev-mode proxy in front of the upstream at `url`, with the fixture secret.
pub fn dev_proxy_to(url: impl Into<String>) -> proxy_server::WebsocketProxyBuilder {
    proxy_server::WebsocketProxy::builder()
        .local_dev_mode(true)
        .remote_url(url)
        .secret_key(SECRET)
}

/// Reads until the connection ends; sends tungstenite's queued close reply on the way.
pub async fn read_to_end(client: &mut Client) {
    while let Some(Ok(_)) = client.next().await {}
}

#[allow(unused_imports)]
pub use test_support::process::{send_sigterm, wait_for_exit};

pub mod proxy_process;
#[allow(unused_imports)]
pub use proxy_process::{BINARY, ProxyProcess};

/// A fresh HS256 token for `vmi` in [`NAMESPACE`] with the optional `console` claim.
pub fn console_token(vmi: &str, console: Option<proxy_auth::ConsoleAccess>) -> String {
    use proxy_auth::{Expiry, IssueOptions, LabInstance, SigningKey};
    let key = SigningKey::hs256(SECRET).unwrap();
    let lab = LabInstance::new(1, 9, NAMESPACE, [vmi]);
    let options = IssueOptions {
        console,
        ..IssueOptions::default()
    };
    proxy_auth::issue_with(5, lab, Expiry::In(Duration::from_secs(600)), &key, &options).unwrap()
}

/// An RFB client over the proxy's WebSocket: reads across message boundaries.
pub struct RfbClient {
    pub socket: Client,
    buffer: Vec<u8>,
    /// Every byte the server sent, for comparing with a recording.
    pub received: Vec<u8>,
}

impl RfbClient {
    /// Opens `vmi` with `token` (in the path).
    pub async fn open_vm(addr: SocketAddr, token: &str, vmi: &str) -> Self {
        let (socket, _) = connect(addr, &format!("/{token}/{vmi}"), "binary")
            .await
            .unwrap();
        Self {
            socket,
            buffer: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Opens `ubuntu` with `token`.
    pub async fn open(addr: SocketAddr, token: &str) -> Self {
        Self::open_vm(addr, token, "ubuntu").await
    }

    pub async fn read_exact(&mut self, count: usize) -> Vec<u8> {
        while self.buffer.len() < count {
            let message = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("the console went quiet")
                .expect("the console ended")
                .unwrap();
            if let Message::Binary(bytes) = message {
                self.received.extend_from_slice(&bytes);
                self.buffer.extend_from_slice(&bytes);
            }
        }
        self.buffer.drain(..count).collect()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.socket
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// The 3.8 handshake with security None; returns the framebuffer size.
    pub async fn handshake(&mut self) -> (u16, u16) {
        assert_eq!(self.read_exact(12).await, b"RFB 003.008\n");
        self.send(b"RFB 003.008\n").await;
        let count = self.read_exact(1).await[0];
        let types = self.read_exact(usize::from(count)).await;
        assert!(types.contains(&1));
        self.send(&[1]).await;
        assert_eq!(self.read_exact(4).await, [0, 0, 0, 0]);
        self.send(&[1]).await;
        let init = self.read_exact(24).await;
        let name_length = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        self.read_exact(name_length as usize).await;
        (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        )
    }

    /// Keys, a click and a clipboard paste, split across WebSocket messages mid-message.
    pub async fn type_and_click(&mut self, text: &str) {
        let mut input = Vec::new();
        for key in text.bytes() {
            for down in [1, 0] {
                input.extend_from_slice(&[4, down, 0, 0, 0, 0, 0, key]);
            }
        }
        input.extend_from_slice(&[5, 1, 0, 40, 0, 30, 5, 0, 0, 40, 0, 30]);
        input.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 4]);
        input.extend_from_slice(b"pwd\n");
        for piece in input.chunks(5) {
            self.send(piece).await;
        }
    }

    /// Asks for the whole screen and reads the update (Raw, 32-bit pixels); returns its bytes.
    pub async fn full_update(&mut self, width: u16, height: u16) -> usize {
        let mut request = vec![3, 0, 0, 0, 0, 0];
        request.extend_from_slice(&width.to_be_bytes());
        request.extend_from_slice(&height.to_be_bytes());
        self.send(&request).await;
        let header = self.read_exact(4).await;
        assert_eq!(header[0], 0, "a FramebufferUpdate");
        let rects = u16::from_be_bytes([header[2], header[3]]);
        let mut total = 4;
        for _ in 0..rects {
            let rect = self.read_exact(12).await;
            let (w, h) = (
                u16::from_be_bytes([rect[4], rect[5]]),
                u16::from_be_bytes([rect[6], rect[7]]),
            );
            assert_eq!(&rect[8..12], &[0, 0, 0, 0], "Raw");
            let pixels = usize::from(w) * usize::from(h) * 4;
            self.read_exact(pixels).await;
            total += 12 + pixels;
        }
        total
    }

    pub async fn close(mut self) -> Vec<u8> {
        self.socket.close(None).await.unwrap();
        read_to_end(&mut self.socket).await;
        self.received
    }
}

/// A console token for `user` in lab instance `lab_instance` (namespace [`NAMESPACE`]) allowing
/// `vms`, with `jti` when given.
pub fn mint_for(user: i64, lab_instance: i64, vms: &[&str], jti: Option<&str>) -> String {
    let lab = proxy_auth::LabInstance::new(1, lab_instance, NAMESPACE, vms.iter().copied());
    let key = proxy_auth::SigningKey::hs256(SECRET).unwrap();
    let expiry = proxy_auth::Expiry::In(Duration::from_secs(600));
    match jti {
        Some(jti) => proxy_auth::issue_with_id(user, lab, expiry, &key, jti).unwrap(),
        None => proxy_auth::issue(user, lab, expiry, &key).unwrap(),
    }
}

/// An admin API answer: status, the JSON body (null when not JSON) and the raw response.
pub struct ApiAnswer {
    pub status: u16,
    pub json: serde_json::Value,
    pub raw: String,
}

/// Sends an admin API request with `token` as bearer (none when empty) and an optional JSON
/// body.
pub async fn admin_api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> ApiAnswer {
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let authorization = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, raw) = raw_request(addr, &request).await;
    let json = raw
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(serde_json::Value::Null);
    ApiAnswer { status, json, raw }
}

/// The status and body of a refused upgrade with these headers (no Origin: HTTP style).
pub async fn refused(addr: std::net::SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let (status, text) = raw_request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{headers}\r\n"
        ),
    )
    .await;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    (status, body)
}

/// Opens a WebSocket to the proxy the way a browser does: with an `Origin` header.
pub async fn connect_as_browser(
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request.headers_mut().insert(
        "origin",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("https://lab.example"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}
