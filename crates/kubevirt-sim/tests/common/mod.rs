//! Test clients for the simulator: a WebSocket dialer (plain or TLS, with or without a bearer)
//! and a minimal RFB 3.8 client on top of it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kubevirt_sim::KubevirtSim;
use kubevirt_sim::rfb::{PixelFormat, Rect};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

/// Upper bound for any single wait in the tests (a hang fails instead of blocking forever).
pub const STEP: Duration = Duration::from_secs(20);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Ws = WebSocketStream<Box<dyn Io>>;

/// How to dial the simulator.
#[derive(Default, Clone)]
pub struct Dial<'a> {
    pub token: Option<&'a str>,
    pub subprotocols: Option<&'a str>,
    pub query: Option<&'a str>,
    pub api_version: Option<&'a str>,
    pub raw_path: Option<&'a str>,
}

fn tls_connector(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Dials `vmi` in `namespace`; `Err` carries the handshake error (an HTTP refusal is
/// `WsError::Http`).
pub async fn try_dial(
    sim: &KubevirtSim,
    namespace: &str,
    vmi: &str,
    options: Dial<'_>,
) -> Result<(Ws, Option<String>), WsError> {
    let mut path = match options.raw_path {
        Some(path) => path.to_owned(),
        None => {
            let path = KubevirtSim::vnc_path(namespace, vmi);
            match options.api_version {
                Some(version) => path.replace("/v1alpha3/", &format!("/{version}/")),
                None => path,
            }
        }
    };
    if let Some(query) = options.query {
        path = format!("{path}?{query}");
    }
    let url = format!("{}{path}", sim.base_url());
    let mut request = url.as_str().into_client_request().unwrap();
    if let Some(token) = options.token {
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    if let Some(protocols) = options.subprotocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    let tcp = TcpStream::connect(sim.local_addr()).await.unwrap();
    let stream: Box<dyn Io> = match sim.ca_pem() {
        Some(ca) => {
            let name = ServerName::try_from("localhost").unwrap();
            Box::new(tls_connector(ca).connect(name, tcp).await.unwrap())
        }
        None => Box::new(tcp),
    };
    let (ws, response) =
        tokio::time::timeout(STEP, tokio_tungstenite::client_async(request, stream))
            .await
            .expect("handshake finished in time")?;
    let selected = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|value| value.to_str().unwrap().to_owned());
    Ok((ws, selected))
}

pub async fn dial(sim: &KubevirtSim, namespace: &str, vmi: &str, options: Dial<'_>) -> Ws {
    try_dial(sim, namespace, vmi, options).await.unwrap().0
}

/// Status code and parsed JSON body of a refused upgrade.
pub async fn refusal(
    sim: &KubevirtSim,
    namespace: &str,
    vmi: &str,
    options: Dial<'_>,
) -> (u16, serde_json::Value) {
    match try_dial(sim, namespace, vmi, options).await {
        Err(WsError::Http(response)) => {
            assert_eq!(
                response.headers().get("content-type").unwrap(),
                "application/json"
            );
            let body = response.body().clone().expect("a Status body");
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).expect("a JSON body"),
            )
        }
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

/// Next data message (binary or text payload), skipping control frames; `None` on close.
pub async fn next_payload(ws: &mut Ws) -> Option<Bytes> {
    loop {
        let message = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("a message in time")?
            .ok()?;
        match message {
            Message::Binary(bytes) => return Some(bytes),
            Message::Text(text) => return Some(Bytes::from(text)),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// A decoded rectangle of a FramebufferUpdate: its place and its pixels as 0xRRGGBB.
#[derive(Debug)]
pub struct UpdateRect {
    pub rect: Rect,
    pub pixels: Vec<u32>,
}

impl UpdateRect {
    pub fn pixel(&self, x: u16, y: u16) -> u32 {
        assert!(x >= self.rect.x && y >= self.rect.y);
        let column = usize::from(x - self.rect.x);
        let row = usize::from(y - self.rect.y);
        self.pixels[row * usize::from(self.rect.width) + column]
    }
}

/// A minimal RFB 3.8 client over the simulator's WebSocket.
pub struct RfbClient {
    pub ws: Ws,
    buffered: Vec<u8>,
    pub format: PixelFormat,
    pub width: u16,
    pub height: u16,
    pub name: String,
}

impl RfbClient {
    /// Runs the RFB 3.8 handshake (security None) on `ws`.
    pub async fn handshake(ws: Ws) -> Self {
        let mut client = Self {
            ws,
            buffered: Vec::new(),
            format: PixelFormat::SERVER_NATIVE,
            width: 0,
            height: 0,
            name: String::new(),
        };
        assert_eq!(client.read(12).await, b"RFB 003.008\n");
        client.send(b"RFB 003.008\n").await;
        let count = client.read(1).await[0];
        let types = client.read(usize::from(count)).await;
        assert!(types.contains(&1), "security type None offered");
        client.send(&[1]).await;
        assert_eq!(client.read_u32().await, 0, "SecurityResult OK");
        client.send(&[1]).await; // ClientInit, shared
        client.width = client.read_u16().await;
        client.height = client.read_u16().await;
        let format: [u8; 16] = client.read(16).await.try_into().unwrap();
        client.format = PixelFormat::from_bytes(&format);
        let name_len = client.read_u32().await as usize;
        client.name = String::from_utf8(client.read(name_len).await).unwrap();
        client
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await
            .unwrap();
    }

    pub async fn read(&mut self, count: usize) -> Vec<u8> {
        while self.buffered.len() < count {
            let payload = next_payload(&mut self.ws)
                .await
                .expect("the server sent more RFB data");
            self.buffered.extend_from_slice(&payload);
        }
        self.buffered.drain(..count).collect()
    }

    async fn read_u16(&mut self) -> u16 {
        u16::from_be_bytes(self.read(2).await.try_into().unwrap())
    }

    async fn read_u32(&mut self) -> u32 {
        u32::from_be_bytes(self.read(4).await.try_into().unwrap())
    }

    pub async fn set_pixel_format(&mut self, format: PixelFormat) {
        let mut message = vec![0, 0, 0, 0];
        message.extend_from_slice(&format.to_bytes());
        self.send(&message).await;
        self.format = format;
    }

    pub async fn set_encodings(&mut self, encodings: &[i32]) {
        let mut message = vec![2, 0];
        message.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for encoding in encodings {
            message.extend_from_slice(&encoding.to_be_bytes());
        }
        self.send(&message).await;
    }

    pub async fn request_update(&mut self, incremental: bool) {
        let mut message = vec![3, u8::from(incremental)];
        for value in [0, 0, self.width, self.height] {
            message.extend_from_slice(&value.to_be_bytes());
        }
        self.send(&message).await;
    }

    pub async fn key(&mut self, down: bool, keysym: u32) {
        let mut message = vec![4, u8::from(down), 0, 0];
        message.extend_from_slice(&keysym.to_be_bytes());
        self.send(&message).await;
    }

    pub async fn type_key(&mut self, keysym: u32) {
        self.key(true, keysym).await;
        self.key(false, keysym).await;
    }

    pub async fn pointer(&mut self, buttons: u8, x: u16, y: u16) {
        let mut message = vec![5, buttons];
        message.extend_from_slice(&x.to_be_bytes());
        message.extend_from_slice(&y.to_be_bytes());
        self.send(&message).await;
    }

    /// Reads one FramebufferUpdate (Raw rectangles only).
    pub async fn read_update(&mut self) -> Vec<UpdateRect> {
        let header = self.read(4).await;
        assert_eq!(header[0], 0, "a FramebufferUpdate");
        let count = u16::from_be_bytes([header[2], header[3]]);
        let bytes_per_pixel = self.format.bytes_per_pixel();
        let mut rects = Vec::new();
        for _ in 0..count {
            let head = self.read(12).await;
            let value = |at: usize| u16::from_be_bytes([head[at], head[at + 1]]);
            let rect = Rect::new(value(0), value(2), value(4), value(6));
            let encoding = i32::from_be_bytes(head[8..12].try_into().unwrap());
            assert_eq!(encoding, 0, "Raw encoding");
            let raw = self
                .read(usize::from(rect.width) * usize::from(rect.height) * bytes_per_pixel)
                .await;
            let pixels = raw
                .chunks_exact(bytes_per_pixel)
                .map(|pixel| self.format.decode_pixel(pixel).unwrap())
                .collect();
            rects.push(UpdateRect { rect, pixels });
        }
        rects
    }
}
