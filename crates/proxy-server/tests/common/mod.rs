//! Shared pieces of the integration tests: token minting, an in-test KubeVirt-like upstream,
//! a raw HTTP client and a WebSocket client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    dead_code
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proxy_auth::{Expiry, LabInstance, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
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
/// Answered with 409 "not running".
pub const VM_STOPPED: &str = "stopped";
/// Closes right after the greeting with 4321 "console ended".
pub const VM_CLOSES: &str = "closer";

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
    let lab = LabInstance::new(1, 9, NAMESPACE, vms.iter().copied());
    let key = SigningKey::hs256(SECRET).unwrap();
    proxy_auth::issue(5, lab, Expiry::In(Duration::from_secs(600)), &key).unwrap()
}

/// Path and `Sec-WebSocket-Protocol` of each upgrade request the fake upstream saw.
pub type SeenRequests = Arc<Mutex<Vec<(String, Option<String>)>>>;
/// Code and reason of each close frame the fake upstream received (`None`: no status).
pub type ReceivedCloses = Arc<Mutex<Vec<Option<(u16, String)>>>>;

/// An in-test KubeVirt-like VNC endpoint (the `kubectl proxy` side of dev mode).
///
/// It checks the request path is the v1alpha3 VNC subresource of [`NAMESPACE`], answers
/// 404 for [`VM_MISSING`] and 409 for [`VM_STOPPED`], agrees to `plain.kubevirt.io` when
/// offered, sends [`GREETING`], then echoes every data message until the peer closes.
pub struct FakeKubevirt {
    pub addr: SocketAddr,
    /// Paths and `Sec-WebSocket-Protocol` values of every upgrade request seen.
    pub seen: SeenRequests,
    /// Close frames received from the proxy.
    pub closes: ReceivedCloses,
}

impl FakeKubevirt {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closes = Arc::new(Mutex::new(Vec::new()));
        let (seen_in_task, closes_in_task) = (Arc::clone(&seen), Arc::clone(&closes));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen_in_task);
                let closes = Arc::clone(&closes_in_task);
                tokio::spawn(serve_console(stream, seen, closes));
            }
        });
        Self { addr, seen, closes }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

fn vnc_path(vm: &str) -> String {
    format!(
        "/apis/subresources.kubevirt.io/v1alpha3/namespaces/{NAMESPACE}/virtualmachineinstances/{vm}/vnc"
    )
}

fn error_response(status: StatusCode, message: &str) -> ErrorResponse {
    let body = format!(
        r#"{{"kind":"Status","message":"{message}","code":{}}}"#,
        status.as_u16()
    );
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    response
}

async fn serve_console(stream: TcpStream, seen: SeenRequests, closes: ReceivedCloses) {
    let mut vm = String::new();
    let callback = |request: &Request, mut response: Response| {
        let path = request.uri().path().to_owned();
        let protocol = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.lock().unwrap().push((path.clone(), protocol.clone()));
        vm = path.rsplit('/').nth(1).unwrap_or_default().to_owned();
        if path != vnc_path(&vm) {
            return Err(error_response(
                StatusCode::NOT_FOUND,
                "the server could not find the requested resource",
            ));
        }
        if vm == VM_MISSING {
            return Err(error_response(
                StatusCode::NOT_FOUND,
                "virtualmachineinstance.kubevirt.io \"missing\" not found",
            ));
        }
        if vm == VM_STOPPED {
            return Err(error_response(StatusCode::CONFLICT, "VMI is not running"));
        }
        if protocol
            .as_deref()
            .is_some_and(|p| p.split(',').any(|p| p.trim() == "plain.kubevirt.io"))
        {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("plain.kubevirt.io"),
            );
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    if socket
        .send(Message::Binary(Bytes::from_static(GREETING)))
        .await
        .is_err()
    {
        return;
    }
    if vm == VM_CLOSES {
        let _ = socket
            .close(Some(CloseFrame {
                code: CloseCode::from(4321),
                reason: "console ended".into(),
            }))
            .await;
        while let Some(Ok(_)) = socket.next().await {}
        return;
    }
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Binary(data)) => {
                if socket.send(Message::Binary(data)).await.is_err() {
                    return;
                }
            }
            Ok(Message::Text(text)) => {
                if socket.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            Ok(Message::Close(frame)) => {
                closes
                    .lock()
                    .unwrap()
                    .push(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                // tungstenite queues the close reply; flush it out.
                let _ = socket.flush().await;
            }
            Ok(_) => {}
            Err(_) => return,
        }
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

/// A payload of `len` bytes that is not all the same byte, so reordering would show.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

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
pub fn dev_proxy(upstream: &FakeKubevirt) -> proxy_server::WebsocketProxyBuilder {
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
