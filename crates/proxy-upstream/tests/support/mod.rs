//! A stand-in for the Kubernetes API server's VNC subresource: a real WebSocket server on
//! loopback, optionally behind tokio-rustls with an rcgen-made CA, that records every upgrade
//! request and refuses the ones that do not match its expectations.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use futures_util::{SinkExt, StreamExt};
use proxy_core::Frame;
pub use test_support::TestPki;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

/// What the fake VNC console sends first, as RFB servers do.
pub const GREETING: &[u8] = b"RFB 003.008\n";

/// One upgrade request as the fake API server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub path_and_query: String,
    pub authorization: Option<String>,
    pub subprotocols: Option<String>,
}

/// What the fake API server insists on; a mismatch is answered like the API server would.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Required `Authorization` value (401 otherwise). `None`: must be absent (401 if present).
    pub authorization: Option<String>,
    /// Required path and query (404 otherwise).
    pub path_and_query: Option<String>,
    /// The subprotocol the client must offer and the server picks (400 otherwise); `None`
    /// picks nothing.
    pub subprotocol: Option<String>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<SeenRequest>,
}

impl FakeApiServer {
    /// Serves on `127.0.0.1`, with TLS when `tls` is given, until the test ends.
    pub async fn start(tls: Option<TlsAcceptor>, expect: Expect) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, tls, expect)
    }

    pub fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, expect: Expect) -> Self {
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let expect = expect.clone();
                let seen_tx = seen_tx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve_websocket(stream, expect, seen_tx).await;
                            }
                        }
                        None => serve_websocket(tcp, expect, seen_tx).await,
                    }
                });
            }
        });
        Self { addr, seen }
    }

    pub async fn next_request(&mut self) -> SeenRequest {
        self.seen
            .recv()
            .await
            .expect("the fake API server saw a request")
    }
}

fn refuse(status: StatusCode, message: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message.to_owned()));
    *response.status_mut() = status;
    response
}

// tungstenite's callback signature returns its (large) `ErrorResponse` by value.
#[allow(clippy::result_large_err)]
async fn serve_websocket<S>(stream: S, expect: Expect, seen_tx: mpsc::UnboundedSender<SeenRequest>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let check = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        let seen = SeenRequest {
            path_and_query: request.uri().path_and_query().unwrap().as_str().to_owned(),
            authorization: header("authorization"),
            subprotocols: header("sec-websocket-protocol"),
        };
        seen_tx.send(seen.clone()).unwrap();
        if seen.authorization != expect.authorization {
            return Err(refuse(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        if expect
            .path_and_query
            .as_ref()
            .is_some_and(|path| *path != seen.path_and_query)
        {
            return Err(refuse(StatusCode::NOT_FOUND, "not found"));
        }
        if let Some(wanted) = &expect.subprotocol {
            let offered = seen.subprotocols.unwrap_or_default();
            if !offered.split(',').any(|p| p.trim() == wanted) {
                return Err(refuse(StatusCode::BAD_REQUEST, "subprotocol missing"));
            }
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(wanted).unwrap(),
            );
        }
        Ok(response)
    };
    let Ok(mut websocket) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    if websocket
        .send(Message::Binary(GREETING.to_vec().into()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(message)) = websocket.next().await {
        let echoed = match message {
            Message::Binary(data) => websocket.send(Message::Binary(data)).await,
            Message::Close(_) => return,
            _ => Ok(()),
        };
        if echoed.is_err() {
            return;
        }
    }
}

/// Reads the greeting, sends `payload` and expects it echoed: proof the WebSocket works both ways.
pub async fn exchange<T>(transport: &mut T, payload: &[u8])
where
    T: proxy_core::FrameTransport,
{
    match transport.next().await {
        Some(Ok(Frame::Binary(data))) => assert_eq!(&data[..], GREETING),
        other => panic!("expected the RFB greeting, got {other:?}"),
    }
    transport
        .send(Frame::Binary(payload.to_vec().into()))
        .await
        .unwrap();
    match transport.next().await {
        Some(Ok(Frame::Binary(data))) => assert_eq!(&data[..], payload),
        other => panic!("expected the echo, got {other:?}"),
    }
}

pub fn write_token(dir: &Path, token: &str) -> PathBuf {
    test_support::write_file(dir, "token", token)
}

pub const DEFAULT_PATH_FOR_LAB_VM: &str =
    "/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab-1/virtualmachineinstances/vm-a/vnc";
